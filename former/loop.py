"""The training loop, one for every task (classification, generation) and every run.

A :class:`Task` supplies what differs (batches, loss, evaluation); :func:`train` does the rest:
AdamW with warm-up and decay, clipping, bf16 on CUDA, resume and checkpoints, a progress bar,
metric lines, and data parallel under torchrun.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from former.runs import load_latest_checkpoint, save_checkpoint

Log = Callable[[str], None]


def pick_device(name: str = "auto") -> torch.device:
    """The device to train on: ``"auto"`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps.") from error
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, True):
        raise ValueError(
            f"device {name!r} asked for, but {device.type.upper()} is not available here."
        )
    return device


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
    """The model inside any DDP wrapper, in eval mode, without gradients, autocast as in
    training, for the block."""
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
    ``decay`` ("cosine", "linear" or "constant") to 0 at ``total_steps``."""
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
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


class Task(Protocol):
    """What a kind of training supplies to :func:`train`. config: a
    :class:`former.runs.RunSettings` with the optimizer's settings. batches: this rank's
    batches of ``epoch`` from position ``start`` on, the same on a resume. loss: a batch's
    loss and its tokens. evaluate: metrics (``last``: on all held-out data). report: lines
    logged after a metric line."""

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
    started = time.perf_counter()
    config, device = task.config, task.device
    rank, world_size = process_rank()
    is_main = rank == 0
    model = unwrap(model).to(device).train()
    trained = model
    if world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=device_ids)
    steps_per_epoch = task.steps_per_epoch(world_size)
    total_steps = steps_per_epoch * task.epochs
    warmup_steps = math.ceil(config.lr_warmup / (config.batch_size * world_size))
    optimizer, schedule = make_optimizer(model, config, warmup_steps, total_steps)
    stateful = {"model": model, "optimizer": optimizer, "schedule": schedule}

    step = 0
    checkpoint = load_latest_checkpoint(checkpoint_dir)
    if checkpoint is not None:
        config.check_same_run(checkpoint["config"], Path(checkpoint_dir))
        for name, part in stateful.items():
            part.load_state_dict(checkpoint[name])
        step = checkpoint["step"]
        if is_main:
            log(f"resuming from step {step} of {total_steps} in {checkpoint_dir}")

    eval_steps = task.evaluation_steps(steps_per_epoch)
    metrics: dict[str, Any] = {}
    tokens_seen, train_seconds, running_loss, loss_count = 0, 0.0, 0.0, 0

    def write_checkpoint() -> None:
        if checkpoint_dir is not None and is_main:
            state = {name: part.state_dict() for name, part in stateful.items()}
            state |= {"config": config.to_dict(), "step": step, "epoch": step // steps_per_epoch}
            save_checkpoint(checkpoint_dir, state)

    def evaluate_and_report() -> dict[str, Any]:
        epochs = step / steps_per_epoch  # whole epochs as 2, evaluations within one as 1.25
        results = {}
        if task.counts_epochs:
            results["epoch"] = int(epochs) if epochs.is_integer() else round(epochs, 2)
        results["step"] = step
        if loss_count:
            results["train_loss"] = running_loss / loss_count
        results |= task.evaluate(model, last=step == total_steps)
        if train_seconds:
            results["tokens_per_s"] = tokens_seen / train_seconds
            results["elapsed_s"] = time.perf_counter() - started
        for line in [format_metrics(**results), *task.report(model, step)]:
            log(line)
        if on_eval is not None:
            on_eval(dict(results))
        return results

    show = is_main and (sys.stderr.isatty() if progress is None else progress)
    with tqdm(
        total=total_steps, initial=step, desc="training", unit="batch", disable=not show
    ) as bar:
        while step < total_steps:
            epoch, position = divmod(step, steps_per_epoch)
            step_at_start = step
            for batch in task.batches(epoch, position, rank, world_size):
                step_started = time.perf_counter()
                with autocast_for(device):
                    loss, tokens = task.loss(trained, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.gradient_clipping > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clipping)
                optimizer.step()
                schedule.step()
                step += 1
                loss_value = loss.item()
                train_seconds += time.perf_counter() - step_started
                tokens_seen += tokens
                running_loss, loss_count = running_loss + loss_value, loss_count + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
                epoch_done = step % steps_per_epoch == 0
                due = checkpoint_every and step % checkpoint_every == 0
                if due or epoch_done or step in eval_steps:
                    write_checkpoint()
                if step in eval_steps and is_main:
                    metrics = evaluate_and_report()
                    running_loss, loss_count = 0.0, 0
                if epoch_done:
                    break
            if step == step_at_start:
                raise RuntimeError(
                    f"epoch {epoch} yielded no batches after position {position} of "
                    f"{steps_per_epoch}; the training data changed since the checkpoint?"
                )
    if not metrics and is_main:  # a resumed run that had already finished: where it stands
        metrics = evaluate_and_report()
    return metrics


def evenly_spaced(steps_per_epoch: int, epochs: int, per_epoch: int) -> set[int]:
    """``per_epoch`` evenly spaced steps in each epoch, each epoch's end among them."""
    per_epoch = min(per_epoch, steps_per_epoch)
    return {
        epoch * steps_per_epoch + round(k * steps_per_epoch / per_epoch)
        for epoch in range(epochs)
        for k in range(1, per_epoch + 1)
    }


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a process group is up."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def data_parallel(device_name: str = "auto") -> Iterator[torch.device]:
    """Join the process group torchrun describes (``WORLD_SIZE > 1``): nccl on GPUs, one per
    local rank, gloo on CPUs; yield this rank's device. The ranks wait for each other on
    leaving only when the block finished, so one that fails does not hang the rest."""
    device = pick_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
        dist.barrier()
    finally:
        dist.destroy_process_group()


@contextmanager
def main_process_first() -> Iterator[None]:
    """The first process of each host runs the block before the others on that host (so they
    read the cache it writes: every host has its own disk)."""
    _, world_size = process_rank()
    first_on_host = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if world_size > 1 and not first_on_host:
        dist.barrier()
    yield
    if world_size > 1 and first_on_host:
        dist.barrier()
