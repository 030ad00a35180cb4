"""Where data are looked for: an explicit path, ``$FORMER_DATA_DIR``, the per-user cache,
a download (unless ``$FORMER_OFFLINE``), and last the generated corpus, with a notice."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from former.data.download import DownloadError

Found = TypeVar("Found")


def cache_dir() -> Path:
    """The per-user cache folder, ``$XDG_CACHE_HOME/former`` or ``~/.cache/former``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "former"


def search_folders() -> list[Path]:
    """The folders searched when no path is given: ``$FORMER_DATA_DIR``, then the cache."""
    folders = [cache_dir()]
    if value := os.environ.get("FORMER_DATA_DIR"):
        if not Path(value).expanduser().is_dir():
            raise NotADirectoryError(
                f"$FORMER_DATA_DIR is set to {value!r}, which is not a folder; point it at "
                "the folder holding your data files, or unset it."
            )
        folders.insert(0, Path(value).expanduser())
    return [folder for folder in folders if folder.is_dir()]


def offline_reason(allow_download: bool) -> str | None:
    """Why a loader must not download now, in words for its notice; None when it may."""
    if os.environ.get("FORMER_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        return "$FORMER_OFFLINE is set"
    return None if allow_download else "downloading is switched off"


def find_or_download(
    what: str,
    find_in: Callable[[Path], Found | None],
    download: Callable[[], Found],
    allow_download: bool,
    file_name: str,
    fallback: str,
) -> Found | None:
    """``what``, found by ``find_in`` in one of :func:`search_folders`, else downloaded; None,
    after a one-line notice that ``fallback`` stands in, when neither works."""
    for folder in search_folders():
        if (found := find_in(folder)) is not None:
            return found
    reason = offline_reason(allow_download)
    if reason is None:
        try:
            return download()
        except DownloadError as error:
            reason = str(error)
    notice(
        f"no {what} found and none downloaded ({reason}); using {fallback} instead. For real "
        f"{what}, pass a path, set $FORMER_DATA_DIR, or put {file_name} in {cache_dir()}."
    )
    return None


def notice(message: str) -> None:
    """Tell the user, in one line on stderr, something they should know about their data."""
    print(f"former.data: {message}", file=sys.stderr, flush=True)
