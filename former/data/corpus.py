"""A tokenized corpus, and the classification data sets made from it. Tokenizing 50,000
reviews is the slow part of loading IMDB and depends on no setting, so the tokens are kept as
ids into an alphabetical word list; the settings' split and vocabulary are array operations."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from former.data.tokens import (
    PAD,
    UNK,
    ClassificationData,
    TextSplit,
    Vocabulary,
    tokenize,
    validation_indices,
)

ARRAYS = ("ids", "offsets", "labels", "is_test")


@dataclass
class Reviews:
    """Raw reviews in a fixed order (split, label, id), whatever the layout they came from."""

    texts: list[str]
    labels: list[int]
    is_test: list[bool]


@dataclass
class TokenizedCorpus:
    """Every review as token ids into ``words`` (sorted): ids, flat int32; offsets, (n + 1,)
    int64, review i is ids[offsets[i]:offsets[i + 1]]; labels (n,) int64; is_test (n,) bool."""

    words: list[str]
    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray

    @classmethod
    def from_reviews(cls, reviews: Reviews, description: str = "reviews") -> TokenizedCorpus:
        index_of: dict[str, int] = {}
        flat = array("i")  # C ints: a Python list of 13M ids would take ten times the memory
        offsets = [0]
        for text in tqdm(
            reviews.texts, desc=f"tokenizing {description}", unit=" reviews", mininterval=1.0
        ):
            flat.extend([index_of.setdefault(token, len(index_of)) for token in tokenize(text)])
            offsets.append(len(flat))
        # Ids in alphabetical order: frequency ties then rank as Vocabulary.build ranks them.
        words = sorted(index_of)
        renumber = np.empty(len(words), dtype=np.int32)
        renumber[[index_of[word] for word in words]] = np.arange(len(words), dtype=np.int32)
        return cls(
            words=words,
            ids=renumber[np.frombuffer(flat, dtype=np.int32)],
            offsets=np.asarray(offsets, dtype=np.int64),
            labels=np.asarray(reviews.labels, dtype=np.int64),
            is_test=np.asarray(reviews.is_test, dtype=bool),
        )

    def to_payload(self) -> dict[str, Any]:
        arrays = {name: torch.from_numpy(getattr(self, name)) for name in ARRAYS}
        return {"words": "\n".join(self.words), **arrays}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TokenizedCorpus:
        return cls(split_words(payload["words"]), *(payload[name].numpy() for name in ARRAYS))

    def encode(self, *, vocab_size: int, seed: int, final: bool) -> dict[str, Any]:
        """The encoded data set for these settings, as a cacheable payload: validation is a
        fifth of the training reviews by ``seed``, or the test split when ``final``."""
        if vocab_size < 2:
            raise ValueError(f"vocab_size must leave room for {PAD} and {UNK}; got {vocab_size}.")
        train_rows = np.flatnonzero(~self.is_test)
        if final:
            val_rows = np.flatnonzero(self.is_test)
            if len(val_rows) == 0:
                raise ValueError("final=True needs a test split, and this data set has none.")
        else:
            keep, held_out = validation_indices(len(train_rows), seed)
            train_rows, val_rows = train_rows[keep.numpy()], train_rows[held_out.numpy()]

        lengths = np.diff(self.offsets)
        review_of_token = np.repeat(np.arange(len(lengths)), lengths)

        def tokens_of(rows: np.ndarray) -> np.ndarray:
            chosen = np.zeros(len(lengths), dtype=bool)
            chosen[rows] = True
            return self.ids[chosen[review_of_token]]

        counts = np.bincount(tokens_of(train_rows), minlength=len(self.words))
        ranked = np.argsort(-counts, kind="stable")[: vocab_size - 2]
        ranked = ranked[counts[ranked] > 0]
        new_id = np.full(len(self.words), Vocabulary.unk_index, dtype=np.int32)
        new_id[ranked] = np.arange(2, len(ranked) + 2, dtype=np.int32)

        def split_payload(rows: np.ndarray) -> dict[str, torch.Tensor]:
            return {
                "ids": torch.from_numpy(new_id[tokens_of(rows)]),
                "lengths": torch.from_numpy(lengths[rows]),
                "labels": torch.from_numpy(self.labels[rows]),
            }

        itos = [PAD, UNK, *(self.words[i] for i in ranked)]
        return {
            "itos": "\n".join(itos),
            "train": split_payload(train_rows),
            "val": split_payload(val_rows),
        }


def classification_data_from_payload(
    payload: dict[str, Any], *, source: str, class_names: tuple[str, ...]
) -> ClassificationData:
    """Unpack :meth:`TokenizedCorpus.encode`'s payload into tensors, one per review."""

    def split(part: dict[str, torch.Tensor]) -> TextSplit:
        sequences = list(torch.split(part["ids"].long(), part["lengths"].tolist()))
        return TextSplit(sequences, part["labels"].long())

    vocab = Vocabulary(split_words(payload["itos"]))
    train, val = split(payload["train"]), split(payload["val"])
    return ClassificationData(train, val, vocab, len(class_names), source, class_names)


# Word lists are stored as one newline-joined string: unpickling one string is much faster
# than unpickling 50,000 (tokens never contain whitespace).
def split_words(joined: str) -> list[str]:
    return joined.split("\n") if joined else []
