"""Learner code written out by hand, for the grader's tests: correct answers in several
styles and each catalogued mistake. The grader's own catalogue (``grader.learner.mistakes``) is
built on PyTorch's fused attention, which graded functions may not execute, so it cannot
stand in for a learner's function."""

from __future__ import annotations

import math

import torch

from solutions import attention as solution


def written_out(
    q, k, v, heads, mask, *, scale=None, hidden=None, softmax=None, view=None, merge=None
):
    """Multi-head attention as a learner writes it; each keyword swaps in one wrong step."""
    b, t, e = q.shape
    s = e // heads
    split = view or (lambda x: x.view(b, t, heads, s).transpose(1, 2))
    qh, kh, vh = split(q), split(k), split(v)
    scores = qh @ kh.transpose(-2, -1) * (1 / math.sqrt(s) if scale is None else scale)
    if mask:
        future = torch.ones(t, t, dtype=torch.bool).triu(1) if hidden is None else hidden(t)
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1) if softmax is None else softmax(scores)
    out = weights @ vh
    return out.transpose(1, 2).reshape(b, t, e) if merge is None else merge(out)


def _mask_after_softmax(q, k, v, heads, mask):
    b, t, e = q.shape
    s = e // heads
    qh, kh, vh = (x.view(b, t, heads, s).transpose(1, 2) for x in (q, k, v))
    weights = torch.softmax(qh @ kh.transpose(-2, -1) / math.sqrt(s), dim=-1)
    if mask:
        weights = weights.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), 0.0)
    return (weights @ vh).transpose(1, 2).reshape(b, t, e)


def _exp_over_sum(scores):
    exps = torch.exp(scores)  # no maximum subtracted
    return exps / exps.sum(dim=-1, keepdim=True)


HAND_WRITTEN_MISTAKES = {
    "missing_scale": lambda q, k, v, h, m: written_out(q, k, v, h, m, scale=1.0),
    "scale_one_over_s": lambda q, k, v, h, m: written_out(q, k, v, h, m, scale=h / q.size(-1)),
    "scale_sqrt_emb": lambda q, k, v, h, m: written_out(
        q, k, v, h, m, scale=1 / math.sqrt(q.size(-1))
    ),
    "scale_times_sqrt_s": lambda q, k, v, h, m: written_out(
        q, k, v, h, m, scale=math.sqrt(q.size(-1) // h)
    ),
    "softmax_wrong_axis": lambda q, k, v, h, m: written_out(
        q, k, v, h, m, softmax=lambda x: torch.softmax(x, dim=-2)
    ),
    "heads_not_transposed": lambda q, k, v, h, m: written_out(
        q,
        k,
        v,
        h,
        m,
        view=lambda x: x.reshape(x.size(0), h, x.size(1), -1),
        merge=lambda x: x.reshape(x.size(0), x.size(2), -1),
    ),
    "output_not_transposed": lambda q, k, v, h, m: written_out(
        q, k, v, h, m, merge=lambda x: x.reshape(x.size(0), x.size(2), -1)
    ),
    "mask_missing": lambda q, k, v, h, m: written_out(q, k, v, h, False),
    "mask_inverted": lambda q, k, v, h, m: written_out(
        q, k, v, h, m, hidden=lambda t: torch.ones(t, t, dtype=torch.bool).tril(-1)
    ),
    "mask_hides_diagonal": lambda q, k, v, h, m: written_out(
        q, k, v, h, m, hidden=lambda t: torch.ones(t, t, dtype=torch.bool).triu(0)
    ),
    "mask_after_softmax": _mask_after_softmax,
    "keys_values_swapped": lambda q, k, v, h, m: written_out(q, v, k, h, m),
    "unstable_softmax": lambda q, k, v, h, m: written_out(q, k, v, h, m, softmax=_exp_over_sum),
}


# -- correct answers in several styles -------------------------------------------------------


def bmm_style(queries, keys, values, heads, mask=False):
    return solution.multihead_attention(queries, keys, values, heads, mask)


def einsum_style(queries, keys, values, heads, mask=False):
    b, t, e = queries.shape
    s = e // heads
    q, k, v = (x.reshape(b, t, heads, s) for x in (queries, keys, values))
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / s**0.5
    if mask:
        scores = scores + torch.full((t, t), float("-inf"), dtype=scores.dtype).triu(1)
    return torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(b, t, e)


def loop_style(queries, keys, values, heads, mask=False):
    s = queries.size(-1) // heads
    outs = []
    for i in range(heads):
        q, k, v = (x[:, :, i * s : (i + 1) * s] for x in (queries, keys, values))
        scores = q @ k.transpose(1, 2) / math.sqrt(s)
        if mask:
            t = scores.size(-1)
            scores = scores.masked_fill(torch.tril(torch.ones(t, t)) == 0, -1e9)
        outs.append(torch.softmax(scores, -1) @ v)
    return torch.cat(outs, -1)


def float64_style(queries, keys, values, heads, mask=False):
    out = einsum_style(queries.double(), keys.double(), values.double(), heads, mask)
    return out.to(queries.dtype)


def stable_by_hand_style(queries, keys, values, heads, mask=False):
    """A hand-written softmax that subtracts the row maximum: stable, so correct."""
    b, t, e = queries.shape
    s = e // heads
    q, k, v = (x.view(b, t, heads, s).transpose(1, 2) for x in (queries, keys, values))
    scores = q @ k.transpose(-1, -2) / math.sqrt(s)
    if mask:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    exps = torch.exp(scores - scores.amax(-1, keepdim=True))
    return (exps / exps.sum(-1, keepdim=True) @ v).transpose(1, 2).reshape(b, t, e)


def float32_scale_style(queries, keys, values, heads, mask=False):
    """The scale as a float32 tensor: float64 inputs then carry float32 rounding, which is right."""
    b, t, e = queries.shape
    s = e // heads
    q, k, v = (x.view(b, t, heads, s).transpose(1, 2) for x in (queries, keys, values))
    scores = q @ k.transpose(-1, -2) / torch.sqrt(torch.tensor(s, dtype=torch.float32))
    if mask:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, e)


