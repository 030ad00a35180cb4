"""Grading throughput: ``python -m grader autograde`` (sandboxed) against plain ``nbgrader autograde``.

    python -m benchmarks.grade [--students 12] [--jobs 2]

A copy of the lab's course, every student submitting the master's answers (some with a
catalogued mistake in Task 1), graded from fresh copies by each tool as instructors run it,
start-up included. Prints a table and writes ``bench-results/grade.json``, with both tools'
total scores per student so that disagreements show.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from grader.course.course_dir import (
    ASSIGNMENT,
    COURSE_DIR,
    NOTEBOOK,
    graded_cells,
    master_path,
    nbgrader_env,
    open_gradebook,
    remove_solution_markers,
)
from grader.course.release import generate_release

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results" / "grade.json"
SAMPLE_DATA = REPO.parent / "shared" / "data" / "imdb_sample.csv"

# Task 1 variants cycled over the class: (label, transformation of the master's answer).
_MISTAKES = {
    "correct": lambda source: source,
    "missing_scale": lambda source: source.replace("/ math.sqrt(s)", ""),
    "softmax_wrong_axis": lambda source: source.replace("dim=2)", "dim=1)", 1),
}


def _timed(args: list[str], cwd: Path) -> float:
    """Seconds ``python -m ARGS`` takes in ``cwd``, its start-up included."""
    # The notebook's data cell: the real IMDB sample when it is here, else the generated corpus.
    imdb = str(SAMPLE_DATA) if SAMPLE_DATA.exists() else "synthetic"
    env = nbgrader_env(LAB_IMDB=imdb)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return time.perf_counter() - started


def make_course(root: Path, students: int) -> tuple[Path, dict[str, str]]:
    """The lab's course set up as an instructor does (config and master copied, the student
    notebook generated) and ``students`` submissions where ``nbgrader collect`` puts them;
    student -> variant."""
    course = root / "course"
    shutil.copytree(COURSE_DIR / "source", course / "source")
    shutil.copy(COURSE_DIR / "nbgrader_config.py", course)
    release = generate_release(course)
    answers = {
        grade_id: remove_solution_markers(cell.source)
        for grade_id, cell in graded_cells(nbformat.read(master_path(course), 4)).items()
        if cell.metadata.nbgrader.get("solution")
    }
    variants = {}
    for index in range(students):
        student = f"student{index:03d}"
        variants[student] = list(_MISTAKES)[index % len(_MISTAKES)] if index % 2 else "correct"
        task1 = _MISTAKES[variants[student]](answers["multihead_attention"])
        notebook = nbformat.read(release, as_version=4)
        for grade_id, cell in graded_cells(notebook).items():
            cell.source = {**answers, "multihead_attention": task1}.get(grade_id, cell.source)
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / NOTEBOOK)
    return course, variants


def _totals(course: Path) -> dict[str, dict]:
    """student -> {"total": score, "failed": [test cells below full marks]}."""
    totals = {}
    with open_gradebook(course) as gradebook:
        for submission in gradebook.find_assignment(ASSIGNMENT).submissions:
            grades = [grade for notebook in submission.notebooks for grade in notebook.grades]
            failed = sorted(grade.name for grade in grades if (grade.score or 0) < grade.max_score)
            totals[submission.student.id] = {"total": submission.score, "failed": failed}
    return totals


def time_both(course: Path, jobs: int) -> tuple[float, float, dict[str, dict]]:
    """Seconds plain nbgrader and the sandboxed grader take, each on its own copy of ``course``,
    and both tools' totals per student."""
    plain, sandboxed = course.parent / "nbgrader", course.parent / "grader"
    shutil.copytree(course, plain)
    shutil.copytree(course, sandboxed)
    root = f"--CourseDirectory.root={plain}"
    plain_seconds = _timed(["nbgrader", "autograde", ASSIGNMENT, "--force", root], plain)
    grader = ["grader", "autograde", "--course-dir", str(sandboxed), "--assignment", ASSIGNMENT]
    grader_seconds = _timed(grader + ["--jobs", str(jobs), "--quiet"], REPO)
    return plain_seconds, grader_seconds, {"nbgrader": _totals(plain), "grader": _totals(sandboxed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grade")
    parser.add_argument("--students", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as tmp:
        course, variants = make_course(Path(tmp) / "template", args.students)
        plain_seconds, grader_seconds, scores = time_both(course, args.jobs)
    rows = [
        {"tool": "nbgrader autograde (no sandbox)", "seconds": round(plain_seconds, 1)},
        {
            "tool": f"python -m grader autograde --jobs {args.jobs} (sandboxed)",
            "seconds": round(grader_seconds, 1),
        },
    ]
    for row in rows:
        row["submissions_per_minute"] = round(args.students * 60 / row["seconds"], 2)
        row["seconds_per_submission"] = round(row["seconds"] / args.students, 2)
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    report = {
        "students": args.students,
        "jobs": args.jobs,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "sandbox": "bwrap" if shutil.which("bwrap") else "none (bwrap missing)",
        "rows": rows,
        "speedup": round(speedup, 2),
        "target_speedup": 5.0,
        "scores": {
            student: {
                "variant": variants[student],
                **{tool: scores[tool].get(student, {}).get("total") for tool in scores},
                **{
                    f"{tool}_failed": scores[tool].get(student, {}).get("failed") for tool in scores
                },
            }
            for student in sorted(variants)
        },
    }
    print(f"{'tool':<52} {'seconds':>8} {'s/sub':>7} {'subs/min':>9}")
    for row in rows:
        print(
            f"{row['tool']:<52} {row['seconds']:>8} {row['seconds_per_submission']:>7} "
            f"{row['submissions_per_minute']:>9}"
        )
    print(f"speed-up: {speedup:.2f}x (target 5x) on {report['machine']}")
    disagreements = {s: v for s, v in report["scores"].items() if v["nbgrader"] != v["grader"]}
    print(
        f"score disagreements between the tools: {len(disagreements)}"
        + "".join(f"\n  {s}: {v}" for s, v in disagreements.items())
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
