"""The trusted judge: grades one submission from the raw outputs of its sandboxed functions.

It never runs submission code. Each graded function runs in the sandbox
(``grader.judge.channel``) on inputs drawn from the run's seed; its raw outputs are compared
with ``solutions/`` through ``solutions.hidden_tests``, the definitions the master notebook's
hidden cells use. A function that crashes, hangs or exhausts a limit loses its own tests; one
that executed a forbidden built-in (``grader.learner.forbidden``) scores zero on every test
that runs it. Every result records its seed, so a regrade with it gives the same verdicts.
"""

from __future__ import annotations

import importlib
import secrets
import sys
import time
from dataclasses import asdict, dataclass, replace
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
        groups = self.groups.values()
        return [case for group in groups if group.function == function for case in group.cases]


def make_plan(seed: int | None = None, cases_per_group: int | None = None) -> Plan:
    """Draw every case's inputs from ``seed`` (a new secret one if None) and compute the
    reference outputs. ``cases_per_group`` keeps the first N cases of each test (trial runs)."""
    seed = secrets.randbits(63) if seed is None else int(seed)
    tests = instructor_module("hidden_cases")
    groups = {
        grade_id: replace(group, cases=group.cases[: cases_per_group or None])
        for grade_id, group in tests.GROUPS.items()
    }
    cases = [case for group in groups.values() for case in group.cases]
    inputs = {case.name: tests.case_inputs(case, seed) for case in cases}
    expected = {case.name: tests.expected_outputs(case, inputs[case.name]) for case in cases}
    return Plan(groups, inputs, expected, seed)


def instructor_module(name: str):
    """``solutions.<name>`` from the repository this grader belongs to. Instructor-side only:
    nothing in the sandbox imports it (``solutions/`` is not even mounted there)."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "solutions" / f"{name}.py").is_file():
        raise RuntimeError(
            f"solutions/{name}.py is not in {repo}: grade from the instructor's copy of the "
            "repository"
        )
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return importlib.import_module(f"solutions.{name}")


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
    notebook = Path(notebook)
    result = SubmissionResult(student, assignment, notebook.stem, "ok", seed=plan.seed)
    if not notebook.exists():
        result.status = "missing"
        result.messages.append(f"no submitted notebook {notebook.name}")
        result.tests = all_failed(plan, "missing", "no notebook was submitted")
        return result
    try:
        program = read_program(notebook, plan.test_cells())
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


def _failed(name: str, message: str, diagnosis: str) -> dict:
    return {"name": name, "passed": False, "message": message, "diagnosis": diagnosis}


def all_failed(plan: Plan, status: str, message: str) -> list[TestResult]:
    """Every test at zero with ``status``, each case failed with ``message``."""
    return [
        TestResult(
            group.grade_id,
            group.task,
            group.function,
            0,
            group.points,
            status,
            [_failed(case.name, message, status) for case in group.cases],
        )
        for group in plan.groups.values()
    ]


def _judge(plan: Plan, outcomes: dict[str, FunctionRun]) -> list[TestResult]:
    judge_case = instructor_module("hidden_tests").judge_case
    forbidden = _forbidden_functions(outcomes)

    def verdict(case: Any, outcome: FunctionRun, banned: str | None) -> dict:
        if banned:
            return _failed(
                case.name, f"{case.name}: not graded: {explain_forbidden([banned])}", "forbidden"
            )
        outputs = outcome.outputs.get(case.name)
        if outputs is None:
            message = f"{case.name}: {outcome.message or 'no result'}"
            return _failed(
                case.name, message, outcome.status if outcome.status != "ok" else "crashed"
            )
        pool_log = outcome.records.get(case.name, {}).get("pool_log")
        judged = judge_case(
            case, plan.inputs[case.name], outputs, pool_log, expected=plan.expected[case.name]
        )
        result = asdict(judged)
        if not judged.passed:  # a sandbox limit, a catalogued mistake, or just wrong
            result["diagnosis"] = (
                _resource_diagnosis(judged.message) or judged.diagnosis or "wrong_output"
            )
        return result

    tests = []
    for group in plan.groups.values():
        outcome, banned = outcomes[group.function], forbidden.get(group.function)
        cases = [verdict(case, outcome, banned) for case in group.cases]
        points = group.points if all(case["passed"] for case in cases) else 0
        status = "forbidden" if banned else _case_status(outcome, cases)
        tests.append(
            TestResult(
                group.grade_id, group.task, group.function, points, group.points, status, cases
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
        names = [n for r in outcomes[function].records.values() for n in r.get("forbidden") or []]
        if names:
            used[function] = ", ".join(dict.fromkeys(names))
    # The parallel version maps attention_function over the heads: it inherits its verdict.
    if "attention_function" in used and "parallel_multihead_attention" not in used:
        used["parallel_multihead_attention"] = (
            used["attention_function"] + " (in attention_function)"
        )
    return used
