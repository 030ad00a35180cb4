"""Training loops for former's classifier: config, fit, evaluate, save, load, predict.

Used by ``python -m former.classify``, ``python -m former.generate``, the
SageMaker entry point ``model.py`` (which wraps the model in
DistributedDataParallel itself) and the notebook::

    config = ClassifierConfig(attention="sdpa")
    data = load_imdb(final=True, vocab_size=config.vocab_size)
    model = build_classifier(config, len(data.vocab), data.num_classes)
    metrics = fit_classifier(model, data, config, device=pick_device())
    save_model("runs/imdb", model, config, data.vocab)

The schedule is AdamW with a linear warm-up followed by a cosine (or linear)
decay to zero over the whole run; gradients are clipped by norm; on CUDA the
forward pass runs under bf16 autocast. Checkpoints hold the model, optimizer
and scheduler state plus the step and epoch counters, so an interrupted run
(a spot instance, a closed laptop) resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from former.attention import AttentionSpec, describe_attention
from former.data import Batch, ClassificationData, TextSplit, Vocabulary, batches
from former.transformers import CTransformer

MODEL_FILE = "model.pt"
MODEL_FORMAT = "former-classifier/1"
CHECKPOINT_PREFIX = "checkpoint-"
KEEP_CHECKPOINTS = 3

Log = Callable[[str], None]


class RunMismatchError(ValueError):
    """A checkpoint or saved model belongs to a run with a different configuration."""


# ---------------------------------------------------------------- devices and configs


def pick_device(name: str = "auto") -> torch.device:
    """The device to train on: ``"auto"`` picks cuda, then mps, then cpu."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as error:
            raise ValueError(
                f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps."
            ) from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} asked for, but MPS is not available here.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class ClassifierConfig:
    """Everything that defines a classifier training run.

    The defaults are tuned to pass 85% IMDB test accuracy within minutes on a
    laptop CPU: a narrow, shallow model (emb 64, depth 1) with small initial
    embeddings and mean pooling, reviews cut to 256 tokens, a 20k vocabulary,
    and a high learning rate that warms up and then decays to zero within one
    epoch (see ``benchmarks/train.py``).

    lr_warmup counts training examples (as in the original former), not steps.
    eval_subset: how many validation examples the evaluations during training
    look at (0: all); the last evaluation always uses the whole split.
    """

    emb: int = 64
    heads: int = 4
    depth: int = 1
    max_length: int = 256
    vocab_size: int = 20_000
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

    # Settings that change how often a run reports, never what it learns:
    # a run may resume with different values.
    REPORTING_ONLY = ("evals_per_epoch", "eval_subset")

    def __post_init__(self) -> None:
        check_positive(
            emb=self.emb,
            heads=self.heads,
            depth=self.depth,
            max_length=self.max_length,
            batch_size=self.batch_size,
            epochs=self.epochs,
            evals_per_epoch=self.evals_per_epoch,
        )
        if self.vocab_size < 3:
            raise ValueError(
                f"vocab_size must be at least 3 (<pad>, <unk>, one word); got {self.vocab_size}."
            )
        check_heads_divide(self.emb, self.heads, self.wide)
        check_schedule(self.lr, self.lr_decay, self.lr_warmup)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        return config_from_dict(cls, data, "classifier")


