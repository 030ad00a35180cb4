"""The lab's cells the grader does not run, and the names only they bind.

The master tags its training runs, speed-up plots, SageMaker and optional cells
``skip-when-graded``; the grader runs every other cell of a submission. A graded function that
uses a name only those cells bind works in the learner's kernel and fails when graded, so the
visible checks warn about it first. A test keeps :data:`SKIPPED_NAMES` equal to the master's.
"""

from __future__ import annotations

import types
from collections.abc import Callable

SKIP_TAG = "skip-when-graded"

# Bound by the master's skipped cells and by none of the cells the grader runs.
SKIPPED_NAMES: frozenset[str] = frozenset()


def skipped_names_used(fn: Callable) -> list[str]:
    """The names in :data:`SKIPPED_NAMES` that ``fn`` (or a function nested in it) reads as
    globals."""
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return []
    used: set[str] = set()
    todo = [code]
    while todo:
        current = todo.pop()
        used.update(current.co_names)
        todo += [const for const in current.co_consts if isinstance(const, types.CodeType)]
    return sorted(used & SKIPPED_NAMES)
