"""The shapes data come in: a split of encoded texts, and a classification data set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from former.data.vocabulary import Vocabulary

VALIDATION_FRACTION = 0.2


@dataclass
class TextSplit:
    """Encoded texts and their labels.

    sequences: n 1-D LongTensors of token ids, each as long as its text.
    labels: (n,) LongTensor of class indices.
    """

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

    def lengths(self) -> torch.Tensor:
        """(n,) LongTensor: the number of tokens in each sequence."""
        return torch.tensor([len(s) for s in self.sequences], dtype=torch.long)


@dataclass
class ClassificationData:
    """Everything a classifier trains on.

    ``val`` is 20% of the training reviews (by seed) while developing, and the
    test split with ``final=True``. ``source`` says in words where the data
    came from, for logs and saved models.
    """

    train: TextSplit
    val: TextSplit
    vocab: Vocabulary
    num_classes: int
    source: str
    class_names: tuple[str, ...] = ("negative", "positive")


def validation_indices(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (train, val) index tensors, val being 20%, chosen by ``seed``.

    Both come back sorted, so the examples keep their original order.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_val = round(n * VALIDATION_FRACTION)
    return order[n_val:].sort().values, order[:n_val].sort().values
