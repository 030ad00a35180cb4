"""A built-in corpus of short generated reviews whose label depends on word order: one clause
(``the plot was not very good .``) or two that disagree, joined by ``but``, taking the second's
sentiment, each with its mirror image ("good but boring", "boring but good"). A bag of words
cannot solve it; a small transformer can. Offline, instant, fixed by the seed."""

from __future__ import annotations

import random

import torch

from former.data.tokens import ClassificationData, TextSplit, Vocabulary, tokenize

NOUNS = tuple("movie film plot acting story cast ending music script dialogue".split())
VERBS = ("was", "is", "felt", "seemed")
INTENSIFIERS = ("", "", "very", "really", "quite", "truly")
OPENERS = ("", "", "", "honestly ,", "overall", "i think")
POSITIVE = ("good", "great", "brilliant", "fun", "moving", "charming", "clever", "beautiful")
NEGATIVE = ("bad", "boring", "dull", "awful", "weak", "silly", "slow", "bland")
CONTRAST_FRACTION = 0.7  # of reviews that are contrasts, in mirrored pairs


def _clause(rng: random.Random, positive: bool) -> str:
    """One clause whose sentiment is ``positive``; half the time reached through "not"."""
    negated = rng.random() < 0.5
    words = ["the", rng.choice(NOUNS), rng.choice(VERBS), "not" if negated else ""]
    words += [rng.choice(INTENSIFIERS), rng.choice(NEGATIVE if positive == negated else POSITIVE)]
    return " ".join(word for word in words if word)


def generate_reviews(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` reviews and their labels (0 negative, 1 positive), fixed by ``seed``."""
    rng = random.Random(seed)
    # a pair adds two contrast reviews, a single clause one review
    pair_probability = CONTRAST_FRACTION / (2 - CONTRAST_FRACTION)
    reviews: list[tuple[str, int]] = []
    while len(reviews) < n:
        label = rng.randrange(2)
        opener = rng.choice(OPENERS)
        if rng.random() < pair_probability:
            against, towards = _clause(rng, not label), _clause(rng, bool(label))
            reviews.append((f"{opener} {against} but {towards} .".strip(), label))
            reviews.append((f"{opener} {towards} but {against} .".strip(), 1 - label))
        else:
            reviews.append((f"{opener} {_clause(rng, bool(label))} .".strip(), label))
    reviews = reviews[:n]
    rng.shuffle(reviews)
    return [text for text, _ in reviews], [label for _, label in reviews]


def load_synthetic(
    n_train: int = 8000, n_val: int = 2000, seed: int = 0, *, vocab_size: int = 50_000
) -> ClassificationData:
    """The generated corpus as :class:`ClassificationData`: reviews of 5 to 16 tokens over
    about 50 words, train and val drawn together by ``seed``."""
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be positive; got {n_train} and {n_val}.")
    texts, labels = generate_reviews(n_train + n_val, seed)
    tokens = [tokenize(text) for text in texts]
    vocab = Vocabulary.build(tokens[:n_train], vocab_size)

    def split(part: slice) -> TextSplit:
        sequences = [torch.tensor(vocab.encode(t), dtype=torch.long) for t in tokens[part]]
        return TextSplit(sequences, torch.tensor(labels[part], dtype=torch.long))

    return ClassificationData(
        train=split(slice(0, n_train)),
        val=split(slice(n_train, None)),
        vocab=vocab,
        num_classes=2,
        source=f"generated reviews (seed {seed}, {n_train:,} train / {n_val:,} val)",
    )


def generated_text(n_bytes: int = 1_000_000, seed: int = 0) -> bytes:
    """About ``n_bytes`` of generated English-like text (reviews, one per line)."""
    lines, size, batch = [], 0, 0
    while size < n_bytes:
        texts, _ = generate_reviews(1000, seed=seed * 100_003 + batch)
        for text in texts:
            lines.append(text)
            size += len(text) + 1
        batch += 1
    return ("\n".join(lines) + "\n").encode("utf-8")[:n_bytes]
