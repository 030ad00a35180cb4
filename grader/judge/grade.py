"""The trusted judge: grades one submission from the raw outputs of its notebook's run.

It never runs submission code. The notebook runs top to bottom in the sandbox
(``grader.judge.channel``), with each test cell's hidden cases drawn from the run's seed; the
raw outputs are judged with ``solutions.hidden_tests``, the definitions the master notebook's
hidden cells use, and pool cases on the server's record of what the pool returned (never the
kernel's). A test whose cell crashed, hung or exhausted a limit loses its own points; a function
that executed a forbidden built-in (``grader.learner.forbidden``) scores zero on every test that
runs it; a test during which the grader's own code was rebound scores zero with the status
"tampered". Every result records its seed, so a regrade with it gives the same verdicts.
"""

from __future__ import annotations

import importlib
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from grader.judge.channel import NotebookRun, TestRun, run_notebook
from grader.judge.program import Program, read_program
from grader.judge.verdicts import STATUSES, SubmissionResult, TestResult
from grader.learner.forbidden import TAMPERING, UNOBSERVED
from grader.learner.forbidden import explain as explain_forbidden
from grader.sandbox.launch import Limits


@dataclass
class Plan:
    """The hidden cases of a grading run, their inputs (from ``seed``) and reference outputs."""

    groups: dict[str, Any]
    inputs: dict[str, dict]
    expected: dict[str, dict]
    seed: int
    # grade id -> the visible part of the master's test cell (nbgrader puts it back when it
    # grades); a test without one runs the submission's own cell.
    test_sources: dict[str, str] = field(default_factory=dict)

    def tests(self) -> dict[str, str | None]:
        """Each test cell's grade id -> the visible source to run in its place, or None."""
        return {grade_id: self.test_sources.get(grade_id) for grade_id in self.groups}


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
        program = read_program(notebook, plan.tests())
    except ValueError as error:
        result.status = "invalid"
        result.messages.append(str(error))
        result.tests = all_failed(plan, "invalid", "the notebook could not be read")
        return result

    run = run_notebook(program, plan, limits, Path(work_dir), slot)
    result.tests = _judge(plan, run, program)
    result.messages += _run_messages(program, run, limits)
    statuses = {test.status for test in result.tests}
    result.status = next((status for status in STATUSES if status in statuses), "ok")
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _run_messages(program: Program, run: NotebookRun, limits: Limits) -> list[str]:
    """What the learner should know about the run of their notebook, beyond the tests."""
    messages = []
    for number, why in run.ended_kernel.items():
        messages.append(
            f"cell {number} ended the notebook's kernel ({why}); the notebook ran again "
            "without it, so nothing it defines was there for the cells below it"
        )
    for number in run.interrupted:
        messages.append(
            f"cell {number} ran longer than {limits.cell_seconds:g} s and was interrupted "
            "(as Jupyter's interrupt button would): what it had not finished is missing below"
        )
    for number, error in sorted(run.cell_errors.items())[:5]:
        messages.append(run.cell_errors[0] if number == 0 else f"cell {number} raised {error}")
    for grade_id in program.missing_tests:
        messages.append(
            f"your notebook has no test cell {grade_id}: its hidden cases ran after your last cell"
        )
    if program.skipped:
        listed = "; ".join(
            f"cell {number}" + (f" (binds {', '.join(names[:8])})" if names else "")
            for number, names in program.skipped.items()
        )
        messages.append(f"not run while grading, as tagged in the lab: {listed}")
    return messages


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


