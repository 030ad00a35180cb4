"""The one training loop: a :class:`Task` supplies batches, loss and evaluation; :func:`train`
does the rest (AdamW with warm-up and decay, clipping, bf16 on CUDA, resume and checkpoints, a
progress bar, metric lines, data parallel under torchrun)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from former.devices import process_rank
from former.runs import check_same_run, load_latest_checkpoint, save_checkpoint

Log = Callable[[str], None]
BAR = {"desc": "training", "unit": "batch"}


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 does not pay off here)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The unwrapped model in eval mode, without gradients, autocast as in training."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast_for(next(model.parameters()).device):
            yield model
    finally:
        model.train(was_training)


def lr_factor(step: int, warmup_steps: int, total_steps: int, decay: str) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): a linear warm-up, then
    ``decay`` (cosine, linear or constant) to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress


def make_optimizer(
    model: nn.Module, config: Any, warmup_steps: int, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (weight decay on matrices, not on embeddings, norms or biases) and its schedule."""
    decayed, plain = [], []
    for name, parameter in model.named_parameters():
        is_matrix = parameter.dim() >= 2 and "embedding" not in name
        (decayed if is_matrix else plain).append(parameter)
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": plain}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, config.lr_decay)
    )
    return optimizer, schedule


def format_metrics(**metrics: Any) -> str:
    """One ``key=value`` line, floats to four significant digits (large ones as integers),
    so SageMaker metric regexes such as ``val_acc=([0-9.]+)`` can read them."""
    return " ".join(f"{key}={metric_text(value)}" for key, value in metrics.items())


def metric_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


class Task(Protocol):
    """What a kind of training supplies to :func:`train`. config: a
    :class:`former.settings.RunSettings`. batches: this rank's batches of ``epoch`` from
    ``start`` on, the same on a resume. report: lines logged after a metric line."""

    config: Any
    device: torch.device
    epochs: int
    counts_epochs: bool

    def steps_per_epoch(self, world_size: int) -> int: ...
    def evaluation_steps(self, steps_per_epoch: int) -> set[int]: ...  # the last one included
    def batches(self, epoch: int, start: int, rank: int, world_size: int) -> Iterable[Any]: ...
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]: ...  # autocast
    def evaluate(self, model: nn.Module, last: bool) -> dict[str, Any]: ...
    def report(self, model: nn.Module, step: int) -> list[str]: ...


