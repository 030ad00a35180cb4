"""The trusted judge: grades one submission from the raw outputs of its sandboxed functions.

It never runs submission code. Each graded function runs in the sandbox
(``grader.judge.channel``) on inputs drawn from the run's seed; its raw outputs are
compared with ``solutions/`` through the hidden cases (``solutions.hidden_tests``: the same
definitions the master notebook's hidden cells use). A function that crashes, hangs, runs
out of memory or floods processes loses its own tests.

A function whose run executed a forbidden built-in (``grader.learner.forbidden``) scores zero on
every test that runs it, with status ``forbidden``. Every result records the seed its
inputs were drawn from, so a regrade with that seed gives the same scores and feedback.
"""

from __future__ import annotations

import importlib
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grader.judge.channel import FunctionRun, run_functions
from grader.judge.program import GRADED_FUNCTIONS, read_program
from grader.judge.verdicts import STATUSES, SubmissionResult, TestResult
from grader.learner.forbidden import explain as explain_forbidden
from grader.sandbox.launch import Limits


@dataclass
class Plan:
    """The hidden cases of a grading run, their inputs (from ``seed``) and reference outputs."""

    groups: dict[str, Any]
    inputs: dict[str, dict]
    expected: dict[str, dict]
    seed: int

    def test_cells(self) -> dict[str, set[str]]:
        """For each graded function, the grade ids of the test cells that call it."""
        cells: dict[str, set[str]] = {}
        for group in self.groups.values():
            cells.setdefault(group.function, set()).add(group.grade_id)
        return cells

    def cases_of(self, function: str) -> list:
        return [
            case
            for group in self.groups.values()
            if group.function == function
            for case in group.cases
        ]


def new_seed() -> int:
    """A fresh secret seed for a grading run."""
    return secrets.randbits(63)


def make_plan(seed: int | None = None, cases_per_group: int | None = None) -> Plan:
    """Draw every case's inputs from ``seed`` (a new secret one if None) and compute the
    reference outputs.

    cases_per_group: keep only the first N cases of each test (trial runs, tests of the
    grader itself); full grading uses them all.
    """
    seed = new_seed() if seed is None else int(seed)
    groups = {}
    tests = instructor_module("hidden_cases")
    for grade_id, group in tests.GROUPS.items():
        cases = group.cases[:cases_per_group] if cases_per_group else group.cases
        groups[grade_id] = type(group)(
            group.grade_id, group.task, group.points, group.function, cases
        )
    inputs, expected = {}, {}
    for group in groups.values():
        for case in group.cases:
            inputs[case.name] = tests.case_inputs(case, seed)
            expected[case.name] = tests.expected_outputs(case, inputs[case.name])
    return Plan(groups, inputs, expected, seed)


