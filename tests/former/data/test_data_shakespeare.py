"""Tiny Shakespeare: found by path, folder, $FORMER_DATA_DIR or cache; downloaded and checked;
offline, generated text with a one-line notice."""

from __future__ import annotations

import pytest
from conftest import shared_file

import former.data.text as shakespeare
from former.data import ChecksumError, load_shakespeare

CONTENT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FORMER_DATA_DIR", raising=False)
    monkeypatch.delenv("FORMER_OFFLINE", raising=False)
    monkeypatch.setattr(shakespeare, "SHAKESPEARE_URL", "http://127.0.0.1:1/input.txt")


def joined(splits) -> bytes:
    return b"".join(bytes(part.numpy().tobytes()) for part in splits)


def test_the_real_file_splits_90_5_5_into_characters():
    train, val, test = load_shakespeare(shared_file("tinyshakespeare.txt"))
    assert (len(train), len(val), len(test)) == (1_003_854, 55_769, 55_771)
    assert bytes(train[:14].tolist()) == b"First Citizen:"
    assert int(train.max()) < 128, "plain ASCII: one byte per character"


def test_lookup_takes_a_folder_then_former_data_dir_then_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "former"
    cache.mkdir(parents=True)
    (cache / "tinyshakespeare.txt").write_bytes(CONTENT)
    assert joined(load_shakespeare()) == CONTENT
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "tinyshakespeare.txt").write_bytes(CONTENT.upper())
    assert joined(load_shakespeare(data_dir)) == CONTENT.upper()  # a folder as path
    monkeypatch.setenv("FORMER_DATA_DIR", str(data_dir))
    assert joined(load_shakespeare()) == CONTENT.upper()


def test_download_is_checked_and_lands_in_the_cache(tmp_path, monkeypatch):
    real = shared_file("tinyshakespeare.txt")
    monkeypatch.setattr(shakespeare, "SHAKESPEARE_URL", real.as_uri())
    assert joined(load_shakespeare()) == real.read_bytes()
    assert (tmp_path / "cache" / "former" / "tinyshakespeare.txt").read_bytes() == real.read_bytes()

    altered = tmp_path / "altered.txt"
    altered.write_bytes(real.read_bytes().replace(b"ROMEO", b"ROMEA"))
    monkeypatch.setattr(shakespeare, "SHAKESPEARE_URL", altered.as_uri())
    with pytest.raises(ChecksumError, match="sha256"):
        shakespeare.download_shakespeare()
    cached = tmp_path / "cache" / "former"
    assert [path.name for path in cached.iterdir()] == ["tinyshakespeare.txt"]  # nothing kept
    assert (cached / "tinyshakespeare.txt").read_bytes() == real.read_bytes()


@pytest.mark.parametrize("offline", [False, True])
def test_offline_falls_back_to_generated_text_with_one_notice(offline, monkeypatch, capsys):
    if offline:
        monkeypatch.setenv("FORMER_OFFLINE", "1")
        monkeypatch.setattr(shakespeare, "download_file", pytest.fail)
    train, val, test = load_shakespeare()
    assert len(train) > 500_000 and len(val) > 0 and len(test) > 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tiny Shakespeare found" in err[0]
    assert ("$FORMER_OFFLINE is set" if offline else "could not download") in err[0]


def test_a_missing_file_is_an_actionable_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no text file"):
        load_shakespeare(tmp_path / "plays.txt")
    with pytest.raises(FileNotFoundError, match="no text file"):
        load_shakespeare(tmp_path)  # a folder without tinyshakespeare.txt
