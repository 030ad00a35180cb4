"""Attention heads on CPU cores: a safe, fast process pool and tools to measure it.

- :func:`make_pool`: a ``multiprocessing.Pool``-like :class:`HeadPool` (pool.py; tensors
  cross in shared memory, arena.py; the worker loop, worker.py; its exceptions, errors.py).
- :class:`PoolAttention`: a model's heads on a pool, inference and training (attention.py).
- :func:`measure_speedups` / :func:`plot_speedups`: when do processes pay off (speedups.py).
"""

from former.parallel.attention import PoolAttention, SerialPool
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
