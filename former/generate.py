"""Train a causal transformer on bytes (enwik8, tiny Shakespeare, any text) and sample from it.

    python -m former.generate --data shakespeare --prompt "ROMEO:" --temperature 0.8

From Python, :func:`fit_generator` trains (the one loop, :func:`former.loop.train`, on a
:class:`GenerationTask`) and :func:`sample_text` continues a prompt.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from former import loop
from former.attention import AttentionFn, AttentionSpec, resolve_attention
from former.cli import (
    Flags,
    UsageError,
    add_run_flags,
    add_settings,
    as_usage_error,
    report_usage_errors,
    start_run,
)
from former.data import load_enwik8, load_shakespeare, load_text, random_windows
from former.data.text import SHAKESPEARE
from former.loop import evaluating
from former.runs import (
    RunMismatchError,
    RunSettings,
    check_positive,
    read_model_file,
    save_model_file,
)
from former.transformers import GTransformer

PROG = "python -m former.generate"
GENERATOR_FORMAT = "former-generator/1"
NUM_BYTES = 256


@dataclass
class GeneratorConfig(RunSettings):
    """Everything that defines a generator training run (sizes small enough for a laptop CPU).
    lr_warmup counts training windows, not steps; mask=False calls the attention unmasked."""

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
    mask: bool = True
    seed: int = 1
    final: bool = False
    test_every: int = 500
    test_batches: int = 20
    sample_length: int = 200
    temperature: float = 0.5

    KIND = "generator"
    REPORTING_ONLY = ("test_every", "test_batches", "sample_length", "temperature")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "context", "num_batches", "test_every", "test_batches")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive; got {self.temperature}.")


def build_generator(config: GeneratorConfig, attention: AttentionSpec = None) -> GTransformer:
    """A byte-level :class:`GTransformer` shaped by ``config`` (attention None: config's)."""
    attention = config.attention if attention is None else attention
    torch.manual_seed(config.seed)
    return GTransformer(
        emb=config.emb,
        heads=config.heads,
        depth=config.depth,
        seq_length=config.context,
        num_tokens=NUM_BYTES,
        wide=config.wide,
        attention=attention if config.mask else unmasked(attention),
        dropout=config.dropout,
    )


def unmasked(attention: AttentionSpec) -> AttentionFn:
    """``attention`` called with mask=False whatever the model asks for."""
    fn = resolve_attention(attention)

    def attention_without_mask(queries, keys, values, heads, mask=False):
        return fn(queries, keys, values, heads, False)

    return attention_without_mask


@dataclass
class GenerationTask:
    """Next-byte prediction for :func:`former.loop.train`: random windows of ``train``,
    bits per byte on fixed windows of ``val``, a sample after every evaluation."""

    train: torch.Tensor
    val: torch.Tensor
    config: GeneratorConfig
    device: torch.device
    prompt: str | None = None
    epochs: ClassVar[int] = 1
    counts_epochs: ClassVar[bool] = False

    def steps_per_epoch(self, world_size: int) -> int:
        return self.config.num_batches

    def evaluation_steps(self, steps_per_epoch: int) -> set[int]:
        every = self.config.test_every
        return {*range(every, steps_per_epoch, every), steps_per_epoch}

    def batches(
        self, epoch: int, start: int, rank: int, world_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        config = self.config
        for step in range(start, config.num_batches):
            # windows depend on (seed, step, rank) only, so a resumed run sees the same data
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 101 + rank)
            yield random_windows(self.train, config.batch_size, config.context, generator=generator)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        return next_byte_loss(model, batch, self.device), batch[0].numel()

    def evaluate(self, model: nn.Module, last: bool) -> dict[str, Any]:
        return {"val_bpb": bits_per_byte(model, self.val, self.config, self.device)}

    def report(self, model: nn.Module, step: int) -> list[str]:
        return [f"sample: {sample_line(model, self.val, self.config, step, self.prompt)}"]


def fit_generator(
    model: nn.Module,
    train: torch.Tensor,
    val: torch.Tensor,
    config: GeneratorConfig,
    *,
    device: torch.device,
    prompt: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train on random windows of ``train`` (1-D bytes); returns the last metrics. Every
    ``test_every`` steps: a metric line with ``val_bpb``, ``on_eval(metrics)``, and a sample
    continuing ``prompt`` (None: a random window of ``val``). options: as :func:`loop.train`."""
    task = GenerationTask(train, val, config, device, prompt)
    return loop.train(model, task, **options)


def bits_per_byte(
    model: nn.Module, data: torch.Tensor, config: GeneratorConfig, device: torch.device
) -> float:
    """Mean next-byte loss in bits over ``test_batches`` fixed random windows of ``data``."""
    generator = torch.Generator().manual_seed(config.seed)
    with evaluating(model) as model:
        size = (config.batch_size, config.context)
        windows = (random_windows(data, *size, generator) for _ in range(config.test_batches))
        losses = [float(next_byte_loss(model, batch, device)) for batch in windows]
    return sum(losses) / len(losses) / math.log(2)


def next_byte_loss(model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
    """The mean loss of ``model`` predicting ``batch``'s targets from its inputs, (b, t) each."""
    inputs, targets = (tensor.to(device) for tensor in batch)
    return F.nll_loss(model(inputs).float().transpose(1, 2), targets)


def sample(
    model: nn.Module,
    prompt: torch.Tensor,
    length: int,
    temperature: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue ``prompt`` (1-D byte ids) by ``length`` bytes; returns only the new ones (1-D)."""
    with evaluating(model) as model:
        device = next(model.parameters()).device
        sequence = prompt.long().to(device)
        for _ in range(length):
            window = sequence[-model.seq_length :][None, :]
            logits = model(window)[0, -1].float() / temperature
            probabilities = logits.softmax(dim=-1).cpu()
            next_byte = torch.multinomial(probabilities, 1, generator=generator).to(device)
            sequence = torch.cat([sequence, next_byte])
    return sequence[len(prompt) :].cpu()


def sample_text(
    model: nn.Module,
    prompt: str,
    length: int = 200,
    temperature: float = 0.5,
    seed: int | None = None,
) -> str:
    """``length`` bytes continuing ``prompt``, decoded as UTF-8 (undecodable bytes replaced);
    temperature below 1 picks likely bytes more often, above 1 less often."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}.")
    if not prompt:
        raise ValueError("the prompt must hold at least one character.")
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return as_text(sample(model, as_bytes(prompt), length, temperature, generator))


def as_bytes(text: str) -> torch.Tensor:
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def as_text(data: torch.Tensor) -> str:
    """Bytes decoded as UTF-8, undecodable ones replaced."""
    return bytes(data.to(torch.uint8).tolist()).decode("utf-8", errors="replace")


def printable(data: torch.Tensor) -> str:
    """Bytes as one line of text: newlines shown as ⏎, other unprintable characters as �."""
    return "".join("⏎" if c == "\n" else c if c.isprintable() else "�" for c in as_text(data))


def sample_line(
    model: nn.Module, data: torch.Tensor, config: GeneratorConfig, step: int, prompt: str | None
) -> str:
    """The prompt in brackets, then ``sample_length`` generated bytes, as one line
    (prompt None: up to 64 bytes of ``data`` from a place chosen by the seed and ``step``)."""
    generator = torch.Generator().manual_seed(config.seed + step)
    if prompt is None:
        length = min(config.context, len(data) - 1, 64)
        start = int(torch.randint(0, len(data) - length, (1,), generator=generator))
        encoded = data[start : start + length]
    else:
        encoded = as_bytes(prompt)
    generated = sample(model, encoded, config.sample_length, config.temperature, generator)
    return f"[{printable(encoded)}]{printable(generated)}"


def load_generator(
    path: str | Path, attention: AttentionSpec = None, map_location: str = "cpu"
) -> tuple[GTransformer, GeneratorConfig]:
    """Load the model a run saved with ``--out`` (the file or its folder)."""
    payload = read_model_file(path, GENERATOR_FORMAT, map_location)
    config = GeneratorConfig.from_dict(payload["config"])
    model = build_generator(config, attention=attention)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), config


# ---------------------------------------------------------------- command line

DEFAULTS = GeneratorConfig()
MODEL_FLAGS: Flags = (
    (("-C", "--context"), "length of the training windows (bytes)", {"type": int}),
)
TRAINING_FLAGS: Flags = (
    (("-N", "--num-batches"), "training steps", {"type": int}),
    (("--test-every",), "steps between evaluations", {"type": int}),
    (("--test-batches",), "batches of windows per evaluation", {"type": int}),
)
SAMPLING_FLAGS: Flags = (
    (("--sample-length",), "bytes per sample", {"type": int}),
    (("--temperature",), "below 1: likelier bytes; above 1: more varied", {"type": float}),
)
DATA_HELP = (
    f"enwik8 (raw, .gz or .zip), any text file, or {SHAKESPEARE!r} for tiny Shakespeare "
    "(enwik8 and tiny Shakespeare: $FORMER_DATA_DIR, the per-user cache, then download)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a byte-level transformer on enwik8, tiny Shakespeare or any text; sample.",
    )
    own = {"model": MODEL_FLAGS, "training": TRAINING_FLAGS, "sampling": SAMPLING_FLAGS}
    groups = add_settings(parser, DEFAULTS, **own)
    groups["model"].add_argument(
        "--no-mask",
        dest="mask",
        action="store_false",
        help="call the attention with mask=False, training and sampling: every position sees "
        "the future, so the loss collapses and the samples show the leak",
    )
    groups["sampling"].add_argument(
        "--prompt", help="the text every sample continues (default: a random validation window)"
    )
    add_run_flags(parser, DATA_HELP)
    return parser


def run_training(args: argparse.Namespace) -> int:
    if args.prompt == "":
        raise UsageError("--prompt must hold at least one character.")
    config, device, options = start_run(GeneratorConfig, args)
    with as_usage_error(FileNotFoundError, ValueError):
        if args.data == SHAKESPEARE:
            train, val, test = load_shakespeare()
        elif args.data is None or Path(args.data).is_dir():
            train, val, test = load_enwik8(args.data)
        else:
            train, val, test = load_text(args.data)
    if min(len(train), len(val)) <= config.context:
        raise UsageError(
            f"the data are too short for windows of {config.context} bytes "
            f"({len(train):,} train / {len(val):,} validation bytes); pass a larger file or a "
            "smaller --context."
        )
    log = options["log"]
    log(f"data: {len(train):,} train / {len(val):,} validation / {len(test):,} test bytes")
    model = build_generator(config)
    log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, device={device}")
    with as_usage_error(RunMismatchError):
        held_out = test if config.final else val
        fit_generator(model, train, held_out, config, device=device, prompt=args.prompt, **options)
        if args.out is not None:
            log(f"saved model to {save_model_file(args.out, model, config, GENERATOR_FORMAT)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return report_usage_errors(PROG, lambda: run_training(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
