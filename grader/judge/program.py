"""What of a submitted notebook the grader runs for each graded function.

Reads the notebook as data (nothing is executed here). A function's program is what
:mod:`grader.learner.replay` picks from the code cells above its first test cell: the files
of ``%%writefile`` cells and the statements that bind the names it needs (its own ``def``
included), in notebook order. Tours, plots and training runs bind none, so they are not re-run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grader.learner.replay import Cell, plan_replay, read_cell

GRADED_FUNCTIONS = ("multihead_attention", "attention_function", "parallel_multihead_attention")


@dataclass
class Program:
    """For each graded function: the steps the probe runs, and the names nothing binds.

    A step is ``{"file": name, "source": text}`` or ``{"where": "cell 4, line 2", "source": code}``.
    """

    steps: dict[str, list[dict]] = field(default_factory=dict)
    unbound: dict[str, list[str]] = field(default_factory=dict)


def grading_metadata(cell: Mapping) -> dict:
    """A notebook cell's ``nbgrader`` metadata; {} when it has none or it is malformed."""
    metadata = cell.get("metadata")
    found = metadata.get("nbgrader") if isinstance(metadata, Mapping) else None
    return found if isinstance(found, dict) else {}


def read_program(notebook: Path, test_cells: Mapping[str, set[str]]) -> Program:
    """The program of a submitted notebook; raises ValueError when it is not a notebook.

    test_cells: for each graded function, the grade ids of the test cells that call it.
    """
    cells = _code_cells(notebook)
    program = Program()
    for function in GRADED_FUNCTIONS:
        tests = test_cells.get(function, set())
        end = next((i for i, (grade_id, _) in enumerate(cells) if grade_id in tests), len(cells))
        replay = plan_replay({function}, [cell for _, cell in cells[:end]])
        steps = [{"file": name, "source": text} for name, text in replay.files]
        steps += [{"where": s.where, "source": s.source} for s in replay.statements]
        program.steps[function] = steps
        program.unbound[function] = sorted(replay.unbound)
    return program


def _code_cells(notebook: Path) -> list[tuple[str | None, Cell]]:
    """(grade_id or None, cell) for every code cell, in notebook order."""
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
        if not isinstance(cells, list):
            raise TypeError("cells is not a list")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{notebook} is not a readable notebook: {error}") from error
    found = []
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        found.append((grading_metadata(cell).get("grade_id"), read_cell(source, number)))
    return found
