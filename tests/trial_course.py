"""Trial courses for the tests: a throwaway nbgrader course with the lab's configuration, made-up
submissions, and plain ``nbgrader autograde`` over them."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat

from grader.course.course_dir import (
    COURSE_DIR,
    CourseError,
    graded_cells,
    open_gradebook,
    run_nbgrader,
)

TRIAL_COURSE_ID = "trial"
SUBMITTED_AT = "2026-11-25 10:00:00.000000 UTC"


def nbgrader_metadata(grade_id: str, *, solution: bool = False, points: int | None = None) -> dict:
    """A cell's ``nbgrader`` metadata as JupyterLab's Create Assignment toolbar writes it: an
    "Autograded answer" with ``solution=True``, an "Autograder tests" cell with ``points``."""
    metadata = {
        "grade": points is not None,
        "grade_id": grade_id,
        "locked": not solution,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    return metadata if points is None else {**metadata, "points": points}


def make_trial_course(root: Path, master: nbformat.NotebookNode, assignment: str) -> Path:
    """A course at ``root`` with the lab's nbgrader configuration, ``master`` as the source of
    ``assignment``, and the assignment generated (its gradebook included)."""
    source = root / "source" / assignment
    source.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(
        f"c = get_config()\nload_subconfig({str(COURSE_DIR / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.course_id = {TRIAL_COURSE_ID!r}\n"
    )
    nbformat.write(master, source / f"{assignment}.ipynb")
    args = ["generate_assignment", assignment, "--force", f"--CourseDirectory.root={root}"]
    done = run_nbgrader(args, root)
    if done.returncode != 0:
        raise CourseError(f"nbgrader generate_assignment failed:\n{done.stdout}\n{done.stderr}")
    return root


def submit(course: Path, assignment: str, student: str, notebook: nbformat.NotebookNode) -> Path:
    """Put ``notebook`` where ``nbgrader collect`` would: submitted/<student>/<assignment>/."""
    folder = course / "submitted" / student / assignment
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    nbformat.write(notebook, folder / f"{assignment}.ipynb")
    (folder / "timestamp.txt").write_text(SUBMITTED_AT)
    return folder


def with_answers(release: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    """A copy of the student notebook with ``answers`` (grade_id -> source) filled in."""
    notebook = nbformat.reads(nbformat.writes(release), as_version=4)
    for grade_id, cell in graded_cells(notebook).items():
        cell.source = answers.get(grade_id, cell.source)
    return notebook


def plain_autograde(course: Path, assignment: str, **env: str) -> dict[str, dict[str, float]]:
    """Grade every submission of ``course`` with plain ``nbgrader autograde``: student ->
    grade_id -> points, read back from the gradebook."""
    args = ["autograde", assignment, "--force", f"--CourseDirectory.root={course}"]
    done = run_nbgrader(args, course, **env)
    if done.returncode != 0:
        raise CourseError(f"nbgrader autograde failed:\n{done.stderr[-4000:]}")
    with open_gradebook(course, TRIAL_COURSE_ID) as gradebook:
        return {
            submission.student.id: {
                grade.name: grade.score
                for notebook in submission.notebooks
                for grade in notebook.grades
            }
            for submission in gradebook.find_assignment(assignment).submissions
        }
