"""What of a submitted notebook the grader runs: its code cells, in order, as Jupyter would.

Read as data here (nothing is executed). Every code cell runs in the sandbox's kernel, magics
and all, except cells tagged ``skip-when-graded`` in the master (training runs, speed-up plots,
SageMaker, the optional task): the lab's release carries the tag, so a submission's copy of such
a cell does too. For each skipped cell the names it binds are listed, so that feedback can say
why a function that needs one of them fails. A test cell runs its visible part (the master's, as
nbgrader puts it back), then the hidden cases of its grade id.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grader.learner.skipped import SKIP_TAG

GRADED_FUNCTIONS = ("multihead_attention", "attention_function", "parallel_multihead_attention")


@dataclass
class Cell:
    """A code cell: its number among all the notebook's cells (1-based), its source, the grade
    id of the test it holds, or of the answer (a graded function's name) it holds."""

    number: int
    source: str
    test: str | None = None
    answer: str | None = None


@dataclass
class Program:
    """The cells the kernel runs; the skipped ones, with the names each binds; test cells the
    notebook lacks (their cases run after the last cell)."""

    cells: list[Cell] = field(default_factory=list)
    skipped: dict[int, list[str]] = field(default_factory=dict)
    missing_tests: list[str] = field(default_factory=list)


def grading_metadata(cell: Mapping) -> dict:
    """A notebook cell's ``nbgrader`` metadata; {} when it has none or it is malformed."""
    metadata = cell.get("metadata")
    found = metadata.get("nbgrader") if isinstance(metadata, Mapping) else None
    return found if isinstance(found, dict) else {}


def read_program(notebook: Path, tests: Mapping[str, str | None]) -> Program:
    """The program of a submitted notebook; raises ValueError when it is not a notebook.

    tests: each test cell's grade id -> the visible source to run in its place (the master's),
    or None to run the submission's own cell.
    """
    program = Program()
    seen: set[str] = set()
    for number, cell in enumerate(_cells(notebook), start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        grade_id = grading_metadata(cell).get("grade_id")
        if grade_id in tests and grade_id not in seen:
            seen.add(grade_id)
            visible = tests[grade_id]
            program.cells.append(Cell(number, source if visible is None else visible, grade_id))
        elif SKIP_TAG in _tags(cell):
            program.skipped[number] = bound_names(source)
        else:
            answer = grade_id if grading_metadata(cell).get("solution") else None
            program.cells.append(Cell(number, source, answer=answer))
    program.missing_tests = [grade_id for grade_id in tests if grade_id not in seen]
    return program


def _cells(notebook: Path) -> list:
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
        if not isinstance(cells, list):
            raise TypeError("cells is not a list")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{notebook} is not a readable notebook: {error}") from error
    return cells


def _tags(cell: dict) -> list:
    metadata = cell.get("metadata")
    tags = metadata.get("tags") if isinstance(metadata, dict) else None
    return tags if isinstance(tags, list) else []


def bound_names(source: str) -> list[str]:
    """The names a cell binds at its top level (assignments, definitions, imports, loops)."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        tree = ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(alias.asname or alias.name).split(".")[0] for alias in node.names]
        else:
            names += [
                target.id
                for target in ast.walk(node)
                if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store)
            ]
    return list(dict.fromkeys(names))
