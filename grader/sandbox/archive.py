"""Reading arrays that submission code could have written: bounded before anything is unpacked."""

from __future__ import annotations

import os
import zipfile

import numpy as np


class ArchiveError(Exception):
    """The file is missing, a link, not an .npz, or larger than allowed (packed or unpacked)."""


def read_arrays(path: str | os.PathLike, limit: int) -> dict[str, np.ndarray]:
    """The arrays of the .npz at ``path``, refused (ArchiveError) when it is a link or when the
    file, or its members unpacked, hold more than ``limit`` bytes. Never unpickles."""
    try:
        if os.path.islink(path) or os.path.getsize(path) > limit:
            raise ArchiveError(f"{os.path.basename(path)} is a link or larger than {limit} bytes")
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > 4096 or sum(info.file_size for info in members) > limit:
                raise ArchiveError(f"{os.path.basename(path)} unpacks to more than {limit} bytes")
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except ArchiveError:
        raise
    except Exception as error:  # noqa: BLE001 - written by submission code: anything can be wrong
        raise ArchiveError(f"{os.path.basename(path)}: {type(error).__name__}") from None
