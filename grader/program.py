"""What of a submitted notebook the grader runs: its graded cells and what they depend on.

Reads the notebook as data (nothing is executed here). The program handed to the sandbox
is, in notebook order:

- every graded solution cell (``multihead_attention``, ``attention_function``,
  ``parallel_multihead_attention``) as written, IPython magics aside; a cell starting with
  ``%%writefile NAME`` becomes the file NAME in the submission's folder, as in the notebook;
- from every other code cell, only the imports and definitions the graded cells can use,
  so that tours, plots and training runs are not re-run for grading;
- no test cell at all (the hidden ones are the judge's business).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

from grader.forbidden import Finding, scan_source

GRADED_CELLS = ("multihead_attention", "attention_function", "parallel_multihead_attention")


@dataclass
class Program:
    """cells: what the probe runs; sources: each graded cell's source by grade_id."""

    cells: list[dict] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def forbidden(self) -> dict[str, list[Finding]]:
        """Forbidden uses found in each graded cell (grade_id -> findings)."""
        return {grade_id: scan_source(source) for grade_id, source in self.sources.items()}


def read_program(notebook: Path) -> Program:
    """The program of a submitted notebook; raises ValueError when it is not a notebook."""
    try:
        data = json.loads(Path(notebook).read_text(encoding="utf-8"))
        cells = data["cells"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{notebook} is not a readable notebook: {error}") from error
    graded, others = [], []
    for position, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        nbgrader = (cell.get("metadata") or {}).get("nbgrader") or {}
        grade_id = nbgrader.get("grade_id")
        if grade_id in GRADED_CELLS:
            graded.append((position, grade_id, source))
        elif not (nbgrader.get("grade") and not nbgrader.get("solution")):
            others.append((position, source))

    program = Program()
    for _, grade_id, source in graded:
        writefile, code = _split_writefile(source)
        program.sources[grade_id] = _without_magics(code)
    needed = _needed_names(program.sources.values(), [source for _, source in others])
    kept = {position: _definitions(source, needed) for position, source in others}
    entries = [(p, None, s) for p, s in kept.items() if s] + graded
    for _position, grade_id, source in sorted(entries, key=lambda entry: entry[0]):
        if grade_id is None:
            program.cells.append({"grade_id": None, "source": source, "writefile": None})
            continue
        writefile, code = _split_writefile(source)
        program.cells.append(
            {"grade_id": grade_id, "source": _without_magics(code), "writefile": writefile}
        )
    return program


def _split_writefile(source: str) -> tuple[str | None, str]:
    lines = source.lstrip("\n").split("\n")
    first = lines[0].strip()
    if first.startswith("%%writefile"):
        parts = first.split()
        name = [part for part in parts[1:] if not part.startswith("-")]
        if name:
            return Path(name[0]).name, "\n".join(lines[1:])
    return None, source


def _without_magics(source: str) -> str:
    """IPython magics and shell escapes become blank lines (line numbers stay right)."""
    lines = source.split("\n")
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def _names_in(sources) -> set[str]:
    names: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names.update(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
    return names


def _definitions(source: str, needed: set[str]) -> str:
    """Imports and definitions of a non-graded cell that the graded cells need."""
    try:
        tree = ast.parse(_without_magics(source))
    except SyntaxError:
        return ""
    kept = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = {(alias.asname or alias.name).split(".")[0] for alias in node.names}
            if bound & needed or any(alias.name == "*" for alias in node.names):
                kept.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in needed:
                kept.append(node)
    return "\n".join(ast.unparse(node) for node in kept)


def _needed_names(graded_sources, other_sources) -> set[str]:
    """Names the graded cells use, and, through the definitions they use, what those use."""
    needed = _names_in(graded_sources)
    definitions = {}
    for source in other_sources:
        try:
            tree = ast.parse(_without_magics(source))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                definitions[node.name] = node
    todo = [name for name in needed if name in definitions]
    while todo:
        inner = _names_in([ast.unparse(definitions[todo.pop()])]) - needed
        needed |= inner
        todo += [name for name in inner if name in definitions]
    return needed
