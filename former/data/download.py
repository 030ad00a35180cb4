"""Fetching an official archive: progress bar, checksum, and never a half-written file."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

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
    ``size``, ``sha256`` and ``verify(path)`` (raising :class:`ChecksumError`) all hold.

    Raises :class:`DownloadError` when the network fails, :class:`ChecksumError` when the
    content is wrong.
    """
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
