"""Training runs on disk: the settings that identify a run, checkpoints (the newest few) and
the saved model, written atomically; a run never resumes from, or overwrites, another run's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from former.settings import RunSettings

MODEL_FILE = "model.pt"
CHECKPOINT_PREFIX = "checkpoint-"
KEEP_CHECKPOINTS = 3


class RunMismatchError(ValueError):
    """A checkpoint or saved model belongs to a run with a different configuration."""


def check_same_run(settings: RunSettings, saved: dict[str, Any], where: Path) -> None:
    """Raise :class:`RunMismatchError` unless ``saved`` (a settings dict) is this run's."""
    if differences := settings.differences(saved):
        raise RunMismatchError(
            f"{where} holds a run with different settings ({'; '.join(differences)}). "
            "Use the same settings to resume it, or choose another output folder."
        )


def write_atomically(payload: Any, path: Path) -> Path:
    """torch.save to ``path`` through a temporary file, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def checkpoint_paths(directory: str | Path | None) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    return sorted(Path(directory).glob(f"{CHECKPOINT_PREFIX}*.pt")) if directory else []


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the newest checkpoint and delete all but the newest few."""
    path = write_atomically(state, Path(directory) / f"{CHECKPOINT_PREFIX}{state['step']:09d}.pt")
    for old in checkpoint_paths(directory)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(directory: str | Path | None) -> dict[str, Any] | None:
    """The newest checkpoint in ``directory`` (None when there is none)."""
    paths = checkpoint_paths(directory)
    return torch.load(paths[-1], map_location="cpu", weights_only=True) if paths else None


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` already holds checkpoints or a saved model."""
    return bool(checkpoint_paths(folder / "checkpoints")) or (folder / MODEL_FILE).exists()


def save_model_file(
    directory: str | Path, model: nn.Module, settings: RunSettings, file_format: str, **extra: Any
) -> Path:
    """Weights, settings and ``extra`` as one file, ``directory/model.pt``, never over a model
    of a run with other settings (:class:`RunMismatchError`)."""
    path = Path(directory) / MODEL_FILE
    check_saved_model(path, settings)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": file_format, "config": settings.to_dict(), **extra, "state_dict": state}
    return write_atomically(payload, path)


def check_saved_model(path: Path, settings: RunSettings) -> None:
    """Raise :class:`RunMismatchError` if ``path`` holds a model saved with other settings."""
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        check_same_run(settings, saved.get("config", {}), path)


def read_model_file(
    path: str | Path, file_format: str, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """What :func:`save_model_file` wrote in ``path`` (the file or its folder)."""
    path = Path(path) / MODEL_FILE if Path(path).is_dir() else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no saved model at {path}; train one with --out FOLDER.")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise ValueError(f"{path} is not a saved {file_format.partition('/')[0]} model.")
    return payload
