"""IMDB loading from every layout, the lookup order, the cache and the offline fallback.

Everything here runs on tiny generated fixtures in the aclImdb layout; the real
files are exercised in test_data_imdb_real.py.
"""

from __future__ import annotations

import csv
import http.server
import socket
import tarfile
import threading
from pathlib import Path

import pytest
import torch

import former.data.imdb as imdb
from former.data import ClassificationData, ImdbFormatError, load_imdb
from former.data.corpus import TokenizedCorpus
from former.data.imdb import ImdbSource
from former.data.synthetic import NOUNS

POSITIVE = ["A great film<br /><br />I loved it!", "Wonderful, moving and funny.", "great great"]
NEGATIVE = ["A BAD film. Boring!", "Awful acting,<br />dull plot.", "not good at all"]


def review_text(split: str, polarity: str, review_id: int) -> str:
    texts = POSITIVE if polarity == "pos" else NEGATIVE
    return f"{texts[review_id % 3]} {split} number {review_id}"


def write_aclimdb(root: Path, per_folder: int = 10) -> Path:
    """A small aclImdb folder, with the extras the real one has (unsup, .feat, vocab)."""
    folder = root / "aclImdb"
    for split in ("train", "test"):
        for polarity in ("pos", "neg"):
            (folder / split / polarity).mkdir(parents=True)
            # written out of order on purpose: loaders must order by id, not by listing
            for review_id in reversed(range(per_folder)):
                rating = 9 if polarity == "pos" else 2
                path = folder / split / polarity / f"{review_id}_{rating}.txt"
                path.write_text(review_text(split, polarity, review_id), encoding="utf-8")
        (folder / split / "labeledBow.feat").write_text("0 0:1\n")
    (folder / "train" / "unsup").mkdir()
    (folder / "train" / "unsup" / "0_0.txt").write_text("unlabelled review, to be ignored")
    (folder / "imdb.vocab").write_text("the\nand\n")
    return folder


def write_tarball(folder: Path, destination: Path) -> Path:
    with tarfile.open(destination, "w:gz") as archive:
        archive.add(folder, arcname="aclImdb")
    return destination


