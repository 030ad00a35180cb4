"""Batches: every example once per epoch, masks that match lengths, truncation, sharding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from former.data import Batch, TextSplit, batches, random_windows


def make_split(lengths: list[int]) -> TextSplit:
    """Example i's tokens are all i + 2 (never padding), and its label is i."""
    sequences = [torch.full((n,), i + 2, dtype=torch.long) for i, n in enumerate(lengths)]
    return TextSplit(sequences, torch.arange(len(lengths)))


def check_batch(batch: Batch, split: TextSplit, max_length: int) -> None:
    tokens, mask, labels = batch
    assert tokens.dtype == torch.long and mask.dtype == torch.bool and labels.dtype == torch.long
    assert tokens.shape == mask.shape and tokens.size(0) == labels.size(0)
    assert tokens.size(1) <= max(1, max_length)
    for row, example in enumerate(labels.tolist()):
        expected = split.sequences[example][:max_length]
        n = len(expected)
        assert int(mask[row].sum()) == n and bool(mask[row, :n].all())
        assert torch.equal(tokens[row, :n], expected)
        assert not tokens[row, n:].any()  # padded with 0


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=0, max_size=300),
    batch_size=st.integers(1, 17),
    max_length=st.integers(1, 30),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_an_epoch_yields_every_example_exactly_once(lengths, batch_size, max_length, shuffle, seed):
    split = make_split(lengths)
    epoch = list(batches(split, batch_size, max_length, shuffle=shuffle, seed=seed))
    seen = [label for batch in epoch for label in batch.labels.tolist()]
    assert sorted(seen) == list(range(len(lengths)))
    sizes = [len(batch.labels) for batch in epoch]
    assert all(size <= batch_size for size in sizes)
    assert sum(size < batch_size for size in sizes) <= 1  # at most one short batch
    for batch in epoch:
        check_batch(batch, split, max_length)
    if not shuffle:
        assert seen == list(range(len(lengths)))


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 20), min_size=1, max_size=200),
    batch_size=st.integers(1, 9),
    num_shards=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_shards_get_equal_batch_counts_and_cover_the_epoch(lengths, batch_size, num_shards, seed):
    split = make_split(lengths)
    shards = [
        list(batches(split, batch_size, 10, seed=seed, num_shards=num_shards, shard_index=i))
        for i in range(num_shards)
    ]
    assert len({len(shard) for shard in shards}) == 1
    n_batches = -(-len(lengths) // batch_size)
    assert len(shards[0]) == -(-n_batches // num_shards)
    seen = [label for shard in shards for batch in shard for label in batch.labels.tolist()]
    assert set(seen) == set(range(len(lengths)))
    # each shard's batches are disjoint from the others', except wrapped-around repeats
    assert len(seen) - len(lengths) < num_shards * batch_size


def test_order_depends_on_seed_and_is_reproducible():
    split = make_split(list(range(1, 200)))
    order = lambda seed: [b.labels.tolist() for b in batches(split, 8, 50, seed=seed)]  # noqa: E731
    assert order(1) == order(1)
    assert order(1) != order(2)


def test_bucketing_keeps_padding_low():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 400, (3200,), generator=generator).tolist()
    split = make_split(lengths)
    epoch = list(batches(split, 32, 512, seed=0))
    real = sum(int(b.padding_mask.sum()) for b in epoch)
    total = sum(b.padding_mask.numel() for b in epoch)
    assert real / total > 0.9  # unsorted batches of these lengths would be about half padding


def test_batches_start_in_random_length_order():
    split = make_split(list(range(1, 1601)))
    longest = [int(b.padding_mask.sum(1).max()) for b in batches(split, 16, 2000, seed=0)]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_invalid_arguments_are_rejected():
    split = make_split([3, 4])
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(split, 0, 10))
    with pytest.raises(ValueError, match="shard_index"):
        next(batches(split, 1, 10, num_shards=2, shard_index=2))


def test_all_empty_batch_still_has_one_padded_column():
    batch = next(batches(make_split([0, 0]), 2, 5))
    assert batch.tokens.shape == (2, 1) and not batch.padding_mask.any()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 500), batch_size=st.integers(1, 8), length=st.integers(1, 40))
def test_random_windows_are_next_byte_pairs_inside_the_data(n, batch_size, length):
    data = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8)
    if n <= length:
        with pytest.raises(ValueError, match="at least"):
            random_windows(data, batch_size, length)
        return
    generator = torch.Generator().manual_seed(n)
    inputs, targets = random_windows(data, batch_size, length, generator=generator)
    assert inputs.shape == targets.shape == (batch_size, length)
    assert inputs.dtype == targets.dtype == torch.long
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert torch.equal((inputs + 1) % 256, targets)  # consecutive bytes of the data
