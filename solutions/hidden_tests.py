"""The hidden tests of the lab: a verdict on each case, and the notebook's hidden cells.

The master notebook's hidden cells call ``run_group("test_task1_values", globals())`` in the
learner's kernel, under plain ``nbgrader autograde``. The grader's trusted judge never runs
learner code: it draws ``case_inputs(case, seed)``, has a sandboxed process run
``grader.learner.probe.probe_case`` on them, and calls :func:`judge_case` on the plain data
that comes back. Each test cell checks its own property (``solutions.hidden_cases.KINDS``),
with the rules the visible checks use (``grader.learner.properties``): only value cases
compare with ``solutions.attention`` in float64, all under the one tolerance policy
(``grader.learner.diagnose.tolerance``); a failure carries a diagnosis.
Instructor-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from former.threads import torch_threads
from grader.learner.diagnose import (
    Diagnosis,
    compare,
    diagnose_attention,
    diagnose_pool_usage,
    has_large_scores,
    tolerance,
)
from grader.learner.forbidden import explain as explain_forbidden
from grader.learner.probe import probe_case, quiet
from grader.learner.properties import (
    VERDICTS,
    assembled_verdict,
    head_by_head_verdict,
    named_if_catalogued,
    text_value,
)
from solutions.hidden_cases import (
    GROUPS,
    NOTEBOOK_SEED,
    Case,
    case_inputs,
    describe_inputs,
    expected_outputs,
    pristine_torch,
)


@dataclass(frozen=True)
class CaseResult:
    """diagnosis: the key of the recognised mistake or problem (e.g. "missing_scale",
    "not_implemented", "raised"), None when passed or unrecognised; message: plain words."""

    name: str
    passed: bool
    message: str
    diagnosis: str | None = None


def judge_case(
    case: Case,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    pool_log: list | None = None,
    *,
    forbidden: list[str] | tuple[str, ...] = (),
    expected: dict[str, np.ndarray] | None = None,
) -> CaseResult:
    """Verdict on the outputs ``probe_case`` read back from the learner's function.

    Each kind of case judges its own property (``KINDS``): only "forward" cases and one-head
    cases compare values with the reference. pool_log: the pool's log (with each call's
    ``results``) for parallel cases; forbidden: the forbidden operators the calls executed;
    expected: reference outputs computed earlier (before learner code ran).
    """
    if expected is None:
        expected = expected_outputs(case, inputs)
    label = f"{case.name} ({describe_inputs(inputs)})"

    def fail(message: str, diagnosis: str | None) -> CaseResult:
        return CaseResult(case.name, False, f"{label}: {message}", diagnosis)

    if forbidden:
        return fail(explain_forbidden(forbidden), "forbidden")
    heads, mask = int(inputs["heads"]), bool(inputs["mask"])
    q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
    error = text_value(outputs.get("error"))
    if error:
        if error.startswith("NotImplementedError"):
            return fail("not implemented yet: fill in the function's cell.", "not_implemented")
        if case.kind == "worker_pool" and ("Pickl" in error or "pickle" in error):
            diagnosis = diagnose_pool_usage(pool_log or [], heads)
            if diagnosis.mistake == "worker_not_importable":
                return fail(diagnosis.message, diagnosis.mistake)
        where, call = text_value(outputs.get("error_where")), text_value(outputs.get("error_call"))
        details = "; ".join(x for x in (where, call) if x)
        return fail(f"your function raised {error}{f' ({details})' if details else ''}.", "raised")

    if case.kind == "heads" and outputs.get("raised_like_own") is not None:
        verdict = head_by_head_verdict(inputs, outputs)
        return CaseResult(case.name, verdict.correct, f"{label}: passed ({verdict.message})")
    problem = _output_problem(outputs, expected, q, k, v, heads, mask)
    if problem is not None:
        return fail(problem.message, problem.mistake)
    out = np.asarray(outputs["out"], dtype=np.float64)
    verdict = _KIND_VERDICTS[case.kind](case, inputs, outputs, pool_log, expected, out)
    if verdict.correct:
        return CaseResult(case.name, True, f"{label}: passed", None)
    return fail(verdict.message, verdict.mistake)


def _output_problem(outputs, expected, q, k, v, heads: int, mask: bool) -> Diagnosis | None:
    """No output, not numbers, or the wrong shape (explained), else None."""
    out = outputs.get("out")
    if out is None:
        return Diagnosis(False, "no_output", "no output came back.")
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return Diagnosis(False, "not_a_tensor", "the output is not an array of numbers.")
    if tuple(out.shape) != tuple(expected["out"].shape):
        return diagnose_attention(out, q, k, v, heads, mask)
    return None


def _values(case, inputs, outputs, pool_log, expected, out) -> Diagnosis:
    """Values against the reference; a mistake in the catalogue is named."""
    q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
    heads, mask = int(inputs["heads"]), bool(inputs["mask"])
    if compare(out, expected["out"], tolerance(has_large_scores(q, k, heads))).ok:
        return Diagnosis(True, None, "")
    diagnosis = diagnose_attention(out, q, k, v, heads, mask)
    if int(np.shape(q)[1]) == 1 and diagnosis.mistake is None:
        diagnosis = Diagnosis(
            False,
            None,
            "with one position, each query sees only its own key, so the output must be its "
            f"value row. {diagnosis.message}",
        )
    return Diagnosis(False, diagnosis.mistake, f"wrong output. {diagnosis.message}")


def _property(case, inputs, outputs, pool_log, expected, out) -> Diagnosis:
    verdict = VERDICTS[case.kind](inputs, outputs)
    return verdict if verdict.correct else named_if_catalogued(verdict, inputs, out)


def _pool(case, inputs, outputs, pool_log, expected, out) -> Diagnosis:
    return assembled_verdict(inputs, outputs, pool_log)


_KIND_VERDICTS = {
    "forward": _values,
    "causal": _property,
    "bounded": _property,
    "gradient": _property,
    "unmodified": _property,
    "heads": _property,
    "pool": _pool,
    "worker_pool": _pool,
}


# -- in the notebook's kernel ----------------------------------------------------------------------


class HiddenTestFailure(AssertionError):
    """A hidden test cell failed; the message lists each failed case and its diagnosis."""


def run_group(grade_id: str, namespace: dict[str, Any], *, seed: int = NOTEBOOK_SEED) -> None:
    """Run every case of ``grade_id`` on the learner's function found in ``namespace``;
    raise :class:`HiddenTestFailure` naming what went wrong.

    References are computed before any learner code runs; verdicts use only numpy
    arithmetic; warnings and stderr from the learner's code are swallowed.
    """
    __tracebackhide__ = True  # noqa: F841 - read by IPython and pytest
    if grade_id not in GROUPS:
        raise KeyError(f"unknown test cell {grade_id!r}; known: {', '.join(GROUPS)}")
    group = GROUPS[grade_id]
    fn = namespace.get(group.function)
    if not callable(fn):
        raise HiddenTestFailure(
            f"{group.function} is not defined (or not a function): run the cell that defines it."
        )
    prepared = []
    with torch_threads(1):
        for case in group.cases:
            inputs = case_inputs(case, seed)
            prepared.append((case, inputs, expected_outputs(case, inputs)))

    results = []
    for case, inputs, expected in prepared:
        probe = probe_case(inputs, fn)
        with quiet(), pristine_torch(), torch_threads(1):
            results.append(
                judge_case(
                    case,
                    inputs,
                    probe.outputs,
                    probe.pool_log,
                    forbidden=probe.forbidden,
                    expected=expected,
                )
            )
    failed = [r for r in results if not r.passed]
    print(f"{grade_id}: {len(results) - len(failed)}/{len(results)} cases passed")
    if failed:
        raise HiddenTestFailure(summarize_failures(results)) from None


def summarize_failures(results: list[CaseResult]) -> str:
    """'2 of 5 cases failed:' then one line per distinct problem, naming the cases it hit."""
    failed = [r for r in results if not r.passed]
    problems: dict[str, list[str]] = {}
    for result in failed:
        label, _, body = result.message.partition(": ")
        problems.setdefault(body, []).append(label)
    lines = [f"- {'; '.join(labels)}: {body}" for body, labels in problems.items()]
    return "\n".join([f"{len(failed)} of {len(results)} cases failed:", *lines])
