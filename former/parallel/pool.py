"""``make_pool``: a process pool for attention heads that is safe, fast and never hangs.

Use it where you would use ``multiprocessing.Pool``::

    with make_pool(2) as pool:
        outputs = pool.map(attention_function, data_to_map)   # one item per head

How it differs from ``multiprocessing.Pool``, and why:

- **Start method.** ``fork`` copies the parent, threads and locks included. On
  macOS system libraries are not fork-safe, so ``fork`` is refused there.
  On Linux the default is ``forkserver`` (Python's own default from 3.14): a
  small single-threaded server, started once, forks the workers, so they never
  inherit a notebook kernel's threads or torch's thread pool. ``spawn`` (the
  only method on Windows, the default on macOS) starts fresh interpreters. With
  ``spawn`` and ``forkserver`` the workers do not run your notebook, so a mapped
  function must live in a module (``%%writefile my_transformer_model.py``);
  :class:`UnpicklableFunctionError` says so when it does not. ``fork`` may be
  asked for on Linux: it is safe here because every worker limits itself to one
  intra-op thread (a forked child deadlocks only when it starts an OpenMP
  parallel region with several threads).
- **One thread per worker**, set when the worker starts (``torch.set_num_threads(1)``
  and ``OMP_NUM_THREADS=1``): the workers are the parallelism.
- **Persistent workers**, started (and waited for) when the pool is made,
  reused by every call, replaced after a failure.
- **Shared memory for tensors.** Each worker owns an arena of shared memory,
  allocated once and reused; tensors in the items are copied into it and only
  their offsets are pickled (see :mod:`former.parallel.arena`). Results come
  back the same way.
- **Batches.** A call sends each worker one contiguous batch of items (8 heads
  on 2 workers: heads 0-3 and 4-7), one message each way per worker. The
  function is still applied to each item separately and results come back in
  order, exactly as with ``multiprocessing.Pool.map``.
- **The caller may compute too** (``include_caller=True``). While the workers
  compute, the calling process would only wait; with this option it takes one
  share of the items itself (one torch thread, on its own tensors: nothing to
  copy for that share), and ``processes`` counts it: ``make_pool(2,
  include_caller=True)`` is the caller and one worker process. On two cores
  this halves the shared-memory traffic and removes a worker's wake-up from
  every call, which is most of what a pool costs at short sequences
  (``python -m benchmarks.parallel`` compares both). The price: the caller's
  share runs in your own process, so a crash there (``os._exit``, a segfault)
  takes your process down, and ``timeout`` cannot interrupt it. The default,
  ``False``, keeps ``multiprocessing.Pool``'s behaviour.
- **Failures are exceptions.** An exception in the function is re-raised in the
  caller with the worker's traceback; a worker that dies (``os._exit``, a
  segfault, the out-of-memory killer) raises :class:`WorkerDiedError` at once,
  and the pool starts fresh workers for the next call.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from former.parallel.arena import Arena, align, copy_in, pack, unpack
from former.parallel.errors import (
    PoolError,
    PoolTimeoutError,
    RemoteTraceback,
    UnpicklableFunctionError,
    UnpicklableItemError,
    WorkerDiedError,
    WorkerError,
    describe_exit,
    function_name,
    unimportable_function_message,
    unpicklable_function_message,
)
from former.parallel.worker import serve

START_METHODS = ("fork", "forkserver", "spawn")
STARTUP_TIMEOUT = 120.0  # seconds; spawn imports torch in every worker, slow on a busy laptop
STOP_TIMEOUT = 2.0


def available_cpus() -> int:
    """CPU cores this process may run on (respects affinity masks, e.g. in containers)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_start_method() -> str:
    """``forkserver`` on Linux and other POSIX systems that have it, else ``spawn``.

    See the module docstring for why not ``fork``.
    """
    if sys.platform in {"darwin", "win32"}:
        return "spawn"
    if "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


