"""Which statements of a notebook the grader replays, so a graded function sees its names.

A graded function may use any name the notebook binds above its tests. The grader does not
re-run the notebook (training takes minutes); it replays, in notebook order, only the top-level
statements that bind the names the function needs, and what those need in turn. The rule,
shared by the grader and the visible checks:
- cells are read as IPython runs them; a statement that calls ``get_ipython()`` (a magic,
  a shell escape) is never replayed, and a ``%%writefile NAME`` cell becomes the file NAME;
- a statement is replayed when it binds a needed name (an assignment, an import, a ``def``
  or ``class``, a ``for`` or ``with`` target, ...) or is a star import;
- a function body's global names are needed whenever the function is (at its call);
- names that no replayable statement binds are reported: they cannot be recreated.
"""

from __future__ import annotations

import ast
import builtins
import symtable
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Compound statements bind their names only on some runs (a branch, a loop that may not run).
_UNCONDITIONAL = (
    ast.Assign,
    ast.AnnAssign,
    ast.AugAssign,
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
)
_ALWAYS_THERE = set(dir(builtins)) | {"__name__", "__file__", "__builtins__"}


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a cell; ``where`` reads 'cell 4, line 2'."""

    where: str
    source: str
    binds: frozenset[str]
    uses: frozenset[str]  # read when the statement runs
    later_uses: frozenset[str]  # read by the functions it defines, when they are called
    unconditional: bool
    star_import: bool = False


@dataclass
class Cell:
    """A code cell as the grader reads it: statements, or a file for ``%%writefile``."""

    number: int  # 1-based position among the notebook's cells
    statements: list[Statement] = field(default_factory=list)
    writefile: tuple[str, str] | None = None  # (file name, content)


@dataclass
class Replay:
    """What to replay for some names: statements in order, files, and what stays unbound."""

    statements: list[Statement]
    files: list[tuple[str, str]]
    unbound: set[str]


def read_cell(source: str, number: int) -> Cell:
    """Split a raw notebook cell into replayable statements (or a ``%%writefile`` file)."""
    from IPython.core.inputtransformer2 import TransformerManager  # magics -> get_ipython()

    first, _, rest = source.lstrip("\n").partition("\n")
    if first.startswith("%%writefile"):
        names = [part for part in first.split()[1:] if not part.startswith("-")]
        if names:
            return Cell(number, writefile=(names[0].rsplit("/", 1)[-1], rest))
    return Cell(number, parse_statements(TransformerManager().transform_cell(source), number))


def parse_statements(code: str, number: int) -> list[Statement]:
    """The replayable top-level statements of already-transformed cell code."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    found = []
    for node in tree.body:
        if _calls_ipython(node):
            continue
        text = ast.get_source_segment(code, node) or ast.unparse(node)
        where = f"cell {number}, line {node.lineno}"
        star = isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)
        unconditional = isinstance(node, _UNCONDITIONAL)
        found.append(Statement(where, text, *_names(text), unconditional, star))
    return found


def _calls_ipython(node: ast.AST) -> bool:
    return any(
        isinstance(inner, ast.Call)
        and isinstance(inner.func, ast.Attribute)
        and isinstance(inner.func.value, ast.Call)
        and getattr(inner.func.value.func, "id", None) == "get_ipython"
        for inner in ast.walk(node)
    )


def _names(source: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(names bound at module level, names read when it runs, names its functions read)."""
    table = symtable.symtable(source, "<cell>", "exec")
    binds, uses = set(), set()
    for symbol in table.get_symbols():
        if symbol.is_assigned() or symbol.is_imported():
            binds.add(symbol.get_name())
        if symbol.is_referenced():
            uses.add(symbol.get_name())
    later: set[str] = set()
    for child in table.get_children():
        _global_reads(child, later, binds)
    if any(child.get_type() == "class" for child in table.get_children()):
        uses |= later  # a class body runs at definition; its methods run later, read both
    return frozenset(binds), frozenset(uses), frozenset(later)


def _global_reads(table: symtable.SymbolTable, reads: set[str], binds: set[str]) -> None:
    for symbol in table.get_symbols():
        if symbol.is_global() and symbol.is_referenced():
            reads.add(symbol.get_name())
        if symbol.is_declared_global() and symbol.is_assigned():
            binds.add(symbol.get_name())
    for child in table.get_children():
        _global_reads(child, reads, binds)


def plan_replay(needed: Iterable[str], cells: Sequence[Cell]) -> Replay:
    """What to replay of ``cells`` (those above the point of the call) for ``needed``."""
    wanted = set(needed)
    while True:
        kept, unbound = _backward_slice(wanted, cells)
        later = set().union(*(statement.later_uses for statement in kept)) - _ALWAYS_THERE
        if later <= wanted:
            break
        wanted |= later
    files = [cell.writefile for cell in cells if cell.writefile]
    return Replay(kept, files, unbound)


def _backward_slice(wanted: set[str], cells: Sequence[Cell]) -> tuple[list[Statement], set[str]]:
    needed = set(wanted)
    kept: list[Statement] = []
    for statement in reversed([s for cell in cells for s in cell.statements]):
        hits = statement.binds & needed
        if not hits and not statement.star_import:
            continue
        kept.append(statement)
        if statement.unconditional:
            needed -= hits
        needed |= statement.uses | statement.later_uses
    kept.reverse()
    return kept, needed - _ALWAYS_THERE
