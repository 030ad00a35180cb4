"""The loaders on the real data sets in ../shared/data (skipped locally when missing)."""

from __future__ import annotations

import pytest
import torch
from conftest import shared_file

from former.data import batches, load_enwik8, load_imdb, load_text
from former.data.corpus import TokenizedCorpus
from former.data.imdb import ImdbSource


@pytest.fixture(scope="module")
def imdb_cache(tmp_path_factory):
    """One cache for the module: the archive is tokenized once, then reused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        patch.delenv("FORMER_DATA_DIR", raising=False)
        yield patch


def test_full_imdb_final_uses_the_test_split(imdb_cache):
    data = load_imdb(shared_file("aclImdb-labelled.tar.gz"), final=True)
    assert (len(data.train), len(data.val)) == (24_960, 24_960)
    assert data.train.labels.bincount().tolist() == [12_480, 12_480]
    assert data.val.labels.bincount().tolist() == [12_480, 12_480]
    assert len(data.vocab) == 50_000
    assert data.vocab.itos[:4] == ["<pad>", "<unk>", "the", "."]
    assert "<br" not in " ".join(data.vocab.itos) and "br" not in data.vocab.itos[:1000]


def test_full_imdb_validation_is_a_fifth_of_train(imdb_cache):
    data = load_imdb(shared_file("aclImdb-labelled.tar.gz"), vocab_size=20_000, seed=0)
    assert (len(data.train), len(data.val)) == (19_968, 4_992)
    assert len(data.vocab) == 20_000
    batch = next(batches(data.train, 32, 256))
    assert batch.tokens.shape[0] == 32 and batch.tokens.shape[1] <= 256


def test_full_imdb_second_load_comes_from_the_cache(imdb_cache, monkeypatch):
    path = shared_file("aclImdb-labelled.tar.gz")
    first = load_imdb(path, final=True)
    monkeypatch.setattr(ImdbSource, "read", pytest.fail)
    monkeypatch.setattr(TokenizedCorpus, "from_reviews", pytest.fail)
    monkeypatch.setattr(TokenizedCorpus, "from_payload", pytest.fail)  # not even the corpus
    second = load_imdb(path, final=True)
    assert second.vocab.itos == first.vocab.itos
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.val.sequences[:500], second.val.sequences[:500], strict=True)
    )


def test_imdb_csv_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = load_imdb(shared_file("imdb_sample.csv"), final=True)
    assert len(data.train) + len(data.val) == 2_500
    assert (len(data.train), len(data.val)) == (2_000, 500)
    positives = int(data.train.labels.sum() + data.val.labels.sum())
    assert positives == 1_266


def test_enwik8_first_4mb_splits_90_5_5():
    train, val, test = load_enwik8(shared_file("enwik8-first4MB.gz"))
    assert (len(train), len(val), len(test)) == (3_600_000, 200_000, 200_000)
    assert bytes(train[:10].numpy().tobytes()) == b"<mediawiki"


def test_any_text_file():
    train, val, test = load_text(shared_file("tinyshakespeare.txt"))
    assert len(train) + len(val) + len(test) == 1_115_394
    assert len(train) == 1_115_394 * 9 // 10
