"""``python -m grader autograde``: grade a whole class in sandboxes, in parallel.

Each submission in nbgrader's ``submitted/<student>/<assignment>/`` is probed in its own
sandbox and judged here; this process alone records the verdicts as each finishes, a crash or
hang included: the gradebook row, the autograded notebook and feedback, the full verdict. The
hidden inputs come from one seed per assignment (``--seed``, else the recorded one, else a new
one, recorded), so any regrade gives the same verdicts.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from grader.course.course_dir import CourseError
from grader.course.feedback import write_feedback
from grader.course.gradebook import GradebookWriter
from grader.course.records import Records
from grader.judge.cases import Plan
from grader.judge.grade import grade_submission, make_plan
from grader.judge.instructor import load_solutions
from grader.judge.scoring import all_failed
from grader.judge.verdicts import SubmissionResult
from grader.sandbox import launch as sandbox
from grader.sandbox.launch import Limits

Item, Result = TypeVar("Item"), TypeVar("Result")
# Sandbox limits on the command line: option -> (Limits field, help).
LIMIT_OPTIONS = {
    "--timeout": ("wall_seconds", "wall-clock seconds per test cell"),
    "--memory": ("memory_mb", "memory bound of a sandbox, MiB"),
    "--cpu-seconds": ("cpu_seconds", "CPU seconds per process"),
    "--processes": ("processes", "processes per sandbox"),
    "--cell-seconds": ("cell_seconds", "seconds each notebook cell may run before an interrupt"),
    "--notebook-seconds": ("notebook_seconds", "seconds for a whole submission, every run of it"),
}


def main(argv: list[str]) -> int:
    """``argv``: ``autograde`` and its options."""
    parser = argparse.ArgumentParser(
        prog="python -m grader autograde",
        description="Grade submissions in sandboxes and record the scores in nbgrader's gradebook.",
    )
    parser.add_argument("--course-dir", required=True, type=Path, help="nbgrader course root")
    parser.add_argument("--assignment", required=True, help="assignment name")
    parser.add_argument("--student", action="append", default=[], help="grade only these")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once (2)")
    parser.add_argument(
        "--seed", type=int, help="seed of the hidden inputs (default: the last run's)"
    )
    for option, (field, text) in LIMIT_OPTIONS.items():
        default = getattr(Limits(), field)
        parser.add_argument(
            option, dest=field, type=type(default), default=default, help=f"{text} ({default:g})"
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv[1:])
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    results = autograde(
        args.course_dir,
        args.assignment,
        students=args.student or None,
        jobs=args.jobs,
        limits=Limits(**{field: getattr(args, field) for field, _ in LIMIT_OPTIONS.values()}),
        progress=not args.quiet,
        seed=args.seed,
    )
    print(summarise(results))
    return 0


def find_students(course_dir: Path, assignment: str) -> list[str]:
    submitted = Path(course_dir) / "submitted"
    if not submitted.is_dir():
        raise CourseError(f"no submissions folder {submitted} (nbgrader collect puts them there)")
    return sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir())


def autograde(
    course_dir: Path,
    assignment: str,
    *,
    students: list[str] | None = None,
    jobs: int = 2,
    limits: Limits | None = None,
    progress: bool = True,
    seed: int | None = None,
) -> list[SubmissionResult]:
    """Grade ``students`` (default: every submission) and record everything; see module doc."""
    course_dir = Path(course_dir).resolve()
    students = students or find_students(course_dir, assignment)
    if sandbox.bwrap_executable() is None:
        sandbox.warn_unsandboxed()
    import torch

    torch.set_num_threads(1)  # the judge shares the machine with the sandboxes
    results = []
    with GradebookWriter(course_dir, assignment) as gradebook:
        notebook = gradebook.graded_notebook(set(load_solutions().hidden_cases.GROUPS))
        records = Records(course_dir, assignment)
        plan = seeded_plan(records, seed, progress)
        plan.test_sources = gradebook.visible_tests(notebook)
        bar = tqdm(total=len(students), desc="grading", unit="sub", disable=not progress)
        with tempfile.TemporaryDirectory(prefix="grader-") as work:
            os.chmod(work, 0o700)

            def grade(student: str, slot: int) -> SubmissionResult:
                path = course_dir / "submitted" / student / assignment / f"{notebook}.ipynb"
                return grade_one(path, student, assignment, plan, limits or Limits(), work, slot)

            for result in in_slots(grade, students, jobs):
                submitted = course_dir / "submitted" / result.student / assignment
                penalty = gradebook.record(result, submitted)
                write_feedback(course_dir, result, submitted, plan.test_sources, penalty)
                records.save(result)
                results.append(result)
                bar.set_postfix_str(f"{result.student}: {result.status}", refresh=False)
                bar.update()
        bar.close()
    return sorted(results, key=lambda result: result.student)


def seeded_plan(records: Records, seed: int | None, progress: bool) -> Plan:
    """The hidden cases drawn from ``seed``, else the recorded seed, else a new one; the seed
    used is recorded for the next run."""
    previous = records.seed()
    plan = make_plan(previous if seed is None else seed)
    if progress and previous is not None and plan.seed != previous:
        print(
            f"note: grading with seed {plan.seed}; results graded before used "
            f"{previous} (each result records its own)",
            file=sys.stderr,
        )
    records.record_seed(plan.seed)
    return plan


def in_slots(work: Callable[[Item, int], Result], items: list[Item], jobs: int) -> Iterator[Result]:
    """``work(item, slot)`` for every item, ``jobs`` at once, each call holding a slot of
    ``range(jobs)`` no other call holds meanwhile (a sandbox's user id comes from it); the
    results as they finish."""
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)

    def run(item: Item) -> Result:
        slot = slots.get()
        try:
            return work(item, slot)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in as_completed([pool.submit(run, item) for item in items]):
            yield future.result()


def grade_one(
    notebook: Path, student: str, assignment: str, plan: Plan, limits: Limits, work: str, slot: int
) -> SubmissionResult:
    """The verdict on one submission; when the grader itself fails on it, an "error" result
    with every test failed (one submission must never stop the class)."""
    started = time.monotonic()
    try:
        work_dir = Path(work) / student
        return grade_submission(
            notebook, student, assignment, plan, limits=limits, work_dir=work_dir, slot=slot
        )
    except Exception as error:  # noqa: BLE001 - reported in the result, to the instructor
        result = SubmissionResult(student, assignment, notebook.stem, "error", seed=plan.seed)
        result.tests = all_failed(plan, "error", "the grader failed on this submission")
        result.messages.append(f"grader error: {type(error).__name__}: {error}")
        result.seconds = round(time.monotonic() - started, 2)
        return result


def summarise(results: list[SubmissionResult]) -> str:
    if not results:
        return "no submissions graded"
    counts = Counter(result.status for result in results)
    mean = sum(result.score() for result in results) / len(results)
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))
    seeds = ", ".join(str(seed) for seed in sorted({r.seed for r in results if r.seed is not None}))
    return (
        f"graded {len(results)} submissions (mean {mean:.1f} / {results[0].max_score():g}); "
        f"{statuses}; seed {seeds}"
    )
