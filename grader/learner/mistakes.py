"""Catalogue of known wrong answers to the attention tasks.

Each :class:`Mistake` recomputes one WRONG version of multi-head attention, so that a diagnosis
can see whether it reproduces the learner's output. Titles and hints are shown to learners: plain
words that never give the answer away in code. This module ships to learners, so it writes no
attention out by hand: every mistake calls PyTorch's ``scaled_dot_product_attention`` (sdpa,
which graded functions may not call) with another scale, mask, argument order or reshape;
attention weights, where a mistake needs them, are sdpa's output for identity values.

Mistakes take q, k, v of shape (b, t, heads * s), the number of heads and the mask flag, and
return (b, t, heads * s) in the dtype they are given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from former.attention import merge_heads, split_heads

MistakeFn = Callable[[Tensor, Tensor, Tensor, int, bool], Tensor]


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer. needs_mask / needs_large_scores: it differs from the right answer
    only with mask=True / only when scores are large (hundreds)."""

    key: str
    title: str
    hint: str
    apply: MistakeFn
    needs_mask: bool = False
    needs_large_scores: bool = False


# Diagnoses try the mistakes in this order (the order they are defined in below).
MISTAKES: list[Mistake] = []


def _mistake(title: str, hint: str, **flags: bool) -> Callable[[MistakeFn], MistakeFn]:
    """Catalogue the decorated function under its own name."""

    def register(apply: MistakeFn) -> MistakeFn:
        MISTAKES.append(Mistake(apply.__name__, title, hint, apply, **flags))
        return apply

    return register


# -- building blocks ------------------------------------------------------------------------------


def _visible(t: int, device: torch.device, diagonal: int = 0) -> Tensor:
    """(t, t) bool, True where query i may see key j <= i + diagonal (sdpa's mask convention)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril(diagonal)


def _sdpa(
    q: Tensor, k: Tensor, v: Tensor, *, visible: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """sdpa on (..., t, s) tensors, ``visible`` (t, t) saying which keys each query may see.

    A query that may see no key gets NaN, as -inf scores through a softmax give (sdpa: zeros).
    """
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale)
    if visible is not None and not bool(visible.any(-1).all()):
        out = out.masked_fill(~visible.any(-1, keepdim=True), math.nan)
    return out


def _weights(q: Tensor, k: Tensor, visible: Tensor | None = None) -> Tensor:
    """Attention weights (..., t_q, t_k): sdpa's output for identity values."""
    *batch, _, _ = q.shape
    t_k = k.size(-2)
    identity = torch.eye(t_k, dtype=q.dtype, device=q.device).expand(*batch, t_k, t_k)
    return _sdpa(q, k, identity, visible=visible)


def _causal(q: Tensor, mask: bool) -> Tensor | None:
    return _visible(q.size(-2), q.device) if mask else None


def _per_head(fn: Callable[[Tensor, Tensor, Tensor, bool], Tensor]) -> MistakeFn:
    """Lift a per-head (b, heads, t, s) computation to the (b, t, heads * s) contract."""

    def apply(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: bool = False) -> Tensor:
        return merge_heads(
            fn(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), mask)
        )

    apply.__name__ = fn.__name__
    return apply


# -- the mistakes ------------------------------------------------------------------------------


