"""Where training runs: the device, and the process group of a data-parallel run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


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
