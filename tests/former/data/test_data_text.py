"""Tokenizer, vocabulary and the fast corpus encoding that must agree with them."""

from __future__ import annotations

import json

import pytest
import torch

from former.data import Vocabulary, tokenize
from former.data.corpus import Reviews, TokenizedCorpus, classification_data_from_payload
from former.data.tokens import validation_indices


def test_tokenize_lowercases_drops_line_breaks_and_splits_punctuation():
    text = "Not GOOD.<br /><br />I didn't like it!!! The end...<BR/>(Really)"
    assert tokenize(text) == [
        "not", "good", ".", "i", "didn't", "like", "it", "!!!",
        "the", "end", "...", "(", "really", ")",
    ]  # fmt: skip


def test_tokenize_makes_punctuated_and_plain_words_equal():
    assert tokenize("good, good. good!") == ["good", ",", "good", ".", "good", "!"]
    assert "br" not in tokenize("one<br />two<br/>three<br>four")


def test_vocabulary_puts_pad_and_unk_first_then_most_frequent():
    vocab = Vocabulary.build([["b", "a", "c", "a"], ["c", "a", "d"]], max_size=10)
    assert vocab.itos == ["<pad>", "<unk>", "a", "c", "b", "d"]  # ties alphabetical
    assert (vocab.pad_index, vocab.unk_index) == (0, 1)
    assert len(vocab) == 6


def test_vocabulary_caps_size_and_maps_unknown_tokens_to_unk():
    vocab = Vocabulary.build([["a", "a", "a", "b", "b", "c"]], max_size=3)
    assert vocab.itos == ["<pad>", "<unk>", "a"]
    assert vocab.encode(["a", "b", "zebra"]) == [2, 1, 1]
    assert vocab.encode_text("A b.") == [2, 1, 1]
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build([["a"]], max_size=1)


def test_vocabulary_round_trips_through_json():
    vocab = Vocabulary.build([tokenize("a fine film , not a bad one")], max_size=100)
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored.itos == vocab.itos
    assert restored.encode_text("a bad film") == vocab.encode_text("a bad film")
    with pytest.raises(ValueError, match="itos"):
        Vocabulary.from_dict({"tokens": []})
    with pytest.raises(ValueError, match="<pad>"):
        Vocabulary(["a", "b"])


@pytest.mark.parametrize("final", [False, True])
@pytest.mark.parametrize("vocab_size", [4, 12, 1000])
def test_corpus_encoding_matches_vocabulary_build_on_the_training_split(final, vocab_size):
    texts = [
        "a great film , truly great", "a bad film", "not bad at all", "great great great",
        "the worst", "a film", "zany and great", "bad , bad , bad", "the end", "yes",
    ]  # fmt: skip
    labels = [i % 2 for i in range(10)]
    reviews = Reviews(texts, labels, [i >= 7 for i in range(10)])
    payload = TokenizedCorpus.from_reviews(reviews).encode(
        vocab_size=vocab_size, seed=3, final=final
    )
    if final:
        train_rows, val_rows = list(range(7)), list(range(7, 10))
    else:
        keep, held_out = validation_indices(7, seed=3)
        train_rows, val_rows = keep.tolist(), held_out.tolist()
        assert len(val_rows) == round(7 * 0.2)
    expected = Vocabulary.build([tokenize(texts[i]) for i in train_rows], max_size=vocab_size)
    data = classification_data_from_payload(payload, source="test", class_names=("n", "p"))
    assert data.vocab.itos == expected.itos
    for part, rows in (("train", train_rows), ("val", val_rows)):
        flat = [token for i in rows for token in expected.encode(tokenize(texts[i]))]
        assert payload[part]["ids"].tolist() == flat
        assert payload[part]["lengths"].tolist() == [len(tokenize(texts[i])) for i in rows]
        assert payload[part]["labels"].tolist() == [labels[i] for i in rows]


def test_validation_split_is_a_seeded_fifth_of_train():
    keep, held_out = validation_indices(24_960, seed=0)
    assert (len(keep), len(held_out)) == (19_968, 4_992)
    assert sorted(keep.tolist() + held_out.tolist()) == list(range(24_960))
    assert torch.equal(held_out, validation_indices(24_960, seed=0)[1])
    assert not torch.equal(held_out, validation_indices(24_960, seed=1)[1])
