"""Text to token ids: the tokenizer, and the vocabulary that numbers the tokens."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PAD, UNK = "<pad>", "<unk>"
TOKENIZER_VERSION = 1  # bumped whenever tokenize() changes, so cached encodings are rebuilt
_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TOKEN = re.compile(r"\w+(?:'\w+)*|\.+|!+|\?+|-+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-case word and punctuation tokens, as a reader would split them by hand.

    IMDB's ``<br />`` line breaks go, words keep their apostrophes, punctuation is split
    off (``good.`` and ``good`` are one word), and runs of ``.!?-`` stay together (tone).

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
        """Token ids of raw text, tokenized with :func:`tokenize`."""
        return self.encode(tokenize(text))

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(index)] for index in ids]

    def to_dict(self) -> dict:
        """A JSON-able description, saved next to a model's weights."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        if "itos" not in data:
            raise ValueError("not a saved vocabulary: the dictionary has no 'itos' entry.")
        return cls(list(data["itos"]))
