"""The generated corpus: deterministic, and only solvable by reading word order."""

from __future__ import annotations

from collections import defaultdict

import torch

from former.data import load_synthetic, tokenize
from former.data.synthetic import NEGATIVE, POSITIVE, generate_reviews, generated_text


def clause_sentiment(words: list[str]) -> int:
    """1 when a clause is positive: its adjective's polarity, flipped by "not"."""
    adjective = next(w for w in words if w in POSITIVE or w in NEGATIVE)
    return int((adjective in POSITIVE) != ("not" in words))


def test_same_seed_gives_the_same_corpus_and_another_seed_another():
    first, second = (load_synthetic(n_train=2000, n_val=500, seed=3) for _ in range(2))
    assert first.vocab.itos == second.vocab.itos
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.train.sequences, second.train.sequences, strict=True)
    )
    assert torch.equal(first.val.labels, second.val.labels)
    assert generate_reviews(50, seed=3) != generate_reviews(50, seed=4)


def test_sizes_vocabulary_and_lengths_suit_a_short_cpu_run():
    data = load_synthetic(n_train=1000, n_val=200)
    assert (len(data.train), len(data.val)) == (1000, 200)
    assert data.num_classes == 2 and len(data.vocab) < 64
    lengths = data.train.lengths()
    assert int(lengths.min()) >= 5 and int(lengths.max()) <= 16
    assert 0.4 < data.train.labels.float().mean().item() < 0.6


def test_labels_follow_negation_and_the_clause_after_but():
    texts, labels = generate_reviews(2000, seed=0)
    contrasts = 0
    for text, label in zip(texts, labels, strict=True):
        words = tokenize(text)
        if "but" in words:
            contrasts += 1
            cut = words.index("but")
            first, last = clause_sentiment(words[:cut]), clause_sentiment(words[cut + 1 :])
            assert first != last, text  # a contrast always contrasts
            assert label == last, text
        else:
            assert label == clause_sentiment(words), text
    assert 0.5 < contrasts / len(texts) < 0.9


def test_a_bag_of_words_cannot_tell_the_labels_apart():
    texts, labels = generate_reviews(20_000, seed=0)
    labels_of_bag: dict[tuple[str, ...], set[int]] = defaultdict(set)
    for text, label in zip(texts, labels, strict=True):
        labels_of_bag[tuple(sorted(tokenize(text)))].add(label)
    ambiguous = {bag for bag, seen in labels_of_bag.items() if seen == {0, 1}}
    with_but = [text for text in texts if " but " in text]
    in_ambiguous_bag = [t for t in with_but if tuple(sorted(tokenize(t))) in ambiguous]
    assert len(in_ambiguous_bag) > 0.95 * len(with_but)
    # "good but boring" is negative, "boring but good" positive: same words, opposite labels
    a = "the plot was good but the acting was boring"
    b = "the plot was boring but the acting was good"
    assert sorted(a.split()) == sorted(b.split())


def test_generated_text_is_deterministic_plain_text_of_the_asked_size():
    text = generated_text(50_000, seed=1)
    assert len(text) == 50_000 and text == generated_text(50_000, seed=1)
    assert text.decode("ascii").count("\n") > 500


def test_even_the_best_bag_of_words_classifier_gets_little_more_than_the_single_clauses():
    texts, labels = generate_reviews(20_000, seed=1)
    label_counts: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
    for text, label in zip(texts, labels, strict=True):
        label_counts[tuple(sorted(tokenize(text)))][label] += 1
    # the best any function of the bag can do, even scored on the data it was fitted to
    best = sum(max(pair) for pair in label_counts.values()) / len(texts)
    assert best < 0.7  # single clauses (30%) and chance on the mirrored contrasts