def train(
    model: nn.Module,
    task: Task,
    *,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    log: Log = print,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``task``; rank 0 returns the last evaluation's metrics, others {}.
    Resumes from the newest checkpoint in ``checkpoint_dir``, writes one every
    ``checkpoint_every`` steps, at each evaluation and epoch's end. Rank 0 alone evaluates,
    logs a metric line and calls ``on_eval``. progress: None shows it on a terminal."""
    run = Run(model, task, checkpoint_dir, log)
    eval_steps = task.evaluation_steps(run.steps_per_epoch)
    show = run.is_main and (sys.stderr.isatty() if progress is None else progress)
    metrics: dict[str, Any] = {}
    with tqdm(total=run.total_steps, initial=run.step, disable=not show, **BAR) as bar:
        for batch in run.batches():
            loss = run.take_step(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{run.schedule.get_last_lr()[0]:.2e}")
            epoch_done = run.step % run.steps_per_epoch == 0
            due = checkpoint_every and run.step % checkpoint_every == 0
            if due or epoch_done or run.step in eval_steps:
                run.save_checkpoint(checkpoint_dir)
            if run.step in eval_steps and run.is_main:
                metrics = run.evaluate(log, on_eval)
    if not metrics and run.is_main:  # a resumed run that had already finished: where it stands
        metrics = run.evaluate(log, on_eval)
    return metrics


class Run:
    """One call of :func:`train`: the model (and its DDP wrapper), optimizer, schedule, the
    step reached, and the statistics gathered since the last evaluation."""

    def __init__(self, model: nn.Module, task: Task, checkpoint_dir: Any, log: Log) -> None:
        self.started = time.perf_counter()
        self.task, self.config, self.device = task, task.config, task.device
        self.rank, self.world_size = process_rank()
        self.is_main = self.rank == 0
        self.model = self.trained = unwrap(model).to(self.device).train()
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = DistributedDataParallel(self.model, device_ids=device_ids)
        self.steps_per_epoch = task.steps_per_epoch(self.world_size)
        self.total_steps = self.steps_per_epoch * task.epochs
        warmup = math.ceil(self.config.lr_warmup / (self.config.batch_size * self.world_size))
        self.optimizer, self.schedule = make_optimizer(
            self.model, self.config, warmup, self.total_steps
        )
        self.step, self.tokens, self.seconds, self.losses = 0, 0, 0.0, []
        checkpoint = load_latest_checkpoint(checkpoint_dir)
        if checkpoint is not None:
            check_same_run(self.config, checkpoint["config"], Path(checkpoint_dir))
            for name, part in self.stateful().items():
                part.load_state_dict(checkpoint[name])
            self.step = checkpoint["step"]
            if self.is_main:
                log(f"resuming from step {self.step} of {self.total_steps} in {checkpoint_dir}")

    def stateful(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer, "schedule": self.schedule}

    def batches(self) -> Iterator[Any]:
        """The task's batches from the step reached to the last, epoch after epoch."""
        while self.step < self.total_steps:
            epoch, position = divmod(self.step, self.steps_per_epoch)
            step_at_start = self.step
            for batch in self.task.batches(epoch, position, self.rank, self.world_size):
                yield batch
                if self.step % self.steps_per_epoch == 0:
                    break
            if self.step == step_at_start:
                raise RuntimeError(
                    f"epoch {epoch} yielded no batches after position {position} of "
                    f"{self.steps_per_epoch}; the training data changed since the checkpoint?"
                )

    def take_step(self, batch: Any) -> float:
        """One optimizer step on ``batch``; returns its loss."""
        started = time.perf_counter()
        with autocast_for(self.device):
            loss, tokens = self.task.loss(self.trained, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.gradient_clipping > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.gradient_clipping)
        self.optimizer.step()
        self.schedule.step()
        self.step += 1
        self.losses.append(loss.item())
        self.seconds += time.perf_counter() - started
        self.tokens += tokens
        return self.losses[-1]

    def save_checkpoint(self, directory: str | Path | None) -> None:
        if directory is not None and self.is_main:
            state = {name: part.state_dict() for name, part in self.stateful().items()}
            epoch = self.step // self.steps_per_epoch
            state |= {"config": self.config.to_dict(), "step": self.step, "epoch": epoch}
            save_checkpoint(directory, state)

    def evaluate(self, log: Log, on_eval: Callable[[dict[str, Any]], None] | None) -> dict:
        """Evaluate, log a metric line and the task's report, call ``on_eval``; the metrics."""
        epochs = self.step / self.steps_per_epoch  # whole epochs as 2, within one as 1.25
        results: dict[str, Any] = {}
        if self.task.counts_epochs:
            results["epoch"] = int(epochs) if epochs.is_integer() else round(epochs, 2)
        results["step"] = self.step
        if self.losses:
            results["train_loss"] = sum(self.losses) / len(self.losses)
        results |= self.task.evaluate(self.model, last=self.step == self.total_steps)
        if self.seconds:
            results["tokens_per_s"] = self.tokens / self.seconds
            results["elapsed_s"] = time.perf_counter() - self.started
        for line in [format_metrics(**results), *self.task.report(self.model, self.step)]:
            log(line)
        if on_eval is not None:
            on_eval(dict(results))
        self.losses = []
        return results


def evenly_spaced(steps_per_epoch: int, epochs: int, per_epoch: int) -> set[int]:
    """``per_epoch`` evenly spaced steps in each epoch, each epoch's end among them."""
    per_epoch = min(per_epoch, steps_per_epoch)
    return {
        epoch * steps_per_epoch + round(k * steps_per_epoch / per_epoch)
        for epoch in range(epochs)
        for k in range(1, per_epoch + 1)
    }