def _judge(plan: Plan, run: NotebookRun, program: Program) -> list[TestResult]:
    judge_case = instructor_module("hidden_tests").judge_case
    forbidden = _forbidden_functions(plan, run)
    tests = []
    for group in plan.groups.values():
        test, banned = run.tests[group.grade_id], forbidden.get(group.function)
        changed = sorted({c for record in test.records.values() for c in _tampering(record)})
        cases = []
        for index, case in enumerate(group.cases):
            if changed:
                message = f"{case.name}: not graded: the grader's own code was changed ({', '.join(changed[:3])})"
                cases.append(_failed(case.name, message, "tampered"))
            elif banned:
                message = f"{case.name}: not graded: {explain_forbidden([banned])}"
                cases.append(_failed(case.name, message, "forbidden"))
            else:
                cases.append(_verdict(judge_case, plan, case, test, index, program))
        if test.visible_error and not changed:
            message = f"the visible test in this cell failed: {test.visible_error}"
            cases.insert(0, _failed("visible test", message, "visible_test_failed"))
        points = group.points if all(case["passed"] for case in cases) else 0
        status = "tampered" if changed else "forbidden" if banned else _case_status(test, cases)
        tests.append(
            TestResult(
                group.grade_id, group.task, group.function, points, group.points, status, cases
            )
        )
    return tests


def _tampering(record: dict) -> list[str]:
    """The grader's objects a case's record says were changed (the profiler's watch too)."""
    switched_off = ["the operator watch"] if TAMPERING in record["forbidden"] else []
    return record["tampered"] + switched_off


def _verdict(judge_case, plan: Plan, case: Any, test: TestRun, index: int, program: Program):
    outputs = test.outputs.get(index)
    if outputs is None:
        why = test.status if test.status != "ok" else "crashed"
        return _failed(case.name, f"{case.name}: {_no_output(why, test)}", why)
    forbidden = [f for f in test.records[index]["forbidden"] if f != TAMPERING]
    if forbidden == [UNOBSERVED] and "error" not in outputs:  # it returned, but how?
        message = f"{case.name}: not graded: {explain_forbidden([UNOBSERVED])}"
        return _failed(case.name, message, "unobserved")
    pool_log = test.pool.get(index, [])
    judged = judge_case(
        case, plan.inputs[case.name], outputs, pool_log, expected=plan.expected[case.name]
    )
    result = asdict(judged)
    if not judged.passed:  # a sandbox limit, a catalogued mistake, or just wrong
        result["diagnosis"] = (
            _resource_diagnosis(judged.message) or judged.diagnosis or "wrong_output"
        )
        result["message"] += _unbound_hint(judged.message, program)
    return result


def _no_output(why: str, test: TestRun) -> str:
    if why == "timeout":
        return "stopped: the test cell ran past its time limit (look for an endless loop)"
    if why == "memory":
        return "stopped: the test cell used more memory than the grader allows"
    if not test.ran:
        return "the test cell ended the notebook's kernel (os._exit, a crash or a killed process)"
    return "no result came back"


def _unbound_hint(message: str, program: Program) -> str:
    """A note when the function needs a name only a skipped cell binds."""
    marker = "NameError: name '"
    if marker not in message:
        return ""
    name = message.split(marker, 1)[1].split("'", 1)[0]
    number = program.skipped_binding(name)
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


def _case_status(test: TestRun, cases: list[dict]) -> str:
    for case in cases:
        if not case["passed"] and case["diagnosis"] in {"memory", "processes"}:
            return case["diagnosis"]
    return test.status


def _forbidden_functions(plan: Plan, run: NotebookRun) -> dict[str, str]:
    """function -> what forbidden thing it executed, by the kernel's and the server's records."""
    used: dict[str, list[str]] = {}
    for group in plan.groups.values():
        test = run.tests[group.grade_id]
        names = [n for record in test.records.values() for n in record["forbidden"]]
        names += [n for calls in test.pool.values() for c in calls for n in c.get("forbidden", [])]
        names = [n for n in names if n not in (UNOBSERVED, TAMPERING)]
        if names:
            used.setdefault(group.function, []).extend(names)
    found = {function: ", ".join(dict.fromkeys(names)) for function, names in used.items()}
    # The parallel version maps attention_function over the heads: it inherits its verdict.
    if "attention_function" in found and "parallel_multihead_attention" not in found:
        found["parallel_multihead_attention"] = (
            found["attention_function"] + " (in attention_function)"
        )
    return found
