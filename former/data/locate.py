"""Where data are looked for: an explicit path, ``$FORMER_DATA_DIR``, the per-user cache,
a download (unless ``$FORMER_OFFLINE``), and last the generated corpus, with a notice."""

from __future__ import annotations

import os
import sys
from pathlib import Path


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


def offline_forced() -> bool:
    """True when ``$FORMER_OFFLINE`` asks the loaders never to touch the network."""
    return os.environ.get("FORMER_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def offline_reason(allow_download: bool) -> str | None:
    """Why a loader must not download now, in words for its notice; None when it may."""
    if offline_forced():
        return "$FORMER_OFFLINE is set"
    return None if allow_download else "downloading is switched off"


def notice(message: str) -> None:
    """Tell the user, in one line on stderr, something they should know about their data."""
    print(f"former.data: {message}", file=sys.stderr, flush=True)