def write_csv(path: Path, rows: list[tuple[str, str]], header=("review", "sentiment")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def csv_rows(n: int = 20) -> list[tuple[str, str]]:
    return [
        (review_text("train", "pos" if i % 2 else "neg", i), "positive" if i % 2 else "negative")
        for i in range(n)
    ]


def texts_of(data: ClassificationData, split: str = "val") -> list[str]:
    part = getattr(data, split)
    return [" ".join(data.vocab.itos[i] for i in s.tolist()) for s in part.sequences]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own cache, no $FORMER_DATA_DIR, and never the real network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FORMER_DATA_DIR", raising=False)
    monkeypatch.delenv("FORMER_OFFLINE", raising=False)
    monkeypatch.setattr(imdb, "IMDB_URL", f"http://127.0.0.1:{closed_port()}/aclImdb_v1.tar.gz")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def aclimdb(tmp_path) -> Path:
    return write_aclimdb(tmp_path / "extracted")


@pytest.fixture
def tarball(aclimdb, tmp_path) -> Path:
    (tmp_path / "archives").mkdir()
    return write_tarball(aclimdb, tmp_path / "archives" / "aclImdb_v1.tar.gz")


def test_archive_is_read_in_place_and_matches_the_extracted_folder(aclimdb, tarball):
    from_folder = load_imdb(aclimdb, final=True)
    from_tarball = load_imdb(tarball, final=True)
    assert not (tarball.parent / "aclImdb").exists()  # nothing was extracted
    for data in (from_folder, from_tarball):
        assert (len(data.train), len(data.val)) == (20, 20)  # unsup is not read
        assert data.num_classes == 2 and data.class_names == ("negative", "positive")
    assert from_folder.vocab.itos == from_tarball.vocab.itos
    assert texts_of(from_folder) == texts_of(from_tarball)
    assert torch.equal(from_folder.val.labels, from_tarball.val.labels)
    assert "aclImdb archive" in from_tarball.source and str(tarball) in from_tarball.source


def test_reviews_come_in_split_label_id_order_with_correct_labels(aclimdb):
    data = load_imdb(aclimdb, final=True)
    expected = [
        " ".join(data.vocab.itos[i] for i in data.vocab.encode_text(review_text("test", p, i)))
        for p in ("neg", "pos")
        for i in range(10)
    ]
    assert texts_of(data) == expected
    assert data.val.labels.tolist() == [0] * 10 + [1] * 10


def test_validation_is_a_fifth_of_train_by_seed_and_vocabulary_counts_train_only(aclimdb):
    data = load_imdb(aclimdb, seed=0)
    assert (len(data.train), len(data.val)) == (16, 4)
    assert all("train" in text for text in texts_of(data) + texts_of(data, "train"))
    assert "test" not in data.vocab.itos  # the word only appears in test reviews
    other_seed = load_imdb(aclimdb, seed=1)
    assert texts_of(other_seed) != texts_of(data)
    assert texts_of(load_imdb(aclimdb, seed=0)) == texts_of(data)


def test_vocab_size_caps_the_vocabulary(aclimdb):
    data = load_imdb(aclimdb, vocab_size=10, final=True)
    assert len(data.vocab) == 10
    assert data.vocab.itos[:2] == ["<pad>", "<unk>"]
    assert max(int(s.max()) for s in data.train.sequences) == 9
    assert any((s == 1).any() for s in data.val.sequences)


def test_csv_is_read_with_its_last_fifth_as_test_split(tmp_path):
    path = write_csv(tmp_path / "IMDB Dataset.csv", csv_rows(20))
    final = load_imdb(path, final=True)
    assert (len(final.train), len(final.val)) == (16, 4)
    assert final.val.labels.tolist() == [0, 1, 0, 1]  # rows 16..19
    assert texts_of(final, "train")[-1].endswith("number 15")
    assert texts_of(final)[-1].endswith("number <unk>")  # 19 appears in no training review
    developing = load_imdb(path)
    assert (len(developing.train), len(developing.val)) == (13, 3)
    assert "IMDB CSV" in developing.source


def test_a_folder_holding_one_data_set_is_accepted(tarball, tmp_path):
    # what a SageMaker channel hands over: a folder with the archive in it
    data = load_imdb(tarball.parent, final=True)
    assert len(data.train) == 20 and "aclImdb archive" in data.source
    channel = tmp_path / "channel"
    channel.mkdir()
    write_csv(channel / "reviews.csv", csv_rows(10))
    assert "IMDB CSV" in load_imdb(channel).source


def test_the_official_archive_wins_over_other_archives_in_a_folder(tarball):
    (tarball.parent / "imdb-copy.tar.gz").write_bytes(tarball.read_bytes())
    assert str(tarball) in load_imdb(tarball.parent).source


def test_a_folder_holding_an_extracted_aclimdb_folder_is_accepted(aclimdb):
    assert "aclImdb folder" in load_imdb(aclimdb.parent).source


def test_missing_path_is_an_actionable_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*aclImdb_v1.tar.gz"):
        load_imdb(tmp_path / "nowhere.tar.gz")


def test_csv_with_wrong_header_is_an_actionable_error(tmp_path):
    path = write_csv(tmp_path / "data.csv", [("x", "1")], header=("text", "label"))
    with pytest.raises(
        ImdbFormatError, match="header is 'text,label', expected 'review,sentiment'"
    ):
        load_imdb(path)


def test_csv_with_unknown_sentiment_names_the_row(tmp_path):
    path = write_csv(tmp_path / "data.csv", [("fine", "positive"), ("meh", "neutral")])
    with pytest.raises(ImdbFormatError, match="row 3.*'neutral'"):
        load_imdb(path)


def test_unknown_file_format_is_an_actionable_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n")
    with pytest.raises(ImdbFormatError, match="neither a tar archive.*nor a CSV"):
        load_imdb(path)


def test_archive_without_reviews_is_an_actionable_error(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "readme.txt").write_text("hello")
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(tmp_path / "stuff", arcname="stuff")
    with pytest.raises(ImdbFormatError, match="no IMDB reviews for train and test"):
        load_imdb(path)


def test_truncated_archive_is_an_actionable_error(tarball, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(ImdbFormatError, match="truncated"):
        load_imdb(cut)


def test_folder_without_data_and_ambiguous_folder_are_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImdbFormatError, match="neither an aclImdb folder"):
        load_imdb(empty)
    write_csv(empty / "a.csv", csv_rows(5))
    write_csv(empty / "b.csv", csv_rows(5))
    with pytest.raises(ImdbFormatError, match="more than one.*a.csv, b.csv"):
        load_imdb(empty)


def test_synthetic_is_selected_by_name():
    data = load_imdb("synthetic")
    assert "generated" in data.source and len(data.train) > 1000


def test_lookup_prefers_former_data_dir_then_the_cache(tmp_path, tarball, monkeypatch):
    cache = tmp_path / "cache" / "former"
    cache.mkdir(parents=True)
    (cache / "aclImdb_v1.tar.gz").write_bytes(tarball.read_bytes())
    assert str(cache) in load_imdb(final=True).source
    data_dir = tmp_path / "data_dir"
    data_dir.mkdir()
    write_csv(data_dir / "imdb.csv", csv_rows(10))
    monkeypatch.setenv("FORMER_DATA_DIR", str(data_dir))
    assert "IMDB CSV" in load_imdb().source


def test_former_data_dir_that_is_not_a_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FORMER_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(NotADirectoryError, match="FORMER_DATA_DIR"):
        load_imdb()


def test_second_load_comes_from_the_cache_without_reading_the_source(tarball, monkeypatch):
    first = load_imdb(tarball, seed=5)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the source was read again despite a cache")

    monkeypatch.setattr(ImdbSource, "read", must_not_run)
    monkeypatch.setattr(TokenizedCorpus, "from_reviews", must_not_run)
    second = load_imdb(tarball, seed=5)
    assert second.vocab.itos == first.vocab.itos
    assert texts_of(second) == texts_of(first)
    assert torch.equal(second.train.labels, first.train.labels)
    # other settings reuse the tokenized corpus: still no reading of the source
    assert len(load_imdb(tarball, seed=6, vocab_size=8).vocab) == 8
    assert len(load_imdb(tarball, final=True).val) == 20


def test_changed_source_is_read_again(tmp_path):
    path = write_csv(tmp_path / "imdb.csv", csv_rows(10))
    assert len(load_imdb(path, final=True).train) == 8
    write_csv(path, csv_rows(20))
    assert len(load_imdb(path, final=True).train) == 16


def test_cache_false_neither_reads_nor_writes_the_cache(tarball, tmp_path):
    load_imdb(tarball, cache=False)
    assert not (tmp_path / "cache" / "former" / "encoded").exists()


def test_corrupt_cache_is_rebuilt_with_a_notice(tarball, tmp_path, capsys):
    expected = texts_of(load_imdb(tarball))
    cached = sorted((tmp_path / "cache" / "former" / "encoded").glob("*.pt"))
    assert len(cached) == 2  # tokenized corpus + encoded split
    for path in cached:
        path.write_bytes(b"not a torch file")
    capsys.readouterr()
    assert texts_of(load_imdb(tarball)) == expected
    assert "unreadable" in capsys.readouterr().err
    assert not list((tmp_path / "cache" / "former" / "encoded").glob(".*part"))


def test_offline_falls_back_to_the_generated_corpus_with_one_line_notice(capsys, monkeypatch):
    monkeypatch.setenv("FORMER_OFFLINE", "1")
    data = load_imdb()
    assert "generated" in data.source
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no IMDB data found" in err[0] and "FORMER_OFFLINE" in err[0]


def test_failed_download_falls_back_with_the_reason(capsys):
    data = load_imdb(final=True)
    assert "generated" in data.source
    err = capsys.readouterr().err
    assert "could not download" in err and "FORMER_DATA_DIR" in err


def test_download_false_falls_back_without_touching_the_network(capsys, monkeypatch):
    monkeypatch.setattr(imdb, "download_file", pytest.fail)
    assert "generated" in load_imdb(download=False).source
    assert "downloading is switched off" in capsys.readouterr().err


def test_missing_archive_is_downloaded_verified_and_then_found_in_the_cache(
    tarball, tmp_path, monkeypatch
):
    import hashlib

    content = tarball.read_bytes()
    with serve_folder(tarball.parent) as base_url:
        monkeypatch.setattr(imdb, "IMDB_URL", f"{base_url}/{tarball.name}")
        monkeypatch.setattr(imdb, "IMDB_SIZE", len(content))
        monkeypatch.setattr(imdb, "IMDB_SHA256", hashlib.sha256(content).hexdigest())
        data = load_imdb(final=True)
    downloaded = tmp_path / "cache" / "former" / "aclImdb_v1.tar.gz"
    assert downloaded.read_bytes() == content
    assert str(downloaded) in data.source and len(data.train) == 20
    monkeypatch.setattr(imdb, "download_file", pytest.fail)
    assert str(downloaded) in load_imdb(final=True).source


class serve_folder:
    """An HTTP server on 127.0.0.1 serving ``folder``, as a context manager giving its URL."""

    def __init__(self, folder: Path) -> None:
        handler = lambda *a, **k: QuietHandler(*a, directory=str(folder), **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_generated_fixture_vocabulary_is_independent_of_synthetic_words():
    # guards the fixtures above: they must not accidentally be the generated corpus
    assert not set(NOUNS) & {"wonderful", "number"}
