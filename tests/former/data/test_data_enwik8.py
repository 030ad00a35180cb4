"""Bytes for generation: enwik8 raw, gzipped or zipped, any text file, and the offline fallback."""

from __future__ import annotations

import gzip
import zipfile

import pytest
import torch

import former.data.text as enwik8
from former.data import ChecksumError, load_enwik8, load_text
from former.data.text import check_enwik8_zip, split_bytes

CONTENT = b"<mediawiki>" + bytes(range(256)) * 40 + b"</mediawiki>\n"  # 10,263 bytes


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FORMER_DATA_DIR", raising=False)
    monkeypatch.delenv("FORMER_OFFLINE", raising=False)
    monkeypatch.setattr(enwik8, "ENWIK8_URL", "http://127.0.0.1:1/enwik8.zip")


def expected_splits(data: bytes) -> tuple[bytes, bytes, bytes]:
    n_train, n_val = len(data) * 90 // 100, len(data) * 5 // 100
    return data[:n_train], data[n_train : n_train + n_val], data[n_train + n_val :]


def as_bytes(splits) -> tuple[bytes, ...]:
    return tuple(bytes(part.numpy().tobytes()) for part in splits)


@pytest.mark.parametrize("layout", ["raw", "gz", "zip", "zip-single-member"])
def test_every_layout_gives_the_same_bytes_split_90_5_5(layout, tmp_path):
    path = tmp_path / {"raw": "enwik8", "gz": "data.gz"}.get(layout, "enwik8.zip")
    if layout == "raw":
        path.write_bytes(CONTENT)
    elif layout == "gz":
        path.write_bytes(gzip.compress(CONTENT))
    else:
        member = "enwik8" if layout == "zip" else "some.txt"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(member, CONTENT)
            if layout == "zip":
                archive.writestr("readme.txt", b"not this one")
    splits = load_enwik8(path)
    assert all(part.dtype == torch.uint8 and part.dim() == 1 for part in splits)
    assert as_bytes(splits) == expected_splits(CONTENT)
    assert as_bytes(load_text(path)) == expected_splits(CONTENT)


def test_full_enwik8_size_splits_90m_5m_5m():
    sizes = [len(part) for part in split_bytes(torch.zeros(100_000_000, dtype=torch.uint8))]
    assert sizes == [90_000_000, 5_000_000, 5_000_000]


def test_zip_with_several_members_and_no_enwik8_is_an_error(tmp_path):
    path = tmp_path / "texts.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", CONTENT)
        archive.writestr("b.txt", CONTENT)
    with pytest.raises(ValueError, match="2 files and none is named 'enwik8'"):
        load_text(path)


def test_truncated_gzip_is_an_actionable_error(tmp_path):
    path = tmp_path / "enwik8.gz"
    path.write_bytes(gzip.compress(CONTENT)[:100])
    with pytest.raises(ValueError, match="could not be unpacked.*truncated"):
        load_text(path)


def test_missing_and_tiny_files_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no text file"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "tiny.txt").write_bytes(b"hello")
    with pytest.raises(ValueError, match="too few"):
        load_text(tmp_path / "tiny.txt")


def test_lookup_finds_enwik8_in_former_data_dir_then_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "former"
    cache.mkdir(parents=True)
    (cache / "enwik8").write_bytes(CONTENT)
    assert as_bytes(load_enwik8()) == expected_splits(CONTENT)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    other = CONTENT[::-1]
    (data_dir / "enwik8-first4MB.gz").write_bytes(gzip.compress(other))
    monkeypatch.setenv("FORMER_DATA_DIR", str(data_dir))
    assert as_bytes(load_enwik8()) == expected_splits(other)
    assert as_bytes(load_enwik8(data_dir)) == expected_splits(other)  # a folder as path


def test_offline_falls_back_to_generated_text_with_a_notice(capsys):
    train, val, test = load_enwik8()
    assert len(train) > 500_000 and len(val) > 0 and len(test) > 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no enwik8 found" in err[0] and "could not download" in err[0]


def test_download_false_never_touches_the_network(capsys, monkeypatch):
    monkeypatch.setattr(enwik8, "download_file", pytest.fail)
    load_enwik8(download=False)
    assert "downloading is switched off" in capsys.readouterr().err


def test_downloaded_zip_is_checked_by_the_md5_of_its_enwik8(tmp_path, monkeypatch):
    path = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("enwik8", CONTENT)
    with pytest.raises(ChecksumError, match="md5"):
        check_enwik8_zip(path)
    import hashlib

    monkeypatch.setattr(enwik8, "ENWIK8_MD5", hashlib.md5(CONTENT).hexdigest())
    check_enwik8_zip(path)  # accepted
    (tmp_path / "notzip").write_bytes(b"html error page")
    with pytest.raises(ChecksumError, match="not the official"):
        check_enwik8_zip(tmp_path / "notzip")
