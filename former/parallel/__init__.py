"""Parallel attention heads on CPU cores: a safe, fast pool and tools to measure it.

- :func:`make_pool` / :class:`HeadPool`: ``multiprocessing.Pool``-like pool with
  a safe start method, one thread per worker, persistent workers, tensors in
  shared memory, clear exceptions instead of hangs, and optionally the caller
  computing a share itself (``include_caller=True``).
- :class:`PoolAttention`: run a model's heads on a pool (inference and training).
- :func:`measure_speedups` / :func:`plot_speedups`: when do processes pay off?
"""

from former.parallel.attention import (
    PoolAttention,
    PooledHeads,
    SerialPool,
    attention_head,
    head_gradients,
    map_heads,
)
from former.parallel.errors import (
    PoolError,
    PoolTimeoutError,
    RemoteTraceback,
    UnpicklableFunctionError,
    UnpicklableItemError,
    WorkerDiedError,
    WorkerError,
)
from former.parallel.pool import (
    HeadPool,
    Traffic,
    available_cpus,
    default_start_method,
    make_pool,
)
from former.parallel.speedups import measure_speedups, plot_speedups

__all__ = [
    "HeadPool",
    "PoolAttention",
    "PoolError",
    "PoolTimeoutError",
    "PooledHeads",
    "RemoteTraceback",
    "SerialPool",
    "Traffic",
    "UnpicklableFunctionError",
    "UnpicklableItemError",
    "WorkerDiedError",
    "WorkerError",
    "attention_head",
    "available_cpus",
    "default_start_method",
    "head_gradients",
    "make_pool",
    "map_heads",
    "measure_speedups",
    "plot_speedups",
]
