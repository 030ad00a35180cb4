"""A worker process, both ends: the loop it runs, and the parent's handle on it.

Messages are pickled tuples. To the worker: ``("arena", nbytes, name)`` then the arena's
descriptor, or ``("task", module, function_bytes, items_bytes, out_start)``. Back: ``b"ready"``
once, then per task ``("done", results_bytes, out_needed)`` or ``("error", kind, details)``,
kind "function", "items", "raised" or "result". Tensors travel in the arena.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from former.parallel.arena import Arena, Placement, align, copy_in, pack, unpack
from former.parallel.errors import PoolTimeoutError

STOP_TIMEOUT = 2.0  # seconds a worker gets to end after SIGTERM, then after SIGKILL


def dumps(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def use_one_thread() -> None:
    """One intra-op thread for the rest of this process, in torch and any BLAS loaded later:
    workers run side by side, and a forked child with several threads deadlocks in OpenMP."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed (inherited through fork); workers never use inter-op threads


def keep_freed_memory() -> None:
    """Keep freed memory for this process's next use (glibc): freed blocks of several MiB (a
    head's scores) go back to the system at once, and every call would page-fault them in."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc (e.g. musl)
    m_trim_threshold, m_mmap_max = -1, -4
    mallopt(m_mmap_max, 0)  # large blocks come from the heap, which can be kept...
    mallopt(m_trim_threshold, 2**31 - 1)  # ...and the heap is never trimmed


def file_version(module_name: str | None) -> tuple[int, int] | None:
    """Modification time and size of a module's file (a rewrite within the clock's granularity
    mostly changes the size); None for ``__main__`` and file-less modules."""
    if module_name in {None, "__main__", "__mp_main__"}:
        return None
    try:
        stat = os.stat(sys.modules[module_name].__file__)
    except (KeyError, AttributeError, TypeError, OSError):
        return None
    return stat.st_mtime_ns, stat.st_size


def load_function(module_name: str | None, function_bytes: bytes, versions: dict) -> Callable:
    """Unpickle the mapped function, its module reloaded first if its file changed since
    (``versions``: module -> file version): a ``%%writefile`` fix reaches the workers."""
    if module_name in versions:
        version = file_version(module_name)
        if version is not None and version != versions[module_name]:
            importlib.reload(sys.modules[module_name])
    fn = pickle.loads(function_bytes)
    versions[module_name] = file_version(module_name)
    return fn


def run_task(message: tuple, arena: Arena, versions: dict) -> bytes:
    """The reply to a ``task`` message: its function applied to its items."""
    _, module_name, function_bytes, items_bytes, out_start = message
    step = "function"
    try:
        fn = load_function(module_name, function_bytes, versions)
        step = "items"
        items = unpack(items_bytes, arena, copy=False)
    except BaseException as error:
        return dumps(("error", step, error_text(error)))
    results = []
    for index, item in enumerate(items):
        try:
            results.append(fn(item))
        except BaseException as error:
            try:
                error_bytes = dumps(error)
            except Exception:
                error_bytes = None  # the parent reports it by type name and message
            details = (index, error_bytes, type(error).__name__, str(error), traceback.format_exc())
            return dumps(("error", "raised", details))
    del items  # views of the arena; results are written after the inputs, not over them
    try:
        data, placement = pack(results, align(out_start), limit=arena.nbytes)
        copy_in(arena, placement)
    except BaseException as error:
        return dumps(("error", "result", error_text(error)))
    return dumps(("done", data, placement.end - out_start + placement.spilled_bytes))


def serve(conn: Connection) -> None:
    # Ctrl-C (a notebook's interrupt button) reaches the whole process group; the parent
    # handles it and replaces its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_one_thread()
    keep_freed_memory()
    conn.send_bytes(b"ready")
    watched = [conn, multiprocessing.parent_process().sentinel]
    arena: Arena | None = None
    versions: dict[str | None, int | None] = {}
    while conn in wait(watched):  # else the parent is gone; nobody would read our replies
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if message[0] == "arena":
            if arena is not None:
                arena.close()
            arena = Arena.receive(conn, message[1], message[2])
        else:
            conn.send_bytes(run_task(message, arena, versions))


class Worker:
    """The parent's handle on one worker process: its socket and its arena."""

    def __init__(self, context: Any, index: int) -> None:
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        self.process = context.Process(
            target=serve, args=(child_end,), name=f"former-head-worker-{index}", daemon=True
        )
        self.process.start()
        child_end.close()
        self.index, self.conn = index, parent_end
        self.arena: Arena | None = None
        self.out_hint: int | None = None  # bytes of results seen last time

    def send_task(
        self, module: str | None, fn_bytes: bytes, batch: tuple[bytes, Placement]
    ) -> None:
        """Copy a packed batch into the arena (grown first if need be) and send the task."""
        items_bytes, placement = batch
        out_start = align(placement.end)
        needed = out_start + (placement.end if self.out_hint is None else self.out_hint)
        if self.arena is None or self.arena.nbytes < needed:
            if self.arena is not None:
                needed = max(needed, self.arena.nbytes * 3 // 2)
                self.arena.close()
            self.arena = Arena.create(needed)
            self.conn.send_bytes(dumps(("arena", self.arena.nbytes, self.arena.name)))
            self.arena.send(self.conn, self.process.pid)
        copy_in(self.arena, placement)
        self.conn.send_bytes(dumps(("task", module, fn_bytes, items_bytes, out_start)))

    def read_reply(self, data: bytes) -> tuple:
        """A reply message, its results copied out of the arena: ``("done", results)``."""
        reply = pickle.loads(data)
        if reply[0] != "done":
            return reply
        _, results_bytes, self.out_hint = reply
        try:
            return "done", unpack(results_bytes, self.arena, copy=True)
        except Exception as error:
            return "error", "result", error_text(error)

    def stop(self) -> None:
        for end in (self.process.terminate, self.process.kill):
            if self.process.is_alive():
                end()
                self.process.join(STOP_TIMEOUT)
        self.conn.close()
        if self.arena is not None:
            self.arena.close()
            self.arena = None


def stop_all(workers: list[Worker]) -> None:
    """Stop and forget ``workers``; a pool's finalizer too, so it must not hold the pool."""
    stopping = workers[:]
    workers.clear()
    for worker in stopping:
        worker.stop()


def next_messages(
    workers: list[Worker], deadline: float | None, late: str
) -> Iterator[tuple[Worker, bytes | None]]:
    """The next message of each worker as it arrives, None from one that died; past
    ``deadline`` (``time.monotonic()``), :class:`PoolTimeoutError` saying ``late``."""
    waiting = {worker.conn: worker for worker in workers}
    while waiting:
        sentinels = {worker.process.sentinel: worker for worker in waiting.values()}
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait([*waiting, *sentinels], remaining)
        if not ready:
            raise PoolTimeoutError(late)
        for obj in ready:
            worker = waiting.get(obj) or sentinels.get(obj)
            if worker is None or worker.conn not in waiting:
                continue  # both its socket and its sentinel were ready
            del waiting[worker.conn]
            try:
                # A worker that exited may still have left its reply in the socket.
                alive = obj is worker.conn or worker.conn.poll()
                message = worker.conn.recv_bytes() if alive else None
            except (EOFError, OSError):
                message = None
            yield worker, message
