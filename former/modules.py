"""Building blocks: self-attention with a pluggable core, and the transformer block."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from former.attention import AttentionSpec, check_attention_output, resolve_attention

# What a padded key adds to its attention scores: exp(-1e4) is 0 in float32 and bfloat16, so a
# padded key gets no weight, and a real position's output is what it is without the padding.
PADDED_KEY_SCORE = -1e4


def check_heads_divide(emb: int, heads: int, wide: bool) -> None:
    """Narrow attention splits ``emb`` into ``heads`` equal parts: heads must divide it."""
    if heads < 1:
        raise ValueError(f"heads must be at least 1, got {heads}.")
    if not wide and emb % heads != 0:
        divisor = max(d for d in range(1, min(emb, heads) + 1) if emb % d == 0)
        raise ValueError(
            f"heads ({heads}) must divide the embedding size ({emb}) for narrow attention: "
            f"pick e.g. {divisor} heads (-H {divisor}), or wide attention (wide=True, --wide)."
        )


class SelfAttention(nn.Module):
    """Multi-head self-attention: the projections and ``unifyheads`` live here, the scaled
    dot-product attention between them is the function you plug in. Each head works on
    ``s = emb // heads`` features (narrow), or on a full-size projection, ``s = emb`` (wide)."""

    def __init__(
        self,
        emb: int,
        heads: int = 8,
        mask: bool = False,
        wide: bool = False,
        attention: AttentionSpec = None,
    ) -> None:
        super().__init__()
        check_heads_divide(emb, heads, wide)
        self.emb, self.heads, self.mask, self.wide = emb, heads, mask, wide
        self.head_size = emb if wide else emb // heads
        inner = heads * self.head_size

        self.tokeys = nn.Linear(emb, inner, bias=False)
        self.toqueries = nn.Linear(emb, inner, bias=False)
        self.tovalues = nn.Linear(emb, inner, bias=False)
        self.unifyheads = nn.Linear(inner, emb)
        self.attention = resolve_attention(attention)
        self._shape_checked = False

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (b, t, emb); padding_mask: (b, t) bool, True at real tokens -> (b, t, emb).
        Padded keys get no attention, so padding never changes a real position's output."""
        queries, keys, values = self.toqueries(x), self.tokeys(x), self.tovalues(x)
        padded = padding_mask is not None and not bool(padding_mask.all())
        if padded:
            queries, keys, values = mask_padded_keys(
                queries, keys, values, self.heads, padding_mask
            )
        # The hole learners fill: (b, t, heads*s) x3 -> (b, t, heads*s).
        out = self.attention(queries, keys, values, self.heads, self.mask)
        if not self._shape_checked:
            check_attention_output(out, queries, self.heads, self.attention)
            self._shape_checked = True
        return self.unifyheads(drop_score_feature(out, self.heads) if padded else out)


def mask_padded_keys(
    queries: Tensor, keys: Tensor, values: Tensor, heads: int, padding_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Key padding through the learner's contract, which has no key mask: every head gets one
    more feature, 1 in each query, 0 in a real key and :data:`PADDED_KEY_SCORE` (scaled) in a
    padded one, 0 in every value. Queries are scaled by sqrt((s+1)/s), so the function's
    1/sqrt(s+1) gives the real scores their 1/sqrt(s).
    (b, t, heads*s) x3, padding_mask (b, t) -> (b, t, heads*(s+1)) x3."""
    b, t, inner = queries.shape
    s = inner // heads
    ones = queries.new_ones(b, t, heads, 1)
    key_feature = (~padding_mask).to(keys.dtype)[:, :, None, None].expand(b, t, heads, 1)
    key_feature = key_feature * (PADDED_KEY_SCORE * math.sqrt(s + 1))

    def widen(x: Tensor, feature: Tensor) -> Tensor:
        return torch.cat([x.reshape(b, t, heads, s), feature], dim=-1).reshape(b, t, -1)

    queries = queries * math.sqrt((s + 1) / s)
    return widen(queries, ones), widen(keys, key_feature), widen(values, torch.zeros_like(ones))


def drop_score_feature(out: Tensor, heads: int) -> Tensor:
    """Undo :func:`mask_padded_keys`: (b, t, heads*(s+1)) -> (b, t, heads*s)."""
    b, t, inner = out.shape
    return out.reshape(b, t, heads, inner // heads)[..., :-1].reshape(b, t, -1)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + ff(norm(x))."""

    def __init__(
        self,
        emb: int,
        heads: int,
        mask: bool,
        ff_hidden_mult: int = 4,
        dropout: float = 0.0,
        wide: bool = False,
        attention: AttentionSpec = None,
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(emb, heads=heads, mask=mask, wide=wide, attention=attention)
        self.norm1, self.norm2 = nn.LayerNorm(emb), nn.LayerNorm(emb)
        hidden = ff_hidden_mult * emb
        self.ff = nn.Sequential(nn.Linear(emb, hidden), nn.GELU(), nn.Linear(hidden, emb))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (b, t, emb); padding_mask: (b, t) bool, True at real tokens -> (b, t, emb)."""
        x = x + self.dropout(self.attention(self.norm1(x), padding_mask))
        return x + self.dropout(self.ff(self.norm2(x)))


class BigramEmbedding(nn.Module):
    """Word order as features: an embedding for each of a chosen set of bigrams (previous
    token, token), added at the bigram's second token; other positions get zeros.
    keys: (k,) int64, ``previous * num_tokens + token`` of each bigram (saved with the model)."""

    def __init__(self, keys: Tensor, num_tokens: int, emb: int, std: float) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.register_buffer("keys", torch.sort(keys.long()).values)
        # Row 0 stands for "no listed bigram": zeros, never trained.
        self.embedding = nn.Embedding(len(keys) + 1, emb, padding_idx=0)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def ids(self, x: Tensor) -> Tensor:
        """x: (b, t) token ids -> (b, t) bigram ids, 1 + the bigram's rank in ``keys``, or 0."""
        ids = torch.zeros_like(x)
        if len(self.keys) == 0 or x.size(1) < 2:
            return ids
        pairs = x[:, :-1] * self.num_tokens + x[:, 1:]
        found = torch.searchsorted(self.keys, pairs).clamp(max=len(self.keys) - 1)
        ids[:, 1:] = torch.where(self.keys[found] == pairs, found + 1, 0)
        return ids

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, t) token ids -> (b, t, emb)."""
        return self.embedding(self.ids(x))
