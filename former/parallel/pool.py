"""``make_pool``: a process pool for attention heads, used as ``multiprocessing.Pool``
(``pool.map(attention_function, items)``) but with a safe start method, one torch thread per
persistent worker, tensors through shared memory, and every failure raised, never a hang."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

from former.parallel.arena import pack
from former.parallel.errors import (
    PoolError,
    UnpicklableItemError,
    WorkerDiedError,
    add_note,
    describe_exit,
    error_from_worker,
    function_error,
    function_name,
)
from former.parallel.worker import STOP_TIMEOUT, Worker, next_messages, stop_all
from former.threads import torch_threads

STARTUP_TIMEOUT = 120.0  # seconds; spawn imports torch in every worker, slow on a busy laptop


def available_cpus() -> int:
    """CPU cores this process may run on (respects affinity masks, e.g. in containers)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_start_method() -> str:
    """``spawn`` on macOS and Windows, else ``forkserver`` where it exists: workers forked from
    a small single-threaded server, not copies of a parent's threads and locks."""
    if sys.platform in {"darwin", "win32"}:
        return "spawn"
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def check_start_method(start_method: str | None) -> str:
    """A requested start method, checked; ``None`` means :func:`default_start_method`."""
    if start_method is None:
        return default_start_method()
    available = multiprocessing.get_all_start_methods()
    if start_method == "fork" and sys.platform == "darwin":
        raise ValueError(
            "start_method='fork' is not safe on macOS: system libraries used by torch crash "
            "or hang in forked children. Use 'spawn' (the default) and put the mapped "
            "function in a module (%%writefile my_transformer_model.py)."
        )
    if start_method not in available:
        raise ValueError(
            f"Unknown start method {start_method!r} on {sys.platform}: use one of "
            f"{', '.join(available)}, or None for the platform's safe default."
        )
    return start_method


