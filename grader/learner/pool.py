"""A Pool-like object whose ``map`` records what it was asked to run.

Graders and visible checks hand it to ``parallel_multihead_attention(..., pool=pool)``
and then read ``pool.calls`` (or the plain-data ``pool.log()``): which function
was mapped, whether worker processes could import it, and how many items of
which shapes it received. :func:`grader.learner.diagnose.diagnose_pool_usage` turns the
log into a verdict.

With ``result_scale`` the pool multiplies every tensor it returns by that number: a
function that builds its output from the pool's results returns the scaled answer, one
that computes the heads some other way returns the plain one.

Three ways to run the work:
- ``InstrumentedPool()`` (processes=0): in this process, one item after another;
  fast and deterministic, for checks that only need the log and the values.
- ``InstrumentedPool(processes=2)``: real worker processes (one torch thread each) that,
  like spawn and forkserver workers, find the mapped function only by its module's name.
  Where fork exists they are forked with an empty ``__main__``, which costs no new torch
  import per worker.
- ``InstrumentedPool(pool=existing_pool)``: wraps a pool the learner made.
"""

from __future__ import annotations

import importlib
import multiprocessing
import pickle
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from former.parallel import use_one_thread


@dataclass
class PoolCall:
    """One call of ``map`` (or a sibling such as ``imap``) on the pool.

    items: one description per item, e.g.
    ``{"type": "tuple", "parts": [{"type": "Tensor", "shape": [2, 5, 4], "dtype": "float32"},
    ..., {"type": "bool", "value": True}]}``.
    """

    method: str
    function: str
    module: str
    importable: bool
    why_not_importable: str
    n_items: int
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolCall:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def function_origin(func: object) -> tuple[str, str, bool, str]:
    """(module, qualified name, importable by a fresh worker process?, why not)."""
    target = getattr(func, "func", func)  # functools.partial pickles its .func by name
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or type(target).__name__
    if module in {"__main__", "__mp_main__"}:
        return (
            module,
            qualname,
            False,
            (
                f"{qualname} is defined in the notebook (module {module}); worker processes "
                "started with spawn or forkserver cannot import it from there"
            ),
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        return (
            module,
            qualname,
            False,
            f"{qualname} is a lambda or a function defined inside another",
        )
    try:
        found: object = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception as error:  # noqa: BLE001 - any failure means a worker could not find it
        return module, qualname, False, f"importing {module}.{qualname} fails: {error}"
    if found is not target:
        return (
            module,
            qualname,
            False,
            (f"{module}.{qualname} names a different object now (redefined after import?)"),
        )
    return module, qualname, True, ""


def describe_item(item: object) -> dict[str, Any]:
    """Plain-data description of one mapped item (types and shapes, never values)."""
    if isinstance(item, torch.Tensor):
        return {"type": "Tensor", "shape": list(item.shape), "dtype": str(item.dtype)[6:]}
    if isinstance(item, (tuple, list)):
        return {"type": type(item).__name__, "parts": [describe_item(p) for p in item[:8]]}
    if isinstance(item, (bool, int, float, str)) or item is None:
        return {"type": type(item).__name__, "value": item}
    return {"type": type(item).__name__}


def _fresh_worker() -> None:
    """One torch thread, and a ``__main__`` that defines nothing: a worker forked from a
    notebook finds functions by module name only, as a spawned one would."""
    use_one_thread()
    sys.modules["__main__"] = types.ModuleType("__main__")


class _Finished:
    """The result of ``map_async``, already computed (``get``, ``wait``, ``ready`` work)."""

    def __init__(self, value: list) -> None:
        self._value = value

    def get(self, timeout: float | None = None) -> list:
        return self._value

    def wait(self, timeout: float | None = None) -> None:
        return None

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return True


class InstrumentedPool:
    """Pool-like ``map`` that records each call; see the module docstring for the modes."""

    def __init__(
        self,
        processes: int = 0,
        *,
        pool: Any = None,
        timeout: float = 120.0,
        result_scale: float = 1.0,
    ) -> None:
        if pool is not None and processes:
            raise ValueError("Give either processes or an existing pool, not both.")
        self.processes = processes
        self.timeout = timeout
        self.result_scale = result_scale
        self.calls: list[PoolCall] = []
        self._wrapped = pool
        self._owned: Any = None  # started on first use: a refused function costs no workers

    # -- recording -------------------------------------------------------------------------

    def _record(self, method: str, func: Callable, items: list) -> None:
        module, qualname, importable, why = function_origin(func)
        self.calls.append(
            PoolCall(
                method=method,
                function=qualname,
                module=module,
                importable=importable,
                why_not_importable=why,
                n_items=len(items),
                items=[describe_item(item) for item in items[:64]],
            )
        )

    def log(self) -> list[dict[str, Any]]:
        """The calls as plain data (JSON-able), for a judge in another process."""
        return [call.to_dict() for call in self.calls]

    # -- the Pool interface ------------------------------------------------------------------

    def _runner(self, func: Callable) -> Any:
        if self.processes:
            _, _, importable, why = function_origin(func)
            if not importable:
                # Sending it anyway would fail inside the worker, which can hang the pool.
                raise pickle.PicklingError(
                    f"Worker processes cannot import the mapped function: {why}. Define it in "
                    "a module (e.g. with %%writefile my_transformer_model.py) and import it."
                )
        if self.processes and self._owned is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._owned = context.Pool(self.processes, initializer=_fresh_worker)
        return self._owned if self._owned is not None else self._wrapped

    def _run(self, method: str, func: Callable, items: list, star: bool = False) -> list:
        self._record(method, func, items)
        runner = self._runner(func)
        if runner is None:
            results = [func(*item) if star else func(item) for item in items]
        elif runner is self._owned:
            results = self._wait((runner.starmap_async if star else runner.map_async)(func, items))
        else:
            results = list((runner.starmap if star else runner.map)(func, items))
        return self._scaled(results)

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self._run("map", func, list(iterable))

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None):
        """Like ``map`` (recorded as one call), but returns an object with ``.get()``."""
        return _Finished(self._run("map_async", func, list(iterable)))

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterable:
        return iter(self._run("imap", func, list(iterable)))

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self._run("starmap", func, [tuple(item) for item in iterable], star=True)

    def _scaled(self, results: list) -> list:
        if self.result_scale == 1.0:
            return results
        scale = self.result_scale
        return [r * scale if isinstance(r, torch.Tensor) else r for r in results]

    def _wait(self, pending: Any) -> list:
        # A worker that dies while starting makes multiprocessing.Pool wait forever.
        try:
            return pending.get(self.timeout)
        except multiprocessing.TimeoutError:
            self.terminate()
            raise TimeoutError(
                f"The pool's workers gave no result within {self.timeout:.0f} s; they may have "
                "failed to start (can they import your module?) or the work hangs."
            ) from None

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    def join(self) -> None:
        if self._owned is not None:
            self._owned.join()

    def terminate(self) -> None:
        if self._owned is not None:
            self._owned.terminate()
            self._owned.join()
            self._owned = None

    def __enter__(self) -> InstrumentedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __repr__(self) -> str:
        mode = (
            f"{self.processes} workers"
            if self.processes
            else ("wrapping " + type(self._wrapped).__name__ if self._wrapped else "in-process")
        )
        return f"InstrumentedPool({mode}, {len(self.calls)} calls recorded)"
