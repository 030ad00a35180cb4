"""The hidden tests of the lab: a verdict on each case, and the notebook's hidden cells.

The master notebook's hidden cells call ``run_group("test_task1_values", globals())`` in the
learner's kernel, under plain ``nbgrader autograde``. The grader's trusted judge never runs
learner code: it draws ``case_inputs(case, seed)``, has a sandboxed process run
``grader.learner.probe.probe_case`` on them, and calls :func:`judge_case` on the plain data
that comes back. Verdicts compare with ``solutions.attention`` in float64 under the one
tolerance policy (``grader.learner.diagnose.tolerance``); a failure carries a diagnosis.
Instructor-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from former.threads import torch_threads
from grader.learner.diagnose import (
    compare,
    diagnose_attention,
    diagnose_pool_usage,
    has_large_scores,
    locate,
    tolerance,
)
from grader.learner.forbidden import explain as explain_forbidden
from grader.learner.mistakes import POOL_MISTAKES_BY_KEY
from grader.learner.probe import probe_case, quiet
from solutions.hidden_cases import (
    GROUPS,
    NOTEBOOK_SEED,
    POOL_KINDS,
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

    pool_log: ``InstrumentedPool.log()`` for pool cases; forbidden: the forbidden operators the
    call executed; expected: reference outputs computed earlier (before learner code ran).
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
    error = _text(outputs, "error")
    if error:
        if error.startswith("NotImplementedError"):
            return fail("not implemented yet: fill in the function's cell.", "not_implemented")
        if case.kind == "worker_pool" and ("Pickl" in error or "pickle" in error):
            diagnosis = diagnose_pool_usage(pool_log or [], heads)
            if diagnosis.mistake == "worker_not_importable":
                return fail(diagnosis.message, diagnosis.mistake)
        where = _text(outputs, "error_where")
        return fail(f"your function raised {error}{f' ({where})' if where else ''}.", "raised")

    out = outputs.get("out")
    if out is None:
        return fail("no output came back.", "no_output")
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return fail("the output is not an array of numbers.", "not_a_tensor")
    if tuple(out.shape) != tuple(expected["out"].shape):
        diagnosis = diagnose_attention(out, q, k, v, heads, mask)
        return fail(diagnosis.message, diagnosis.mistake)
    tol = tolerance(has_large_scores(q, k, heads))
    scale = float(inputs.get("pool_scale", 1.0)) if case.kind in POOL_KINDS else 1.0
    if not compare(out, expected["out"] * scale, tol).ok:
        if scale != 1.0 and compare(out, expected["out"], tol).ok:
            message, mistake = _pool_problem(pool_log, heads, q.shape, case.kind)
            return fail(message, mistake or "pool_results_unused")
        diagnosis = diagnose_attention(out / scale, q, k, v, heads, mask)
        return fail(f"wrong output. {diagnosis.message}", diagnosis.mistake)

    if case.kind == "gradient":
        if _text(outputs, "grad_error"):
            return fail(f"the output is right but {_text(outputs, 'grad_error')}.", "no_gradient")
        for name in ("queries", "keys", "values"):
            got = outputs.get(f"grad_{name}")
            if got is None:
                return fail(f"no gradient came back for {name}.", "no_gradient")
            result = compare(np.asarray(got), expected[f"grad_{name}"], tol)
            if not result.ok:
                where = locate(result.index, heads, q.shape[-1])
                return fail(
                    f"the output is right but the gradient of {name} is not: largest error "
                    f"{result.max_error:.3g} (scale {result.scale:.3g}) at {where}. Avoid "
                    "in-place writes into tensors autograd still needs, .data and .detach().",
                    "wrong_gradient",
                )

    if case.kind == "unmodified":
        for name in ("queries", "keys", "values"):
            after = outputs.get(f"{name}_after")
            if after is None or not _identical(np.asarray(after), expected[f"{name}_after"]):
                return fail(
                    f"your function changed its `{name}` argument in place (e.g. `{name} /= ...`, "
                    "`masked_fill_`, or writing into a view); work on new tensors instead.",
                    "inputs_modified",
                )

    if case.kind in POOL_KINDS:
        message, mistake = _pool_problem(pool_log, heads, q.shape, case.kind)
        if mistake:  # a misuse the output does not show (an unimportable worker, say)
            return fail(message, mistake)

    return CaseResult(case.name, True, f"{label}: passed", None)


def _pool_problem(pool_log: list | None, heads: int, shape: tuple, kind: str) -> tuple[str, str]:
    """(message, mistake) about how a pool case used its pool; mistake "" when the calls look
    right (the message then explains an output that lacks the pool's scale)."""
    b, t, width = shape
    workers = kind == "worker_pool"
    diagnosis = diagnose_pool_usage(
        pool_log or [], heads, head_shape=(b, t, width // heads), require_importable=workers
    )
    if not diagnosis.correct:
        return f"the values are right, but {diagnosis.message}", diagnosis.mistake or ""
    unused = POOL_MISTAKES_BY_KEY["pool_results_unused"]
    return f"the values are right, but it looks like {unused.title}. Hint: {unused.hint}", ""


def _text(outputs: dict[str, Any], key: str) -> str:
    """A text output, whether a str or (after an .npz round trip) a 0-d numpy string array."""
    value = outputs.get(key)
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else ""
    return "" if value is None else str(value)


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit unchanged: NaN equals NaN here."""
    return a.shape == b.shape and bool(((a == b) | ((a != a) & (b != b))).all())


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
