"""``python -m grader autograde``: grade a whole class in sandboxes, in parallel.

Each submission in nbgrader's ``submitted/<student>/<assignment>/`` is probed in its own
sandbox and judged here; this process alone records the verdicts (gradebook, autograded
notebook, feedback, full verdict) as each finishes, a crash or hang included. The hidden inputs
come from one seed per assignment (``--seed``, else the recorded one, else a new one, recorded),
so any regrade gives the same verdicts.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from grader.course.feedback import write_feedback
from grader.course.gradebook import GradebookWriter, copy_exchange_files
from grader.course.nbgrader import CourseError
from grader.course.records import record_seed, recorded_seed, save_result
from grader.judge.grade import all_failed, grade_submission, instructor_module, make_plan
from grader.judge.verdicts import SubmissionResult
from grader.sandbox import launch as sandbox
from grader.sandbox.launch import Limits

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
        "--seed",
        type=int,
        default=None,
        help="seed of the hidden inputs (default: the one recorded by the last run, else new)",
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
    cases_per_test: int | None = None,
    progress: bool = True,
    grade_one: Callable[..., SubmissionResult] = grade_submission,
    seed: int | None = None,
) -> list[SubmissionResult]:
    """Grade ``students`` (default: every submission) and record everything; see module doc."""
    course_dir = Path(course_dir).resolve()
    limits = limits or Limits()
    students = students or find_students(course_dir, assignment)
    if sandbox.bwrap_executable() is None:
        sandbox.warn_unsandboxed()
    import torch

    torch.set_num_threads(1)  # the judge shares the machine with the sandboxes
    groups = instructor_module("hidden_cases").GROUPS
    results: list[SubmissionResult] = []
    with GradebookWriter(course_dir, assignment) as writer:
        notebook = writer.graded_notebook(set(groups))
        previous = recorded_seed(course_dir, assignment)
        plan = make_plan(seed if seed is not None else previous, cases_per_test)
        plan.test_sources = writer.visible_tests(notebook)
        if previous is not None and plan.seed != previous and progress:
            print(
                f"note: grading with seed {plan.seed}; results graded before used "
                f"{previous} (each result records its own)",
                file=sys.stderr,
            )
        record_seed(course_dir, assignment, plan.seed)
        slots: queue.Queue[int] = queue.Queue()
        for slot in range(jobs):
            slots.put(slot)
        with tempfile.TemporaryDirectory(prefix="grader-") as work:
            os.chmod(work, 0o700)

            def grade(student: str) -> SubmissionResult:
                slot, started = slots.get(), time.monotonic()
                path = course_dir / "submitted" / student / assignment / f"{notebook}.ipynb"
                try:
                    return grade_one(
                        path,
                        student,
                        assignment,
                        plan,
                        limits=limits,
                        work_dir=Path(work) / student,
                        slot=slot,
                    )
                except Exception as error:  # noqa: BLE001 - one submission must never stop the class
                    result = SubmissionResult(
                        student, assignment, notebook, "error", seed=plan.seed
                    )
                    result.tests = all_failed(plan, "error", "the grader failed on this submission")
                    result.messages.append(f"grader error: {type(error).__name__}: {error}")
                    result.seconds = round(time.monotonic() - started, 2)
                    return result
                finally:
                    slots.put(slot)

            bar = tqdm(total=len(students), desc="grading", unit="sub", disable=not progress)
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(grade, student) for student in students]
                for future in as_completed(futures):
                    result = future.result()
                    submitted = course_dir / "submitted" / result.student / assignment
                    penalty = writer.record(result, submitted)
                    writer.write_autograded(result, submitted)
                    feedback = write_feedback(course_dir, result, penalty)
                    copy_exchange_files(submitted, feedback.parent)
                    save_result(course_dir, result)
                    results.append(result)
                    bar.set_postfix_str(f"{result.student}: {result.status}", refresh=False)
                    bar.update()
            bar.close()
    return sorted(results, key=lambda result: result.student)


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
