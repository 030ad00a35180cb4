"""Attention heads on CPU cores: :func:`make_pool` (a safe, fast ``multiprocessing.Pool``-like
process pool), :class:`PoolAttention` (a model's heads on a pool, inference and training), and
:func:`measure_speedups` / :func:`plot_speedups` (when do processes pay off)."""

from former.parallel.errors import (
    PoolError,
    PoolTimeoutError,
    RemoteTraceback,
    UnpicklableFunctionError,
    UnpicklableItemError,
    WorkerDiedError,
    WorkerError,
)
from former.parallel.pool import HeadPool, available_cpus, default_start_method, make_pool
from former.parallel.pool_attention import PoolAttention, SerialPool
from former.parallel.speedups import measure_speedups, plot_speedups
from former.parallel.worker import use_one_thread

__all__ = [
    "HeadPool",
    "PoolAttention",
    "PoolError",
    "PoolTimeoutError",
    "RemoteTraceback",
    "SerialPool",
    "UnpicklableFunctionError",
    "UnpicklableItemError",
    "WorkerDiedError",
    "WorkerError",
    "available_cpus",
    "default_start_method",
    "make_pool",
    "measure_speedups",
    "plot_speedups",
    "use_one_thread",
]
