"""How many threads torch computes with: the one place that changes it for a while."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous number.
    Small tensors (grading cases, one head in a worker) gain nothing from a thread pool:
    waking it costs more than the work, and side-by-side workers oversubscribe the cores."""
    if n < 1:
        raise ValueError(f"torch_threads needs at least one thread, got {n}.")
    previous = torch.get_num_threads()
    if previous != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
