"""``python -m grader report``: one CSV row per student, from the gradebook and the verdicts.

    python -m grader report --course-dir notebooks --assignment transformers_from_scratch \\
        --csv grades.csv

Columns: ``student_id, task1_score, task1_max, task2_score, task2_max, total, max_total,
status, diagnoses``. Scores come from nbgrader's gradebook (so a grader's manual override
shows); status and diagnoses (``;``-separated mistake keys, e.g. ``missing_scale``) from
the grader's verdicts. Status is ``ok``, ``forbidden``, ``memory``, ``processes``,
``timeout``, ``crashed``, ``invalid``, ``missing``, ``error``, or ``not_graded`` for a
submission in the gradebook that ``python -m grader autograde`` has not seen.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from grader.course.gradebook import default_db_url
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


def rows(course_dir: Path, assignment: str, db_url: str | None = None) -> list[dict]:
    """The report's rows, one per student with a submission, sorted by student id."""
    from nbgrader.api import Gradebook, MissingEntry

    from grader.judge.grade import instructor_module

    task_of = {
        grade_id: group.task for grade_id, group in instructor_module("hidden_cases").GROUPS.items()
    }
    verdicts = load_results(course_dir, assignment)
    table = []
    with Gradebook(db_url or default_db_url(course_dir)) as gradebook:
        try:
            submissions = gradebook.find_assignment(assignment).submissions
        except MissingEntry:
            raise SystemExit(f"assignment {assignment!r} is not in the gradebook") from None
        for submission in submissions:
            scores = {1: 0.0, 2: 0.0}
            maxima = {1: 0.0, 2: 0.0}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    task = task_of.get(grade.name)
                    if task is None:
                        continue
                    scores[task] += grade.score or 0.0
                    maxima[task] += grade.max_score or 0.0
            verdict = verdicts.get(submission.student.id)
            table.append(
                {
                    "student_id": submission.student.id,
                    "task1_score": _number(scores[1]),
                    "task1_max": _number(maxima[1]),
                    "task2_score": _number(scores[2]),
                    "task2_max": _number(maxima[2]),
                    "total": _number(scores[1] + scores[2]),
                    "max_total": _number(maxima[1] + maxima[2]),
                    "status": verdict.status if verdict else "not_graded",
                    "diagnoses": ";".join(verdict.diagnoses) if verdict else "",
                }
            )
    return sorted(table, key=lambda row: row["student_id"])


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 2)


def write_csv(table: list[dict], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "report":
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m grader report")
    parser.add_argument("--course-dir", required=True, type=Path)
    parser.add_argument("--assignment", required=True)
    parser.add_argument("--csv", required=True, type=Path, help="where to write the CSV")
    parser.add_argument("--db-url", default=None)
    args = parser.parse_args(argv)
    table = rows(args.course_dir.resolve(), args.assignment, args.db_url)
    write_csv(table, args.csv)
    print(f"wrote {len(table)} rows to {args.csv}")
    return 0
