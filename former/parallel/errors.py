"""What can go wrong in a pool's ``map``, each its own exception whose message says what
happened and what to do (to a reader who is usually in a notebook)."""

from __future__ import annotations

import pickle
import signal


class PoolError(RuntimeError):
    """Base class of the errors a :class:`~former.parallel.HeadPool` raises itself."""


class WorkerDiedError(PoolError):
    """A worker process ended (crash, ``os._exit``, out-of-memory kill) during a call."""


class PoolTimeoutError(PoolError, TimeoutError):
    """Workers did not start, or a call did not finish, in the time allowed."""


class WorkerError(PoolError):
    """The mapped function raised something that cannot be re-raised as itself."""


class UnpicklableFunctionError(PoolError, pickle.PicklingError):
    """The mapped function cannot be sent to (or found in) the worker processes."""


class UnpicklableItemError(PoolError, pickle.PicklingError):
    """An item, or a result, cannot be sent between the parent and a worker."""


class RemoteTraceback(Exception):
    """A worker's traceback text, attached as ``__cause__`` of the error re-raised here."""

    def __str__(self) -> str:
        return "\n\n--- traceback in the worker process ---\n" + self.args[0]


def function_name(fn: object) -> str:
    qualname, module = getattr(fn, "__qualname__", None), getattr(fn, "__module__", None)
    if qualname is None:
        return repr(fn)
    return f"{module}.{qualname}" if module else qualname


def add_note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):
        error.add_note(note)


def function_error(fn: object, problem: str, start_method: str | None) -> UnpicklableFunctionError:
    """``fn`` cannot reach the workers: pickling failed here (``start_method`` None) or the
    workers, started with ``start_method``, could not import it."""
    name, module = function_name(fn), getattr(fn, "__module__", "?")
    if start_method is None:
        why = (
            f"Cannot send function {name} to the worker processes: {problem}. Workers receive "
            "a function by its module and name, so lambdas, functions defined inside other "
            "functions, and functions redefined after being imported cannot be sent."
        )
    elif module not in {"__main__", "__mp_main__"}:
        return UnpicklableFunctionError(
            f"The worker processes cannot import function {name} from module {module!r}: "
            f"{problem}. Make sure the module's file is in the folder the pool was created "
            "in or on PYTHONPATH, and that importing it works in a fresh Python."
        )
    elif start_method == "fork":
        why = (
            f"The worker processes cannot find function {name}: {problem}. It is defined in "
            "the notebook or session itself (`__main__`), and workers started with 'fork' are "
            "copies of this process taken when the pool was created: create the pool after "
            "defining the function. Better:"
        )
    else:
        why = (
            f"The worker processes cannot find function {name}: {problem}. It is defined in "
            f"the notebook or session itself (`__main__`), and workers started with "
            f"'{start_method}' are fresh Python processes that never ran your notebook (from a "
            "script it works only for functions defined at the top level, outside "
            "`if __name__ == '__main__':`)."
        )
    return UnpicklableFunctionError(
        f"{why} Define the function with `def` at the top level of a module file and import it "
        "from there. In a notebook, write that file from a cell that starts with `%%writefile "
        "my_transformer_model.py`, then `from my_transformer_model import attention_function`."
    )


SIGNAL_HINTS = {
    "SIGKILL": "; the operating system's out-of-memory killer does this when memory runs out, "
    "so try smaller inputs or fewer processes",
    "SIGSEGV": ", a segmentation fault: a bug in native code",
}


def describe_exit(exitcode: int | None, during_call: bool = True) -> str:
    if exitcode is None:
        return "it stopped responding"
    if exitcode >= 0:
        hint = " (something in the worker called os._exit() or it was shut down from outside)"
        return f"it exited with code {exitcode}{hint if during_call else ''}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = "a signal"
    return f"it was killed by {name} ({-exitcode}){SIGNAL_HINTS.get(name, '')}"


def error_from_worker(
    kind: str, details: object, fn: object, worker: int, first_item: int, start_method: str
) -> BaseException:
    """The exception for a worker's ``("error", kind, details)`` reply; ``first_item``: the
    index, in the whole ``map``, of the worker's first item."""
    if kind == "function":
        return function_error(fn, details, start_method)
    if kind == "items":
        return UnpicklableItemError(
            f"Worker process {worker} could not read its items: {details}. Items holding "
            "objects of classes defined in a notebook cannot be sent to workers started with "
            "'spawn' or 'forkserver'; use tensors, numbers and tuples."
        )
    if kind == "result":
        return UnpicklableItemError(
            f"{function_name(fn)} returned a result that cannot be sent back from worker "
            f"process {worker}: {details}. Return tensors, numbers or tuples of them."
        )
    index, exception_bytes, type_name, message, traceback_text = details
    try:
        error = pickle.loads(exception_bytes)
    except Exception:
        error = None  # None was sent, or its class exists only in the worker
    if not isinstance(error, Exception):
        error = WorkerError(f"{type_name}: {message}")
    error.__cause__ = RemoteTraceback(traceback_text)
    add_note(
        error,
        f"(raised by {function_name(fn)} on item {first_item + index}, in worker process {worker})",
    )
    return error
