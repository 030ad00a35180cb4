"""Train a causal transformer on bytes (enwik8 or any text file) and sample from it.

    python -m former.generate                                   # enwik8, found or downloaded
    python -m former.generate --data ../shared/data/tinyshakespeare.txt -N 2000

Every ``--test-every`` batches it prints one metric line on stdout,
``step=400 train_loss=1.92 val_bpb=2.71 ...`` (bits per byte on held-out
windows), followed by a sample continued from a random validation prompt.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from former.attention import AttentionSpec, resolve_attention
from former.training import (
    LR_DECAYS,
    MODEL_FILE,
    Log,
    RunMismatchError,
    UsageError,
    add_runtime_arguments,
    autocast_for,
    check_heads_divide,
    check_positive,
    check_same_run,
    check_schedule,
    checkpoint_paths,
    config_from_dict,
    format_metrics,
    load_latest_checkpoint,
    make_optimizer,
    metric_logger,
    open_tensorboard,
    pick_device,
    report_usage_errors,
    save_checkpoint,
    set_threads,
    unwrap,
    write_atomically,
)
from former.transformers import GTransformer

PROG = "python -m former.generate"
GENERATOR_FORMAT = "former-generator/1"
NUM_BYTES = 256


@dataclass
class GeneratorConfig:
    """Everything that defines a generator training run (sizes small enough for a laptop CPU).

    lr_warmup counts training windows (as in the original former), not steps.
    """

    emb: int = 128
    heads: int = 4
    depth: int = 2
    context: int = 128
    batch_size: int = 32
    lr: float = 1e-3
    lr_warmup: int = 5_000
    lr_decay: str = "cosine"
    weight_decay: float = 0.01
    num_batches: int = 5_000
    gradient_clipping: float = 1.0
    dropout: float = 0.0
    wide: bool = False
    attention: str = "sdpa"
    seed: int = 1
    final: bool = False
    test_every: int = 500
    test_batches: int = 20
    sample_length: int = 200
    temperature: float = 0.5

    REPORTING_ONLY = ("test_every", "test_batches", "sample_length", "temperature")

    def __post_init__(self) -> None:
        check_positive(
            emb=self.emb,
            heads=self.heads,
            depth=self.depth,
            context=self.context,
            batch_size=self.batch_size,
            num_batches=self.num_batches,
            test_every=self.test_every,
            test_batches=self.test_batches,
        )
        check_heads_divide(self.emb, self.heads, self.wide)
        check_schedule(self.lr, self.lr_decay, self.lr_warmup)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive; got {self.temperature}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        return config_from_dict(cls, data, "generator")


def build_generator(config: GeneratorConfig, attention: AttentionSpec = None) -> GTransformer:
    """A byte-level :class:`GTransformer` shaped by ``config`` (attention None: config's)."""
    torch.manual_seed(config.seed)
    return GTransformer(
        emb=config.emb,
        heads=config.heads,
        depth=config.depth,
        seq_length=config.context,
        num_tokens=NUM_BYTES,
        wide=config.wide,
        attention=config.attention if attention is None else attention,
        dropout=config.dropout,
    )


def random_windows_from(
    data: torch.Tensor, batch_size: int, length: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs (b, t) and next-byte targets (b, t) from random places in 1-D ``data``."""
    from former.data import random_windows

    return random_windows(data, batch_size, length, generator=generator)


def bits_per_byte(
    model: nn.Module, data: torch.Tensor, config: GeneratorConfig, device: torch.device
) -> float:
    """Mean next-byte loss in bits over ``test_batches`` fixed random windows of ``data``."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(config.seed)
    total, count = 0.0, 0
    with torch.no_grad(), autocast_for(device):
        for _ in range(config.test_batches):
            inputs, targets = random_windows_from(
                data, config.batch_size, config.context, generator
            )
            output = model(inputs.to(device)).float()
            total += float(F.nll_loss(output.transpose(1, 2), targets.to(device), reduction="sum"))
            count += targets.numel()
    model.train(was_training)
    return total / count / math.log(2)


def sample(
    model: nn.Module,
    prompt: torch.Tensor,
    length: int,
    temperature: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue ``prompt`` (1-D byte ids) by ``length`` bytes; returns only the new ones (1-D)."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sequence = prompt.long().to(device)
    with torch.no_grad():
        for _ in range(length):
            window = sequence[-model.seq_length :][None, :]
            logits = model(window)[0, -1].float() / temperature
            probabilities = logits.softmax(dim=-1).cpu()
            next_byte = torch.multinomial(probabilities, 1, generator=generator).to(device)
            sequence = torch.cat([sequence, next_byte])
    model.train(was_training)
    return sequence[len(prompt) :].cpu()


def printable(data: torch.Tensor) -> str:
    """Bytes as one line of text: undecodable bytes replaced, newlines shown as ⏎."""
    text = bytes(data.to(torch.uint8).tolist()).decode("utf-8", errors="replace")
    return "".join("⏎" if c == "\n" else c if c.isprintable() else "�" for c in text)


def fit_generator(
    model: nn.Module,
    train: torch.Tensor,
    val: torch.Tensor,
    config: GeneratorConfig,
    *,
    device: torch.device,
    rank: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    log: Log = print,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
    tensorboard: Any | None = None,
) -> dict[str, Any]:
    """Train on random windows of ``train`` for ``num_batches`` steps; returns the last metrics.

    train, val: 1-D uint8 byte tensors. Every ``test_every`` steps (and at the
    end) rank 0 logs ``step=.. train_loss=.. val_bpb=..`` and a sample. With
    ``checkpoint_dir`` the run resumes from the newest checkpoint there; one is
    written every ``checkpoint_every`` steps (0: at evaluations only).
    """
    started = time.perf_counter()
    model.to(device)
    model.train()
    is_main = rank == 0
    warmup_steps = math.ceil(config.lr_warmup / config.batch_size)
    optimizer, schedule = make_optimizer(
        model, config.lr, config.weight_decay, warmup_steps, config.num_batches, config.lr_decay
    )
    step = 0
    checkpoint = load_latest_checkpoint(checkpoint_dir)
    if checkpoint is not None:
        check_same_run(checkpoint["config"], config, Path(checkpoint_dir))
        unwrap(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        step = checkpoint["step"]
        if is_main:
            log(f"resuming from step {step} in {checkpoint_dir}")

    def write_checkpoint() -> None:
        if checkpoint_dir is not None and is_main:
            state = {
                "config": config.to_dict(),
                "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "step": step,
                "epoch": 0,
            }
            save_checkpoint(checkpoint_dir, state)

    metrics: dict[str, Any] = {}
    tokens_seen, train_seconds = 0, 0.0
    running_loss, loss_count = 0.0, 0
    bar = tqdm(
        total=config.num_batches,
        initial=step,
        desc="training",
        unit="batch",
        disable=(not is_main)
        or (progress is False)
        or (progress is None and not sys.stderr.isatty()),
        dynamic_ncols=True,
        file=sys.stderr,
    )
    try:
        while step < config.num_batches:
            # windows depend on (seed, step, rank) only, so a resumed run sees the same data
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 101 + rank)
            step_started = time.perf_counter()
            inputs, targets = random_windows_from(
                train, config.batch_size, config.context, generator
            )
            inputs, targets = inputs.to(device), targets.to(device)
            with autocast_for(device):
                output = model(inputs)
                loss = F.nll_loss(output.float().transpose(1, 2), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.gradient_clipping > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clipping)
            optimizer.step()
            schedule.step()
            step += 1
            loss_value = loss.item()
            train_seconds += time.perf_counter() - step_started
            tokens_seen += inputs.numel()
            running_loss, loss_count = running_loss + loss_value, loss_count + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if checkpoint_every and step % checkpoint_every == 0:
                write_checkpoint()
            if step % config.test_every == 0 or step == config.num_batches:
                write_checkpoint()
                if not is_main:
                    continue
                metrics = {
                    "step": step,
                    "train_loss": running_loss / max(1, loss_count),
                    "val_bpb": bits_per_byte(model, val, config, device),
                    "tokens_per_s": tokens_seen / max(train_seconds, 1e-9),
                    "elapsed_s": time.perf_counter() - started,
                }
                running_loss, loss_count = 0.0, 0
                log(format_metrics(**metrics))
                log(f"sample: {sample_from(model, val, config, step)}")
                if tensorboard is not None:
                    for key in ("train_loss", "val_bpb", "tokens_per_s"):
                        tensorboard.add_scalar(key, metrics[key], step)
                if on_eval is not None:
                    on_eval(dict(metrics))
    finally:
        bar.close()
    if not metrics and is_main:
        metrics = {"step": step, "val_bpb": bits_per_byte(model, val, config, device)}
        log(format_metrics(**metrics))
    return metrics


def sample_from(model: nn.Module, data: torch.Tensor, config: GeneratorConfig, step: int) -> str:
    """A prompt from ``data`` in brackets, then ``sample_length`` generated bytes, as one line."""
    generator = torch.Generator().manual_seed(config.seed + step)
    prompt_length = min(config.context, len(data) - 1, 64)
    start = int(torch.randint(0, len(data) - prompt_length, (1,), generator=generator))
    prompt = data[start : start + prompt_length]
    generated = sample(model, prompt, config.sample_length, config.temperature, generator)
    return f"[{printable(prompt)}]{printable(generated)}"


def save_generator(directory: str | Path, model: nn.Module, config: GeneratorConfig) -> Path:
    """Weights and config as one file, ``directory/model.pt`` (never over another run's)."""
    path = Path(directory) / MODEL_FILE
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        check_same_run(saved.get("config", {}), config, path)
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    payload = {"format": GENERATOR_FORMAT, "config": config.to_dict(), "state_dict": state}
    return write_atomically(payload, path)


def load_generator(
    path: str | Path, attention: AttentionSpec = None, map_location: str = "cpu"
) -> tuple[GTransformer, GeneratorConfig]:
    """Load what :func:`save_generator` wrote (the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"{path} is not a former generator saved by save_generator.")
    config = GeneratorConfig.from_dict(payload["config"])
    model = build_generator(config, attention=attention)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), config


# ---------------------------------------------------------------- command line

DEFAULTS = GeneratorConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a byte-level transformer on enwik8 or any text file and sample from it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("-E", "--embedding", dest="emb", type=int, default=DEFAULTS.emb)
    model.add_argument("-H", "--heads", type=int, default=DEFAULTS.heads)
    model.add_argument("-d", "--depth", type=int, default=DEFAULTS.depth)
    model.add_argument(
        "-C",
        "--context",
        "--sequence-length",
        dest="context",
        type=int,
        default=DEFAULTS.context,
        help="length of the training windows (bytes)",
    )
    model.add_argument("--dropout", type=float, default=DEFAULTS.dropout)
    model.add_argument("--wide", action="store_true")
    model.add_argument(
        "--attention",
        default=DEFAULTS.attention,
        help="'sdpa' (PyTorch's fused kernel, the default) or 'module:function'",
    )
    training = parser.add_argument_group("training")
    training.add_argument(
        "-N", "--num-batches", type=int, default=DEFAULTS.num_batches, help="training steps"
    )
    training.add_argument("-b", "--batch-size", type=int, default=DEFAULTS.batch_size)
    training.add_argument("-l", "--learn-rate", dest="lr", type=float, default=DEFAULTS.lr)
    training.add_argument(
        "--lr-warmup", type=int, default=DEFAULTS.lr_warmup, help="warm-up in training windows"
    )
    training.add_argument("--lr-decay", choices=LR_DECAYS, default=DEFAULTS.lr_decay)
    training.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    training.add_argument(
        "--gradient-clipping", type=float, default=DEFAULTS.gradient_clipping, help="0: off"
    )
    training.add_argument("-r", "--random-seed", dest="seed", type=int, default=DEFAULTS.seed)
    training.add_argument(
        "-f", "--final", action="store_true", help="report bits per byte on the test split"
    )
    training.add_argument("--test-every", type=int, default=DEFAULTS.test_every)
    training.add_argument(
        "--test-batches", type=int, default=DEFAULTS.test_batches, help="windows per evaluation"
    )
    training.add_argument("--sample-length", type=int, default=DEFAULTS.sample_length)
    training.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    data = parser.add_argument_group("data and output")
    data.add_argument(
        "--data",
        default=None,
        help="enwik8 (raw, .gz or .zip) or any text file; default: $FORMER_DATA_DIR, the "
        "cache, then download",
    )
    data.add_argument("--out", type=Path, default=None, help="folder for checkpoints and model.pt")
    data.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    data.add_argument("--checkpoint-every", type=int, default=0)
    add_runtime_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    values = {
        f.name: getattr(args, f.name) for f in fields(GeneratorConfig) if hasattr(args, f.name)
    }
    try:
        return GeneratorConfig(**values)
    except ValueError as error:
        raise UsageError(str(error)) from None


@report_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    try:
        resolve_attention(config.attention)
        device = pick_device(args.device)
    except (ValueError, ImportError, TypeError) as error:
        raise UsageError(str(error)) from None
    if args.out is not None:
        holds_run = (
            bool(checkpoint_paths(args.out / "checkpoints")) or (args.out / MODEL_FILE).exists()
        )
        if holds_run and not args.resume:
            raise UsageError(
                f"{args.out} already holds a training run; pass --resume to continue it, or "
                "choose another --out."
            )
    elif args.resume:
        raise UsageError("--resume needs --out, the folder of the run to continue.")
    set_threads(args.threads)

    from former.data import load_enwik8, load_text

    try:
        if args.data is None or Path(args.data).is_dir():
            train, val, test = load_enwik8(args.data)
        else:
            train, val, test = load_text(args.data)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    if min(len(train), len(val)) <= config.context:
        raise UsageError(
            f"the data are too short for windows of {config.context} bytes "
            f"({len(train):,} train / {len(val):,} validation bytes); pass a larger file or a "
            "smaller --context."
        )
    log = metric_logger()
    log(f"data: {len(train):,} train / {len(val):,} validation / {len(test):,} test bytes")
    model = build_generator(config)
    log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, device={device}")
    tensorboard = open_tensorboard(args.tb_dir)
    try:
        fit_generator(
            model,
            train,
            test if config.final else val,
            config,
            device=device,
            checkpoint_dir=args.out / "checkpoints" if args.out is not None else None,
            checkpoint_every=args.checkpoint_every,
            log=log,
            progress=False if args.no_progress else None,
            tensorboard=tensorboard,
        )
        if args.out is not None:
            log(f"saved model to {save_generator(args.out, model, config)}")
    except RunMismatchError as error:
        raise UsageError(str(error)) from None
    finally:
        if tensorboard is not None:
            tensorboard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
