"""One submission through the sandbox and the judge: what the grader re-runs of a notebook,
what it refuses to wait for, and what a result records."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest

from grader.judge.grade import grade_submission, make_plan
from grader.sandbox import launch as sandbox
from grader.sandbox.launch import Limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from submissions import corpus  # noqa: E402

if sandbox.bwrap_executable() is None:
    if os.environ.get("CI"):
        pytest.fail("bubblewrap (bwrap) is required in CI", pytrace=False)
    pytest.skip("bubblewrap (bwrap) is not installed", allow_module_level=True)

LIMITS = Limits(memory_mb=1536, wall_seconds=30, step_seconds=1)
SCALED = """
def multihead_attention(queries, keys, values, heads, mask=False):
    b, t, hs = queries.size()
    s = hs // heads
    q, k, v = (x.view(b, t, heads, s).transpose(1, 2) for x in (queries, keys, values))
    scores = q @ k.transpose(-1, -2) * SCALE
    if mask:
        scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), -math.inf)
    return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, hs)
"""


@pytest.fixture(scope="module")
def plan():
    return make_plan(seed=77, cases_per_group=2)


def grade(tmp_path: Path, plan, setup: str):
    cells = corpus.read_cells("correct_bmm")
    cells = [(None, setup)] + [(g, SCALED if g == "multihead_attention" else s) for g, s in cells]
    path = tmp_path / "lab.ipynb"
    nbformat.write(corpus.notebook(cells), path)
    return grade_submission(
        path, "ada", "lab", plan, limits=LIMITS, work_dir=tmp_path / "work", slot=3
    )


def test_a_name_bound_by_a_long_running_statement_is_named_not_waited_for(tmp_path, plan):
    setup = "import time\n\ndef train():\n    time.sleep(60)\n    return 0.5\n\nSCALE = train()"
    result = grade(tmp_path, plan, setup)
    assert result.score(1) == 0 and result.score(2) == result.max_score(2)
    assert result.seconds < 30
    assert any("`SCALE = train()`) ran longer than 1 s" in m for m in result.messages), (
        result.messages
    )


def test_a_name_set_only_by_a_magic_is_named_in_the_feedback(tmp_path, plan):
    result = grade(tmp_path, plan, "%time SCALE = 0.5")
    assert result.score(1) == 0
    assert any("`SCALE`, which no plain statement" in m for m in result.messages), result.messages


def test_a_result_records_the_seed_of_its_inputs(tmp_path, plan):
    result = grade(tmp_path, plan, "SCALE = 0.5")
    assert result.seed == 77 and result.messages == []


def test_the_same_seed_draws_the_same_inputs_and_another_seed_others():
    import numpy as np

    first, again, other = make_plan(5, 1), make_plan(5, 1), make_plan(6, 1)
    for name, inputs in first.inputs.items():
        assert np.array_equal(inputs["queries"], again.inputs[name]["queries"])
    assert any(
        inputs["queries"].shape != other.inputs[name]["queries"].shape
        or not np.array_equal(inputs["queries"], other.inputs[name]["queries"])
        for name, inputs in first.inputs.items()
    )
