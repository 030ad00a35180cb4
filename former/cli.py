"""What the training command lines share: flags, one-line usage errors, the start of a run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from former.attention import resolve_attention
from former.loop import pick_device
from former.runs import LR_DECAYS, MODEL_FILE, RunMismatchError, check_saved_model, holds_run

# A table of flags: (names, help, add_argument's keyword arguments) for each.
Flags = tuple[tuple[tuple[str, ...], str, dict[str, Any]], ...]


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


def report_usage_errors(prog: str, run: Callable[[], int]) -> int:
    """``run()``'s exit status; a :class:`UsageError` prints one line and gives 2."""
    try:
        return run()
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130


@contextmanager
def as_usage_error(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn the listed exceptions, raised by the block, into :class:`UsageError` (same message)."""
    try:
        yield
    except kinds as error:
        raise UsageError(str(error)) from None


MODEL_FLAGS: Flags = (
    (("-E", "--embedding"), "embedding size", {"dest": "emb", "type": int}),
    (("-H", "--heads"), "attention heads", {"type": int}),
    (("-d", "--depth"), "transformer blocks", {"type": int}),
    (("--dropout",), "dropout rate", {"type": float}),
    (("--wide",), "wide attention: every head sees all of emb", {"action": "store_true"}),
    (
        ("--attention",),
        "the attention function: 'sdpa' (PyTorch's fused kernel) or your own as "
        "'module:function', e.g. my_transformer_model:multihead_attention",
        {},
    ),
)
TRAINING_FLAGS: Flags = (
    (("-b", "--batch-size"), "examples per batch", {"type": int}),
    (("-l", "--learn-rate"), "peak learning rate (AdamW)", {"dest": "lr", "type": float}),
    (("--lr-warmup",), "linear warm-up length, in training examples", {"type": int}),
    (("--lr-decay",), "decay after the warm-up, to zero at the end", {"choices": LR_DECAYS}),
    (("--weight-decay",), "AdamW weight decay (weight matrices only)", {"type": float}),
    (("--gradient-clipping",), "clip the gradient norm to this (0: off)", {"type": float}),
    (("-r", "--random-seed"), "seed for weights and data order", {"dest": "seed", "type": int}),
    (("-f", "--final"), "evaluate on the test split", {"action": "store_true"}),
)
RUN_FLAGS: Flags = (
    (("--out",), "folder for checkpoints and model.pt (default: not saved)", {"type": Path}),
    (("--resume",), "continue the run saved in --out", {"action": "store_true"}),
    (("--device",), "auto (cuda, mps, then cpu), cpu, cuda, cuda:N or mps", {"default": "auto"}),
    (("--threads",), "CPU threads for torch (default: torch's choice)", {"type": int}),
    (("--no-progress",), "no progress bar (none without a terminal)", {"action": "store_true"}),
)


def add_flags(group: Any, flags: Flags, defaults: Any = None) -> None:
    """Add each flag of a table; with ``defaults``, its default is the settings field named
    like its last flag (or ``dest``), shown in the help."""
    for names, text, kwargs in flags:
        if defaults is not None:
            dest = kwargs.get("dest") or names[-1].lstrip("-").replace("-", "_")
            kwargs = {"default": getattr(defaults, dest), **kwargs}
            text = f"{text} (default: {kwargs['default']})"
        group.add_argument(*names, help=text, **kwargs)


def add_settings(parser: argparse.ArgumentParser, defaults: Any, **own: Flags) -> dict[str, Any]:
    """The shared model and training flags and a CLI's ``own`` tables, by group name, each
    defaulting to its field of ``defaults``; returns the groups by name."""
    shared = {"model": MODEL_FLAGS, "training": TRAINING_FLAGS}
    groups = {name: parser.add_argument_group(name) for name in {**shared, **own}}
    for name, group in groups.items():
        add_flags(group, shared.get(name, ()) + own.get(name, ()), defaults)
    return groups


def add_run_flags(parser: argparse.ArgumentParser, data_help: str) -> None:
    """--data, then where the run saves and how it executes."""
    group = parser.add_argument_group("data and run")
    group.add_argument("--data", help=data_help)
    add_flags(group, RUN_FLAGS)


def start_run(cls: type, args: argparse.Namespace) -> tuple[Any, torch.device, dict[str, Any]]:
    """The run's settings, device and :func:`former.loop.train` options, checked before any
    data load: the attention imports, --out holds no other run. Sets torch's threads."""
    names = [name for name in cls.__dataclass_fields__ if hasattr(args, name)]
    with as_usage_error(ValueError):
        settings = cls(**{name: getattr(args, name) for name in names})
    with as_usage_error(ValueError, ImportError, TypeError):
        resolve_attention(settings.attention)
    if args.out is None and args.resume:
        raise UsageError("--resume needs --out, the folder of the run to continue.")
    if args.out is not None and holds_run(args.out) and not args.resume:
        raise UsageError(
            f"{args.out} already holds a training run; pass --resume to continue it, or choose "
            "another --out."
        )
    if args.out is not None:
        with as_usage_error(RunMismatchError):
            check_saved_model(args.out / MODEL_FILE, settings)
    with as_usage_error(ValueError):
        device = pick_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1; got {args.threads}.")
        torch.set_num_threads(args.threads)
    options = {
        "checkpoint_dir": args.out / "checkpoints" if args.out is not None else None,
        "log": log_line,
        "progress": False if args.no_progress else None,
    }
    return settings, device, options


def log_line(line: str) -> None:
    """A metric line on stdout, flushed, without tearing a progress bar."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