def config_from_dict(cls: type, data: dict[str, Any], kind: str) -> Any:
    """Rebuild a settings dataclass saved with ``asdict``, refusing unknown keys."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {kind} settings {unknown}; known: {sorted(known)}.")
    return cls(**data)


def check_heads_divide(emb: int, heads: int, wide: bool) -> None:
    """Narrow attention splits ``emb`` into ``heads`` equal parts."""
    if not wide and emb % heads != 0:
        raise ValueError(
            f"heads ({heads}) must divide the embedding size ({emb}) for narrow "
            f"attention: pick e.g. -H {largest_divisor_at_most(emb, heads)}, or use --wide."
        )


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1; got {value}.")


def check_schedule(lr: float, decay: str, warmup: int) -> None:
    if lr <= 0:
        raise ValueError(f"the learning rate must be positive; got {lr}.")
    if decay not in LR_DECAYS:
        raise ValueError(f"unknown learning-rate decay {decay!r}; use one of {sorted(LR_DECAYS)}.")
    if warmup < 0:
        raise ValueError(f"lr_warmup must be 0 or more; got {warmup}.")


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def config_differences(saved: dict[str, Any], current: dict[str, Any], ignore=()) -> list[str]:
    """Human-readable ``name: saved -> current`` for every setting that differs."""
    names = sorted((set(saved) | set(current)) - set(ignore))
    return [
        f"{name}: {saved.get(name)!r} -> {current.get(name)!r}"
        for name in names
        if saved.get(name) != current.get(name)
    ]


# ---------------------------------------------------------------- models


def build_classifier(
    config: ClassifierConfig,
    num_tokens: int,
    num_classes: int,
    attention: AttentionSpec = None,
) -> CTransformer:
    """A :class:`CTransformer` shaped by ``config``.

    attention: a callable, ``"sdpa"`` or ``"module:function"``; None means
    ``config.attention``.
    """
    torch.manual_seed(config.seed)
    model = CTransformer(
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
    )
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 is slower for small models)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# ---------------------------------------------------------------- optimisation


def lr_factor(step: int, warmup_steps: int, total_steps: int, decay: str) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based).

    Linear warm-up from 1/warmup_steps to 1 over ``warmup_steps`` steps, then
    ``decay`` ("cosine", "linear" or "constant") towards zero at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress


LR_DECAYS = ("cosine", "linear", "constant")


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    decay: str,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (weight decay on matrices only, not on embeddings, norms or biases) and its schedule."""
    decayed, plain = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_matrix = parameter.dim() >= 2 and "embedding" not in name
        (decayed if is_matrix else plain).append(parameter)
    optimizer = torch.optim.AdamW(
        [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": plain, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, decay)
    )
    return optimizer, schedule


# ---------------------------------------------------------------- checkpoints


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


def checkpoint_paths(directory: str | Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{CHECKPOINT_PREFIX}*.pt"))


def save_checkpoint(
    directory: str | Path, state: dict[str, Any], keep: int = KEEP_CHECKPOINTS
) -> Path:
    """Write ``state`` as the newest checkpoint and delete all but the newest ``keep``."""
    path = write_atomically(state, Path(directory) / f"{CHECKPOINT_PREFIX}{state['step']:09d}.pt")
    for old in checkpoint_paths(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(directory: str | Path | None) -> dict[str, Any] | None:
    """The newest checkpoint in ``directory`` (None when there is none)."""
    if directory is None:
        return None
    paths = checkpoint_paths(directory)
    if not paths:
        return None
    return torch.load(paths[-1], map_location="cpu", weights_only=True)


def check_same_run(saved: dict[str, Any], config: Any, where: Path) -> None:
    """Raise :class:`RunMismatchError` when ``saved`` (a config dict) is not ``config``'s run.

    config: a :class:`ClassifierConfig` (or any config with ``to_dict`` and
    ``REPORTING_ONLY``, the settings a resumed run may change).
    """
    differences = config_differences(
        saved, config.to_dict(), ignore=getattr(config, "REPORTING_ONLY", ())
    )
    if differences:
        raise RunMismatchError(
            f"{where} holds a run with different settings ({'; '.join(differences)}). "
            "Use the same settings to resume it, or choose another output folder."
        )


# ---------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    split: TextSplit,
    *,
    batch_size: int,
    max_length: int,
    device: torch.device,
) -> float:
    """Classification accuracy of ``model`` on ``split`` (texts truncated to ``max_length``)."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split.")
    model = unwrap(model)
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad(), autocast_for(device):
        for batch in batches(by_length(split), batch_size, max_length, shuffle=False):
            batch = to_device(batch, device)
            predictions = model(batch.tokens, batch.padding_mask).argmax(dim=-1)
            correct += int((predictions == batch.labels).sum())
    model.train(was_training)
    return correct / len(split)


def by_length(split: TextSplit) -> TextSplit:
    """The same examples, shortest first: evaluation batches then carry almost no padding,
    which saves time and keeps padding out of the attention of the real tokens."""
    order = torch.argsort(split.lengths(), stable=True)
    return TextSplit([split.sequences[i] for i in order.tolist()], split.labels[order])


def subset(split: TextSplit, n: int, seed: int) -> TextSplit:
    """``n`` examples of ``split`` chosen by ``seed`` (the whole split when n is 0 or too big)."""
    if n <= 0 or n >= len(split):
        return split
    chosen = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    chosen = chosen.sort().values
    return TextSplit([split.sequences[i] for i in chosen.tolist()], split.labels[chosen])


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(tensor.to(device, non_blocking=True) for tensor in batch))


def format_metrics(**metrics: Any) -> str:
    """One ``key=value`` line: ``format_metrics(epoch=2, train_loss=0.41, val_acc=0.873)``.

    Floats get four significant digits (large ones none after the point), so
    SageMaker metric regexes such as ``val_acc=([0-9.]+)`` can read them.
    """
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            text = f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


# ---------------------------------------------------------------- fitting


def shard_batches(
    split: TextSplit, config: ClassifierConfig, epoch: int, rank: int, world_size: int
) -> Iterator[Batch]:
    """This process's batches for ``epoch``: a new order per epoch, fixed by the seed."""
    return batches(
        split,
        config.batch_size,
        config.max_length,
        shuffle=True,
        seed=config.seed * 1_000 + epoch,
        num_shards=world_size,
        shard_index=rank,
    )


def batches_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """How many batches each of ``world_size`` processes sees per epoch of ``n`` examples."""
    return math.ceil(math.ceil(n / batch_size) / world_size)


def fit_classifier(
    model: nn.Module,
    data: ClassificationData,
    config: ClassifierConfig,
    *,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    log: Log = print,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
    tensorboard: Any | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data.train``, evaluating on ``data.val``; returns the last metrics.

    model may be wrapped in DistributedDataParallel by the caller; each of the
    ``world_size`` processes trains on its own shard of every epoch's batches.
    With ``checkpoint_dir``, training resumes from the newest checkpoint there
    (which must come from a run with the same config), and rank 0 writes one
    every ``checkpoint_every`` optimizer steps (0: only at epoch ends).

    Rank 0 logs one metric line per evaluation (``evals_per_epoch`` per epoch,
    on ``eval_subset`` validation examples, the last one on all of them), e.g.
    ``epoch=2 step=782 train_loss=0.41 val_acc=0.873 elapsed_s=301``, and
    passes the same metrics to ``on_eval``. progress: tqdm bar on stderr;
    None shows it only on a terminal. tensorboard: an optional SummaryWriter.
    """
    started = time.perf_counter()
    model.to(device)
    model.train()
    is_main = rank == 0
    steps_per_epoch = batches_per_epoch(len(data.train), config.batch_size, world_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = math.ceil(config.lr_warmup / (config.batch_size * world_size))
    optimizer, schedule = make_optimizer(
        model, config.lr, config.weight_decay, warmup_steps, total_steps, config.lr_decay
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
            log(
                f"resuming from step {step} (epoch {step / steps_per_epoch:.2f}) in {checkpoint_dir}"
            )

    def write_checkpoint() -> None:
        if checkpoint_dir is None or not is_main:
            return
        state = {
            "config": config.to_dict(),
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "step": step,
            "epoch": step // steps_per_epoch,
        }
        save_checkpoint(checkpoint_dir, state)

    eval_steps = evaluation_steps(steps_per_epoch, config.epochs, config.evals_per_epoch)
    quick_val = subset(data.val, config.eval_subset, seed=config.seed)
    metrics: dict[str, Any] = {}
    tokens_seen, train_seconds = 0, 0.0
    running_loss, loss_count = 0.0, 0

    bar = tqdm(
        total=total_steps,
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
        while step < total_steps:
            epoch, position = divmod(step, steps_per_epoch)
            step_at_start = step
            for index, batch in enumerate(
                shard_batches(data.train, config, epoch, rank, world_size)
            ):
                if index < position:
                    continue  # resumed mid-epoch: these batches were trained on before
                step_started = time.perf_counter()
                batch = to_device(batch, device)
                with autocast_for(device):
                    output = model(batch.tokens, batch.padding_mask)
                    loss = F.nll_loss(output.float(), batch.labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.gradient_clipping > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clipping)
                optimizer.step()
                schedule.step()
                step += 1
                loss_value = loss.item()
                train_seconds += time.perf_counter() - step_started
                tokens_seen += int(batch.padding_mask.sum())
                running_loss, loss_count = running_loss + loss_value, loss_count + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{schedule.get_last_lr()[0]:.2e}")

                if checkpoint_every and step % checkpoint_every == 0:
                    write_checkpoint()
                if step in eval_steps and is_main:
                    last = step == total_steps
                    split = data.val if last else quick_val
                    metrics = {
                        "epoch": round(step / steps_per_epoch, 2)
                        if step % steps_per_epoch
                        else step // steps_per_epoch,
                        "step": step,
                        "train_loss": running_loss / max(1, loss_count),
                        "val_acc": evaluate(
                            model,
                            split,
                            batch_size=max(config.batch_size, 256),
                            max_length=config.max_length,
                            device=device,
                        ),
                        "val_examples": len(split),
                        "tokens_per_s": tokens_seen / max(train_seconds, 1e-9),
                        "elapsed_s": time.perf_counter() - started,
                    }
                    running_loss, loss_count = 0.0, 0
                    log(format_metrics(**metrics))
                    if tensorboard is not None:
                        for key in ("train_loss", "val_acc", "tokens_per_s"):
                            tensorboard.add_scalar(key, metrics[key], step)
                    if on_eval is not None:
                        on_eval(dict(metrics))
                if step % steps_per_epoch == 0 or step == total_steps:
                    write_checkpoint()
                    break
                if step >= total_steps:
                    break
            if step == step_at_start:
                raise RuntimeError(
                    f"epoch {epoch} yielded no batches after position {position} of "
                    f"{steps_per_epoch}; the training split changed since the checkpoint?"
                )
    finally:
        bar.close()
    if not metrics and is_main:
        # a resumed run that had already finished: report where it stands
        metrics = {
            "epoch": step // steps_per_epoch,
            "step": step,
            "val_acc": evaluate(
                model,
                data.val,
                batch_size=max(config.batch_size, 256),
                max_length=config.max_length,
                device=device,
            ),
            "val_examples": len(data.val),
        }
        log(format_metrics(**metrics))
    return metrics


def evaluation_steps(steps_per_epoch: int, epochs: int, per_epoch: int) -> set[int]:
    """Steps after which to evaluate: ``per_epoch`` evenly spaced per epoch, always the last."""
    total = steps_per_epoch * epochs
    per_epoch = min(per_epoch, steps_per_epoch)
    points = {
        epoch * steps_per_epoch + round(k * steps_per_epoch / per_epoch)
        for epoch in range(epochs)
        for k in range(1, per_epoch + 1)
    }
    return {p for p in points if 0 < p <= total} | {total}


# ---------------------------------------------------------------- saving and prediction


def save_model(
    directory: str | Path,
    model: nn.Module,
    config: ClassifierConfig,
    vocab: Vocabulary,
    class_names: tuple[str, ...] | None = None,
) -> Path:
    """Save weights, config and vocabulary as one file, ``directory/model.pt``.

    An existing model there from a run with a different config is not
    overwritten: :class:`RunMismatchError` says so.
    """
    path = Path(directory) / MODEL_FILE
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        check_same_run(saved.get("config", {}), config, path)
    model = unwrap(model)
    payload = {
        "format": MODEL_FORMAT,
        "config": config.to_dict(),
        "attention": describe_attention(unwrap(model).backbone.tblocks[0].attention.attention_spec),
        "vocab": vocab.to_dict(),
        "num_tokens": model.num_tokens,
        "num_classes": model.toprobs.out_features,
        "class_names": list(class_names) if class_names else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return write_atomically(payload, path)


def load_model(
    path: str | Path,
    attention: AttentionSpec = None,
    map_location: str | torch.device = "cpu",
) -> tuple[CTransformer, ClassifierConfig, Vocabulary]:
    """Load what :func:`save_model` wrote (the file or its folder), ready for :func:`predict`.

    attention: overrides the saved ``config.attention`` (needed when the model
    was trained with a function that cannot be imported here).
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"no saved model at {path}; train one with python -m former.classify --out FOLDER."
        )
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a former classifier saved by save_model.")
    config = ClassifierConfig.from_dict(payload["config"])
    model = build_classifier(
        config, payload["num_tokens"], payload["num_classes"], attention=attention
    )
    model.load_state_dict(payload["state_dict"])
    model.eval()
    model.class_names = tuple(payload.get("class_names") or ())
    return model, config, Vocabulary.from_dict(payload["vocab"])


def predict(
    model: nn.Module, vocab: Vocabulary, texts: list[str], max_length: int
) -> list[tuple[int, float]]:
    """(label, probability of that label) for each text, truncated to ``max_length`` tokens."""
    model = unwrap(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = []
    with torch.no_grad():
        for text in texts:
            ids = vocab.encode_text(text)[:max_length] or [vocab.unk_index]
            tokens = torch.tensor([ids], dtype=torch.long, device=device)
            probabilities = model(tokens, torch.ones_like(tokens, dtype=torch.bool)).exp()[0]
            label = int(probabilities.argmax())
            results.append((label, float(probabilities[label])))
    model.train(was_training)
    return results


# ---------------------------------------------------------------- command-line support


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


def add_runtime_arguments(parser: Any) -> None:
    """Flags that say where and how a run executes, shared by the training CLIs."""
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
    )
    group.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    group.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is off anyway when stderr is not a terminal)",
    )
    group.add_argument(
        "-T",
        "--tb-dir",
        default=None,
        help="write TensorBoard logs here (needs the tensorboard package)",
    )


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be at least 1; got {threads}.")
    torch.set_num_threads(threads)


def metric_logger() -> Log:
    """A log function for the CLIs: lines on stdout, flushed, without tearing a progress bar."""

    def log(line: str) -> None:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()

    return log


def open_tensorboard(directory: str | None) -> Any | None:
    """A TensorBoard SummaryWriter for ``directory``; None when not asked for or not installed."""
    if directory is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(
            f"notice: TensorBoard is not installed, so nothing is written to {directory} "
            "(pip install tensorboard to get it).",
            file=sys.stderr,
            flush=True,
        )
        return None
    return SummaryWriter(directory)
