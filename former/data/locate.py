"""Where data are looked for, in order, and how the loaders talk about it.

1. an explicit path given by the caller;
2. ``$FORMER_DATA_DIR`` (a folder: the loaders look inside it);
3. the per-user cache, ``$XDG_CACHE_HOME/former`` or ``~/.cache/former``
   (downloads land there, and so do encoded data sets);
4. a download of the official archive, unless ``download=False`` or
   ``$FORMER_OFFLINE`` is set;
5. a built-in generated corpus, announced by a one-line notice on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DATA_DIR_VARIABLE = "FORMER_DATA_DIR"
OFFLINE_VARIABLE = "FORMER_OFFLINE"


def cache_dir() -> Path:
    """The per-user cache folder (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "former"


def data_dir_from_env() -> Path | None:
    """The folder named by ``$FORMER_DATA_DIR``, or None when it is not set."""
    value = os.environ.get(DATA_DIR_VARIABLE)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise NotADirectoryError(
            f"${DATA_DIR_VARIABLE} is set to {value!r}, which is not a folder; point it at "
            "the folder holding your data files, or unset it."
        )
    return path


def search_folders() -> list[Path]:
    """The folders searched when no path is given: ``$FORMER_DATA_DIR``, then the cache."""
    folders = [folder for folder in (data_dir_from_env(), cache_dir()) if folder is not None]
    return [folder for folder in folders if folder.is_dir()]


def offline_forced() -> bool:
    """True when ``$FORMER_OFFLINE`` asks the loaders never to touch the network."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def offline_reason(allow_download: bool) -> str | None:
    """Why a loader must not download now, in words for its notice; None when it may."""
    if offline_forced():
        return "$FORMER_OFFLINE is set"
    return None if allow_download else "downloading is switched off"


def notice(message: str) -> None:
    """Tell the user, in one line on stderr, something they should know about their data."""
    print(f"former.data: {message}", file=sys.stderr, flush=True)
