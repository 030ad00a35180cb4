"""The shapes data come in: a split of encoded texts, and a classification data set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from former.data.vocabulary import Vocabulary


@dataclass
class TextSplit:
    """sequences: n 1-D LongTensors of token ids, each as long as its text; labels: (n,) long."""

    sequences: list[torch.Tensor]
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.sequences) != len(self.labels):
            raise ValueError(
                f"{len(self.sequences)} sequences but {len(self.labels)} labels; "
                "every sequence needs exactly one label."
            )

    def __len__(self) -> int:
        return len(self.sequences)

    def select(self, indices: torch.Tensor) -> TextSplit:
        """The examples at ``indices``, in that order."""
        return TextSplit([self.sequences[i] for i in indices.tolist()], self.labels[indices])

    def lengths(self) -> torch.Tensor:
        """(n,) LongTensor: the number of tokens in each sequence."""
        return torch.tensor([len(s) for s in self.sequences], dtype=torch.long)


@dataclass
class ClassificationData:
    """Everything a classifier trains on. ``val`` is 20% of the training reviews (by seed),
    or the test split with ``final=True``; ``source`` says where the data came from."""

    train: TextSplit
    val: TextSplit
    vocab: Vocabulary
    num_classes: int
    source: str
    class_names: tuple[str, ...] = ("negative", "positive")


def validation_indices(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``range(n)`` split into sorted (train, val) index tensors, val a fifth chosen by ``seed``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * 0.2)
    return order[n_val:].sort().values, order[:n_val].sort().values
