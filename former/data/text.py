"""Bytes for generation: enwik8 (raw, ``.gz`` or the official ``.zip``), tiny Shakespeare
(plain ASCII: bits per byte are bits per character) or any text file. Every byte is a token;
data are split 90/5/5 into train, validation and test, as the original ``former`` split enwik8.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import torch

from former.data.locate import ChecksumError, cache_dir, download_file, find_or_download
from former.data.synthetic import generated_text

ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_ARCHIVE = "enwik8.zip"
ENWIK8_SIZE = 36_445_475
ENWIK8_MD5 = "a1fa5ffddb56f4953e226637dabbb36a"  # of the unpacked member `enwik8`
ENWIK8_MEMBER = "enwik8"
SPLIT_PERCENT = (90, 5, 5)
MINIMUM_BYTES = 20  # below this, validation or test would be empty
SHAKESPEARE = "shakespeare"  # what --data takes to mean this corpus
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SIZE = 1_115_394
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

ByteSplits = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def load_enwik8(path: str | Path | None = None, *, download: bool = True) -> ByteSplits:
    """enwik8 as (train, val, test) 1-D uint8 tensors. path: enwik8 raw, gzipped, the official
    ``enwik8.zip``, or a folder holding one; None: looked up, downloaded, else generated text."""
    if path is None:
        return load_found(
            find_or_download("enwik8", find_enwik8_in, download_enwik8, download, ENWIK8_ARCHIVE)
        )
    path = Path(path).expanduser()
    found = find_enwik8_in(path) if path.is_dir() else path
    if found is None:
        raise FileNotFoundError(
            f"{path} holds no enwik8 file (enwik8, enwik8.zip or enwik8*.gz); pass the file itself."
        )
    return load_text(found)


def load_shakespeare(path: str | Path | None = None, *, download: bool = True) -> ByteSplits:
    """Tiny Shakespeare as (train, val, test) 1-D uint8 tensors. path: the text file or a folder
    holding it; None: looked up, downloaded, else generated text."""
    if path is not None:
        path = Path(path).expanduser()
        return load_text(path / SHAKESPEARE_FILE if path.is_dir() else path)

    def find_in(folder: Path) -> Path | None:
        return folder / SHAKESPEARE_FILE if (folder / SHAKESPEARE_FILE).is_file() else None

    what = "tiny Shakespeare"
    return load_found(
        find_or_download(what, find_in, download_shakespeare, download, SHAKESPEARE_FILE)
    )


def load_found(found: Path | None) -> ByteSplits:
    """The file :func:`find_or_download` found, else about a megabyte of generated text."""
    if found is None:
        return split_bytes(torch.frombuffer(bytearray(generated_text()), dtype=torch.uint8))
    return load_text(found)


def load_text(path: str | Path) -> ByteSplits:
    """Any file as (train, val, test) 1-D uint8 tensors of its bytes; gzip and zip (its
    ``enwik8`` member, or its only one) are unpacked, recognised by content."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {path}; pass the path of an existing file.")
    return split_bytes(torch.frombuffer(read_bytes(path), dtype=torch.uint8))


def read_bytes(path: Path) -> bytearray:
    """The content of a raw, gzipped or zipped file."""
    with open(path, "rb") as file:
        magic = file.read(4)
    try:
        if magic[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as file:
                return bytearray(file.read())
        if magic == b"PK\x03\x04":
            with zipfile.ZipFile(path) as archive:
                return bytearray(archive.read(_zip_member(archive, path)))
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path} looks compressed but could not be unpacked ({error}); it may be "
            "truncated. Fetch it again or pass the unpacked file."
        ) from error
    return bytearray(path.read_bytes())


def _zip_member(archive: zipfile.ZipFile, path: Path) -> str:
    names = [name for name in archive.namelist() if not name.endswith("/")]
    if ENWIK8_MEMBER in names:
        return ENWIK8_MEMBER
    if len(names) == 1:
        return names[0]
    raise ValueError(
        f"{path} holds {len(names)} files and none is named 'enwik8'; unpack the one you "
        "want and pass it."
    )


def split_bytes(data: torch.Tensor) -> ByteSplits:
    """1-D ``data`` as 90/5/5 (train, val, test) views."""
    n = len(data)
    if n < MINIMUM_BYTES:
        raise ValueError(f"{n} bytes are too few to split 90/5/5; use a larger text file.")
    n_train = n * SPLIT_PERCENT[0] // 100
    n_val = n * SPLIT_PERCENT[1] // 100
    return data[:n_train], data[n_train : n_train + n_val], data[n_train + n_val :]


def find_enwik8_in(folder: Path) -> Path | None:
    """``enwik8``, ``enwik8.zip``, then any ``enwik8*.gz`` in ``folder``."""
    for name in (ENWIK8_MEMBER, ENWIK8_ARCHIVE, "enwik8.gz"):
        if (folder / name).is_file():
            return folder / name
    gzipped = sorted(folder.glob("enwik8*.gz"))
    return gzipped[0] if gzipped else None


def download_enwik8() -> Path:
    """The official ``enwik8.zip``, downloaded into the per-user cache and verified."""
    path = cache_dir() / ENWIK8_ARCHIVE
    return download_file(ENWIK8_URL, path, size=ENWIK8_SIZE, verify=check_enwik8_zip)


def check_enwik8_zip(path: Path) -> None:
    """Raise :class:`ChecksumError` unless ``path`` is a zip whose enwik8 has the published md5."""
    try:
        with zipfile.ZipFile(path) as archive:
            digest = hashlib.md5(archive.read(ENWIK8_MEMBER)).hexdigest()
    except (zipfile.BadZipFile, KeyError) as error:
        raise ChecksumError(f"the download is not the official enwik8.zip ({error}).") from error
    if digest != ENWIK8_MD5:
        raise ChecksumError(
            f"enwik8 in the download has md5 {digest}, expected {ENWIK8_MD5}; nothing was "
            "kept. Try again, or download it yourself and pass its path."
        )


def download_shakespeare() -> Path:
    """Tiny Shakespeare, downloaded (checksum-verified) into the per-user cache."""
    path = cache_dir() / SHAKESPEARE_FILE
    return download_file(SHAKESPEARE_URL, path, sha256=SHAKESPEARE_SHA256, size=SHAKESPEARE_SIZE)
