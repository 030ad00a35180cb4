"""Batches: padded, length-bucketed text batches and random byte windows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from former.data.tokens import TextSplit

# Texts are sorted by length within chunks of this many batches: big enough that a batch
# holds texts of similar length (little padding), small enough to stay random.
BUCKET_BATCHES = 50


class Batch(NamedTuple):
    """tokens: (b, t) long ids padded with 0; padding_mask: (b, t) bool, True at real tokens;
    labels: (b,) long."""

    tokens: torch.Tensor
    padding_mask: torch.Tensor
    labels: torch.Tensor


def batches(
    split: TextSplit,
    batch_size: int,
    max_length: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
) -> Iterator[Batch]:
    """One epoch of batches over ``split``, texts cut to their first ``max_length`` tokens;
    shuffled: texts of similar length together, batches in an order fixed by ``seed``. Shard
    ``shard_index`` of ``num_shards`` (one per process) gets every ``num_shards``-th batch, all
    shards as many (wrapping around), so that no process waits."""
    if batch_size < 1 or max_length < 1:
        raise ValueError(
            f"batch_size and max_length must be at least 1; got {batch_size} and {max_length}."
        )
    if not 0 <= shard_index < num_shards:
        raise ValueError(
            f"shard_index must be in [0, num_shards); got {shard_index} of {num_shards}."
        )
    plan = batch_plan(split.lengths().clamp(max=max_length), batch_size, shuffle=shuffle, seed=seed)
    per_shard = -(-len(plan) // num_shards)
    for position in range(shard_index, per_shard * num_shards, num_shards):
        yield make_batch(split, plan[position % len(plan)], max_length)


def batch_plan(
    lengths: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int
) -> list[torch.Tensor]:
    """Index tensors, one per batch, covering each of the (n,) ``lengths`` once."""
    n = len(lengths)
    if n == 0:
        return []
    if not shuffle:
        return list(torch.arange(n).split(batch_size))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    plan: list[torch.Tensor] = []
    for chunk in order.split(batch_size * BUCKET_BATCHES):
        by_length = chunk[torch.argsort(lengths[chunk], stable=True)]
        plan.extend(by_length.split(batch_size))
    shuffled = torch.randperm(len(plan), generator=generator).tolist()
    return [plan[i] for i in shuffled]


def make_batch(split: TextSplit, indices: torch.Tensor, max_length: int) -> Batch:
    """The texts at ``indices``, cut to ``max_length``, padded into one :class:`Batch`."""
    rows = [split.sequences[i][:max_length] for i in indices.tolist()]
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    tokens = torch.zeros(len(rows), max(1, int(lengths.max())), dtype=torch.long)
    for row, sequence in zip(tokens, rows, strict=True):
        row[: len(sequence)] = sequence
    padding_mask = torch.arange(tokens.size(1))[None, :] < lengths[:, None]
    return Batch(tokens, padding_mask, split.labels[indices])


def random_windows(
    data: torch.Tensor,
    batch_size: int,
    length: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of 1-D ``data`` for next-token prediction: inputs and targets, (b, t)
    long, t = ``length``, targets shifted one to the left."""
    if data.dim() != 1:
        raise ValueError(f"data must be 1-D, got shape {tuple(data.shape)}.")
    if len(data) <= length:
        raise ValueError(
            f"windows of length {length} need at least {length + 1} tokens; the data hold "
            f"{len(data)}. Use a shorter length or more data."
        )
    starts = torch.randint(0, len(data) - length, (batch_size,), generator=generator)
    positions = starts[:, None] + torch.arange(length + 1)
    windows = data[positions.to(data.device)].long()
    return windows[:, :-1], windows[:, 1:]
