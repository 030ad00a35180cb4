"""Reference implementations of the three graded functions, which the judge compares learner
outputs with. Written by `python -m grader release` from the master notebook's solution
cells: edit those, not this file.
"""

import math

import torch


def multihead_attention(queries, keys, values, heads, mask=False):
    """queries, keys, values: (b, t, heads * s), already projected.

    Returns (b, t, heads * s): each head's scaled dot-product attention,
    head i in features [i*s:(i+1)*s]. mask=True: position i sees only j <= i.
    """
    b, t, hs = queries.size()
    s = hs // heads

    # Give each head its own batch entry: (b, t, h*s) -> (b*h, t, s).
    def fold_heads(x):
        return x.view(b, t, heads, s).transpose(1, 2).reshape(b * heads, t, s)

    q, k, v = fold_heads(queries), fold_heads(keys), fold_heads(values)

    # Scale before the product: large scores would saturate the softmax.
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(s)  # (b*h, t, t)
    if mask:
        future = torch.triu(torch.ones(t, t, dtype=torch.bool, device=scores.device), 1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=2)  # each row sums to 1 over the keys

    out = torch.bmm(weights, v)  # (b*h, t, s)
    # Undo the folding so head i ends up in features [i*s:(i+1)*s].
    return out.view(b, heads, t, s).transpose(1, 2).reshape(b, t, hs)


def attention_function(args):
    """One head. args = (q, k, v, mask), q/k/v of shape (b, t, s). Returns (b, t, s)."""
    q, k, v, mask = args
    s = q.size(-1)
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(s)
    if mask:
        t = scores.size(-1)
        future = torch.triu(torch.ones(t, t, dtype=torch.bool, device=scores.device), 1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.bmm(torch.softmax(scores, dim=2), v)


def parallel_multihead_attention(queries, keys, values, heads, mask=False, pool=None):
    """Same contract as multihead_attention, with one pool item per head."""
    b, t, hs = queries.size()
    s = hs // heads

    # Head i owns features [i*s:(i+1)*s]; contiguous copies pickle compactly.
    def head(x, i):
        return x[:, :, i * s : (i + 1) * s].contiguous()

    data_to_map = [(head(queries, i), head(keys, i), head(values, i), mask) for i in range(heads)]
    results = pool.map(attention_function, data_to_map)
    return torch.cat(results, dim=2)
