"""The most frequent word pairs of a training split: counted within texts, <unk> left out."""

from __future__ import annotations

import pytest
import torch

from former.data import TextSplit, frequent_bigrams


def split_of(*texts: list[int]) -> TextSplit:
    return TextSplit(
        [torch.tensor(t, dtype=torch.long) for t in texts], torch.zeros(len(texts)).long()
    )


def test_the_most_frequent_pairs_within_texts():
    split = split_of([2, 3, 4, 2, 3], [5, 2, 3], [4, 2])
    # 2-3 three times, 4-2 twice, 3-4 and 5-2 once; 3 then 5 across texts never counts.
    assert frequent_bigrams(split, 10, 2).tolist() == [23, 42]
    assert frequent_bigrams(split, 10, 100).tolist() == [23, 34, 42, 52]
    assert frequent_bigrams(split, 10, 0).tolist() == []


def test_pairs_with_unknown_or_padding_are_never_listed():
    split = split_of([1, 3, 1, 3, 2, 0], [1, 3])
    assert frequent_bigrams(split, 10, 10).tolist() == [32]


def test_empty_texts_and_negative_counts():
    assert frequent_bigrams(split_of([], [2, 3], []), 10, 5).tolist() == [23]
    with pytest.raises(ValueError, match="0 or more"):
        frequent_bigrams(split_of([2, 3]), 10, -1)
