"""The loop each worker process runs: receive a batch of items, apply the function, reply.

Messages are pickled tuples over the worker's own socket:

- parent -> worker: ``("arena", nbytes, name)`` followed by the arena's file
  descriptor; ``("task", call_id, module, function_bytes, items_bytes, out_start)``;
  ``("stop",)``.
- worker -> parent: ``("ready", pid)``; ``("done", call_id, results_bytes,
  out_needed)``; ``("error", call_id, kind, details)`` where kind is
  ``"function"``, ``"items"``, ``"raised"`` or ``"result"``.

Tensors inside items and results are not in these bytes: they live in the
worker's arena (see :mod:`former.parallel.arena`).
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from former.parallel.arena import Arena, align, copy_in, pack, unpack


def dumps(message: tuple) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def limit_threads() -> None:
    """One intra-op thread in this process, for torch and for any BLAS loaded later.

    Workers already run in parallel with each other; more threads per worker
    only oversubscribe the cores. It also makes fork safe: a forked child whose
    OpenMP pool was started by the parent deadlocks on its first parallel region
    with more than one thread, and with one thread there is no parallel region.
    """
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed (inherited through fork); workers never use inter-op threads


def keep_freed_memory() -> None:
    """Keep memory this worker frees for its next call instead of returning it to the OS.

    Attention allocates score matrices of several MiB per head. By default glibc
    hands such blocks back to the kernel when they are freed, so every call pays
    thousands of page faults to get them again (a few ms per call, per
    process). A persistent worker keeps them: its memory stays at the peak of its
    largest call. Only glibc (Linux) has these knobs; elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc (e.g. musl): no tuning available
    m_trim_threshold, m_mmap_max = -1, -4
    mallopt(m_mmap_max, 0)  # large blocks come from the heap, which can be kept...
    mallopt(m_trim_threshold, 2**31 - 1)  # ...and the heap is never trimmed


class ModuleWatcher:
    """Reloads the mapped function's module when its file changes on disk.

    Workers are persistent, so without this a learner who fixes a function with
    ``%%writefile`` would keep running the old version in the workers.
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def refresh(self, module_name: str) -> None:
        """Reload the module if its file changed since this worker last looked."""
        mtime = self._mtime(module_name)
        seen = self._seen.get(module_name)
        if mtime is not None and seen is not None and mtime != seen:
            importlib.reload(sys.modules[module_name])
            self._seen[module_name] = mtime

    def remember(self, module_name: str) -> None:
        """Note the file version of a module the worker has just imported (or inherited)."""
        mtime = self._mtime(module_name)
        if mtime is not None:
            self._seen.setdefault(module_name, mtime)

    @staticmethod
    def _mtime(module_name: str) -> int | None:
        if module_name in {"__main__", "__mp_main__"}:
            return None
        path = getattr(sys.modules.get(module_name), "__file__", None)
        if path is None:
            return None
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return None


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _exception_bytes(error: BaseException) -> bytes | None:
    try:
        data = pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
        return data
    except Exception:
        return None


def run_task(message: tuple, arena: Arena, modules: ModuleWatcher) -> bytes:
    """Apply the function of a ``task`` message to its items; the reply message."""
    _, call_id, module_name, function_bytes, items_bytes, out_start = message
    modules.refresh(module_name)
    try:
        fn: Callable[[Any], Any] = pickle.loads(function_bytes)
    except BaseException as error:
        return dumps(("error", call_id, "function", _error_text(error)))
    modules.remember(module_name)
    try:
        items = unpack(items_bytes, arena, copy=False)
    except BaseException as error:
        return dumps(("error", call_id, "items", _error_text(error)))

    results = []
    for index, item in enumerate(items):
        try:
            results.append(fn(item))
        except BaseException as error:
            details = (
                index,
                _exception_bytes(error),
                type(error).__name__,
                str(error),
                traceback.format_exc(),
            )
            return dumps(("error", call_id, "raised", details))
    del items  # views of the arena; results are written after the inputs, not over them

    try:
        data, placement = pack(results, align(out_start), limit=arena.nbytes)
        copy_in(arena, placement)
    except BaseException as error:
        return dumps(("error", call_id, "result", _error_text(error)))
    out_needed = placement.end - out_start + placement.spilled_bytes
    return dumps(("done", call_id, data, out_needed))


def serve(
    conn: Connection,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple = (),
) -> None:
    """Entry point of a worker process."""
    # Ctrl-C (or a notebook's interrupt button) reaches the whole process group; the
    # parent handles it and replaces its workers, so workers just keep quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads()
    keep_freed_memory()
    if initializer is not None:
        initializer(*initargs)
    conn.send_bytes(dumps(("ready", os.getpid())))

    parent = multiprocessing.parent_process()
    watched: list[Any] = [conn] if parent is None else [conn, parent.sentinel]
    arena: Arena | None = None
    modules = ModuleWatcher()
    while True:
        if conn not in wait(watched):
            return  # the parent is gone; nobody will read our replies
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "arena":
            if arena is not None:
                arena.close()
            arena = Arena.receive(conn, message[1], message[2])
        elif kind == "task":
            assert arena is not None, "the parent sends an arena before the first task"
            conn.send_bytes(run_task(message, arena, modules))
