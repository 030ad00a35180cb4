"""The vocabulary: which token gets which integer id."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from former.data.tokenizer import tokenize

PAD = "<pad>"
UNK = "<unk>"


@dataclass
class Vocabulary:
    """A list of tokens; a token's position in ``itos`` is its id.

    ``<pad>`` is always id 0 and ``<unk>`` (any token not in the list) id 1;
    after them come the tokens, most frequent first (ties in alphabetical
    order, so a vocabulary is the same however its data was ordered).
    """

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
        """The ``max_size`` most useful ids for these token lists (``<pad>`` and ``<unk>`` included)."""
        if max_size < 2:
            raise ValueError(f"max_size must leave room for {PAD} and {UNK}; got {max_size}.")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
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
        """Token ids of raw text, tokenized with :func:`former.data.tokenize`."""
        return self.encode(tokenize(text))

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of these ids (the inverse of :meth:`encode` for known tokens)."""
        return [self.itos[int(index)] for index in ids]

    def to_dict(self) -> dict:
        """A JSON-able description, saved next to a model's weights."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """The vocabulary :meth:`to_dict` described."""
        if "itos" not in data:
            raise ValueError("not a saved vocabulary: the dictionary has no 'itos' entry.")
        return cls(list(data["itos"]))
