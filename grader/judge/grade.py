"""The trusted judge: grades one submission from the raw outputs of its notebook's run.

It never runs submission code. One submission, top to bottom: its notebook is read as a
program (``program``), run in the sandbox with each test cell's hidden cases drawn from the
plan's seed (``channel``), its tests scored (``scoring``, each case's verdict by ``rules``),
and what the learner should know about the run added (``run_messages``). Every result records
its seed, so a regrade with it gives the same verdicts.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from grader.judge.cases import Plan, case_inputs, expected_outputs
from grader.judge.channel import run_notebook
from grader.judge.instructor import load_solutions
from grader.judge.program import read_program
from grader.judge.run_messages import run_messages
from grader.judge.scoring import all_failed, score_tests, submission_status
from grader.judge.verdicts import SubmissionResult
from grader.sandbox.launch import Limits


def make_plan(seed: int | None = None) -> Plan:
    """Draw every case's inputs from ``seed`` (a new secret one if None) and compute the
    reference outputs."""
    seed = secrets.randbits(63) if seed is None else int(seed)
    groups = dict(load_solutions().hidden_cases.GROUPS)
    cases = [case for group in groups.values() for case in group.cases]
    inputs = {case.name: case_inputs(case, seed) for case in cases}
    expected = {case.name: expected_outputs(case, inputs[case.name]) for case in cases}
    return Plan(groups, inputs, expected, seed)


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
    result.tests = score_tests(plan, run, program.skipped)
    result.status = submission_status(result.tests)
    result.messages += run_messages(program, run, limits)
    result.seconds = round(time.monotonic() - started, 2)
    return result
