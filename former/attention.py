"""The attention plug: ``attention=`` is a callable ``f(queries, keys, values, heads,
mask=False)`` (the learner contract), an import string ``"module:function"`` or ``"sdpa"``.
There is deliberately no default: :class:`AttentionNotImplementedError` points to Task 1."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

AttentionFn = Callable[..., Tensor]
AttentionSpec = AttentionFn | str | None


class AttentionNotImplementedError(NotImplementedError):
    """A model built without an attention function."""

    def __init__(self) -> None:
        super().__init__(
            "This model has no attention function yet. Implement "
            "`multihead_attention(queries, keys, values, heads, mask=False)` in Task 1 "
            "and pass it in, e.g. CTransformer(..., attention=multihead_attention) "
            "(or attention='my_transformer_model:multihead_attention'); "
            "to try the pipes first, use attention='sdpa'."
        )


class AttentionShapeError(ValueError):
    """The plugged attention function returned a tensor of the wrong shape."""


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(b, t, heads * s) -> (b, heads, t, s)."""
    b, t, hs = x.shape
    return x.reshape(b, t, heads, hs // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(b, heads, t, s) -> (b, t, heads * s), head i in features [i*s:(i+1)*s]."""
    b, h, t, s = x.shape
    return x.transpose(1, 2).reshape(b, t, h * s)


def sdpa_attention(
    queries: Tensor, keys: Tensor, values: Tensor, heads: int, mask: bool = False
) -> Tensor:
    """The learner contract through PyTorch's fused kernel (the speed baseline):
    (b, t, heads * s) projected inputs -> (b, t, heads * s)."""
    q, k, v = (split_heads(x, heads) for x in (queries, keys, values))
    return merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=mask))


BUILTIN_ATTENTION: dict[str, AttentionFn] = {"sdpa": sdpa_attention}


def import_attention(spec: str) -> AttentionFn:
    """Import ``"module:function"``; errors say which part failed and what to do."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(
            f"Unknown attention {spec!r}: use 'sdpa' or an import string "
            "'module:function' such as 'my_transformer_model:multihead_attention'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"Cannot import module {module_name!r} for attention {spec!r} ({error}). "
            "Write it next to where you run (the notebook's %%writefile cell) or add its "
            "folder to PYTHONPATH."
        ) from error
    if not hasattr(module, attr):
        defined = ", ".join(n for n in dir(module) if not n.startswith("_")) or "nothing public"
        raise ImportError(
            f"Module {module_name!r} has no function {attr!r} (attention {spec!r}). "
            f"Check the name; the module defines: {defined}."
        )
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{spec!r} is a {type(fn).__name__}, not a function.")
    return fn


def resolve_attention(spec: AttentionSpec) -> AttentionFn:
    """Turn what a user passed as ``attention=`` into a callable."""
    if spec is None:
        raise AttentionNotImplementedError()
    if isinstance(spec, str):
        return BUILTIN_ATTENTION.get(spec) or import_attention(spec)
    if callable(spec):
        return spec
    raise TypeError(
        f"attention must be a function, 'sdpa', or 'module:function', not {type(spec).__name__}."
    )


def check_attention_output(output: object, queries: Tensor, heads: int, fn: AttentionFn) -> None:
    """Raise :class:`AttentionShapeError` unless ``output`` has the shape of ``queries``."""
    name = getattr(fn, "__name__", repr(fn))
    if not isinstance(output, Tensor):
        raise AttentionShapeError(
            f"attention function {name!r} returned {type(output).__name__}, expected a tensor "
            f"of shape (b, t, heads*s) = {tuple(queries.shape)}. Did you forget `return`?"
        )
    if output.shape != queries.shape:
        b, t, hs = queries.shape
        raise AttentionShapeError(
            f"attention function {name!r} returned shape {tuple(output.shape)}, expected "
            f"(b, t, heads*s) = ({b}, {t}, {heads}*{hs // heads}) = {tuple(queries.shape)}. "
            "Concatenate the heads back along the last dimension (head i in features "
            "[i*s:(i+1)*s])."
        )
