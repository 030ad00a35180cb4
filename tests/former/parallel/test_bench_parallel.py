"""The parallel benchmark runs end to end on a small shape and reports every method."""

from __future__ import annotations

import json

import pytest

from benchmarks import parallel


@pytest.mark.timeout(300)
def test_benchmark_reports_every_method_for_every_shape(tmp_path, capsys):
    status = parallel.main(
        ["--shapes", "2,4,40,8", "3,2,600,4", "--repeats", "2", "--output-dir", str(tmp_path)]
    )
    assert status == 0
    report = json.loads((tmp_path / "parallel.json").read_text())
    assert (tmp_path / "parallel.png").stat().st_size > 10_000
    assert [(r["b"], r["h"], r["t"], r["s"]) for r in report["shapes"]] == [
        (2, 4, 40, 8),
        (3, 2, 600, 4),
    ]
    for row in report["shapes"]:
        assert set(row["speedup"]) == set(parallel.METHODS)
        assert row["speedup"]["serial"] == 1.0
        # every method computes the same attention as the serial baseline
        assert max(row["max_abs_error"].values()) < 1e-5
        assert row["serial_plain_seconds"] > 0  # timed in a fresh process
        # on Linux, the idle-machine estimate from CPU time for each pool
        assert set(row["idle_machine_estimate"]) == {"pool_map", "workers", "head_pool"}
        assert all(x > 0 for x in row["idle_machine_estimate"].values())
    table = capsys.readouterr().out
    assert all(name in table for name in ("pieces", "workers", "head_pool", "no_traffic"))
    assert "estimated for an idle machine" in table
    # a row at a target shape is judged against the target and shown beside the ceiling
    row = {**report["shapes"][0], "b": 4, "h": 8, "t": 512, "s": 16}
    (target,) = parallel.check_targets([row])
    assert target["measured"] == row["speedup"]["head_pool"]
    assert target["ceiling"] == row["speedup"]["no_traffic"]
    assert target["met"] == (row["speedup"]["head_pool"] >= parallel.TARGETS[(4, 8, 512, 16)])


def test_a_malformed_shape_is_refused_with_the_expected_form(capsys):
    with pytest.raises(SystemExit):
        parallel.main(["--shapes", "4,8,128"])
    assert "b,h,t,s" in capsys.readouterr().err
