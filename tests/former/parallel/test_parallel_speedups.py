"""The notebook's speed-up helpers: rows for every method and length, and a figure."""

from __future__ import annotations

import pytest

from former.parallel import measure_speedups, plot_speedups
from former.parallel.speedups import interleaved_timings
from solutions.attention import parallel_multihead_attention


@pytest.mark.timeout(120)
def test_measure_speedups_with_the_learner_function_then_plot():
    results = measure_speedups(
        parallel_multihead_attention,
        lengths=(8, 16),
        batch=1,
        heads=2,
        head_size=4,
        processes=(2,),
        threads=(2,),
        repeats=1,
    )
    assert {(r["method"], r["workers"], r["t"]) for r in results} == {
        (method, workers, t)
        for method, workers in (("serial", 1), ("threads", 2), ("processes", 2))
        for t in (8, 16)
    }
    for row in results:
        assert row["seconds"] > 0 and row["speedup"] > 0
        if row["method"] == "serial":
            assert row["speedup"] == 1.0

    figure = plot_speedups(results)
    axes = figure.axes[0]
    assert axes.get_xlabel() == "sequence length t"
    labels = {line.get_label() for line in axes.get_lines()}
    assert {"serial, 1 thread", "torch, 2 threads", "2 processes"} <= labels
    assert figure._repr_png_().startswith(b"\x89PNG")  # how a notebook cell shows it


def test_interleaved_timings_times_every_method_in_changing_orders():
    calls = []
    methods = {name: (1, lambda name=name: calls.append(name)) for name in "abc"}
    samples = interleaved_timings(methods, repeats=12, warmup=1)
    assert {name: len(times) for name, times in samples.items()} == dict.fromkeys("abc", 12)
    timed = calls[3:]  # after one warm-up call each
    blocks = [tuple(timed[i : i + 3]) for i in range(0, len(timed), 3)]
    assert len(blocks) == 12 and all(sorted(block) == list("abc") for block in blocks)
    # No method always runs right after the same one: orders change between repeats.
    assert len(set(blocks)) > 1
    predecessors = {(block[i - 1], block[i]) for block in blocks for i in (1, 2)}
    assert len(predecessors) > 3
