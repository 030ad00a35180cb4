"""Building blocks: self-attention with a pluggable core, and the transformer block."""

from __future__ import annotations

from torch import Tensor, nn

from former.attention import AttentionSpec, check_attention_output, resolve_attention


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

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, t, emb) -> (b, t, emb)."""
        queries = self.toqueries(x)
        keys = self.tokeys(x)
        values = self.tovalues(x)

        # The hole learners fill: (b, t, heads*s) x3 -> (b, t, heads*s).
        out = self.attention(queries, keys, values, self.heads, self.mask)
        if not self._shape_checked:
            check_attention_output(out, queries, self.heads, self.attention)
            self._shape_checked = True

        return self.unifyheads(out)


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
        self.norm1 = nn.LayerNorm(emb)
        self.norm2 = nn.LayerNorm(emb)
        self.ff = nn.Sequential(
            nn.Linear(emb, ff_hidden_mult * emb),
            nn.GELU(),
            nn.Linear(ff_hidden_mult * emb, emb),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, t, emb) -> (b, t, emb)."""
        x = x + self.dropout(self.attention(self.norm1(x)))
        return x + self.dropout(self.ff(self.norm2(x)))
