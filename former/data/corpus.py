"""A tokenized corpus, and the classification data sets made from it.

Tokenizing the 50,000 IMDB reviews is the slow part of loading them, and it
does not depend on the vocabulary size, the seed or the split. So the tokens
are stored once, as ids into the corpus's own alphabetical word list; turning
them into a :class:`ClassificationData` for given settings (choose the
validation reviews, count words in the training split, rank them, remap the
ids) is then a few array operations.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from former.data.imdb_files import Reviews
from former.data.splits import ClassificationData, TextSplit, validation_indices
from former.data.tokenizer import tokenize
from former.data.vocabulary import PAD, UNK, Vocabulary


@dataclass
class TokenizedCorpus:
    """Every review as token ids into ``words`` (sorted alphabetically).

    ids: flat int32 array of all tokens; offsets: (n + 1,) int64, review i is
    ids[offsets[i]:offsets[i + 1]]; labels: (n,) int64; is_test: (n,) bool.
    """

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
        # Renumber so that ids follow alphabetical order: ties in frequency then rank
        # alphabetically, exactly as Vocabulary.build ranks them.
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
        return {
            "words": _join(self.words),
            "ids": torch.from_numpy(self.ids),
            "offsets": torch.from_numpy(self.offsets),
            "labels": torch.from_numpy(self.labels),
            "is_test": torch.from_numpy(self.is_test),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TokenizedCorpus:
        return cls(
            words=_split(payload["words"]),
            ids=payload["ids"].numpy(),
            offsets=payload["offsets"].numpy(),
            labels=payload["labels"].numpy(),
            is_test=payload["is_test"].numpy(),
        )

    def encode(self, *, vocab_size: int, seed: int, final: bool) -> dict[str, Any]:
        """The encoded data set for these settings, as a cacheable payload.

        final=False: validation is 20% of the training reviews, chosen by seed;
        final=True: validation is the test split. The vocabulary counts the
        training split only.
        """
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
        in_train = np.zeros(len(lengths), dtype=bool)
        in_train[train_rows] = True
        counts = np.bincount(self.ids[in_train[review_of_token]], minlength=len(self.words))
        ranked = np.argsort(-counts, kind="stable")[: vocab_size - 2]
        ranked = ranked[counts[ranked] > 0]
        new_id = np.full(len(self.words), Vocabulary.unk_index, dtype=np.int32)
        new_id[ranked] = np.arange(2, len(ranked) + 2, dtype=np.int32)
        itos = [PAD, UNK, *(self.words[i] for i in ranked)]

        def split_payload(rows: np.ndarray) -> dict[str, torch.Tensor]:
            chosen = np.zeros(len(lengths), dtype=bool)
            chosen[rows] = True
            return {
                "ids": torch.from_numpy(new_id[self.ids[chosen[review_of_token]]]),
                "lengths": torch.from_numpy(lengths[rows]),
                "labels": torch.from_numpy(self.labels[rows]),
            }

        return {
            "itos": _join(itos),
            "train": split_payload(train_rows),
            "val": split_payload(val_rows),
        }


def classification_data_from_payload(
    payload: dict[str, Any], *, source: str, class_names: tuple[str, ...]
) -> ClassificationData:
    """Unpack :meth:`TokenizedCorpus.encode`'s payload into tensors, one per review."""

    def split(part: dict[str, torch.Tensor]) -> TextSplit:
        flat = part["ids"].long()
        sequences = list(torch.split(flat, part["lengths"].tolist()))
        return TextSplit(sequences, part["labels"].long())

    return ClassificationData(
        train=split(payload["train"]),
        val=split(payload["val"]),
        vocab=Vocabulary(_split(payload["itos"])),
        num_classes=len(class_names),
        source=source,
        class_names=class_names,
    )


# Word lists are stored as one newline-joined string: unpickling one string is
# much faster than unpickling 50,000 (tokens never contain whitespace).
def _join(words: list[str]) -> str:
    return "\n".join(words)


def _split(joined: str) -> list[str]:
    return joined.split("\n") if joined else []
