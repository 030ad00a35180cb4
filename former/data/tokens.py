"""Text as tokens: the tokenizer, the vocabulary that numbers the tokens, encoded splits and
classification data sets, and the word pairs (bigrams) that get their own embedding."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

PAD, UNK = "<pad>", "<unk>"
TOKENIZER_VERSION = 1  # bumped whenever tokenize() changes, so cached encodings are rebuilt
_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TOKEN = re.compile(r"\w+(?:'\w+)*|\.+|!+|\?+|-+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation: IMDB's ``<br />`` go, words keep their apostrophes,
    punctuation is split off (``good.`` is ``good``), runs of ``.!?-`` stay together (tone).

    >>> tokenize("Not GOOD.<br /><br />Didn't like it!!!")
    ['not', 'good', '.', "didn't", 'like', 'it', '!!!']
    """
    return _TOKEN.findall(_LINE_BREAK.sub(" ", text.lower()))


@dataclass
class Vocabulary:
    """A list of tokens, a token's position in ``itos`` its id: ``<pad>`` 0, ``<unk>`` (any
    token not listed) 1, then the tokens, most frequent first, ties alphabetical."""

    itos: list[str]
    stoi: dict[str, int] = field(init=False, repr=False)

    pad_index = 0
    unk_index = 1

    def __post_init__(self) -> None:
        if self.itos[:2] != [PAD, UNK]:
            raise ValueError(
                f"a vocabulary must start with {PAD!r}, {UNK!r}; got {self.itos[:2]!r}."
            )
        self.stoi = {token: index for index, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("a vocabulary must not list the same token twice.")

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int) -> Vocabulary:
        """The ``max_size`` most frequent tokens, ``<pad>`` and ``<unk>`` included."""
        if max_size < 2:
            raise ValueError(f"max_size must leave room for {PAD} and {UNK}; got {max_size}.")
        counts = Counter(token for tokens in token_lists for token in tokens)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        ranked = sorted(counts, key=lambda token: (-counts[token], token))
        return cls([PAD, UNK, *ranked[: max_size - 2]])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids; unknown tokens become ``unk_index``."""
        lookup, unk = self.stoi.get, self.unk_index
        return [lookup(token, unk) for token in tokens]

    def encode_text(self, text: str) -> list[int]:
        return self.encode(tokenize(text))

    def to_dict(self) -> dict:
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        if "itos" not in data:
            raise ValueError("not a saved vocabulary: the dictionary has no 'itos' entry.")
        return cls(list(data["itos"]))


# Pairs with <pad> or <unk> say nothing about word order: never listed.
FIRST_WORD_ID = 2


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


def frequent_bigrams(split: TextSplit, num_tokens: int, k: int) -> torch.Tensor:
    """(at most k,) sorted int64 keys ``previous * num_tokens + token`` of the ``k`` most
    frequent pairs of adjacent words in one text of ``split``; ties go to the smaller key."""
    if k < 0:
        raise ValueError(f"the number of bigrams must be 0 or more; got {k}.")
    if k == 0 or len(split) == 0:
        return torch.zeros(0, dtype=torch.long)
    flat = torch.cat([sequence.long() for sequence in split.sequences])
    # A pair starting at a text's last token would join two texts.
    last_of_text = torch.cumsum(split.lengths(), dim=0) - 1
    starts_pair = torch.ones(len(flat), dtype=torch.bool)
    starts_pair[last_of_text[last_of_text >= 0]] = False
    previous, token = flat[:-1], flat[1:]
    keep = starts_pair[:-1] & (previous >= FIRST_WORD_ID) & (token >= FIRST_WORD_ID)
    keys, counts = torch.unique((previous * num_tokens + token)[keep], return_counts=True)
    # Stable sort by count, descending: equal counts keep ascending keys.
    ranked = torch.sort(-counts, stable=True).indices[:k]
    return keys[ranked].sort().values
