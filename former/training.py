"""Training former's classifier, and using it: config, fit, evaluate, save, load, predict;
for ``python -m former.classify``, ``model.py`` and the notebook."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from former.attention import AttentionSpec
from former.data import Batch, ClassificationData, TextSplit, Vocabulary, batches, frequent_bigrams
from former.loop import evaluating, evenly_spaced, train, unwrap
from former.loop import pick_device as pick_device  # part of this module's API
from former.runs import RunMismatchError as RunMismatchError  # part of this module's API
from former.runs import RunSettings, check_positive, read_model_file, save_model_file
from former.transformers import CTransformer

MODEL_FORMAT = "former-classifier/1"


@dataclass
class ClassifierConfig(RunSettings):
    """Everything that defines a classifier training run. The defaults aim at a good IMDB
    accuracy in one short epoch on a laptop CPU (``benchmarks/train.py`` measures it).
    lr_warmup counts training examples, not steps; eval_subset: validation examples per
    evaluation during training (0: all), the last evaluation always uses the whole split.
    bigrams: the K most frequent word pairs of the training split get embeddings of their own,
    added to their second word's (0: none)."""

    emb: int = 64
    heads: int = 4
    depth: int = 1
    max_length: int = 256
    vocab_size: int = 20_000
    bigrams: int = 100_000
    batch_size: int = 64
    lr: float = 3e-3
    lr_warmup: int = 2_500
    lr_decay: str = "cosine"
    weight_decay: float = 0.01
    epochs: int = 1
    gradient_clipping: float = 1.0
    max_pool: bool = False
    dropout: float = 0.1
    wide: bool = False
    attention: str = "sdpa"
    seed: int = 1
    final: bool = False
    evals_per_epoch: int = 4
    eval_subset: int = 2_000

    KIND = "classifier"
    REPORTING_ONLY = ("evals_per_epoch", "eval_subset")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "max_length", "epochs", "evals_per_epoch")
        if self.bigrams < 0:
            raise ValueError(f"bigrams must be 0 (none) or more; got {self.bigrams}.")
        if self.vocab_size < 3:
            raise ValueError(
                f"vocab_size must be at least 3 (<pad>, <unk>, one word); got {self.vocab_size}."
            )


def build_classifier(
    config: ClassifierConfig,
    num_tokens: int,
    num_classes: int,
    attention: AttentionSpec = None,
    bigram_keys: torch.Tensor | None = None,
) -> CTransformer:
    """A :class:`CTransformer` shaped by ``config``, its weights drawn from ``config.seed``;
    ``attention`` overrides ``config.attention``. ``bigram_keys``: the word pairs that get
    embeddings, which :func:`classifier_for` picks from the data (``config.bigrams`` of them);
    without them the model has no bigram embedding."""
    torch.manual_seed(config.seed)
    return CTransformer(
        emb=config.emb,
        heads=config.heads,
        depth=config.depth,
        seq_length=config.max_length,
        num_tokens=num_tokens,
        num_classes=num_classes,
        max_pool=config.max_pool,
        dropout=config.dropout,
        wide=config.wide,
        attention=config.attention if attention is None else attention,
        bigram_keys=bigram_keys,
    )


def classifier_for(
    config: ClassifierConfig, data: ClassificationData, attention: AttentionSpec = None
) -> CTransformer:
    """:func:`build_classifier` for ``data``: its vocabulary, classes and, with
    ``config.bigrams``, its training split's most frequent bigrams."""
    keys = frequent_bigrams(data.train, len(data.vocab), config.bigrams) if config.bigrams else None
    return build_classifier(config, len(data.vocab), data.num_classes, attention, keys)


@dataclass
class ClassificationTask:
    """Classification for :func:`former.loop.train`: NLL loss, accuracy on ``data.val``."""

    data: ClassificationData
    config: ClassifierConfig
    device: torch.device
    counts_epochs: ClassVar[bool] = True

    @property
    def epochs(self) -> int:
        return self.config.epochs

    def steps_per_epoch(self, world_size: int) -> int:
        return math.ceil(math.ceil(len(self.data.train) / self.config.batch_size) / world_size)

    def evaluation_steps(self, steps_per_epoch: int) -> set[int]:
        return evenly_spaced(steps_per_epoch, self.config.epochs, self.config.evals_per_epoch)

    def batches(self, epoch: int, start: int, rank: int, world_size: int) -> Iterator[Batch]:
        shard = shard_batches(self.data.train, self.config, epoch, rank, world_size)
        return itertools.islice(shard, start, None)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        batch = to_device(batch, self.device)
        output = model(batch.tokens, batch.padding_mask)
        return F.nll_loss(output.float(), batch.labels), int(batch.padding_mask.sum())

    @cached_property
    def quick_val(self) -> TextSplit:
        """``eval_subset`` validation examples chosen by the seed (all when 0 or too many)."""
        val, n = self.data.val, self.config.eval_subset
        if n <= 0 or n >= len(val):
            return val
        chosen = torch.randperm(len(val), generator=torch.Generator().manual_seed(self.config.seed))
        return val.select(chosen[:n].sort().values)

    def evaluate(self, model: nn.Module, last: bool) -> dict[str, Any]:
        split = self.data.val if last else self.quick_val
        batch_size = max(self.config.batch_size, 256)
        accuracy = evaluate(model, split, batch_size, self.config.max_length, self.device)
        return {"val_acc": accuracy, "val_examples": len(split)}

    def report(self, model: nn.Module, step: int) -> list[str]:
        return []


