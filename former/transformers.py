"""Whole models: a sequence classifier and an autoregressive generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from former.attention import AttentionSpec
from former.modules import BigramEmbedding, TransformerBlock

EMBEDDING_STD = 0.02


class _Backbone(nn.Module):
    """Token and position embeddings followed by ``depth`` transformer blocks."""

    def __init__(
        self,
        emb: int,
        heads: int,
        depth: int,
        seq_length: int,
        num_tokens: int,
        mask: bool,
        dropout: float,
        wide: bool,
        attention: AttentionSpec,
        bigram_keys: Tensor | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}.")
        self.seq_length = seq_length
        self.token_embedding = nn.Embedding(num_tokens, emb)
        self.pos_embedding = nn.Embedding(seq_length, emb)
        self.dropout = nn.Dropout(dropout)
        block = dict(mask=mask, dropout=dropout, wide=wide, attention=attention)
        self.tblocks = nn.Sequential(*(TransformerBlock(emb, heads, **block) for _ in range(depth)))
        self.norm = nn.LayerNorm(emb)
        self.bigram_embedding = None
        if bigram_keys is not None:
            self.bigram_embedding = BigramEmbedding(bigram_keys, num_tokens, emb, EMBEDDING_STD)
        # From N(0, 1), PyTorch's default, AdamW's small steps barely move a rare word and random
        # positions drown the words; from N(0, 0.02^2) a word is shaped by its first occurrences.
        for embedding in (self.token_embedding, self.pos_embedding):
            nn.init.normal_(embedding.weight, mean=0.0, std=EMBEDDING_STD)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (b, t) token ids; padding_mask: (b, t) bool, True at real tokens, kept out of
        attention -> (b, t, emb)."""
        if x.dim() != 2:
            raise ValueError(f"expected token ids of shape (b, t), got {tuple(x.shape)}.")
        t = x.size(1)
        if t > self.seq_length:
            raise ValueError(
                f"sequence of length {t} is longer than the model's seq_length {self.seq_length}; "
                "truncate the input or build the model with a larger seq_length."
            )
        h = self.token_embedding(x) + self.pos_embedding(torch.arange(t, device=x.device))[None]
        if self.bigram_embedding is not None:
            h = h + self.bigram_embedding(x)
        h = self.dropout(h)
        for block in self.tblocks:
            h = block(h, padding_mask)
        return self.norm(h)


class CTransformer(nn.Module):
    """Transformer for sequence classification (e.g. IMDB sentiment): log-probabilities over
    classes. Attention and pooling ignore padding, so a short review in a batch of longer ones
    is classified as it is alone. bigram_keys: (k,) ``previous * num_tokens + token`` of the
    word pairs that get their own embedding (:func:`former.data.frequent_bigrams`)."""

    def __init__(
        self,
        emb: int,
        heads: int,
        depth: int,
        seq_length: int,
        num_tokens: int,
        num_classes: int,
        max_pool: bool = True,
        dropout: float = 0.0,
        wide: bool = False,
        attention: AttentionSpec = None,
        bigram_keys: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_tokens, self.max_pool = num_tokens, max_pool
        self.backbone = _Backbone(
            emb, heads, depth, seq_length, num_tokens, False, dropout, wide, attention, bigram_keys
        )
        self.toprobs = nn.Linear(emb, num_classes)

    @property
    def num_bigrams(self) -> int:
        bigrams = self.backbone.bigram_embedding
        return 0 if bigrams is None else len(bigrams.keys)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (b, t) token ids; padding_mask: (b, t) bool, True for real tokens
        -> (b, num_classes) log-probabilities."""
        if padding_mask is not None and padding_mask.shape != x.shape:
            raise ValueError(
                f"padding_mask has shape {tuple(padding_mask.shape)}, expected the shape "
                f"of the token ids {tuple(x.shape)}."
            )
        h = self.backbone(x, padding_mask)
        if padding_mask is None:
            pooled = h.max(dim=1).values if self.max_pool else h.mean(dim=1)
        else:
            keep = padding_mask.unsqueeze(-1).to(h.dtype)
            if self.max_pool:
                pooled = h.masked_fill(keep == 0, float("-inf")).max(dim=1).values
                # An all-padding row would be -inf everywhere; give it zeros instead.
                pooled = torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))
            else:
                pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
        return F.log_softmax(self.toprobs(pooled), dim=1)


class GTransformer(nn.Module):
    """Causal transformer for autoregressive generation (e.g. enwik8, bytes as tokens): output
    i, log-probabilities of the next token, depends only on inputs 0..i."""

    def __init__(
        self,
        emb: int,
        heads: int,
        depth: int,
        seq_length: int,
        num_tokens: int,
        wide: bool = False,
        attention: AttentionSpec = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_tokens, self.seq_length = num_tokens, seq_length
        self.backbone = _Backbone(
            emb, heads, depth, seq_length, num_tokens, True, dropout, wide, attention
        )
        self.toprobs = nn.Linear(emb, num_tokens)

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, t) token ids -> (b, t, num_tokens) log-probabilities."""
        return F.log_softmax(self.toprobs(self.backbone(x)), dim=-1)
