"""former's classifier: config, build, fit (one model or several seeds), evaluate, save, load,
predict."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from former.attention import AttentionSpec
from former.data import Batch, ClassificationData, TextSplit, Vocabulary, batches, frequent_bigrams
from former.devices import pick_device as pick_device  # part of this module's API
from former.loop import evaluating, evenly_spaced, train, unwrap
from former.runs import RunMismatchError as RunMismatchError  # part of this module's API
from former.runs import read_model_file, save_model_file
from former.settings import RunSettings, check_positive, setting
from former.transformers import CTransformer

MODEL_FORMAT = "former-classifier/1"


@dataclass
class ClassifierConfig(RunSettings):
    """A classifier training run. The defaults aim at a good IMDB accuracy in one short epoch on
    a laptop CPU (``benchmarks/train.py`` measures it)."""

    max_length: int = setting(
        512, "reviews are cut to this many tokens", flag="--max", short="-M", group="model"
    )
    vocab_size: int = setting(
        20_000, "vocabulary size, <pad> and <unk> included", short="-V", group="model"
    )
    bigrams: int = setting(
        100_000,
        "embed the K most frequent word pairs of the training reviews, added to their second "
        "word's embedding (0: none)",
        metavar="K",
        group="model",
    )
    max_pool: bool = setting(
        False, "max-pool positions", off="--mean-pool", off_help="mean-pool", group="model"
    )
    epochs: int = setting(1, "epochs", flag="--num-epochs", short="-e")
    evals_per_epoch: int = setting(4, "evaluations per epoch")
    eval_subset: int = setting(2_000, "validation examples per evaluation (0, and the last: all)")

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
    ``attention`` overrides ``config.attention``. ``bigram_keys``: (k,) the word pairs that get
    embeddings (None: no bigram embedding)."""
    torch.manual_seed(config.seed)
    return CTransformer(
        seq_length=config.max_length,
        num_tokens=num_tokens,
        num_classes=num_classes,
        max_pool=config.max_pool,
        attention=config.attention if attention is None else attention,
        bigram_keys=bigram_keys,
        **config.model_shape(),
    )


def classifier_for(
    config: ClassifierConfig, data: ClassificationData, attention: AttentionSpec = None
) -> CTransformer:
    """:func:`build_classifier` for ``data``: its vocabulary, classes and bigram keys."""
    keys = bigram_keys(config, data)
    return build_classifier(config, len(data.vocab), data.num_classes, attention, keys)


def bigram_keys(config: ClassifierConfig, data: ClassificationData) -> torch.Tensor | None:
    """The ``config.bigrams`` most frequent word pairs of ``data.train`` (None when 0)."""
    return frequent_bigrams(data.train, len(data.vocab), config.bigrams) if config.bigrams else None


@dataclass
class ClassificationTask:
    """Classification for :func:`former.loop.train`; keeps the last evaluation's probabilities."""

    data: ClassificationData
    config: ClassifierConfig
    device: torch.device
    probabilities: torch.Tensor | None = None
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
        split, config = self.data.val if last else self.quick_val, self.config
        size = max(config.batch_size, 256)
        probabilities = class_probabilities(model, split, size, config.max_length, self.device)
        if last:
            self.probabilities = probabilities
        return {"val_acc": accuracy(probabilities, split), "val_examples": len(split)}

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
    """Train ``model`` on ``data``; the last metrics. options (``on_eval``...): as :func:`train`."""
    return train(model, ClassificationTask(data, config, device), **options)


@dataclass
class Member:
    """A model :func:`fit_seeds` trained; (n, classes) probabilities on the evaluation split."""

    config: ClassifierConfig
    model: CTransformer
    metrics: dict[str, Any]
    probabilities: torch.Tensor


def fit_seeds(
    config: ClassifierConfig,
    data: ClassificationData,
    seeds: int,
    *,
    device: torch.device,
    checkpoint_dirs: Sequence[Path | None] | None = None,
    **options: Any,
) -> Iterator[Member]:
    """Train ``seeds`` classifiers (seeds ``config.seed``, +1, ...) with the same bigram keys,
    chosen once; yield each when trained. ``checkpoint_dirs``: one per seed."""
    keys, log = bigram_keys(config, data), options.get("log", print)
    dirs = checkpoint_dirs or [None] * seeds
    for i, checkpoint_dir in zip(range(seeds), dirs, strict=True):
        member = dataclasses.replace(config, seed=config.seed + i)
        model = build_classifier(member, len(data.vocab), data.num_classes, bigram_keys=keys)
        log(
            f"model: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"attention={member.attention}, bigrams={model.num_bigrams:,}, seed={member.seed}, "
            f"device={device}"
        )
        task = ClassificationTask(data, member, device)
        metrics = train(model, task, checkpoint_dir=checkpoint_dir, **options)
        yield Member(member, model, metrics, task.probabilities)


def ensemble_accuracy(members: Sequence[Member], split: TextSplit) -> float:
    """The accuracy on ``split`` (the evaluation split) of the members' mean probabilities."""
    return accuracy(sum(m.probabilities for m in members) / len(members), split)


def evaluate(
    model: nn.Module, split: TextSplit, batch_size: int, max_length: int, device: torch.device
) -> float:
    """Classification accuracy of ``model`` on ``split`` (texts truncated to ``max_length``)."""
    return accuracy(class_probabilities(model, split, batch_size, max_length, device), split)


def accuracy(probabilities: torch.Tensor, split: TextSplit) -> float:
    """The share of ``split`` whose likeliest class in (n, classes) ``probabilities`` is right."""
    return float((probabilities.argmax(dim=-1) == split.labels).float().mean())


def class_probabilities(
    model: nn.Module, split: TextSplit, batch_size: int, max_length: int, device: torch.device
) -> torch.Tensor:
    """(n, classes) float32 probabilities of ``model`` for the texts of ``split``, in order."""
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
    total = sum(class_probabilities(m, split, 64, max_length, device) for m in models)
    probabilities = total / len(models)
    labels = probabilities.argmax(dim=-1)
    return [(int(i), float(row[i])) for i, row in zip(labels, probabilities, strict=True)]


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
    names = list(class_names) if class_names else None
    extra = {"vocab": vocab.to_dict(), "class_names": names, "num_tokens": model.num_tokens}
    extra |= {"num_classes": model.toprobs.out_features, "num_bigrams": model.num_bigrams}
    return save_model_file(directory, model, config, MODEL_FORMAT, **extra)


def load_model(
    path: str | Path,
    attention: AttentionSpec = None,
    map_location: str | torch.device = "cpu",
) -> tuple[CTransformer, ClassifierConfig, Vocabulary]:
    """Load what :func:`save_model` wrote (the file or its folder); ``attention`` overrides
    the saved one."""
    payload = read_model_file(path, MODEL_FORMAT, map_location)
    config = ClassifierConfig.from_dict({"bigrams": 0, **payload["config"]})  # older: none
    # The keys are a buffer of the state dict: placeholders of the right size until loaded.
    num_bigrams = payload.get("num_bigrams", 0)
    keys = torch.zeros(num_bigrams, dtype=torch.long) if num_bigrams else None
    model = build_classifier(config, payload["num_tokens"], payload["num_classes"], attention, keys)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    model.class_names = tuple(payload.get("class_names") or ())
    return model, config, Vocabulary.from_dict(payload["vocab"])
