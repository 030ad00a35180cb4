"""Catalogue of known wrong answers to the attention tasks.

Each :class:`Mistake` implements the WRONG version of multi-head attention, so a
diagnosis can recognise it by recomputing it on the learner's inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

MistakeFn = Callable[[Tensor, Tensor, Tensor, int, bool], Tensor]


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: ``apply(q, k, v, heads, mask) -> out``, all (b, t, heads * s)."""

    key: str
    title: str
    hint: str
    apply: MistakeFn
    needs_mask: bool = False
    needs_large_scores: bool = False


@dataclass(frozen=True)
class PoolMistake:
    """A known wrong use of the pool in ``parallel_multihead_attention`` (diagnosed from a log)."""

    key: str
    title: str
    hint: str


MISTAKES: list[Mistake] = []
POOL_MISTAKES: list[PoolMistake] = []
