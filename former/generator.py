"""former's generator: a causal transformer on bytes (enwik8, tiny Shakespeare, any text):
:func:`fit_generator` trains it, :func:`sample_text` continues a prompt."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from former import loop
from former.attention import AttentionFn, AttentionSpec, resolve_attention
from former.data import random_windows
from former.loop import evaluating
from former.settings import RunSettings, check_positive, setting
from former.transformers import GTransformer

GENERATOR_FORMAT = "former-generator/1"
NUM_BYTES = 256


@dataclass
class GeneratorConfig(RunSettings):
    """Everything that defines a generator training run (sizes small enough for a laptop CPU).
    lr_warmup counts training windows, not steps; mask=False calls the attention unmasked."""

    emb: int = RunSettings.default("emb", 128)
    depth: int = RunSettings.default("depth", 2)
    dropout: float = RunSettings.default("dropout", 0.0)
    batch_size: int = RunSettings.default("batch_size", 32)
    lr: float = RunSettings.default("lr", 1e-3)
    lr_warmup: int = RunSettings.default("lr_warmup", 5_000)
    context: int = setting(128, "length of the training windows (bytes)", short="-C", group="model")
    mask: bool = setting(
        True,
        "call the attention with mask=False, training and sampling: every position sees the "
        "future, so the loss collapses and the samples show the leak",
        group="model",
    )
    num_batches: int = setting(5_000, "training steps", short="-N")
    test_every: int = setting(500, "steps between evaluations")
    test_batches: int = setting(20, "batches of windows per evaluation")
    sample_length: int = setting(200, "bytes per sample", group="sampling")
    temperature: float = setting(
        0.5, "below 1: likelier bytes; above 1: more varied", group="sampling"
    )

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
        seq_length=config.context,
        num_tokens=NUM_BYTES,
        attention=attention if config.mask else unmasked(attention),
        **config.model_shape(),
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

    def batches(self, epoch: int, start: int, rank: int, world_size: int) -> Iterator[Any]:
        size = (self.config.batch_size, self.config.context)
        for step in range(start, self.config.num_batches):
            # windows depend on (seed, step, rank) only, so a resumed run sees the same data
            seed = self.config.seed * 1_000_003 + step * 101 + rank
            yield random_windows(self.train, *size, generator=torch.Generator().manual_seed(seed))

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
    return loop.train(model, GenerationTask(train, val, config, device, prompt), **options)


def bits_per_byte(
    model: nn.Module, data: torch.Tensor, config: GeneratorConfig, device: torch.device
) -> float:
    """Mean next-byte loss in bits over ``test_batches`` fixed random windows of ``data``."""
    generator = torch.Generator().manual_seed(config.seed)
    size = (config.batch_size, config.context)
    with evaluating(model) as model:
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