def pickled_function(fn: Callable[[Any], Any]) -> bytes:
    """``fn`` as the workers receive it, or an error that says how to make it picklable."""
    if not callable(fn):
        raise TypeError(f"map needs a function, got {type(fn).__name__}.")
    try:
        return pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise function_error(fn, str(error), start_method=None) from error


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(n)``, sizes within one,
    the last never the largest."""
    parts = min(parts, n)
    return list(pairwise([-(-n * part // parts) for part in range(parts + 1)]))


class HeadPool:
    """Persistent workers with a ``multiprocessing.Pool``-like ``map``, made by :func:`make_pool`;
    close it or use it as a context manager (garbage collection also stops its workers)."""

    def __init__(
        self, processes: int | None, start_method: str | None, include_caller: bool
    ) -> None:
        processes = available_cpus() if processes is None else processes
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}.")
        self.processes, self.include_caller = processes, include_caller
        self.worker_count = processes - 1 if include_caller else processes
        self.start_method = check_start_method(start_method)
        self._context = multiprocessing.get_context(self.start_method)
        self._workers: list[Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, stop_all, self._workers)
        self._start_workers()

    def _start_workers(self) -> None:
        if self.worker_count == 0:
            return  # make_pool(1, include_caller=True): the caller computes everything
        if self.start_method == "forkserver":
            # The server imports torch once; every worker forked from it starts warm.
            self._context.set_forkserver_preload(["__main__", "former.parallel.worker"])
        late = (
            f"worker processes did not start within {STARTUP_TIMEOUT:.0f} s (start method "
            f"{self.start_method!r}); the machine may be overloaded: try fewer processes."
        )
        try:
            self._workers.extend(Worker(self._context, i) for i in range(self.worker_count))
            deadline = time.monotonic() + STARTUP_TIMEOUT
            for worker, message in next_messages(self._workers, deadline, late):
                if message is None:
                    raise PoolError(
                        f"Worker process {worker.index} failed to start: "
                        f"{describe_exit(worker.process.exitcode, during_call=False)}. Its error "
                        "is printed on this process's standard error (for a notebook: the "
                        f"terminal that runs Jupyter). With start method {self.start_method!r} a "
                        "worker imports the main script again, so scripts must keep their work "
                        "under `if __name__ == '__main__':`."
                    )
        except BaseException:
            stop_all(self._workers)
            raise

    def close(self) -> None:
        """Stop the workers once the current call ends; the pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            stop_all(self._workers)
            self._finalizer.detach()

    def __enter__(self) -> HeadPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        raise TypeError(
            "A HeadPool cannot be sent to another process (it owns the worker processes); "
            "pass it as an argument only within this process."
        )

    def __repr__(self) -> str:
        caller = ", include_caller=True" if self.include_caller else ""
        state = "closed" if self._closed else "running"
        return f"HeadPool(processes={self.processes}{caller}, {self.start_method!r}, {state})"

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """``[fn(item) for item in iterable]``: one contiguous batch per worker, the last one
        computed here with ``include_caller`` (``chunksize`` is ignored). Past ``timeout``
        seconds, :class:`PoolTimeoutError`; timed-out or dead workers are replaced."""
        items = list(iterable)
        if self._closed:
            raise ValueError("Pool not running: it was closed.")
        if not items:
            return []
        function_bytes = pickled_function(fn)
        module = getattr(fn, "__module__", None)
        with self._lock:
            if len(self._workers) < self.worker_count:
                self._start_workers()
            ranges = split_evenly(len(items), len(self._workers) + self.include_caller)
            # The caller's batch is the last and never the largest: it also hands out the work.
            own_range = ranges.pop() if self.include_caller else (0, 0)
            busy = self._workers[: len(ranges)]
            batches = [self._pack_batch(items, start, stop) for start, stop in ranges]
            deadline = None if timeout is None else time.monotonic() + timeout
            late = (
                f"{function_name(fn)} did not finish within the timeout; the workers were "
                "stopped and new ones start with the next call."
            )
            replies = {}
            try:
                for worker, batch in zip(busy, batches, strict=True):
                    try:
                        worker.send_task(module, function_bytes, batch)
                    except OSError:  # the worker died between calls
                        raise self._death(worker, ranges[worker.index], fn) from None
                own_results, own_error = self._run_here(fn, items, *own_range)
                for worker, data in next_messages(busy, deadline, late):
                    if data is None:
                        raise self._death(worker, ranges[worker.index], fn)
                    # Results are copied out now, while the other workers still compute.
                    replies[worker.index] = worker.read_reply(data)
            except BaseException:
                stop_all(self._workers)  # a worker may still compute or be gone: start afresh
                raise
            results = []
            for worker, (start, _) in zip(busy, ranges, strict=True):  # in item order
                reply = replies[worker.index]
                if reply[0] != "done":
                    raise error_from_worker(*reply[1:], fn, worker.index, start, self.start_method)
                results.extend(reply[1])
        if own_error is not None:
            raise own_error
        return results + own_results

    def _run_here(
        self, fn: Callable[[Any], Any], items: list[Any], start: int, stop: int
    ) -> tuple[list[Any], Exception | None]:
        """The caller's share: its results, or the exception that stopped it, returned so that
        the workers' replies are still read."""
        results: list[Any] = []
        if start == stop:
            return results, None
        try:
            with torch_threads(1):  # as each worker: more would compete with them for cores
                for item in items[start:stop]:
                    results.append(fn(item))
        except Exception as error:
            index = start + len(results)
            add_note(
                error, f"(raised by {function_name(fn)} on item {index}, in the calling process)"
            )
            return [], error
        return results, None

    def _pack_batch(self, items: list[Any], start: int, stop: int) -> tuple[bytes, Any]:
        try:
            return pack(items[start:stop], start=0)
        except Exception as error:
            for index in range(start, stop):  # find the culprit, to name it
                try:
                    pack(items[index], start=0)
                except Exception:
                    break
            raise UnpicklableItemError(
                f"Cannot send item {index} to the worker processes: {error}. Items may hold "
                "tensors, numbers, strings and containers of them; objects of classes defined "
                "in a notebook cannot be sent."
            ) from error

    def _death(self, worker: Worker, item_range: tuple[int, int], fn: Callable) -> WorkerDiedError:
        worker.process.join(STOP_TIMEOUT)
        start, stop = item_range
        items = f"item {start}" if stop - start == 1 else f"items {start}-{stop - 1}"
        return WorkerDiedError(
            f"Worker process {worker.index} (pid {worker.process.pid}) died while running "
            f"{function_name(fn)} on {items}: {describe_exit(worker.process.exitcode)}. "
            "The pool starts fresh workers for the next call."
        )


def make_pool(
    processes: int | None = None, start_method: str | None = None, *, include_caller: bool = False
) -> HeadPool:
    """A :class:`HeadPool` whose workers have started. processes: processes that compute;
    None: one per core. include_caller: this process computes one share of every ``map`` and
    ``processes - 1`` workers the rest (one copy and one wake-up fewer, but a crash there is a
    crash of your process, and ``timeout`` cannot interrupt it). start_method: "fork",
    "forkserver", "spawn", or None (:func:`default_start_method`)."""
    return HeadPool(processes, start_method, include_caller)
