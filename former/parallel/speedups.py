"""When do processes pay off? Time multi-head attention serially, on threads and on pools.

In the notebook::

    results = measure_speedups(parallel_multihead_attention, lengths=(32, 128, 512))
    plot_speedups(results)

Every speed-up is against the same heads computed one after the other in this
process with a single thread. Timings are medians over repeats, and the methods
take turns within each repeat, so a burst of load on a shared machine hits all
of them rather than one.
"""

from __future__ import annotations

import io
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from former.parallel.attention import PoolAttention, SerialPool
from former.parallel.pool import make_pool, torch_threads

ParallelAttention = Callable[..., Tensor]  # (queries, keys, values, heads, mask, pool)


def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` wrapped to run with ``n`` torch threads."""

    def run() -> Any:
        with torch_threads(n):
            return fn()

    return run


def interleaved_timings(
    methods: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of each method, ``repeats`` samples each, the methods taking turns.

    Each repeat runs the methods in a new random order, so that no method always
    runs right after the same other one: a pool's workers may still be tidying
    up after their call, and that must not always land on the same neighbour.
    """
    for fn in methods.values():
        for _ in range(warmup):
            fn()
    names = list(methods)
    order = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in order.sample(names, len(names)):
            start = time.perf_counter()
            methods[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def interleaved_medians(
    methods: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each method; see :func:`interleaved_timings`."""
    samples = interleaved_timings(methods, repeats, warmup)
    return {name: statistics.median(values) for name, values in samples.items()}


def pool_attention(
    queries: Tensor, keys: Tensor, values: Tensor, heads: int, mask: bool = False, pool: Any = None
) -> Tensor:
    """The parallel contract, ``parallel_multihead_attention``, done by :class:`PoolAttention`."""
    return PoolAttention(pool)(queries, keys, values, heads, mask)


def random_inputs(
    batch: int, heads: int, t: int, head_size: int, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values of shape (batch, t, heads * head_size)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, t, heads * head_size)
    return tuple(torch.randn(shape, generator=generator) for _ in range(3))


def measure_speedups(
    parallel_attention: ParallelAttention | None = None,
    *,
    lengths: Sequence[int] = (32, 128, 512),
    batch: int = 4,
    heads: int = 8,
    head_size: int = 16,
    mask: bool = False,
    processes: Sequence[int] = (1, 2),
    threads: Sequence[int] = (2,),
    repeats: int = 5,
    start_method: str | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Speed-up of pools and of torch threads over one thread, for each sequence length.

    parallel_attention: ``(queries, keys, values, heads, mask, pool) -> output``,
    such as your ``parallel_multihead_attention`` (its head function must live in
    a module); by default former's own. It is timed with a one-thread
    :class:`SerialPool` (the baseline), with one thread per count in
    ``threads``, and with a pool per count in ``processes``.
    Inputs are (batch, t, heads * head_size).

    Returns one row per (length, method): ``{"method": "serial" | "threads" |
    "processes", "workers", "label", "t", "batch", "heads", "head_size",
    "mask", "seconds", "speedup"}``. Pass it to :func:`plot_speedups`.
    """
    attend = parallel_attention or pool_attention
    serial = SerialPool()
    pools = {}
    try:
        for count in processes:
            pools[count] = make_pool(count, start_method)
        rows = []
        for t in lengths:
            q, k, v = random_inputs(batch, heads, t, head_size, seed)

            def run(pool: Any, q: Tensor = q, k: Tensor = k, v: Tensor = v) -> Callable[[], Any]:
                return lambda: attend(q, k, v, heads, mask, pool)

            methods = {("serial", 1): with_threads(1, run(serial))}
            for count in threads:
                methods[("threads", count)] = with_threads(count, run(serial))
            for count, pool in pools.items():
                # The parent only hands out work and gathers it: one thread leaves the
                # cores to the workers.
                methods[("processes", count)] = with_threads(1, run(pool))
            medians = interleaved_medians(
                {f"{m}:{w}": fn for (m, w), fn in methods.items()}, repeats=repeats
            )
            baseline = medians["serial:1"]
            for method, workers in methods:
                seconds = medians[f"{method}:{workers}"]
                rows.append(
                    {
                        "method": method,
                        "workers": workers,
                        "label": describe_method(method, workers),
                        "t": t,
                        "batch": batch,
                        "heads": heads,
                        "head_size": head_size,
                        "mask": mask,
                        "seconds": seconds,
                        "speedup": baseline / seconds,
                    }
                )
        return rows
    finally:
        for pool in pools.values():
            pool.close()


def describe_method(method: str, workers: int) -> str:
    """A legend label such as ``"2 processes"`` or ``"torch, 2 threads"``."""
    if method == "serial":
        return "serial, 1 thread"
    if method == "threads":
        return f"torch, {workers} thread{'s' if workers > 1 else ''}"
    return f"{workers} process{'es' if workers > 1 else ''}"


def plot_speedups(results: Sequence[dict[str, Any]]):
    """Speed-up against sequence length, one line per method; returns a matplotlib Figure.

    results: rows from :func:`measure_speedups`.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.subplots()
    labels = list(dict.fromkeys(row["label"] for row in results))
    for label in labels:
        rows = sorted((r for r in results if r["label"] == label), key=lambda r: r["t"])
        style = "--" if rows[0]["method"] == "serial" else "-"
        axes.plot(
            [r["t"] for r in rows], [r["speedup"] for r in rows], style, marker="o", label=label
        )
    most = max((r["workers"] for r in results if r["method"] != "serial"), default=1)
    axes.axhline(most, color="grey", linewidth=0.8, linestyle=":")
    axes.annotate(f"ideal for {most} cores", (0.01, most), xycoords=("axes fraction", "data"))
    axes.set_xscale("log", base=2)
    axes.set_xlabel("sequence length t")
    axes.set_ylabel("speed-up over 1 thread")
    if results:
        first = results[0]
        axes.set_title(
            f"Multi-head attention, batch {first['batch']}, {first['heads']} heads "
            f"of size {first['head_size']}"
        )
    axes.legend()
    # Shown as an image when a notebook cell ends with it, even if pyplot was never imported.
    figure._repr_png_ = lambda: figure_png(figure)
    return figure


def figure_png(figure: Any) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
