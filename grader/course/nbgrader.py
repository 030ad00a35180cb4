"""The lab's nbgrader course: its paths, running nbgrader, cell metadata and markers, and trial
courses (a throwaway course with made-up submissions, for the tests and the benchmark)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import nbformat

# The course grades the functions the judge runs.
from grader.judge.program import GRADED_FUNCTIONS as GRADED_FUNCTIONS
from grader.judge.program import grading_metadata

REPO_ROOT = Path(__file__).resolve().parents[2]
COURSE_DIR = REPO_ROOT / "notebooks"
ASSIGNMENT = "transformers_from_scratch"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
TRIAL_COURSE_ID = "trial"

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# Text that only hidden tests contain; none of it may reach a learner.
HIDDEN_TEST_TEXT = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "hidden_tests", "run_group(")


class CourseError(RuntimeError):
    """A course command cannot do what was asked; the message says what to change."""


def master_path(course_dir: Path = COURSE_DIR) -> Path:
    return course_dir / "source" / ASSIGNMENT / NOTEBOOK


def release_path(course_dir: Path = COURSE_DIR) -> Path:
    return course_dir / "release" / ASSIGNMENT / NOTEBOOK


def course_config(course_dir: Path):
    """The course's ``nbgrader_config.py`` as a traitlets Config (what nbgrader run in
    ``course_dir`` reads from there)."""
    from traitlets.config.loader import PyFileConfigLoader

    path = Path(course_dir) / "nbgrader_config.py"
    if not path.is_file():
        raise CourseError(f"no nbgrader_config.py in {course_dir}: is it the course folder?")
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


def nbgrader_env(**extra: str) -> dict[str, str]:
    """The environment plus ``extra``, this interpreter's scripts first on PATH: nbgrader runs
    ``alembic`` and ``jupyter`` by name, so an environment works without being activated."""
    env = dict(os.environ, **extra)
    scripts, path = str(Path(sys.executable).parent), env.get("PATH", "")
    if scripts not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join(filter(None, [scripts, path]))
    return env


def open_gradebook(course_dir: Path, course_id: str | None = None):
    """nbgrader's Gradebook of ``course_dir`` (created when missing). Creating one runs
    ``alembic`` by name: this interpreter's scripts are on PATH while it opens."""
    from nbgrader.api import Gradebook

    database = f"sqlite:///{Path(course_dir).resolve() / 'gradebook.db'}"
    with mock.patch.dict(os.environ, {"PATH": nbgrader_env()["PATH"]}):
        return Gradebook(database, course_id) if course_id else Gradebook(database)


def run_nbgrader(args: list[str], course_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course_dir`` (where its nbgrader_config.py is)."""
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course_dir,
        capture_output=True,
        text=True,
        env=nbgrader_env(**env),
    )


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


def graded_cells(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """grade_id -> cell, for every cell nbgrader grades or replaces (answers and tests)."""
    return {
        grading_metadata(cell)["grade_id"]: cell
        for cell in nb.cells
        if "grade_id" in grading_metadata(cell)
    }


def remove_hidden_tests(source: str, note: str | None = None) -> str:
    """Drop every BEGIN/END HIDDEN TESTS region (markers included), or put ``note`` there."""
    kept, hidden = [], False
    for line in source.split("\n"):
        if BEGIN_HIDDEN in line:
            if hidden:
                raise CourseError("Nested BEGIN HIDDEN TESTS in the master notebook.")
            hidden = True
            if note is not None:
                kept.append(note)
        elif END_HIDDEN in line:
            if not hidden:
                raise CourseError("END HIDDEN TESTS without BEGIN in the master notebook.")
            hidden = False
        elif not hidden:
            kept.append(line)
    if hidden:
        raise CourseError("BEGIN HIDDEN TESTS without END in the master notebook.")
    return "\n".join(kept).rstrip("\n")


def remove_solution_markers(source: str) -> str:
    """A solution cell's source as a learner hands it in: the BEGIN/END SOLUTION lines dropped."""
    return "\n".join(
        line for line in source.split("\n") if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION)
    )


def hidden_test_leaks(text: str) -> list[str]:
    """The pieces of hidden test text found in ``text`` (empty when clean)."""
    return [marker for marker in HIDDEN_TEST_TEXT if marker in text]


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
    done = run_nbgrader(args, root, PYTHONPATH=str(REPO_ROOT))
    if done.returncode != 0:
        raise CourseError(f"nbgrader generate_assignment failed:\n{done.stdout}\n{done.stderr}")
    return root


def submit(course: Path, assignment: str, student: str, notebook: nbformat.NotebookNode) -> Path:
    """Put ``notebook`` where ``nbgrader collect`` would: submitted/<student>/<assignment>/."""
    folder = course / "submitted" / student / assignment
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    nbformat.write(notebook, folder / f"{assignment}.ipynb")
    (folder / "timestamp.txt").write_text("2026-11-25 10:00:00.000000 UTC")
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