def shard_batches(
    split: TextSplit, config: ClassifierConfig, epoch: int, rank: int, world_size: int
) -> Iterator[Batch]:
    """This process's batches for ``epoch``: a new order per epoch, fixed by the seed."""
    seed, size, length = config.seed * 1_000 + epoch, config.batch_size, config.max_length
    return batches(split, size, length, seed=seed, num_shards=world_size, shard_index=rank)


def fit_classifier(
    model: nn.Module,
    data: ClassificationData,
    config: ClassifierConfig,
    *,
    device: torch.device,
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` on ``data.train``, evaluating on ``data.val`` ``evals_per_epoch`` times
    per epoch; returns the last metrics. options (``on_eval``, ...): as :func:`train`."""
    return train(model, ClassificationTask(data, config, device), **options)


def evaluate(
    model: nn.Module, split: TextSplit, batch_size: int, max_length: int, device: torch.device
) -> float:
    """Classification accuracy of ``model`` on ``split`` (texts truncated to ``max_length``)."""
    return accuracy(class_probabilities(model, split, batch_size, max_length, device), split)


def accuracy(probabilities: torch.Tensor, split: TextSplit) -> float:
    """The share of ``split`` whose most probable class, in (n, classes) ``probabilities``, is
    its label."""
    return float((probabilities.argmax(dim=-1) == split.labels).float().mean())


def class_probabilities(
    model: nn.Module, split: TextSplit, batch_size: int, max_length: int, device: torch.device
) -> torch.Tensor:
    """(n, classes) float32 probabilities of ``model`` for each text of ``split``, in its
    order (texts truncated to ``max_length``)."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split.")
    # Shortest first: batches carry little padding, so less work.
    order = torch.argsort(split.lengths(), stable=True)
    parts = []
    with evaluating(model) as model:
        for batch in batches(split.select(order), batch_size, max_length, shuffle=False):
            batch = to_device(batch, device)
            parts.append(model(batch.tokens, batch.padding_mask).float().exp().cpu())
    probabilities = torch.empty(len(split), parts[0].size(1))
    probabilities[order] = torch.cat(parts)
    return probabilities


def ensemble_probabilities(
    models: list[nn.Module],
    split: TextSplit,
    batch_size: int,
    max_length: int,
    device: torch.device,
) -> torch.Tensor:
    """(n, classes): the average of the ``models``' probabilities for each text of ``split``."""
    if not models:
        raise ValueError("an ensemble needs at least one model.")
    total = sum(class_probabilities(m, split, batch_size, max_length, device) for m in models)
    return total / len(models)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(tensor.to(device, non_blocking=True) for tensor in batch))


def predict(
    model: nn.Module | list[nn.Module], vocab: Vocabulary, texts: list[str], max_length: int
) -> list[tuple[int, float]]:
    """(label, probability of that label) for each text, truncated to ``max_length`` tokens;
    for a list of models (one vocabulary), their probabilities averaged."""
    if not texts:
        return []
    models = model if isinstance(model, list) else [model]
    ids = [vocab.encode_text(text)[:max_length] or [vocab.unk_index] for text in texts]
    sequences = [torch.tensor(row, dtype=torch.long) for row in ids]
    split = TextSplit(sequences, torch.zeros(len(ids), dtype=torch.long))
    device = next(models[0].parameters()).device
    probabilities = ensemble_probabilities(models, split, 64, max_length, device)
    labels = probabilities.argmax(dim=-1)
    return [
        (int(label), float(row[label])) for label, row in zip(labels, probabilities, strict=True)
    ]


def save_model(
    directory: str | Path,
    model: nn.Module,
    config: ClassifierConfig,
    vocab: Vocabulary,
    class_names: tuple[str, ...] | None = None,
) -> Path:
    """Save weights, config and vocabulary as ``directory/model.pt`` (never over another
    run's: :class:`RunMismatchError`)."""
    model = unwrap(model)
    return save_model_file(
        directory,
        model,
        config,
        MODEL_FORMAT,
        vocab=vocab.to_dict(),
        num_tokens=model.num_tokens,
        num_classes=model.toprobs.out_features,
        num_bigrams=model.num_bigrams,
        class_names=list(class_names) if class_names else None,
    )


def load_model(
    path: str | Path,
    attention: AttentionSpec = None,
    map_location: str | torch.device = "cpu",
) -> tuple[CTransformer, ClassifierConfig, Vocabulary]:
    """Load what :func:`save_model` wrote (the file or its folder); ``attention`` overrides
    the saved one (for a function that cannot be imported here)."""
    payload = read_model_file(path, MODEL_FORMAT, map_location)
    # Models saved before bigrams existed have none.
    config = ClassifierConfig.from_dict({"bigrams": 0, **payload["config"]})
    # The keys are a buffer of the state dict: placeholders of the right size until loaded.
    num_bigrams = payload.get("num_bigrams", 0)
    keys = torch.zeros(num_bigrams, dtype=torch.long) if num_bigrams else None
    model = build_classifier(config, payload["num_tokens"], payload["num_classes"], attention, keys)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    model.class_names = tuple(payload.get("class_names") or ())
    return model, config, Vocabulary.from_dict(payload["vocab"])
