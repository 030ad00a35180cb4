"""``python -m grader report``: one CSV row per student, from the gradebook and the verdicts.

Scores come from nbgrader's gradebook (so a grader's manual override shows); status and
diagnoses (``;``-separated mistake keys, e.g. ``missing_scale``) from the grader's verdicts.
Status is a verdict's (``ok``, ``forbidden``, ``timeout``, ...) or ``not_graded`` for a
submission in the gradebook that ``python -m grader autograde`` has not seen.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from grader.course.records import load_results

COLUMNS = [
    "student_id",
    "task1_score",
    "task1_max",
    "task2_score",
    "task2_max",
    "total",
    "max_total",
    "status",
    "diagnoses",
]


def rows(course_dir: Path, assignment: str) -> list[dict]:
    """The report's rows, one per student with a submission, sorted by student id."""
    from nbgrader.api import Gradebook, MissingEntry

    from grader.judge.grade import instructor_module

    task_of = {grade_id: g.task for grade_id, g in instructor_module("hidden_cases").GROUPS.items()}
    verdicts = load_results(course_dir, assignment)
    table = []
    with Gradebook(f"sqlite:///{Path(course_dir).resolve() / 'gradebook.db'}") as gradebook:
        try:
            submissions = gradebook.find_assignment(assignment).submissions
        except MissingEntry:
            raise SystemExit(f"assignment {assignment!r} is not in the gradebook") from None
        for submission in submissions:
            sums = {"task1_score": 0.0, "task1_max": 0.0, "task2_score": 0.0, "task2_max": 0.0}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.name in task_of:
                        sums[f"task{task_of[grade.name]}_score"] += grade.score or 0.0
                        sums[f"task{task_of[grade.name]}_max"] += grade.max_score or 0.0
            sums["total"] = sums["task1_score"] + sums["task2_score"]
            sums["max_total"] = sums["task1_max"] + sums["task2_max"]
            verdict = verdicts.get(submission.student.id)
            table.append(
                {
                    "student_id": submission.student.id,
                    **{column: _number(value) for column, value in sums.items()},
                    "status": verdict.status if verdict else "not_graded",
                    "diagnoses": ";".join(verdict.diagnoses) if verdict else "",
                }
            )
    return sorted(table, key=lambda row: row["student_id"])


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 2)


def main(argv: list[str]) -> int:
    """``argv``: ``report`` and its options."""
    parser = argparse.ArgumentParser(prog="python -m grader report")
    parser.add_argument("--course-dir", required=True, type=Path)
    parser.add_argument("--assignment", required=True)
    parser.add_argument("--csv", required=True, type=Path, help="where to write the CSV")
    args = parser.parse_args(argv[1:])
    table = rows(args.course_dir.resolve(), args.assignment)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    print(f"wrote {len(table)} rows to {args.csv}")
    return 0
