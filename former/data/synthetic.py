"""A built-in corpus of short generated reviews whose label depends on word order.

Every review is one clause, ``the plot was not very good .``, or two clauses
joined by a contrast, ``the acting was good but the plot was boring .``. A
clause is positive when its adjective is positive, flipped by ``not``; a
contrast review takes the sentiment of the clause after ``but``, and its two
clauses always disagree. So "good but boring" is negative and "boring but
good" positive: the same bag of words with opposite labels, and every
contrast review comes with its mirror image. A bag-of-words model cannot do
better than chance on the contrast reviews (about 65% overall), while a small
transformer, which sees where ``but`` and ``not`` stand, learns them all.

It runs offline, in a fraction of a second, and is the same for the same seed.
"""

from __future__ import annotations

import random

import torch

from former.data.splits import ClassificationData, TextSplit
from former.data.tokenizer import tokenize
from former.data.vocabulary import Vocabulary

NOUNS = (
    "movie",
    "film",
    "plot",
    "acting",
    "story",
    "cast",
    "ending",
    "music",
    "script",
    "dialogue",
)
VERBS = ("was", "is", "felt", "seemed")
INTENSIFIERS = ("", "", "very", "really", "quite", "truly")
OPENERS = ("", "", "", "honestly ,", "overall", "i think")
POSITIVE = ("good", "great", "brilliant", "fun", "moving", "charming", "clever", "beautiful")
NEGATIVE = ("bad", "boring", "dull", "awful", "weak", "silly", "slow", "bland")
CLASS_NAMES = ("negative", "positive")


def _clause(rng: random.Random, positive: bool) -> str:
    """One clause whose sentiment is ``positive``; half the time reached through "not"."""
    negated = rng.random() < 0.5
    adjectives = NEGATIVE if positive == negated else POSITIVE
    words = [
        "the",
        rng.choice(NOUNS),
        rng.choice(VERBS),
        "not" if negated else "",
        rng.choice(INTENSIFIERS),
        rng.choice(adjectives),
    ]
    return " ".join(word for word in words if word)


def generate_reviews(
    n: int, seed: int = 0, contrast_fraction: float = 0.7
) -> tuple[list[str], list[int]]:
    """``n`` generated reviews and their labels (0 negative, 1 positive), fixed by ``seed``.

    Contrast reviews come in mirrored pairs, "A but B" and "B but A": the same
    words with opposite labels, so word counts alone cannot separate them.
    About ``contrast_fraction`` of the reviews are contrasts.
    """
    rng = random.Random(seed)
    # a pair adds two contrast reviews, a single clause one review
    pair_probability = contrast_fraction / (2 - contrast_fraction)
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
    n_train: int = 8000,
    n_val: int = 2000,
    seed: int = 0,
    *,
    contrast_fraction: float = 0.7,
    vocab_size: int = 50_000,
) -> ClassificationData:
    """The generated corpus as a :class:`ClassificationData` (train and val drawn together by seed).

    Reviews are 5 to 16 tokens long over a vocabulary of about 50 words.
    """
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be positive; got {n_train} and {n_val}.")
    texts, labels = generate_reviews(n_train + n_val, seed, contrast_fraction)
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
        class_names=CLASS_NAMES,
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
