"""The master notebook's hidden test cells, run in the learner's kernel by plain nbgrader.

A cell calls ``run_group("test_task1_values", globals())``: the group's cases are drawn from
the notebook's seed, probed on the learner's function and judged by
:func:`grader.judge.rules.judge_case`, as the sandboxed grader judges them.
"""

from __future__ import annotations

from typing import Any

from former.threads import torch_threads
from grader.judge.cases import case_inputs, expected_outputs, pristine_torch
from grader.judge.instructor import load_solutions
from grader.judge.rules import CaseResult, judge_case
from grader.learner.calls import quiet
from grader.learner.probe import probe_case


class HiddenTestFailure(AssertionError):
    """A hidden test cell failed; the message lists each failed case and its diagnosis."""


def run_group(grade_id: str, namespace: dict[str, Any], *, seed: int | None = None) -> None:
    """Run every case of ``grade_id`` on the learner's function found in ``namespace``
    (seed: the notebook's own unless given); raise :class:`HiddenTestFailure` naming what
    went wrong. References are computed before any learner code runs; warnings and stderr
    from the learner's code are swallowed."""
    __tracebackhide__ = True  # noqa: F841 - read by IPython and pytest
    cases = load_solutions().hidden_cases
    if grade_id not in cases.GROUPS:
        raise KeyError(f"unknown test cell {grade_id!r}; known: {', '.join(cases.GROUPS)}")
    group = cases.GROUPS[grade_id]
    fn = namespace.get(group.function)
    if not callable(fn):
        raise HiddenTestFailure(
            f"{group.function} is not defined (or not a function): run the cell that defines it."
        )
    seed = cases.NOTEBOOK_SEED if seed is None else seed
    with torch_threads(1):
        inputs = [case_inputs(case, seed) for case in group.cases]
        expected = [expected_outputs(c, i) for c, i in zip(group.cases, inputs, strict=True)]
    results = []
    for case, case_input, reference in zip(group.cases, inputs, expected, strict=True):
        outcome = probe_case(case_input, fn)
        with quiet(), pristine_torch(), torch_threads(1):
            results.append(judge_case(case, case_input, outcome, reference))
    failed = [result for result in results if not result.passed]
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
