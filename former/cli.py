"""What the training command lines share: their flags, one-line usage errors, the metric log."""

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
from former.loop import LR_DECAYS, Log, pick_device
from former.runs import MODEL_FILE, RunMismatchError, RunSettings, check_saved_model, holds_run

# A table of flags: (names, help, add_argument's keyword arguments) for each.
Flags = tuple[tuple[tuple[str, ...], str, dict[str, Any]], ...]


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


def report_usage_errors(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a CLI ``main`` so a :class:`UsageError` prints one line and returns 2."""

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        def wrapped(*args: Any, **kwargs: Any) -> int:
            try:
                return main(*args, **kwargs)
            except UsageError as error:
                print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
                return 2
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr, flush=True)
                return 130

        wrapped.__doc__, wrapped.__name__ = main.__doc__, main.__name__
        return wrapped

    return decorate


@contextmanager
def as_usage_error(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn the listed exceptions, raised by the block, into :class:`UsageError` (same message)."""
    try:
        yield
    except kinds as error:
        raise UsageError(str(error)) from None


SHARED_MODEL_FLAGS: Flags = (
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
SHARED_TRAINING_FLAGS: Flags = (
    (("-b", "--batch-size"), "examples per batch", {"type": int}),
    (("-l", "--learn-rate"), "peak learning rate (AdamW)", {"dest": "lr", "type": float}),
    (("--lr-warmup",), "linear warm-up length, in training examples", {"type": int}),
    (("--lr-decay",), "decay after the warm-up, to zero at the end", {"choices": LR_DECAYS}),
    (("--weight-decay",), "AdamW weight decay (weight matrices only)", {"type": float}),
    (("--gradient-clipping",), "clip the gradient norm to this (0: off)", {"type": float}),
    (("-r", "--random-seed"), "seed for weights and data order", {"dest": "seed", "type": int}),
)
OUTPUT_FLAGS: Flags = (
    (("--out",), "folder for checkpoints and model.pt (default: not saved)", {"type": Path}),
    (("--resume",), "continue the run saved in --out", {"action": "store_true"}),
)
RUNTIME_FLAGS: Flags = (
    (("--device",), "auto (cuda, mps, then cpu), cpu, cuda, cuda:N or mps", {"default": "auto"}),
    (("--threads",), "CPU threads for torch (default: torch's choice)", {"type": int}),
    (("--no-progress",), "no progress bar (none without a terminal)", {"action": "store_true"}),
    (("-T", "--tb-dir"), "write TensorBoard logs here (needs tensorboard)", {}),
)


def add_flags(group: Any, flags: Flags, defaults: Any = None) -> None:
    """Add each flag of a table; with ``defaults``, its default is the settings field named
    like its last flag (or ``dest``), shown in the help."""
    for names, text, kwargs in flags:
        if defaults is not None:
            add_setting(group, defaults, *names, help=text, **kwargs)
        else:
            group.add_argument(*names, help=text, **kwargs)


def add_setting(group: Any, defaults: Any, *flags: str, help: str, **kwargs: Any) -> None:
    """A flag for the settings field named like its last flag (or ``dest``), default shown."""
    dest = kwargs.get("dest") or flags[-1].lstrip("-").replace("-", "_")
    kwargs.setdefault("default", getattr(defaults, dest))
    group.add_argument(*flags, help=f"{help} (default: {kwargs['default']})", **kwargs)


def add_shared_settings(parser: argparse.ArgumentParser, defaults: Any) -> tuple[Any, Any]:
    """The model and training flags both training CLIs have; returns those two groups."""
    groups = parser.add_argument_group("model"), parser.add_argument_group("training")
    add_flags(groups[0], SHARED_MODEL_FLAGS, defaults)
    add_flags(groups[1], SHARED_TRAINING_FLAGS, defaults)
    return groups


def add_data_and_output_arguments(
    parser: argparse.ArgumentParser, data_help: str, checkpoint_every: int
) -> None:
    group = parser.add_argument_group("data and output")
    group.add_argument("--data", help=data_help)
    add_flags(group, OUTPUT_FLAGS)
    group.add_argument(
        "--checkpoint-every",
        type=int,
        default=checkpoint_every,
        help="optimizer steps between checkpoints, 0: evaluations and epoch ends only "
        f"(default: {checkpoint_every})",
    )


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that say where and how a run executes."""
    add_flags(parser.add_argument_group("runtime"), RUNTIME_FLAGS)


def start_run(cls: type, args: argparse.Namespace) -> tuple[Any, torch.device]:
    """The run's settings and device, checked before any data load: the attention imports,
    --out holds no other run. Sets torch's threads for the whole run (``--threads``)."""
    names = [name for name in cls.__dataclass_fields__ if hasattr(args, name)]
    with as_usage_error(ValueError):
        settings = cls(**{name: getattr(args, name) for name in names})
    with as_usage_error(ValueError, ImportError, TypeError):
        resolve_attention(settings.attention)
    check_output_folder(args.out, args.resume, settings)
    with as_usage_error(ValueError):
        device = pick_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1; got {args.threads}.")
        torch.set_num_threads(args.threads)
    return settings, device


def loop_options(args: argparse.Namespace, log: Log, tensorboard: Any) -> dict[str, Any]:
    """What :func:`former.loop.train` takes from the command line."""
    return {
        "checkpoint_dir": args.out / "checkpoints" if args.out is not None else None,
        "checkpoint_every": args.checkpoint_every,
        "log": log,
        "progress": False if args.no_progress else None,
        "tensorboard": tensorboard,
    }


def check_output_folder(out: Path | None, resume: bool, settings: RunSettings) -> None:
    """Refuse to mix runs: an --out holding another run is an error, never overwritten."""
    if out is None:
        if resume:
            raise UsageError("--resume needs --out, the folder of the run to continue.")
        return
    if holds_run(out) and not resume:
        raise UsageError(
            f"{out} already holds a training run; pass --resume to continue it, or choose "
            "another --out."
        )
    with as_usage_error(RunMismatchError):
        check_saved_model(out / MODEL_FILE, settings)


def metric_logger() -> Log:
    """A log function for the CLIs: lines on stdout, flushed, without tearing a progress bar."""

    def log(line: str) -> None:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()

    return log


@contextmanager
def tensorboard_writer(directory: str | None) -> Iterator[Any | None]:
    """A TensorBoard SummaryWriter for ``directory``, closed afterwards; None when not asked
    for or not installed."""
    if directory is None:
        yield None
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(
            f"notice: TensorBoard is not installed, so nothing is written to {directory} "
            "(pip install tensorboard to get it).",
            file=sys.stderr,
            flush=True,
        )
        yield None
        return
    writer = SummaryWriter(directory)
    try:
        yield writer
    finally:
        writer.close()
