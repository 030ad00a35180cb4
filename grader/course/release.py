"""``python -m grader release``: the student notebook and the reference solutions, both from
the master notebook.

``nbgrader generate_assignment`` writes the student notebook; the graded functions of the
master's solution cells become ``solutions/attention.py``, the reference the judge compares
learner outputs with (so the master is their one source).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import nbformat

from grader.course.course_dir import (
    ASSIGNMENT,
    COURSE_DIR,
    REPO_ROOT,
    CourseError,
    graded_cells,
    hidden_test_leaks,
    master_path,
    release_path,
    remove_solution_markers,
    run_nbgrader,
)
from grader.judge.program import GRADED_FUNCTIONS, grading_metadata

REFERENCE = REPO_ROOT / "solutions" / "attention.py"
REFERENCE_DOC = (
    "Reference implementations of the three graded functions, which the judge compares learner\n"
    "outputs with. Written by `python -m grader release` from the master notebook's solution\n"
    "cells: edit those, not this file."
)


def learner_work_in(notebook: Path) -> list[str]:
    """Signs that someone worked in a generated student notebook: answers typed into solution
    cells (their checksum no longer matches the stub's) or outputs of cells that ran."""
    from nbgrader.utils import compute_checksum, is_solution

    nb = nbformat.read(notebook, as_version=4)
    signs = []
    for cell in nb.cells:
        meta = grading_metadata(cell)
        if is_solution(cell) and "checksum" in meta and compute_checksum(cell) != meta["checksum"]:
            signs.append(f"answer in cell {meta.get('grade_id')!r}")
    if any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"):
        signs.append("cell outputs")
    return signs


def generate_release(course_dir: Path = COURSE_DIR, force: bool = False) -> Path:
    """Run ``nbgrader generate_assignment`` in ``course_dir``; return the student notebook.
    Refuses (unless ``force``) to replace a student notebook someone has worked in."""
    if not master_path(course_dir).exists():
        raise CourseError(f"No master notebook at {master_path(course_dir)}.")
    path = release_path(course_dir)
    if path.exists() and not force and (signs := learner_work_in(path)):
        raise CourseError(
            f"{path} has been worked in ({', '.join(signs)}); regenerating would lose it. "
            "Copy the notebook elsewhere, then run again with --force."
        )
    result = run_nbgrader(["generate_assignment", ASSIGNMENT, "--force"], course_dir)
    if result.returncode != 0:
        raise CourseError(
            f"nbgrader generate_assignment failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    if leaks := hidden_test_leaks(path.read_text()):
        raise CourseError(f"{path} still contains hidden test text: {leaks}")
    return path


def solution_function(source: str, name: str) -> str:
    """The source of function ``name`` in a solution cell: markers and cell magics
    (``%%writefile``) dropped."""
    lines = [line for line in remove_solution_markers(source).split("\n") if line[:1] != "%"]
    for node in ast.parse("\n".join(lines)).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return "\n".join(lines[node.lineno - 1 : node.end_lineno])
    raise CourseError(f"The solution cell {name!r} defines no function {name}.")


def solution_module(master: Path, docstring: str) -> str:
    """A module of the graded functions exactly as in the master's solution cells."""
    cells = graded_cells(nbformat.read(master, as_version=4))
    if missing := [name for name in GRADED_FUNCTIONS if name not in cells]:
        raise CourseError(f"The master notebook has no solution cell for {missing}.")
    header = f'"""{docstring}\n"""\n\nimport math\n\nimport torch\n'
    functions = [solution_function(cells[name].source, name) for name in GRADED_FUNCTIONS]
    return header + "".join(f"\n\n{function}\n" for function in functions)


def write_reference(master: Path, path: Path = REFERENCE) -> Path:
    """Write the judge's reference solutions from ``master``."""
    path.write_text(solution_module(master, REFERENCE_DOC))
    return path


def main(argv: list[str]) -> int:
    """``argv``: ``release`` and its options."""
    parser = argparse.ArgumentParser(prog="python -m grader release")
    parser.add_argument("--course-dir", type=Path, default=COURSE_DIR, help="nbgrader course root")
    parser.add_argument("--force", action="store_true", help="replace a worked-in release")
    args = parser.parse_args(argv[1:])
    course_dir = args.course_dir.resolve()
    print(f"wrote {generate_release(course_dir, force=args.force)}")
    print(f"wrote {write_reference(master_path(course_dir))}")
    return 0
