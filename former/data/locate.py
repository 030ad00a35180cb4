"""Where data come from: an explicit path, ``$FORMER_DATA_DIR``, the per-user cache, a
download of the official file (checksum-verified, never half-written; unless
``$FORMER_OFFLINE``), and last the generated corpus, with a notice."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

DEFAULT_TIMEOUT_S = 10.0  # short, so that a machine without a network falls back quickly
BYTES_BAR = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "mininterval": 1.0}
RETRY = "Nothing was kept: try again, or download it yourself and pass its path."


class DownloadError(RuntimeError):
    """The file could not be fetched (no network, server error, connection lost)."""


class ChecksumError(RuntimeError):
    """The fetched file is not the published one; nothing was kept."""


def download_file(
    url: str,
    destination: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    verify: Callable[[Path], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Fetch ``url`` into ``destination`` through a temporary file, renamed only once
    ``size``, ``sha256`` and ``verify(path)`` hold (else :class:`ChecksumError`);
    :class:`DownloadError` when the network fails."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    try:
        digest = _fetch(url, partial, size, timeout)
        actual_size = partial.stat().st_size
        if size is not None and actual_size != size:
            raise ChecksumError(
                f"{url} gave {actual_size:,} bytes, expected {size:,}; the download was cut "
                f"short or the server sent something else. {RETRY}"
            )
        if sha256 is not None and digest != sha256.lower():
            raise ChecksumError(
                f"{url} has sha256 {digest}, expected {sha256}; the file is corrupt or not the "
                f"official one. {RETRY}"
            )
        if verify is not None:
            verify(partial)
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def _fetch(url: str, partial: Path, size: int | None, timeout: float) -> str:
    """Stream ``url`` into ``partial`` with a progress bar; return the sha256 hex digest."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or size
            with tqdm(total=total, desc=Path(url).name, **BYTES_BAR) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(f"could not download {url}: {error}") from error
    return digest.hexdigest()


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
