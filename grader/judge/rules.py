"""The verdict on one hidden case: the one place it is decided, for the sandboxed grader and
for the master notebook's hidden cells alike.

It reads only the probe's :class:`~grader.learner.probe_io.Outcome`, never runs learner code,
and judges the property its kind checks (``solutions.hidden_cases.KINDS``) with the rules the
visible checks use (``grader.learner.properties``): only value cases compare with the
reference, all under one tolerance policy; a failure carries a diagnosis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from grader.judge.cases import describe_inputs, expected_outputs
from grader.learner.diagnose import Diagnosis, compare, diagnose_attention
from grader.learner.forbidden import explain as explain_forbidden
from grader.learner.pool_mistakes import diagnose_pool_usage
from grader.learner.probe_io import CaseInputs, Outcome
from grader.learner.properties import case_tolerance, head_by_head_verdict, property_verdict


@dataclass(frozen=True)
class CaseResult:
    """diagnosis: the key of the recognised mistake or problem (e.g. "missing_scale",
    "not_implemented", "raised"), None when passed or unrecognised; message: plain words."""

    name: str
    passed: bool
    message: str
    diagnosis: str | None = None


def judge_case(
    case: Any, inputs: CaseInputs, outcome: Outcome, expected: dict | None = None
) -> CaseResult:
    """Verdict on ``outcome``, what the probe read back for ``case`` (a hidden_cases.Case);
    expected: its reference outputs when computed earlier (before learner code ran)."""
    expected = expected_outputs(case, inputs) if expected is None else expected
    label = f"{case.name} ({describe_inputs(inputs)})"
    if outcome.forbidden:
        verdict = Diagnosis(False, "forbidden", explain_forbidden(outcome.forbidden))
    elif outcome.error:
        verdict = _error_verdict(case, inputs, outcome)
    elif case.kind == "heads" and outcome.raised_like_own:
        passed = head_by_head_verdict(inputs, outcome)
        return CaseResult(case.name, passed.correct, f"{label}: passed ({passed.message})")
    else:
        problem = _output_problem(inputs, outcome, expected)
        verdict = problem or _KINDS[case.kind](inputs, outcome, expected)
    if verdict.correct:
        return CaseResult(case.name, True, f"{label}: passed", None)
    return CaseResult(case.name, False, f"{label}: {verdict.message}", verdict.mistake)


def judge_graded_case(
    case: Any, inputs: CaseInputs, outcome: Outcome, expected: dict, skipped: dict[int, list[str]]
) -> dict:
    """:func:`judge_case` as the gradebook records it: a failure's diagnosis names the sandbox
    limit the learner's code died of, else the mistake, else "wrong_output"; a NameError for
    a name only a cell skipped while grading binds (``skipped``: cell -> names) says so."""
    raised = f"{outcome.error} ({outcome.error_where}; {outcome.error_call})"
    limit, hint = _resource_diagnosis(raised), _unbound_hint(raised, skipped)
    judged = judge_case(case, inputs, outcome, expected)
    result = asdict(judged)
    if not judged.passed:
        result["diagnosis"] = limit or judged.diagnosis or "wrong_output"
        result["message"] += hint
    return result


def _error_verdict(case: Any, inputs: CaseInputs, outcome: Outcome) -> Diagnosis:
    error = outcome.error
    if error.startswith("NotImplementedError"):
        message = "not implemented yet: fill in the function's cell."
        return Diagnosis(False, "not_implemented", message)
    if case.kind == "worker_pool" and ("Pickl" in error or "pickle" in error):
        diagnosis = diagnose_pool_usage(outcome.pool_log or [], inputs.heads)
        if diagnosis.mistake == "worker_not_importable":
            return diagnosis
    details = "; ".join(x for x in (outcome.error_where, outcome.error_call) if x)
    details = f" ({details})" if details else ""
    return Diagnosis(False, "raised", f"your function raised {error}{details}.")


def _output_problem(inputs: CaseInputs, outcome: Outcome, expected: dict) -> Diagnosis | None:
    """No output, not numbers, or the wrong shape (explained), else None."""
    if outcome.out is None:
        return Diagnosis(False, "no_output", "no output came back.")
    try:
        out = np.asarray(outcome.out, dtype=np.float64)
    except (TypeError, ValueError):
        return Diagnosis(False, "not_a_tensor", "the output is not an array of numbers.")
    if out.shape != expected["out"].shape:
        return diagnose_attention(out, *inputs.tensors(), inputs.heads, inputs.mask)
    return None


def _values(inputs: CaseInputs, outcome: Outcome, expected: dict) -> Diagnosis:
    """Values against the reference (only "forward" cases compare them); a mistake in the
    catalogue is named."""
    out = np.asarray(outcome.out, dtype=np.float64)
    if compare(out, expected["out"], case_tolerance(inputs)).ok:
        return Diagnosis(True, None, "")
    diagnosis = diagnose_attention(out, *inputs.tensors(), inputs.heads, inputs.mask)
    message = diagnosis.message
    if inputs.queries.shape[1] == 1 and diagnosis.mistake is None:
        message = (
            "with one position, each query sees only its own key, so the output must be its "
            f"value row. {message}"
        )
    return Diagnosis(False, diagnosis.mistake, f"wrong output. {message}")


def _unbound_hint(message: str, skipped: dict[int, list[str]]) -> str:
    """A note when the function needs a name only a skipped cell binds."""
    marker = "NameError: name '"
    if marker not in message:
        return ""
    name = message.split(marker, 1)[1].split("'", 1)[0]
    number = next((number for number, names in skipped.items() if name in names), None)
    if number is None:
        return ""
    return (
        f" `{name}` is bound only by cell {number}, which is not run while grading (it "
        "trains, plots or calls AWS): bind it in a cell of its own above the function"
    )


def _resource_diagnosis(message: str) -> str | None:
    """ "memory" or "processes" when the learner's code died of hitting a sandbox limit."""
    if "can't allocate memory" in message or "MemoryError" in message:
        return "memory"
    if "Resource temporarily unavailable" in message:
        return "processes"
    return None


def _property(inputs: CaseInputs, outcome: Outcome, expected: dict) -> Diagnosis:
    return property_verdict(inputs, outcome)


# Only "forward" cases compare values with the reference; every other kind checks its property.
_KINDS = {"forward": _values} | dict.fromkeys(
    ("causal", "bounded", "gradient", "unmodified", "heads", "pool", "worker_pool"), _property
)
