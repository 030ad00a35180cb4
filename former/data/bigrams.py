"""Word-order features: the most frequent word pairs (bigrams) of a training split, each to
get its own embedding in :class:`former.transformers.CTransformer` (``bigram_keys``)."""

from __future__ import annotations

import torch

from former.data.splits import TextSplit

# Pairs with <pad> or <unk> say nothing about word order: never listed.
FIRST_WORD_ID = 2


def bigram_key(previous: torch.Tensor, token: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The key of each (previous, token) pair of ids: ``previous * num_tokens + token``, int64."""
    return previous.long() * num_tokens + token.long()


def frequent_bigrams(split: TextSplit, num_tokens: int, k: int) -> torch.Tensor:
    """(at most k,) sorted int64 keys of the ``k`` most frequent bigrams of ``split`` (pairs of
    adjacent words in one text, neither <pad> nor <unk>); ties go to the smaller key."""
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
    keys, counts = torch.unique(bigram_key(previous, token, num_tokens)[keep], return_counts=True)
    # Stable sort by count, descending: equal counts keep ascending keys.
    ranked = torch.sort(-counts, stable=True).indices[:k]
    return keys[ranked].sort().values