def float32_softmax_style(queries, keys, values, heads, mask=False):
    """The softmax computed in float32 and cast back: right for float64 inputs too."""
    b, t, e = queries.shape
    s = e // heads
    q, k, v = (x.reshape(b, t, heads, s).permute(0, 2, 1, 3) for x in (queries, keys, values))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(s)
    if mask:
        scores = scores + torch.triu(torch.full((t, t), float("-inf")), 1).to(scores.dtype)
    weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
    return torch.matmul(weights, v).permute(0, 2, 1, 3).reshape(b, t, e)


def fixed_table_style(size: int):
    """A causal mask cut from a fixed size x size table: right up to ``size`` positions only."""
    table = torch.ones(size, size, dtype=torch.bool).triu(1)

    def multihead_attention(queries, keys, values, heads, mask=False):
        b, t, e = queries.shape
        q, k, v = (x.view(b, t, heads, e // heads).transpose(1, 2) for x in (queries, keys, values))
        scores = q @ k.transpose(-1, -2) / math.sqrt(e // heads)
        if mask:
            scores = scores.masked_fill(table[:t, :t], float("-inf"))
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e)

    return multihead_attention


STYLES = [
    bmm_style,
    einsum_style,
    loop_style,
    float64_style,
    stable_by_hand_style,
    float32_scale_style,
    float32_softmax_style,
]


def head_by_einsum(args):
    q, k, v, mask = args
    scores = torch.einsum("bid,bjd->bij", q, k) / math.sqrt(q.size(-1))
    if mask:
        t = q.size(1)
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("bij,bjd->bid", scores.softmax(-1), v)


def parallel_with(attention_function):
    def parallel_multihead_attention(queries, keys, values, heads, mask=False, pool=None):
        s = queries.size(-1) // heads
        data_to_map = [
            tuple(x[:, :, i * s : (i + 1) * s] for x in (queries, keys, values)) + (mask,)
            for i in range(heads)
        ]
        return torch.cat(pool.map(attention_function, data_to_map), dim=-1)

    return parallel_multihead_attention


# -- mistakes written in several idioms: each keyword swaps in one wrong step ------------------


def _hidden(t, how):
    """(t, t) bool, True where the scores are hidden, for each way of getting the mask."""
    if how == "missing":
        return torch.zeros(t, t, dtype=torch.bool)
    if how == "inverted":
        return torch.ones(t, t, dtype=torch.bool).tril(-1)
    if how == "diagonal":
        return torch.ones(t, t, dtype=torch.bool).triu(0)
    return torch.ones(t, t, dtype=torch.bool).triu(1)


def einsum_idiom(queries, keys, values, heads, mask=False, *, scaled=True, how="", after=False):
    b, t, e = queries.shape
    s = e // heads
    q, k, v = (x.reshape(b, t, heads, s) for x in (queries, keys, values))
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / (s**0.5 if scaled else 1.0)
    hidden = _hidden(t, how)
    if mask and not after:
        scores = scores.masked_fill(hidden, float("-inf"))
    weights = scores.softmax(-1)
    if mask and after:
        weights = weights * ~hidden
    return torch.einsum("bhij,bjhd->bihd", weights, v).reshape(b, t, e)


def loop_idiom(queries, keys, values, heads, mask=False, *, scaled=True, how="", after=False):
    s = queries.size(-1) // heads
    t = queries.size(1)
    outs = []
    for i in range(heads):
        q, k, v = (x[:, :, i * s : (i + 1) * s] for x in (queries, keys, values))
        scores = q @ k.transpose(1, 2)
        if scaled:
            scores = scores / math.sqrt(s)
        keep = (~_hidden(t, how)).float()
        if mask and not after:
            scores = scores * keep - 1e9 * (1 - keep)  # a big negative number, not -inf
        weights = torch.softmax(scores, -1)
        if mask and after:
            weights = weights * keep
        outs.append(weights @ v)
    return torch.cat(outs, -1)


def bmm_idiom(queries, keys, values, heads, mask=False, *, scaled=True, how="", after=False):
    b, t, e = queries.size()
    s = e // heads

    def fold(x):
        return x.view(b, t, heads, s).transpose(1, 2).reshape(b * heads, t, s)

    q, k, v = fold(queries), fold(keys), fold(values)
    scores = torch.bmm(q, k.transpose(1, 2))
    if scaled:
        scores = scores / math.sqrt(s)
    hidden = _hidden(t, how)
    if mask and not after:
        scores[:, hidden] = float("-inf")
    weights = torch.softmax(scores, dim=2)
    if mask and after:
        weights = weights.masked_fill(hidden, 0.0)
    out = torch.bmm(weights, v)
    return out.view(b, heads, t, s).transpose(1, 2).reshape(b, t, e)


IDIOMS = {"einsum": einsum_idiom, "loop": loop_idiom, "bmm": bmm_idiom}
# mistake key -> the keywords that make it
IDIOM_MISTAKES = {
    "missing_scale": {"scaled": False},
    "mask_missing": {"how": "missing"},
    "mask_inverted": {"how": "inverted"},
    "mask_hides_diagonal": {"how": "diagonal"},
    "mask_after_softmax": {"after": True},
}


def in_idiom(idiom: str, mistake: str = ""):
    """``multihead_attention`` written in ``idiom``, with ``mistake`` (a key of IDIOM_MISTAKES)."""
    function = IDIOMS[idiom]
    options = IDIOM_MISTAKES.get(mistake, {})

    def multihead_attention(queries, keys, values, heads, mask=False):
        return function(queries, keys, values, heads, mask, **options)

    multihead_attention.__qualname__ = f"{idiom}_{mistake or 'right'}"
    return multihead_attention
