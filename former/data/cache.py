"""Encoded data sets kept on disk, so that loading them a second time is fast: plain tensors
and strings, named by a hash of all they depend on, written atomically, rebuilt with a notice
when unreadable, the least recently used pruned."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from former.data.locate import cache_dir, notice
from former.data.vocabulary import TOKENIZER_VERSION
from former.runs import write_atomically

CACHE_FORMAT_VERSION = 2  # bumped whenever the layout of cache files changes
MAX_ENTRIES_PER_KIND = 6  # ~55 MB each for full IMDB: many seeds must not fill the disk


def file_identity(path: Path) -> dict[str, Any]:
    """What identifies a file or folder for caching: resolved path, size and mtime."""
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
    """The payload of ``kind`` for ``key`` from the cache, else ``build()`` (then cached);
    ``use=False`` neither reads nor writes the cache."""
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
