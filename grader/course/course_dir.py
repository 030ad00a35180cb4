"""The lab's nbgrader course folder: where its notebooks are, its config and gradebook, running
nbgrader in it, and the markers of solution and hidden-test regions in its cells."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

from grader.judge.program import grading_metadata

REPO_ROOT = Path(__file__).resolve().parents[2]
COURSE_DIR = REPO_ROOT / "notebooks"
ASSIGNMENT = "transformers_from_scratch"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# Text that only hidden tests contain; none of it may reach a learner.
HIDDEN_TEST_TEXT = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "hidden_cells", "run_group(")


class CourseError(RuntimeError):
    """A course command cannot do what was asked; the message says what to change."""


def master_path(course_dir: Path = COURSE_DIR) -> Path:
    return course_dir / "source" / ASSIGNMENT / NOTEBOOK


def release_path(course_dir: Path = COURSE_DIR) -> Path:
    return course_dir / "release" / ASSIGNMENT / NOTEBOOK


def course_config(course_dir: Path):
    """The course's ``nbgrader_config.py`` as the traitlets Config nbgrader reads from there."""
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
    """nbgrader's Gradebook of ``course_dir``, created when missing."""
    from nbgrader.api import Gradebook

    os.environ["PATH"] = nbgrader_env()["PATH"]  # creating one runs ``alembic`` by name
    database = f"sqlite:///{Path(course_dir).resolve() / 'gradebook.db'}"
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


def graded_cells(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """grade_id -> cell, for every cell nbgrader grades or replaces (answers and tests)."""
    return {
        grading_metadata(cell)["grade_id"]: cell
        for cell in nb.cells
        if "grade_id" in grading_metadata(cell)
    }


def remove_hidden_tests(source: str, note: str | None = None) -> str:
    """``source`` without its hidden test region, cut by nbgrader's own ClearHiddenTests;
    ``note`` stands where the region was."""
    from nbgrader.preprocessors import ClearHiddenTests

    if note is not None:
        source = source.replace(BEGIN_HIDDEN, f"{note}\n{BEGIN_HIDDEN}")
    cell = nbformat.v4.new_code_cell(source)
    ClearHiddenTests(enforce_metadata=False).preprocess_cell(cell, {}, 0)
    return cell.source.rstrip("\n")


def remove_solution_markers(source: str) -> str:
    """A solution cell's source as a learner hands it in: the BEGIN/END SOLUTION lines dropped."""
    return "\n".join(
        line for line in source.split("\n") if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION)
    )


def hidden_test_leaks(text: str) -> list[str]:
    """The pieces of hidden test text found in ``text`` (empty when clean)."""
    return [marker for marker in HIDDEN_TEST_TEXT if marker in text]
