"""Tiny Shakespeare: about 40,000 lines of the plays, the classic character-level corpus.

Plain ASCII, so bits per byte are bits per character. Found like the other data sets, else
downloaded from char-rnn's repository and checked against its sha256.
"""

from __future__ import annotations

from pathlib import Path

from former.data.download import download_file
from former.data.enwik8 import ByteSplits, generated_splits, load_text
from former.data.locate import cache_dir, find_or_download

SHAKESPEARE = "shakespeare"  # what --data takes to mean this corpus
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SIZE = 1_115_394
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def load_shakespeare(path: str | Path | None = None, *, download: bool = True) -> ByteSplits:
    """Tiny Shakespeare as (train, val, test) 1-D uint8 tensors, split 90/5/5. path: the text
    file or a folder holding it; None: looked up, downloaded, else generated text."""
    if path is not None:
        path = Path(path).expanduser()
        return load_text(path / SHAKESPEARE_FILE if path.is_dir() else path)
    found = find_or_download(
        "tiny Shakespeare",
        lambda folder: folder / SHAKESPEARE_FILE if (folder / SHAKESPEARE_FILE).is_file() else None,
        download_shakespeare,
        download,
        SHAKESPEARE_FILE,
        "generated text",
    )
    return generated_splits() if found is None else load_text(found)


def download_shakespeare(destination: Path | None = None) -> Path:
    """Download tiny Shakespeare (checksum-verified) into the per-user cache."""
    destination = destination or cache_dir() / SHAKESPEARE_FILE
    return download_file(
        SHAKESPEARE_URL, destination, sha256=SHAKESPEARE_SHA256, size=SHAKESPEARE_SIZE
    )
