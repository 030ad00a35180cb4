"""The course folder is self-contained: a copy of ``notebooks/nbgrader_config.py`` anywhere grades
with both graders where the project is installed, ``nbgrader`` runs from the environment
without activating it, and JupyterLab's Validate reads the course's cell timeout.
The assignment is the sample-submission corpus's small "lab". Budget: about a minute."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import trial_course
from conftest import REPO_ROOT

from grader.course import course_dir as course_folder
from grader.sandbox import launch as sandbox
from solutions.hidden_cases import NOTEBOOK_SEED

sys.path.insert(0, str(REPO_ROOT / "tests" / "grader"))
from submissions import corpus  # noqa: E402

COURSE_CONFIG = REPO_ROOT / "notebooks" / "nbgrader_config.py"
# Nothing says where the repository is: no PYTHONPATH, no activated environment.
BARE = {"PYTHONPATH": "", "PATH": "/usr/bin:/bin"}


def copied_course(root: Path) -> Path:
    """The course's own config, verbatim, in a folder far from the repository, with the
    corpus's master as its assignment."""
    course = root / "elsewhere" / "course"
    (course / "source" / corpus.ASSIGNMENT).mkdir(parents=True)
    shutil.copy(COURSE_CONFIG, course / "nbgrader_config.py")
    nbformat.write(corpus.master_notebook(), course / "source" / corpus.ASSIGNMENT / "lab.ipynb")
    return course


def nbgrader_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The environment's ``nbgrader`` script run by its path, the environment not activated."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "nbgrader"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(os.environ, **BARE),
    )


def test_nbgrader_runs_from_the_environment_without_activating_it(tmp_path):
    course = copied_course(tmp_path)
    # a new gradebook: nbgrader runs alembic by name
    done = nbgrader_script("db", "assignment", "add", corpus.ASSIGNMENT, cwd=course)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (course / "gradebook.db").is_file()


@pytest.mark.timeout(600)
def test_a_copied_course_grades_with_both_graders(tmp_path):
    if sandbox.bwrap_executable() is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    course = copied_course(tmp_path)
    generated = nbgrader_script("generate_assignment", corpus.ASSIGNMENT, cwd=course)
    assert generated.returncode == 0, generated.stderr[-2000:]
    corpus.submit(course, "ada", corpus.read_cells("correct_bmm"))
    corpus.submit(course, "ben", corpus.read_cells("mistake_missing_scale"))

    plain = trial_course.plain_autograde(course, corpus.ASSIGNMENT, **BARE)
    assert sum(plain["ada"].values()) == 100, plain["ada"]  # the hidden cells found solutions/

    graded = subprocess.run(
        [sys.executable, "-m", "grader", "autograde", "--course-dir", str(course)]
        + ["--assignment", corpus.ASSIGNMENT, "--seed", str(NOTEBOOK_SEED), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, **BARE),
    )
    assert graded.returncode == 0, graded.stderr[-2000:]
    for student in ("ada", "ben"):
        path = course / "grader_results" / corpus.ASSIGNMENT / f"{student}.json"
        verdict = json.loads(path.read_text(encoding="utf-8"))
        sandboxed = {test["grade_id"]: test["points"] for test in verdict["tests"]}
        assert {grade_id: plain[student][grade_id] for grade_id in sandboxed} == sandboxed


def test_validate_in_make_lab_uses_the_course_cell_timeout(monkeypatch):
    """`make lab` serves the release folder; nbgrader's Validate handler loads its config from
    Jupyter's config path and the server's folder, as here."""
    from nbgrader.server_extensions.validate_assignment.handlers import (
        ValidateAssignmentHandler,
    )

    dry_run = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "-o",
            ".venv/.installed-lab",
            "-o",
            ".venv/bin/python",
            "lab",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    line = dry_run.stdout.strip().splitlines()[-1]
    folder = re.search(r"cd (\S+)", line)[1]
    config_path = re.search(r"JUPYTER_CONFIG_PATH=(\S+)", line)[1]
    monkeypatch.chdir(REPO_ROOT / folder)
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", config_path)
    config = ValidateAssignmentHandler.load_config(None)
    assert config.Execute.timeout == 600
    assert (
        config.Execute.timeout == course_folder.course_config(COURSE_CONFIG.parent).Execute.timeout
    )
