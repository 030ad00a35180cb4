"""Name what is wrong with an attention output, in plain words.

Compares with its own float64 reference (``former.attention.naive_attention``),
then with every catalogued mistake; never needs the instructor's solutions.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Diagnosis:
    correct: bool
    mistake: str | None
    message: str


def diagnose_attention(
    output: object, queries: Tensor, keys: Tensor, values: Tensor, heads: int, mask: bool = False
) -> Diagnosis:
    """Diagnose ``output`` of multi-head attention on (b, t, heads * s) inputs."""
    raise NotImplementedError


def diagnose_pool_usage(calls: list, heads: int, *, head_shape=None, require_importable=True) -> Diagnosis:
    """Diagnose how ``parallel_multihead_attention`` used the pool, from an InstrumentedPool log."""
    raise NotImplementedError