def instructor_module(name: str):
    """``solutions.<name>`` (``hidden_cases``, ``hidden_tests``) from the repository this
    grader belongs to. Instructor-side only: nothing that runs in the sandbox imports it
    (``solutions/`` is not even mounted there)."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "solutions" / f"{name}.py").is_file():
        raise RuntimeError(
            f"solutions/{name}.py is not in {repo}: grade from the instructor's copy of the "
            "repository"
        )
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return importlib.import_module(f"solutions.{name}")


# -- one submission -------------------------------------------------------------------------


def grade_submission(
    notebook: Path,
    student: str,
    assignment: str,
    plan: Plan,
    *,
    limits: Limits,
    work_dir: Path,
    slot: int = 0,
) -> SubmissionResult:
    """Grade one submitted notebook. Always returns a result, whatever the submission does."""
    started = time.monotonic()
    result = SubmissionResult(student, assignment, Path(notebook).stem, "ok", seed=plan.seed)
    if not Path(notebook).exists():
        result.status = "missing"
        result.messages.append(f"no submitted notebook {Path(notebook).name}")
        result.tests = all_failed(plan, "missing", "no notebook was submitted")
        return result
    try:
        program = read_program(Path(notebook), plan.test_cells())
    except ValueError as error:
        result.status = "invalid"
        result.messages.append(str(error))
        result.tests = all_failed(plan, "invalid", "the notebook could not be read")
        return result

    outcomes = run_functions(program, plan, limits, Path(work_dir), slot)
    for function, outcome in outcomes.items():
        for error in outcome.program_errors:
            message = f"while re-running what {function} needs from your notebook: {error}"
            if message not in result.messages:
                result.messages.append(message)
        unbound = [name for name in program.unbound.get(function, []) if name != function]
        if unbound and plan.cases_of(function):
            result.messages.append(
                f"{function} uses {', '.join(f'`{n}`' for n in unbound)}, which no plain "
                "statement above its tests binds (a magic, exec or globals() does not "
                "count): define it in a cell above with an ordinary statement"
            )
        if outcome.message:
            result.messages.append(f"{function}: {outcome.message}")
    result.tests = _judge(plan, outcomes)
    statuses = {test.status for test in result.tests}
    result.status = next((status for status in STATUSES if status in statuses), "ok")
    result.seconds = round(time.monotonic() - started, 2)
    return result


def all_failed(plan: Plan, status: str, message: str) -> list[TestResult]:
    tests = []
    for group in plan.groups.values():
        cases = [
            {"name": case.name, "passed": False, "message": message, "diagnosis": status}
            for case in group.cases
        ]
        tests.append(
            TestResult(group.grade_id, group.task, group.function, 0, group.points, status, cases)
        )
    return tests


def _judge(plan: Plan, outcomes: dict[str, FunctionRun]) -> list[TestResult]:
    judge_case = instructor_module("hidden_tests").judge_case
    forbidden = _forbidden_functions(outcomes)
    tests = []
    for group in plan.groups.values():
        outcome = outcomes[group.function]
        cases = []
        for case in group.cases:
            if group.function in forbidden:
                message = f"{case.name}: not graded: " + explain_forbidden(
                    [forbidden[group.function]]
                )
                cases.append(
                    {
                        "name": case.name,
                        "passed": False,
                        "message": message,
                        "diagnosis": "forbidden",
                    }
                )
                continue
            outputs = outcome.outputs.get(case.name)
            if outputs is None:
                cases.append(
                    {
                        "name": case.name,
                        "passed": False,
                        "message": f"{case.name}: {outcome.message or 'no result'}",
                        "diagnosis": outcome.status if outcome.status != "ok" else "crashed",
                    }
                )
                continue
            record = outcome.records.get(case.name, {})
            verdict = judge_case(
                case,
                plan.inputs[case.name],
                outputs,
                record.get("pool_log"),
                expected=plan.expected[case.name],
            )
            case_result = asdict(verdict)
            if not verdict.passed:
                case_result["diagnosis"] = _resource_diagnosis(verdict.message) or (
                    verdict.diagnosis or "wrong_output"  # no catalogued mistake matched
                )
            cases.append(case_result)
        passed = all(case["passed"] for case in cases)
        status = "forbidden" if group.function in forbidden else _case_status(outcome, cases)
        tests.append(
            TestResult(
                group.grade_id,
                group.task,
                group.function,
                group.points if passed else 0,
                group.points,
                status,
                cases,
            )
        )
    return tests


def _resource_diagnosis(message: str) -> str | None:
    """ "memory" or "processes" when the learner's code died of hitting a sandbox limit."""
    if "can't allocate memory" in message or "MemoryError" in message:
        return "memory"
    if "Resource temporarily unavailable" in message:
        return "processes"
    return None


def _case_status(outcome: FunctionRun, cases: list[dict]) -> str:
    for case in cases:
        if not case["passed"] and case["diagnosis"] in {"memory", "processes"}:
            return case["diagnosis"]
    return outcome.status


def _forbidden_functions(outcomes: dict[str, FunctionRun]) -> dict[str, str]:
    """function -> what forbidden thing it executed (the tripwires' records)."""
    used: dict[str, str] = {}
    for function in GRADED_FUNCTIONS:
        names: list[str] = []
        for record in outcomes[function].records.values():
            names.extend(record.get("forbidden") or [])
        if names:
            used[function] = ", ".join(dict.fromkeys(names))
    # The parallel version maps attention_function over the heads: it inherits its verdict.
    if "attention_function" in used and "parallel_multihead_attention" not in used:
        used["parallel_multihead_attention"] = (
            used["attention_function"] + " (in attention_function)"
        )
    return used
