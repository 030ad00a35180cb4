"""Where data come from: an explicit path, ``$FORMER_DATA_DIR``, the per-user cache, a
download of the official file (checksum-verified, never half-written; unless
``$FORMER_OFFLINE``), and last the generated corpus, with a notice. And where encoded data
sets are kept, so that a second load is fast: plain tensors and strings, named by a hash of
all they depend on, rebuilt with a notice when unreadable, the least recently used pruned."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from former.data.tokens import TOKENIZER_VERSION
from former.runs import write_atomically

Found = TypeVar("Found")
CACHE_FORMAT_VERSION = 2  # bumped whenever the layout of cache files changes
MAX_ENTRIES_PER_KIND = 6  # ~55 MB each for full IMDB: many seeds must not fill the disk
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
    """Fetch ``url`` into ``destination`` through a temporary file, renamed only once ``size``,
    ``sha256`` and ``verify(path)`` hold (else :class:`ChecksumError`)."""
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
    """Stream ``url`` into ``partial``, with a progress bar; the sha256 hex digest."""
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


def find_or_download(
    what: str,
    find_in: Callable[[Path], Found | None],
    download: Callable[[], Found],
    allow_download: bool,
    file_name: str,
    fallback: str = "generated text",
) -> Found | None:
    """``what``, found by ``find_in`` in one of :func:`search_folders`, else downloaded; None,
    after a one-line notice that ``fallback`` stands in, when neither works."""
    for folder in search_folders():
        if (found := find_in(folder)) is not None:
            return found
    reason = None if allow_download else "downloading is switched off"
    if os.environ.get("FORMER_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        reason = "$FORMER_OFFLINE is set"
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


def file_identity(path: Path) -> dict[str, Any]:
    """What identifies a file or folder to the cache: resolved path, size and mtime."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_file(kind: str, key: dict[str, Any]) -> Path:
    """Where the cache entry of ``kind`` (e.g. "imdb-corpus") for ``key`` lives."""
    versioned = {"format": CACHE_FORMAT_VERSION, "tokenizer": TOKENIZER_VERSION, **key}
    digest = hashlib.sha256(json.dumps(versioned, sort_keys=True).encode()).hexdigest()
    return cache_dir() / "encoded" / f"{kind}-{digest[:20]}.pt"


def load_cached(path: Path) -> dict[str, Any] | None:
    """The cached payload at ``path``, or None when there is none or it is unreadable."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT_VERSION:
            raise ValueError("unexpected content")
    except Exception as error:  # any unreadable file is rebuilt, whatever broke it
        notice(f"cache file {path} is unreadable ({error}); rebuilding it.")
        path.unlink(missing_ok=True)
        return None
    try:
        os.utime(path)  # marks it used, for the pruning
    except OSError:
        pass  # a read-only cache still works, it just is not pruned by use
    return payload


def cached(
    kind: str, key: dict[str, Any], build: Callable[[], dict[str, Any]], use: bool = True
) -> dict[str, Any]:
    """The payload of ``kind`` for ``key``: cached, else ``build()`` (then cached); ``use=False``
    neither reads nor writes the cache."""
    path = cache_file(kind, key)
    payload = load_cached(path) if use else None
    if payload is None:
        payload = build()
        if use:
            save_cached(path, payload)
    return payload


def save_cached(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically, then keep the newest MAX_ENTRIES_PER_KIND of its kind."""
    try:
        write_atomically({**payload, "format": CACHE_FORMAT_VERSION}, path)
    except OSError as error:
        notice(f"could not write the cache file {path} ({error}); the next load will be slow too.")
        return
    same_kind = sorted(path.parent.glob(f"{path.name.rsplit('-', 1)[0]}-*.pt"), key=_last_used)
    for stale in same_kind[:-MAX_ENTRIES_PER_KIND]:
        if stale != path:
            stale.unlink(missing_ok=True)


def _last_used(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # removed meanwhile by another process
        return 0
