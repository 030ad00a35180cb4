"""One submission's test results, from what its notebook's run brought back.

Each case is judged by :func:`grader.judge.rules.judge_case` on the kernel's outcome and, for
pool cases, on the server's record of what the pool returned (never the kernel's). A test
whose cell crashed, hung or exhausted a limit loses its own points; a function that executed a
forbidden built-in (``grader.learner.forbidden``) scores zero on every test that runs it; a
test during which the grader's own code was rebound scores zero with the status "tampered".
"""

from __future__ import annotations

from grader.judge.cases import Plan
from grader.judge.channel import NotebookRun, TestRun
from grader.judge.rules import judge_graded_case
from grader.judge.verdicts import STATUSES, TestResult
from grader.learner.forbidden import TAMPERING, UNOBSERVED
from grader.learner.forbidden import explain as explain_forbidden


def score_tests(plan: Plan, run: NotebookRun, skipped: dict[int, list[str]]) -> list[TestResult]:
    """One result per test cell. skipped: cells not run while grading -> the names they bind."""
    forbidden = _forbidden_functions(plan, run)
    tests = []
    for group in plan.groups.values():
        test, banned = run.tests[group.grade_id], forbidden.get(group.function)
        changed = sorted({c for record in test.records.values() for c in _tampering(record)})
        cases = []
        for index, case in enumerate(group.cases):
            if changed:
                why = f"the grader's own code was changed ({', '.join(changed[:3])})"
                cases.append(_failed(case.name, f"{case.name}: not graded: {why}", "tampered"))
            elif banned:
                message = f"{case.name}: not graded: {explain_forbidden([banned])}"
                cases.append(_failed(case.name, message, "forbidden"))
            else:
                cases.append(_case_verdict(plan, case, test, index, skipped))
        if test.visible_error and not changed:
            message = f"the visible test in this cell failed: {test.visible_error}"
            cases.insert(0, _failed("visible test", message, "visible_test_failed"))
        points = group.points if all(case["passed"] for case in cases) else 0
        # A case that died of a sandbox limit names the test's status.
        limits = [c["diagnosis"] for c in cases if c["diagnosis"] in ("memory", "processes")]
        status = "tampered" if changed else "forbidden" if banned else [*limits, test.status][0]
        tests.append(
            TestResult(
                group.grade_id, group.task, group.function, points, group.points, status, cases
            )
        )
    return tests


def submission_status(tests: list[TestResult]) -> str:
    """The worst status of any test (``STATUSES`` order), "ok" when none is worse."""
    statuses = {test.status for test in tests}
    return next((status for status in STATUSES if status in statuses), "ok")


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


def _failed(name: str, message: str, diagnosis: str) -> dict:
    return {"name": name, "passed": False, "message": message, "diagnosis": diagnosis}


def _tampering(record: dict) -> list[str]:
    """The grader's objects a case's record says were changed (the profiler's watch too)."""
    switched_off = ["the operator watch"] if TAMPERING in record["forbidden"] else []
    return record["tampered"] + switched_off


def _case_verdict(plan: Plan, case, test: TestRun, index: int, skipped: dict) -> dict:
    outcome = test.outputs.get(index)
    if outcome is None:
        why = test.status if test.status != "ok" else "crashed"
        return _failed(case.name, f"{case.name}: {_no_output(why, test)}", why)
    forbidden = [f for f in test.records[index]["forbidden"] if f != TAMPERING]
    if forbidden == [UNOBSERVED] and not outcome.error:  # it returned, but how?
        message = f"{case.name}: not graded: {explain_forbidden([UNOBSERVED])}"
        return _failed(case.name, message, "unobserved")
    outcome.pool_log = test.pool.get(index, [])
    expected = plan.expected[case.name]
    return judge_graded_case(case, plan.inputs[case.name], outcome, expected, skipped)


def _no_output(why: str, test: TestRun) -> str:
    if why == "timeout":
        return "stopped: the test cell ran past its time limit (look for an endless loop)"
    if why == "memory":
        return "stopped: the test cell used more memory than the grader allows"
    if not test.ran:
        return "the test cell ended the notebook's kernel (os._exit, a crash or a killed process)"
    return "no result came back"


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
