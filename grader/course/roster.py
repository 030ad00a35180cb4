"""``python -m grader report``: one CSV row per learner of the roster, from the gradebook and the
verdicts.

The roster is nbgrader's (``nbgrader db student add``/``import``, the formgrader), plus anyone
who submitted. Scores come from nbgrader's gradebook (so a grader's manual override and the
course's late policy show): ``total`` is after the late penalty, as ``nbgrader export``'s
``score``. Status is a verdict's (``ok``, ``forbidden``, ``timeout``, ...), ``missing`` for a
learner with no submission, or ``not_graded`` for a submission ``python -m grader autograde``
has not seen; diagnoses are the verdict's ``;``-separated mistake keys (``missing_scale``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from grader.course.course_dir import open_gradebook
from grader.course.records import Records

COLUMNS = (
    "student_id task1_score task1_max task2_score task2_max total max_total status diagnoses "
    "submitted_at seconds_late late_penalty"
).split()


def rows(course_dir: Path, assignment: str) -> list[dict]:
    """The report's rows, one per roster learner or submitter, sorted by student id."""
    from nbgrader.api import MissingEntry

    from grader.judge.instructor import load_solutions

    task_of = {grade_id: g.task for grade_id, g in load_solutions().hidden_cases.GROUPS.items()}
    verdicts = Records(course_dir, assignment).results()
    table = []
    with open_gradebook(course_dir) as gradebook:
        try:
            record = gradebook.find_assignment(assignment)
        except MissingEntry:
            raise SystemExit(f"assignment {assignment!r} is not in the gradebook") from None
        maxima = {"task1_max": 0.0, "task2_max": 0.0}
        for notebook in record.notebooks:
            for cell in notebook.grade_cells:
                if cell.name in task_of:
                    maxima[f"task{task_of[cell.name]}_max"] += cell.max_score or 0.0
        submissions = {submission.student.id: submission for submission in record.submissions}
        for student in sorted({s.id for s in gradebook.students} | set(submissions)):
            sums = {"task1_score": 0.0, "task2_score": 0.0, **maxima}
            submission = submissions.get(student)
            for notebook in submission.notebooks if submission else []:
                for grade in notebook.grades:
                    if grade.name in task_of:
                        sums[f"task{task_of[grade.name]}_score"] += grade.score or 0.0
            penalty = (submission.late_submission_penalty or 0.0) if submission else 0.0
            raw = sums["task1_score"] + sums["task2_score"]
            sums["total"] = max(0.0, raw - penalty)
            sums["max_total"] = maxima["task1_max"] + maxima["task2_max"]
            verdict = verdicts.get(student)
            table.append(
                {
                    "student_id": student,
                    **{column: _number(value) for column, value in sums.items()},
                    "status": _status(submission, verdict),
                    "diagnoses": ";".join(verdict.diagnoses) if verdict and submission else "",
                    "submitted_at": _when(submission),
                    "seconds_late": _number(submission.total_seconds_late) if submission else "",
                    "late_penalty": _number(penalty),
                }
            )
    return table


def _status(submission, verdict) -> str:
    if submission is None:
        return "missing"
    return verdict.status if verdict else "not_graded"


def _when(submission) -> str:
    """The submission's time as nbgrader recorded it (UTC), or "" without one."""
    if submission is None or submission.timestamp is None:
        return ""
    return f"{submission.timestamp:%Y-%m-%d %H:%M:%S} UTC"


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
