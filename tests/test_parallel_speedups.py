"""The notebook's speed-up helpers: rows for every method and length, and a figure."""

from __future__ import annotations

import pytest

from former.parallel import measure_speedups, plot_speedups
from former.parallel.speedups import interleaved_medians
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


def test_interleaved_medians_times_every_method():
    calls = []
    medians = interleaved_medians(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1
    )
    assert set(medians) == {"a", "b"} and calls.count("a") == calls.count("b") == 4
    assert calls[2:4] == ["a", "b"] and calls[4:6] == ["b", "a"]  # methods take turns