@_mistake(
    "the scores are not scaled",
    "Divide the dot products q·k by sqrt(s), s being the size of ONE head, before the "
    "softmax; without it large scores saturate the softmax.",
)
@_per_head
def missing_scale(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    return _sdpa(q, k, v, visible=_causal(q, mask), scale=1.0)


@_mistake(
    "the scores are divided by s instead of sqrt(s)",
    "The scale is 1/sqrt(s): take the square root of the per-head size.",
)
@_per_head
def scale_one_over_s(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    return _sdpa(q, k, v, visible=_causal(q, mask), scale=1 / q.size(-1))


@_mistake(
    "the scores are scaled by the full embedding width, not one head's",
    "Use s = emb // heads, the size of one head, in 1/sqrt(s); not the width heads * s.",
)
def scale_sqrt_emb(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: bool = False) -> Tensor:
    emb = q.size(-1)  # heads * s: the full width instead of one head's
    qh, kh, vh = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    return merge_heads(_sdpa(qh, kh, vh, visible=_causal(qh, mask), scale=1 / math.sqrt(emb)))


@_mistake(
    "the scores are multiplied by sqrt(s) instead of divided",
    "Divide by sqrt(s) (or multiply by 1/sqrt(s)); multiplying makes the softmax sharper.",
)
@_per_head
def scale_times_sqrt_s(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    return _sdpa(q, k, v, visible=_causal(q, mask), scale=math.sqrt(q.size(-1)))


@_mistake(
    "the softmax runs over the wrong axis (over queries instead of keys)",
    "For scores of shape (..., t_queries, t_keys), take the softmax over the LAST "
    "dimension, so that each query's weights over the keys sum to 1.",
)
@_per_head
def softmax_wrong_axis(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    # Normalising over queries is normalising over keys with the roles of q and k swapped
    # (key j sees the queries i >= j), then transposing back.
    visible_queries = _visible(q.size(-2), q.device).T if mask else None
    return _weights(k, q, visible_queries).transpose(-2, -1) @ v


@_mistake(
    "the heads are split with a plain view to (b, heads, t, s), without transposing",
    "Split as view(b, t, heads, s) and then transpose(1, 2) to get (b, heads, t, s); a "
    "direct view mixes positions and heads. Undo both steps at the end.",
)
def heads_not_transposed(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: bool = False) -> Tensor:
    b, t, hs = q.shape
    qh, kh, vh = (x.reshape(b, heads, t, hs // heads) for x in (q, k, v))
    return _sdpa(qh, kh, vh, visible=_causal(qh, mask)).reshape(b, t, hs)


@_mistake(
    "the output is reshaped to (b, t, heads * s) without transposing the heads back",
    "The attention result is (b, heads, t, s): transpose(1, 2) to (b, t, heads, s) "
    "before reshaping to (b, t, heads * s), so head i lands in features [i*s:(i+1)*s].",
)
def output_not_transposed(
    q: Tensor, k: Tensor, v: Tensor, heads: int, mask: bool = False
) -> Tensor:
    qh, kh, vh = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    return _sdpa(qh, kh, vh, visible=_causal(qh, mask)).reshape(q.shape)  # from (b, h, t, s)


@_mistake(
    "the causal mask is not applied (mask=True is ignored)",
    "When mask is True, set the scores of keys j > i to -inf before the softmax, so "
    "position i cannot look at later positions.",
    needs_mask=True,
)
@_per_head
def mask_missing(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    return _sdpa(q, k, v)


@_mistake(
    "the causal mask is inverted: positions see the future and not the past",
    "Hide the scores ABOVE the diagonal (key j > query i), e.g. with triu(..., diagonal=1); "
    "you hid the ones below it.",
    needs_mask=True,
)
@_per_head
def mask_inverted(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    return _sdpa(q, k, v, visible=_visible(q.size(-2), q.device).T if mask else None)


@_mistake(
    "the causal mask also hides the diagonal (a position cannot see itself)",
    "Position i may attend to j <= i, itself included: mask with diagonal=1, not 0. "
    "(The first position then has nothing left to attend to and gives NaN.)",
    needs_mask=True,
)
@_per_head
def mask_hides_diagonal(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    return _sdpa(q, k, v, visible=_visible(q.size(-2), q.device, diagonal=-1) if mask else None)


@_mistake(
    "the mask is applied after the softmax (weights zeroed, not renormalised)",
    "Mask the SCORES with -inf before the softmax; zeroing weights afterwards leaves rows "
    "that no longer sum to 1.",
    needs_mask=True,
)
@_per_head
def mask_after_softmax(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    weights = _weights(q, k)
    if mask:
        weights = weights * _visible(q.size(-2), q.device)
    return weights @ v


@_mistake(
    "keys and values are swapped",
    "The weights come from queries · keys; the output is the weighted sum of the VALUES.",
)
@_per_head
def keys_values_swapped(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    return _sdpa(q, v, k, visible=_causal(q, mask))


@_mistake(
    "the softmax overflows on large scores (inf/NaN)",
    "A hand-written exp(x) / sum(exp(x)) overflows once scores reach a few hundred; "
    "subtract each row's maximum before exp, or use torch.softmax.",
    needs_large_scores=True,
)
@_per_head
def unstable_softmax(q: Tensor, k: Tensor, v: Tensor, mask: bool) -> Tensor:
    # exp(x) / sum(exp(x)) without subtracting the row maximum, in this dtype: a row whose
    # largest score overflows exp() gives inf / inf = NaN; a row whose exps are finite but
    # sum to inf gives all-zero weights; a row whose exps all underflow gives 0 / 0 = NaN.
    # Other rows are right. The log of the row's sum of exps is its maximum minus the log
    # of the largest (stable) weight.
    finfo = torch.finfo(q.dtype)
    overflow = math.log(finfo.max)
    # exp(x) rounds to 0 below half the smallest subnormal number, smallest_normal * eps
    underflow = math.log(finfo.smallest_normal) + math.log(finfo.eps) - math.log(2)
    visible = _causal(q, mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if visible is not None:
        scores = scores.masked_fill(~visible, -math.inf)
    top = scores.amax(dim=-1, keepdim=True)
    log_sum = top - _weights(q, k, visible).amax(dim=-1, keepdim=True).log()
    out = _sdpa(q, k, v, visible=visible).masked_fill(log_sum > overflow, 0.0)
    return out.masked_fill((top > overflow) | (top < underflow), math.nan)


MISTAKES_BY_KEY: dict[str, Mistake] = {m.key: m for m in MISTAKES}

# Where in a learner's function each mistake usually sits: regular expressions tried in turn,
# the first line matching one is the line the first ✗ points at (the last matching line for
# mistakes made at the end).
LOOK_FOR: dict[str, tuple[str, ...]] = {
    "missing_scale": (r"scores\s*=", r"@|bmm|matmul|einsum"),
    "scale_one_over_s": (r"sqrt|\*\*\s*0?\.5", r"scale"),
    "scale_sqrt_emb": (r"sqrt|\*\*\s*0?\.5", r"scale"),
    "scale_times_sqrt_s": (r"sqrt|\*\*\s*0?\.5", r"scale"),
    "softmax_wrong_axis": (r"softmax", r"exp\("),
    "heads_not_transposed": (r"view|reshape|split|chunk", r"permute|transpose"),
    "output_not_transposed": (r"view|reshape|cat\(", r"permute|transpose"),
    "mask_missing": (r"\bif\b.*mask", r"masked_fill|triu|tril"),
    "mask_inverted": (r"triu|tril", r"masked_fill|inf", r"mask"),
    "mask_hides_diagonal": (r"triu|tril", r"masked_fill|inf", r"mask"),
    "mask_after_softmax": (r"masked_fill|triu|tril|\*\s*mask", r"mask"),
    "keys_values_swapped": (r"@|bmm|matmul|einsum",),
    "unstable_softmax": (r"exp\(", r"softmax"),
}
LOOK_AT_LAST = {"output_not_transposed"}
