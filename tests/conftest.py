"""Shared fixtures: where the real data lives, and how a test asks for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """Path of a real data file in ../shared/data; skip locally, fail in CI when missing."""
    path = SHARED_DATA / name
    if not path.exists():
        message = f"real data file {path} is missing (see ../shared/data/README.md)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