def check_start_method(start_method: str | None) -> str:
    """Validate a requested start method; ``None`` means :func:`default_start_method`."""
    if start_method is None:
        return default_start_method()
    if start_method not in START_METHODS:
        raise ValueError(
            f"Unknown start method {start_method!r}; use one of {', '.join(START_METHODS)} "
            "or None for the platform's safe default."
        )
    if start_method == "fork" and sys.platform == "darwin":
        raise ValueError(
            "start_method='fork' is not safe on macOS: system libraries used by torch "
            "crash or hang in forked children. Use 'spawn' (the default) and put the "
            "mapped function in a module (%%writefile my_transformer_model.py)."
        )
    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"start method {start_method!r} is not available on {sys.platform}; "
            f"available: {', '.join(multiprocessing.get_all_start_methods())}."
        )
    return start_method


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous number."""
    previous = torch.get_num_threads()
    if previous == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(n)``, sizes within one."""
    parts = min(parts, n)
    base, extra = divmod(n, parts)
    ranges, start = [], 0
    for part in range(parts):
        stop = start + base + (1 if part < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


@dataclass
class Traffic:
    """Bytes moved between the parent and its workers, both directions together.

    ``pipe_bytes`` went through pickled messages; ``shared_bytes`` through the
    shared-memory arenas (tensor data).
    """

    calls: int = 0
    pipe_bytes: int = 0
    shared_bytes: int = 0


@dataclass
class _Worker:
    index: int
    process: Any  # multiprocessing.Process of the pool's context
    conn: Connection
    arena: Arena | None = None
    out_hint: int | None = None  # bytes of results seen last time

    def stop(self) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(("stop",)))
        except (OSError, ValueError):
            pass
        self.process.join(STOP_TIMEOUT)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(STOP_TIMEOUT)
        self.conn.close()
        if self.arena is not None:
            self.arena.close()
            self.arena = None


class _Workers:
    """The pool's current worker processes; kept apart from the pool for its finalizer."""

    def __init__(self) -> None:
        self.workers: list[_Worker] = []

    def shutdown(self, graceful: bool = True) -> None:
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.stop() if graceful else worker.kill()


