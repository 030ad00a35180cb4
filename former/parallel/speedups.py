"""When do processes pay off? ``plot_speedups(measure_speedups(parallel_multihead_attention))``:
multi-head attention on threads and pools, against the heads one after the other, one thread."""

from __future__ import annotations

import io
import random
import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import ExitStack
from functools import partial
from typing import Any

import torch
from torch import Tensor

from former.parallel.pool import make_pool
from former.parallel.pool_attention import PoolAttention, SerialPool
from former.threads import torch_threads

ParallelAttention = Callable[..., Tensor]  # (queries, keys, values, heads, mask, pool)


def interleaved_timings(
    methods: dict[Hashable, tuple[int, Callable[[], Any]]], repeats: int = 5, warmup: int = 1
) -> dict[Hashable, list[float]]:
    """``repeats`` seconds per call of each method (name -> (torch threads, call)), in a new
    random order each repeat, so that a burst of load does not always hit one method."""
    for threads, fn in methods.values():
        with torch_threads(threads):
            for _ in range(warmup):
                fn()
    order = random.Random(0)
    samples: dict[Hashable, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name in order.sample(list(methods), len(methods)):
            threads, fn = methods[name]
            with torch_threads(threads):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return samples


def random_inputs(batch: int, heads: int, t: int, head_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values, (batch, t, heads * head_size), always the same."""
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, t, heads * head_size, generator=generator) for _ in range(3))


def label(method: str, workers: int) -> str:
    if method == "serial":
        return "serial, 1 thread"
    if method == "threads":
        return f"torch, {workers} thread" + ("s" if workers > 1 else "")
    return f"{workers} process" + ("es" if workers > 1 else "")


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
) -> list[dict[str, Any]]:
    """Median speed-ups over one thread for each sequence length: ``parallel_attention``
    (``(queries, keys, values, heads, mask, pool) -> output``, by default :class:`PoolAttention`)
    on a :class:`SerialPool` with each count of ``threads``, and on a pool per count of
    ``processes``. One row per (length, method): ``{"method", "workers", "label", "t", "batch",
    "heads", "head_size", "mask", "seconds", "speedup"}``."""
    attend = parallel_attention or (lambda q, k, v, h, m, pool: PoolAttention(pool)(q, k, v, h, m))
    shape = {"batch": batch, "heads": heads, "head_size": head_size, "mask": mask}
    rows = []
    with ExitStack() as stack:
        pools = {count: stack.enter_context(make_pool(count)) for count in processes}
        for t in lengths:
            run = partial(attend, *random_inputs(batch, heads, t, head_size), heads, mask)
            # A pool's caller only hands out work and gathers it: one thread for it leaves
            # the cores to the workers.
            methods = {("serial", 1): (1, partial(run, SerialPool()))}
            methods.update({("threads", n): (n, partial(run, SerialPool())) for n in threads})
            methods.update({("processes", n): (1, partial(run, pool)) for n, pool in pools.items()})
            samples = interleaved_timings(methods, repeats)
            baseline = statistics.median(samples["serial", 1])
            for (method, workers), times in samples.items():
                row = {"method": method, "workers": workers, "label": label(method, workers)}
                seconds = statistics.median(times)
                rows.append(
                    {**row, "t": t, **shape, "seconds": seconds, "speedup": baseline / seconds}
                )
    return rows


def plot_speedups(results: Sequence[dict[str, Any]]):
    """Speed-up against sequence length, one line per method: a matplotlib Figure, shown as an
    image when a notebook cell ends with it."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.subplots()
    for name in dict.fromkeys(row["label"] for row in results):
        rows = sorted((r for r in results if r["label"] == name), key=lambda r: r["t"])
        style = "--" if rows[0]["method"] == "serial" else "-"
        ts, speedups = [r["t"] for r in rows], [r["speedup"] for r in rows]
        axes.plot(ts, speedups, style, marker="o", label=name)
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

    def png() -> bytes:  # even if pyplot was never imported
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    figure._repr_png_ = png
    return figure
