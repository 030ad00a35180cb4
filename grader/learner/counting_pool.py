"""A Pool-like object whose ``map`` records what it was asked to run.

Checks and graders hand it to ``parallel_multihead_attention(..., pool=pool)`` and read
``pool.calls`` (or the plain-data ``pool.log()``): the function mapped, whether worker processes
could import it, and the items' types and shapes; ``diagnose_pool_usage`` judges the log. With
``result_scale`` every tensor it returns is multiplied by that number, so only an output built
from the pool's results carries it. It runs the work in this process (``processes=0``), in
``processes`` workers (one torch thread each) that find the mapped function only by its
module's name, as under spawn (forked with an empty ``__main__`` where fork exists), or in a
pool the learner made (``pool=``).
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

import numpy as np
import torch

from former.parallel import use_one_thread

_WORKER_TIMEOUT = 120.0  # seconds; a worker that dies while starting makes a Pool wait forever
MAX_LOGGED_ITEMS = 64  # items (and results) a log describes: far more than any lab's heads

# Private handles on the C implementations: code in the kernel that monkeypatches
# torch.Tensor methods cannot change what the log says the pool returned.
_TensorBase = torch._C.TensorBase
_detach, _to_double, _to_cpu, _to_numpy = (
    _TensorBase.detach,
    _TensorBase.double,
    _TensorBase.cpu,
    _TensorBase.numpy,
)


@dataclass
class PoolCall:
    """One call of ``map`` (or a sibling such as ``imap``) on the pool; items: each item's
    ``describe_item``."""

    method: str
    function: str
    module: str
    importable: bool
    why_not_importable: str
    n_items: int
    items: list[dict[str, Any]] = field(default_factory=list)
    # Per item (the first MAX_LOGGED_ITEMS): the tensor the pool returned for it, after its
    # scale, as a float64 array; None where the function returned no tensor.
    results: list[Any] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolCall:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def function_origin(func: object) -> tuple[str, str, bool, str]:
    """(module, qualified name, importable by a fresh worker process?, why not)."""
    target = getattr(func, "func", func)  # functools.partial pickles its .func by name
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or type(target).__name__
    why = _why_not_importable(target, module, qualname)
    return module, qualname, not why, why


def _why_not_importable(target: object, module: str, qualname: str) -> str:
    if module in {"__main__", "__mp_main__"}:
        return (
            f"{qualname} is defined in the notebook (module {module}); worker processes "
            "started with spawn or forkserver cannot import it from there"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        return f"{qualname} is a lambda or a function defined inside another"
    try:
        found: object = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception as error:  # noqa: BLE001 - any failure means a worker could not find it
        return f"importing {module}.{qualname} fails: {error}"
    if found is not target:
        return f"{module}.{qualname} names a different object now (redefined after import?)"
    return ""


def result_array(result: object) -> Any:
    """A float64 numpy copy of a tensor the pool returned; None for anything else."""
    if not isinstance(result, _TensorBase) or not _TensorBase.is_floating_point(result):
        return None
    return np.array(_to_numpy(_to_cpu(_to_double(_detach(result)))), dtype=np.float64, copy=True)


def describe_item(item: object) -> dict[str, Any]:
    """Plain-data description of one mapped item (types and shapes, never values)."""
    if isinstance(item, torch.Tensor):
        return {"type": "Tensor", "shape": list(item.shape), "dtype": str(item.dtype)[6:]}
    if isinstance(item, (tuple, list)):
        return {"type": type(item).__name__, "parts": [describe_item(p) for p in item[:8]]}
    if isinstance(item, (bool, int, float, str)) or item is None:
        return {"type": type(item).__name__, "value": item}
    return {"type": type(item).__name__}


def describe_call(method: str, func: Callable, items: list) -> PoolCall:
    """The record of one mapping call: the function's origin, the items' descriptions."""
    module, qualname, importable, why = function_origin(func)
    described = [describe_item(item) for item in items[:MAX_LOGGED_ITEMS]]
    return PoolCall(method, qualname, module, importable, why, len(items), described)


def _fresh_worker() -> None:
    """One torch thread, and a ``__main__`` that defines nothing: a worker forked from a
    notebook finds functions by module name only, as a spawned one would."""
    use_one_thread()
    sys.modules["__main__"] = types.ModuleType("__main__")


class PoolMethods:
    """``multiprocessing.Pool``'s mapping methods, each recorded as one call of ``_run``
    (computed at once: ``map_async`` returns results already there)."""

    def _run(self, method: str, func: Callable, items: list, star: bool = False) -> list:
        raise NotImplementedError

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self._run("map", func, list(iterable))

    def map_async(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
    ):
        try:
            results = self._run("map_async", func, list(iterable))
        except Exception as error:
            if error_callback is not None:
                error_callback(error)
            raise
        if callback is not None:
            callback(results)
        return types.SimpleNamespace(
            get=lambda timeout=None: results,
            wait=lambda timeout=None: None,
            ready=lambda: True,
            successful=lambda: True,
        )

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterable:
        return iter(self._run("imap", func, list(iterable)))

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterable:
        return iter(self._run("imap_unordered", func, list(iterable)))  # in order: allowed

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self._run("starmap", func, [tuple(item) for item in iterable], star=True)

    def close(self) -> None:
        return None

    def join(self) -> None:
        return None

    def terminate(self) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


class InstrumentedPool(PoolMethods):
    """Pool-like ``map`` that records each call; see the module docstring for the modes."""

    def __init__(self, processes: int = 0, *, pool: Any = None, result_scale: float = 1.0) -> None:
        if pool is not None and processes:
            raise ValueError("Give either processes or an existing pool, not both.")
        self.processes = processes
        self.result_scale = result_scale
        self.calls: list[PoolCall] = []
        self._wrapped = pool
        self._owned: Any = None

    def log(self) -> list[dict[str, Any]]:
        """The calls as plain data (JSON-able), for a judge in another process."""
        return [asdict(call) for call in self.calls]

    def _run(self, method: str, func: Callable, items: list, star: bool = False) -> list:
        call = describe_call(method, func, items)
        self.calls.append(call)
        if self.processes:
            if not call.importable:
                # Sending it anyway would fail inside the worker, which can hang the pool.
                raise pickle.PicklingError(
                    f"Worker processes cannot import the mapped function: "
                    f"{call.why_not_importable}. Define it in "
                    "a module (e.g. with %%writefile my_transformer_model.py) and import it."
                )
            results = self._in_workers(func, items, star)
        elif self._wrapped is not None:
            results = list((self._wrapped.starmap if star else self._wrapped.map)(func, items))
        else:
            results = [func(*item) if star else func(item) for item in items]
        results = list(results)
        if self.result_scale != 1.0:
            results = [r * self.result_scale if isinstance(r, torch.Tensor) else r for r in results]
        call.results = [result_array(r) for r in results[:MAX_LOGGED_ITEMS]]
        return results

    def _in_workers(self, func: Callable, items: list, star: bool) -> list:
        if self._owned is None:  # started on first use: a refused function costs no workers
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._owned = context.Pool(self.processes, initializer=_fresh_worker)
        pending = (self._owned.starmap_async if star else self._owned.map_async)(func, items)
        try:
            return pending.get(_WORKER_TIMEOUT)
        except multiprocessing.TimeoutError:
            self.terminate()
            raise TimeoutError(
                f"The pool's workers gave no result within {_WORKER_TIMEOUT:.0f} s; they may have "
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