class HeadPool:
    """A pool of persistent worker processes with a ``multiprocessing.Pool``-like ``map``.

    Make one with :func:`make_pool`. Use it as a context manager, or call
    :meth:`close` when done; a pool that is garbage-collected stops its workers.
    """

    def __init__(
        self,
        processes: int | None = None,
        start_method: str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
        include_caller: bool = False,
    ) -> None:
        if processes is None:
            processes = available_cpus()
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}.")
        self.processes = processes
        self.include_caller = include_caller
        # The caller is one of the processes that compute, when it takes part.
        self.worker_count = processes - 1 if include_caller else processes
        self.start_method = check_start_method(start_method)
        self.traffic = Traffic()
        self._context = multiprocessing.get_context(self.start_method)
        self._initializer, self._initargs = initializer, initargs
        self._state = _Workers()
        self._lock = threading.Lock()
        self._call_id = 0
        self._closed = False
        self._finalizer = weakref.finalize(self, self._state.shutdown, False)
        self._start_workers()

    # -- life cycle ----------------------------------------------------------------------

    def _start_workers(self) -> None:
        if self.worker_count == 0:
            return  # make_pool(1, include_caller=True): the caller computes everything
        if self.start_method == "forkserver":
            # The server imports torch once; every worker forked from it starts warm.
            self._context.set_forkserver_preload(["__main__", "former.parallel.worker"])
        started = []
        try:
            for index in range(self.worker_count):
                parent_end, child_end = multiprocessing.Pipe(duplex=True)
                process = self._context.Process(
                    target=serve,
                    args=(child_end, self._initializer, self._initargs),
                    name=f"former-head-worker-{index}",
                    daemon=True,
                )
                process.start()
                child_end.close()
                started.append(_Worker(index, process, parent_end))
            self._state.workers = started
            self._wait_until_ready(started)
        except BaseException:
            for worker in started:
                worker.kill()
            self._state.workers = []
            raise

    def _wait_until_ready(self, workers: list[_Worker]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        waiting = {worker.conn: worker for worker in workers}
        while waiting:
            sentinels = {worker.process.sentinel: worker for worker in waiting.values()}
            ready = wait([*waiting, *sentinels], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise PoolError(
                    f"{len(waiting)} of {len(workers)} worker processes did not start within "
                    f"{STARTUP_TIMEOUT:.0f} s (start method {self.start_method!r}). The machine "
                    "may be overloaded; try fewer processes."
                )
            for obj in ready:
                worker = waiting.get(obj) or sentinels[obj]
                if worker.conn not in waiting:
                    continue
                try:
                    message = pickle.loads(worker.conn.recv_bytes())
                except (EOFError, OSError):
                    worker.process.join(STOP_TIMEOUT)
                    raise PoolError(
                        f"Worker process {worker.index} failed to start: "
                        f"{describe_exit(worker.process.exitcode, during_call=False)}. Its error message is "
                        "printed where this Python process writes its standard error (for "
                        "a notebook: the terminal that runs Jupyter). With start method "
                        f"{self.start_method!r} a worker imports the main script again, so "
                        "scripts must keep their work under `if __name__ == '__main__':`."
                    ) from None
                if message[0] != "ready":  # pragma: no cover - protocol violation
                    raise PoolError(f"unexpected first message from a worker: {message[0]!r}")
                del waiting[worker.conn]

    def _restart_workers(self) -> None:
        """Replace all workers: after a failure their state is unknown."""
        self._state.shutdown(graceful=False)
        self._start_workers()

    def close(self) -> None:
        """Stop the workers once they finish; the pool cannot be used afterwards."""
        self._closed = True
        with self._lock:
            self._state.shutdown(graceful=True)
        self._finalizer.detach()

    def terminate(self) -> None:
        """Stop the workers now, even in the middle of a call."""
        self._closed = True
        self._state.shutdown(graceful=False)
        self._finalizer.detach()

    def join(self) -> None:
        """For ``multiprocessing.Pool`` compatibility: workers are stopped by close()."""
        if not self._closed:
            raise ValueError("Pool is still running; call close() or terminate() first.")

    def __enter__(self) -> HeadPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __reduce__(self) -> tuple:
        raise TypeError(
            "A HeadPool cannot be sent to another process (it owns the worker processes); "
            "pass it as an argument only within this process."
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        caller = ", include_caller=True" if self.include_caller else ""
        return (
            f"HeadPool(processes={self.processes}{caller}, "
            f"start_method={self.start_method!r}, {state})"
        )

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [worker.process.pid for worker in self._state.workers]

    # -- map -----------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """``[fn(item) for item in iterable]``, computed by the workers, in order.

        Items are split into one contiguous batch per worker, plus the last one
        for the caller with ``include_caller=True`` (``chunksize`` is accepted for
        compatibility with ``multiprocessing.Pool.map``; batches are always as
        even as possible). ``timeout`` (seconds) bounds the wait for the workers:
        past it, :class:`PoolTimeoutError` is raised and the workers are replaced.
        """
        del chunksize
        items = list(iterable)
        if self._closed:
            raise ValueError("Pool not running: it was closed or terminated.")
        if not items:
            return []
        function_bytes = self._pickle_function(fn)
        with self._lock:
            if len(self._state.workers) < self.worker_count:
                self._start_workers()
            self._call_id += 1
            parts = len(self._state.workers) + (1 if self.include_caller else 0)
            ranges = split_evenly(len(items), parts)
            # The caller takes the last batch, never larger than the others: it also
            # hands out the work and gathers it.
            own_range = ranges.pop() if self.include_caller else None
            busy = self._state.workers[: len(ranges)]
            batches = [self._pack_batch(items, start, stop) for start, stop in ranges]
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                for worker, batch, item_range in zip(busy, batches, ranges, strict=True):
                    try:
                        self._send_batch(worker, fn, function_bytes, batch)
                    except OSError:  # the worker died between calls
                        raise self._death(worker, item_range, fn) from None
                own_results, own_error = self._run_here(fn, items, own_range)
                replies = self._collect(busy, ranges, fn, deadline)
            except BaseException:
                # A worker may still be computing or be gone: start afresh next time.
                self._state.shutdown(graceful=False)
                raise
            self.traffic.calls += 1
            results = self._results(fn, busy, ranges, replies)
            if own_error is not None:  # the workers' items come first: their errors win
                raise own_error
            return results + own_results

    def _run_here(
        self, fn: Callable[[Any], Any], items: list[Any], item_range: tuple[int, int] | None
    ) -> tuple[list[Any], Exception | None]:
        """The caller's share: its results, or the exception that stopped it.

        An exception is returned rather than raised so that the workers' replies
        are still read and the workers stay in step for the next call.
        """
        if item_range is None:
            return [], None
        start, stop = item_range
        index = start
        try:
            # One thread, as each worker has: more would compete with them for the cores.
            with torch_threads(1):
                results = []
                for index in range(start, stop):
                    results.append(fn(items[index]))
                return results, None
        except Exception as error:
            if hasattr(error, "add_note"):
                error.add_note(
                    f"(raised by {function_name(fn)} on item {index}, in the calling process)"
                )
            return [], error

    def _pickle_function(self, fn: Callable[[Any], Any]) -> bytes:
        if not callable(fn):
            raise TypeError(f"map needs a function, got {type(fn).__name__}.")
        try:
            return pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise UnpicklableFunctionError(unpicklable_function_message(fn, error)) from error

    def _pack_batch(self, items: list[Any], start: int, stop: int) -> tuple[bytes, Any]:
        try:
            return pack(items[start:stop], start=0)
        except Exception as error:
            for index in range(start, stop):
                try:
                    pack(items[index], start=0)
                except Exception:
                    break
            raise UnpicklableItemError(
                f"Cannot send item {index} to the worker processes: {error}. Items may hold "
                "tensors, numbers, strings and containers of them; objects of classes defined "
                "in a notebook cannot be sent."
            ) from error

    def _send_batch(
        self, worker: _Worker, fn: Callable[[Any], Any], function_bytes: bytes, batch: tuple
    ) -> None:
        items_bytes, placement = batch
        out_start = align(placement.end)
        out_guess = worker.out_hint if worker.out_hint is not None else placement.end
        needed = out_start + out_guess
        if worker.arena is None or worker.arena.nbytes < needed:
            old = worker.arena
            worker.arena = Arena.create(max(needed, 0 if old is None else old.nbytes * 3 // 2))
            if old is not None:
                old.close()
            worker.conn.send_bytes(pickle.dumps(("arena", worker.arena.nbytes, worker.arena.name)))
            worker.arena.send(worker.conn, worker.process.pid)
        copy_in(worker.arena, placement)
        message = pickle.dumps(
            (
                "task",
                self._call_id,
                getattr(fn, "__module__", None),
                function_bytes,
                items_bytes,
                out_start,
            ),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        worker.conn.send_bytes(message)
        self.traffic.pipe_bytes += len(message)
        self.traffic.shared_bytes += placement.end

    def _collect(
        self,
        busy: list[_Worker],
        ranges: list[tuple[int, int]],
        fn: Callable[[Any], Any],
        deadline: float | None,
    ) -> dict[int, tuple]:
        replies: dict[int, tuple] = {}
        waiting = {worker.conn: worker for worker in busy}
        while waiting:
            sentinels = {worker.process.sentinel: worker for worker in waiting.values()}
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([*waiting, *sentinels], remaining)
            if not ready:
                raise PoolTimeoutError(
                    f"{function_name(fn)} did not finish within the timeout; the workers "
                    "were stopped and new ones start with the next call."
                )
            for obj in ready:
                worker = waiting.get(obj) or sentinels.get(obj)
                if worker is None or worker.conn not in waiting:
                    continue
                if obj is worker.process.sentinel and not worker.conn.poll():
                    raise self._death(worker, ranges[worker.index], fn)
                try:
                    data = worker.conn.recv_bytes()
                except (EOFError, OSError):
                    raise self._death(worker, ranges[worker.index], fn) from None
                self.traffic.pipe_bytes += len(data)
                reply = pickle.loads(data)
                if reply[1] == self._call_id:
                    if reply[0] == "done":
                        # Copy results out now, while the other workers still compute.
                        _, _, results_bytes, out_needed = reply
                        worker.out_hint = out_needed
                        self.traffic.shared_bytes += out_needed
                        try:
                            reply = ("done", unpack(results_bytes, worker.arena, copy=True))
                        except Exception as error:
                            reply = (
                                "error",
                                reply[1],
                                "result",
                                f"{type(error).__name__}: {error}",
                            )
                    replies[worker.index] = reply
                    del waiting[worker.conn]
        return replies

    def _death(
        self, worker: _Worker, item_range: tuple[int, int], fn: Callable[[Any], Any]
    ) -> WorkerDiedError:
        worker.process.join(STOP_TIMEOUT)
        start, stop = item_range
        items = f"item {start}" if stop - start == 1 else f"items {start}-{stop - 1}"
        return WorkerDiedError(
            f"Worker process {worker.index} (pid {worker.process.pid}) died while running "
            f"{function_name(fn)} on {items}: {describe_exit(worker.process.exitcode)}. "
            "The pool starts fresh workers for the next call."
        )

    def _results(
        self,
        fn: Callable[[Any], Any],
        busy: list[_Worker],
        ranges: list[tuple[int, int]],
        replies: dict[int, tuple],
    ) -> list[Any]:
        results: list[Any] = []
        first_error: BaseException | None = None
        for worker, (start, _) in zip(busy, ranges, strict=True):
            reply = replies[worker.index]
            if reply[0] == "done":
                results.extend(reply[1])
            elif first_error is None:
                first_error = self._error(worker, start, fn, reply[2], reply[3])
        if first_error is not None:
            raise first_error
        return results

    def _error(
        self, worker: _Worker, start: int, fn: Callable[[Any], Any], kind: str, details: Any
    ) -> BaseException:
        name = function_name(fn)
        if kind == "function":
            module = getattr(fn, "__module__", "?")
            return UnpicklableFunctionError(
                unimportable_function_message(name, module, self.start_method, details)
            )
        if kind == "items":
            return UnpicklableItemError(
                f"Worker process {worker.index} could not read its items: {details}. Items "
                "holding objects of classes defined in a notebook cannot be sent to workers "
                "started with 'spawn' or 'forkserver'; use tensors, numbers and tuples."
            )
        if kind == "result":
            return UnpicklableItemError(
                f"{name} returned a result that cannot be sent back from worker process "
                f"{worker.index}: {details}. Return tensors, numbers or tuples of them."
            )
        index, exception_bytes, type_name, message, traceback_text = details
        error: BaseException | None = None
        if exception_bytes is not None:
            try:
                error = pickle.loads(exception_bytes)
            except Exception:
                error = None  # its class exists only in the worker: report it by name
        if not isinstance(error, Exception):
            error = WorkerError(f"{type_name}: {message}")
        error.__cause__ = RemoteTraceback(traceback_text)
        if hasattr(error, "add_note"):
            error.add_note(
                f"(raised by {name} on item {start + index}, in worker process {worker.index})"
            )
        return error


def make_pool(
    processes: int | None = None,
    start_method: str | None = None,
    *,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple = (),
    include_caller: bool = False,
) -> HeadPool:
    """A ready-to-use :class:`HeadPool` (its workers have started when this returns).

    processes: number of processes that compute; ``None`` means one per
    available core. They are all worker processes, unless ``include_caller``.
    include_caller: the calling process computes one share of every ``map``
    itself and ``processes - 1`` workers compute the rest (faster when the
    heads are small; see :mod:`former.parallel.pool`).
    start_method: ``"fork"``, ``"forkserver"``, ``"spawn"``, or ``None`` for the
    platform's safe default (``forkserver`` on Linux, ``spawn`` on macOS and
    Windows; see :mod:`former.parallel.pool` for the reasons).
    initializer(*initargs): run once in every worker process after it limits itself to
    one thread (not in the caller).
    """
    return HeadPool(
        processes,
        start_method,
        initializer=initializer,
        initargs=initargs,
        include_caller=include_caller,
    )
