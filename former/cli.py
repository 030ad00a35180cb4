"""What the training command lines share: flags, one-line usage errors, the start of a run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm.auto import tqdm

from former.attention import resolve_attention
from former.devices import pick_device
from former.runs import MODEL_FILE, RunMismatchError, check_saved_model, holds_run
from former.settings import CLI, RunOptions, add_flags, read_flags


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


def add_run_flags(parser: argparse.ArgumentParser, config: type, data_help: str) -> dict[str, Any]:
    """A flag for every setting of ``config`` and :class:`RunOptions`, and --data; returns the
    argument groups by name."""
    groups = add_flags(parser, config, CLI)
    groups |= add_flags(parser, RunOptions, CLI)
    groups["data and run"].add_argument("--data", help=data_help)
    return groups


def start_run(cls: type, args: argparse.Namespace) -> tuple[Any, torch.device, dict[str, Any]]:
    """The run's settings, device and :func:`former.loop.train` options, checked before any
    data load: the attention imports, --out holds no other run. Sets torch's threads."""
    with as_usage_error(ValueError):
        settings = read_flags(cls, args)
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
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1; got {args.threads}.")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options = {
        "checkpoint_dir": args.out / "checkpoints" if args.out is not None else None,
        "log": log_line,
        "progress": None if args.progress else False,
    }
    return settings, device, options


def log_line(line: str) -> None:
    """A metric line on stdout, flushed, without tearing a progress bar."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
