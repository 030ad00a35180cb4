"""Tiny Shakespeare: about 40,000 lines of the plays, the classic character-level corpus.

It is plain ASCII, so every byte is a character and bits per byte are bits per
character. Found like the other data sets (an explicit path, ``$FORMER_DATA_DIR``,
the per-user cache), else downloaded from char-rnn's repository and checked
against its sha256; offline, a one-line notice and generated text instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from former.data.download import DownloadError, download_file
from former.data.enwik8 import ByteSplits, load_text, split_bytes
from former.data.locate import cache_dir, notice, offline_reason, search_folders
from former.data.synthetic import generated_text

SHAKESPEARE = "shakespeare"  # what --data takes to mean this corpus
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SIZE = 1_115_394
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def load_shakespeare(path: str | Path | None = None, *, download: bool = True) -> ByteSplits:
    """Tiny Shakespeare as (train, val, test) 1-D uint8 tensors, split 90/5/5.

    path: the text file, or a folder holding ``tinyshakespeare.txt``. With None:
    ``$FORMER_DATA_DIR``, the per-user cache, then a download; offline, a one-line
    notice on stderr and about a megabyte of generated text instead.
    """
    if path is not None:
        path = Path(path).expanduser()
        return load_text(path / SHAKESPEARE_FILE if path.is_dir() else path)
    for folder in search_folders():
        if (folder / SHAKESPEARE_FILE).is_file():
            return load_text(folder / SHAKESPEARE_FILE)
    reason = offline_reason(download)
    if reason is None:
        try:
            return load_text(download_shakespeare())
        except DownloadError as error:
            reason = str(error)
    notice(
        f"no tiny Shakespeare found and none downloaded ({reason}); using generated text "
        f"instead. For the plays, pass a path, set $FORMER_DATA_DIR, or put {SHAKESPEARE_FILE} "
        f"in {cache_dir()}."
    )
    return split_bytes(torch.frombuffer(bytearray(generated_text()), dtype=torch.uint8))


def download_shakespeare(destination: Path | None = None) -> Path:
    """Download tiny Shakespeare (checksum-verified) into the per-user cache."""
    destination = destination or cache_dir() / SHAKESPEARE_FILE
    return download_file(
        SHAKESPEARE_URL, destination, sha256=SHAKESPEARE_SHA256, size=SHAKESPEARE_SIZE
    )
