"""The feedback page a learner reads: verdicts and diagnoses, never hidden tests or the seed."""

from __future__ import annotations

from grader.course.feedback import render
from grader.judge.verdicts import SubmissionResult
from grader.judge.verdicts import TestResult as CellResult


def test_feedback_shows_verdicts_and_no_hidden_test_code_or_seed() -> None:
    cases = [
        {
            "name": "small_float32",
            "passed": True,
            "message": "small_float32: passed",
            "diagnosis": None,
        },
        {
            "name": "masked",
            "passed": False,
            "message": "masked (b=2): <mask> missing",
            "diagnosis": "mask_missing",
        },
    ]
    result = SubmissionResult(
        "ada",
        "lab",
        "lab",
        "ok",
        [CellResult("test_task1_mask", 1, "multihead_attention", 0, 15, "ok", cases)],
        seed=8675309,
    )
    page = render(result)
    assert "0 / 15" in page and "mask_missing" in page and "&lt;mask&gt; missing" in page
    assert "run_group" not in page and "HIDDEN" not in page and "solutions" not in page
    assert "8675309" not in page
