"""A model's attention heads on a pool: ``CTransformer(..., attention=PoolAttention(pool))``.
Gradients do not cross process boundaries, so backward is mapped over the pool too."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from former.attention import sdpa_attention
from former.parallel.pool import HeadPool

HeadFunction = Callable[[tuple[Tensor, Tensor, Tensor, bool]], Tensor]
MapPool = Any  # anything with multiprocessing.Pool's map(fn, iterable)
# A piece's (rows, t, t) float32 scores stay within this many bytes, so that they stay in a
# core's L2 cache (1 MiB or more on current CPUs) rather than stream through shared memory.
PIECE_SCORE_BYTES = 1 << 20


class SerialPool:
    """A pool that maps in this process: the baseline for speed-ups, and a way to debug a
    function before parallelising it."""

    def map(self, fn: Callable[[Any], Any], iterable: Any, chunksize: int | None = None) -> list:
        return [fn(item) for item in iterable]


def attention_head(args: tuple[Tensor, Tensor, Tensor, bool]) -> Tensor:
    """One head: args = (q, k, v, mask), each (b, t, s), mask=True causal; (b, t, s) out."""
    q, k, v, mask = args
    return sdpa_attention(q, k, v, 1, mask)


def head_gradients(args: tuple[HeadFunction, Tensor, Tensor, Tensor, bool, Tensor]) -> tuple:
    """(grad_q, grad_k, grad_v) of one head, its forward pass recomputed;
    args = (head_function, q, k, v, mask, grad_output), tensors (b, t, s)."""
    head_function, q, k, v, mask, grad_output = args
    with torch.enable_grad():
        q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
        out = head_function((q, k, v, mask))
        grads = torch.autograd.grad(out, (q, k, v), grad_output, allow_unused=True)
    pairs = zip((q, k, v), grads, strict=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in pairs)


class InPieces:
    """A head function applied to ``rows`` batch entries at a time (inside the worker, one pool
    item per head), so that each piece's scores stay in cache; it keeps the function's name
    and module, for errors and reloading."""

    def __init__(self, head_function: HeadFunction, rows: int) -> None:
        functools.update_wrapper(self, head_function)
        self.head_function, self.rows = head_function, rows

    def __call__(self, args: tuple[Tensor, Tensor, Tensor, bool]) -> Tensor:
        q, k, v, mask = args
        r, f = self.rows, self.head_function
        if q.size(0) <= r:
            return f(args)
        return torch.cat(
            [f((q[i : i + r], k[i : i + r], v[i : i + r], mask)) for i in range(0, q.size(0), r)]
        )


def rows_per_piece(t: int) -> int:
    """Batch entries per piece whose (rows, t, t) float32 scores fit :data:`PIECE_SCORE_BYTES`."""
    return max(1, PIECE_SCORE_BYTES // max(1, t * t * 4))


def head_slices(x: Tensor, heads: int, pool: MapPool) -> list[Tensor]:
    """(b, t, heads * s) -> heads tensors (b, t, s): views for a :class:`HeadPool`, which
    copies them itself, compact copies for other pools (which pickle a view's whole storage)."""
    s = x.size(-1) // heads
    views = [x[:, :, i * s : (i + 1) * s] for i in range(heads)]
    return views if isinstance(pool, HeadPool) else [view.contiguous() for view in views]


def map_heads(queries: Tensor, keys: Tensor, values: Tensor, plan: tuple) -> Tensor:
    """Multi-head attention, one pool item per head, (b, t, heads * s) in and out."""
    pool, head_function, heads, mask = plan
    slices = (head_slices(x, heads, pool) for x in (queries, keys, values))
    items = [(q, k, v, mask) for q, k, v in zip(*slices, strict=True)]
    return torch.cat(pool.map(head_function, items), dim=2)


class PooledHeads(torch.autograd.Function):
    """:func:`map_heads` that trains: a worker's output arrives with no autograd history,
    so backward maps :func:`head_gradients` over the pool, recomputing each head there."""

    @staticmethod
    def forward(ctx: Any, queries: Tensor, keys: Tensor, values: Tensor, plan: tuple) -> Tensor:
        ctx.save_for_backward(queries, keys, values)
        ctx.plan = plan
        return map_heads(queries, keys, values, plan)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        pool, head_function, heads, mask = ctx.plan
        slices = (head_slices(x, heads, pool) for x in (*ctx.saved_tensors, grad_output))
        items = [(head_function, q, k, v, mask, g) for q, k, v, g in zip(*slices, strict=True)]
        grads = pool.map(head_gradients, items)
        grad_q, grad_k, grad_v = (torch.cat([g[i] for g in grads], dim=2) for i in range(3))
        return grad_q, grad_k, grad_v, None


class PoolAttention:
    """Multi-head attention whose heads run on ``pool`` (a :class:`HeadPool`, a
    ``multiprocessing.Pool`` or a :class:`SerialPool`), usable as ``attention=`` in models.
    head_function: ``(q, k, v, mask) -> out`` on (b, t, s), in a module (Task 2's
    ``attention_function``); by default former's. split_batch: :class:`InPieces`."""

    def __init__(
        self, pool: MapPool, head_function: HeadFunction | None = None, split_batch: bool = True
    ) -> None:
        if not hasattr(pool, "map"):
            raise TypeError(
                f"PoolAttention needs a pool with a .map method (make_pool()), got "
                f"{type(pool).__name__}."
            )
        self.pool, self.head_function = pool, head_function or attention_head
        self.split_batch = split_batch
        self.__name__ = "PoolAttention"

    def __call__(
        self, queries: Tensor, keys: Tensor, values: Tensor, heads: int, mask: bool = False
    ) -> Tensor:
        if queries.size(-1) % heads != 0:
            raise ValueError(
                f"the last dimension ({queries.size(-1)}) must be heads * s with heads={heads}."
            )
        if queries.device.type != "cpu":
            raise ValueError(
                f"PoolAttention runs heads in CPU worker processes, but the inputs are on "
                f"{queries.device}. Move the model to the CPU (model.cpu()), or use "
                "attention='sdpa' on an accelerator."
            )
        head_function, rows = self.head_function, rows_per_piece(queries.size(1))
        if self.split_batch and queries.size(0) > rows:
            head_function = InPieces(head_function, rows)
        plan = (self.pool, head_function, heads, mask)
        if torch.is_grad_enabled() and any(x.requires_grad for x in (queries, keys, values)):
            return PooledHeads.apply(queries, keys, values, plan)
        # No gradients: skip autograd.Function, whose overhead shows in small heads' timings.
        return map_heads(queries, keys, values, plan)

    def __deepcopy__(self, memo: dict) -> PoolAttention:
        return self  # copies of a model share the pool (a pool cannot be copied)

    def __repr__(self) -> str:
        name = getattr(self.head_function, "__name__", repr(self.head_function))
        return f"PoolAttention({self.pool!r}, head_function={name})"
