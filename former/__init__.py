"""former: a small, readable Transformer framework with a pluggable attention core."""

from former.attention import AttentionNotImplementedError, resolve_attention
from former.modules import SelfAttention, TransformerBlock
from former.transformers import CTransformer, GTransformer

__all__ = [
    "AttentionNotImplementedError",
    "CTransformer",
    "GTransformer",
    "SelfAttention",
    "TransformerBlock",
    "resolve_attention",
]
