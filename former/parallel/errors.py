"""What can go wrong when work is mapped over a pool, each as its own exception.

Every message says what happened and what to do about it, because the person
reading it is usually in a notebook, looking at a cell that would otherwise
hang forever.
"""

from __future__ import annotations

import pickle
import signal


class PoolError(RuntimeError):
    """Base class of the errors a :class:`~former.parallel.HeadPool` raises itself."""


class WorkerDiedError(PoolError):
    """A worker process ended (crash, ``os._exit``, out-of-memory kill) during a call."""


class PoolTimeoutError(PoolError, TimeoutError):
    """A call took longer than the ``timeout`` it was given."""


class WorkerError(PoolError):
    """The mapped function raised something that cannot be re-raised as itself."""


class UnpicklableFunctionError(PoolError, pickle.PicklingError):
    """The mapped function cannot be sent to (or found in) the worker processes."""


class UnpicklableItemError(PoolError, pickle.PicklingError):
    """An item, or a result, cannot be sent between the parent and a worker."""


class RemoteTraceback(Exception):
    """Carries a worker's traceback text; attached as ``__cause__`` of re-raised errors."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n--- traceback in the worker process ---\n" + self.text


def function_name(fn: object) -> str:
    """``module.qualname`` of a function, or its repr for other callables."""
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if qualname is None:
        return repr(fn)
    return f"{module}.{qualname}" if module else qualname


MODULE_ADVICE = (
    "Define the function with `def` at the top level of a module file and import it from "
    "there. In a notebook, write that file from a cell that starts with "
    "`%%writefile my_transformer_model.py`, then "
    "`from my_transformer_model import attention_function`."
)


def unpicklable_function_message(fn: object, error: BaseException) -> str:
    """The parent could not pickle ``fn`` (a lambda, a nested function, a bound object...)."""
    return (
        f"Cannot send function {function_name(fn)} to the worker processes: {error}. "
        "Workers receive a function by its module and name, so lambdas, functions defined "
        "inside other functions, and functions that were redefined after being imported cannot "
        f"be sent. {MODULE_ADVICE}"
    )


def unimportable_function_message(
    name: str, module: str, start_method: str, error_text: str
) -> str:
    """A worker could not find the function the parent sent it."""
    if module in {"__main__", "__mp_main__"}:
        if start_method == "fork":
            why = (
                f"{name} is defined in the notebook or session itself (`__main__`). Workers "
                "started with 'fork' are copies of this process taken when the pool was "
                "created, so they do not know functions defined after that. Create the pool "
                "after defining the function, or, better, "
            )
        else:
            why = (
                f"{name} is defined in the notebook or interactive session itself "
                f"(`__main__`). Worker processes started with '{start_method}' start from a fresh "
                "Python process that never ran your notebook, so they cannot find it "
                "(from a script it works only when the function is defined at the top level, "
                "outside `if __name__ == '__main__':`). "
            )
        return (
            f"The worker processes cannot find function {name}: {error_text}. {why}{MODULE_ADVICE}"
        )
    return (
        f"The worker processes cannot import function {name} from module {module!r}: "
        f"{error_text}. Make sure the module's file is in the folder the pool was created in "
        "or on PYTHONPATH, and that importing it works in a fresh Python."
    )


def describe_exit(exitcode: int | None, during_call: bool = True) -> str:
    """Plain words for how a process ended."""
    if exitcode is None:
        return "it stopped responding"
    if exitcode < 0:
        number = -exitcode
        try:
            signame = signal.Signals(number).name
        except ValueError:
            signame = f"signal {number}"
        if number == getattr(signal, "SIGKILL", None):
            return (
                f"it was killed by {signame} ({number}); the operating system's out-of-memory "
                "killer does this when memory runs out, so try smaller inputs or fewer processes"
            )
        if number == getattr(signal, "SIGSEGV", None):
            return (
                f"it crashed with a segmentation fault ({signame}, {number}), a bug in native "
                "code or memory exhaustion"
            )
        return f"it was killed by {signame} ({number})"
    if not during_call:
        return f"it exited with code {exitcode}"
    return (
        f"it exited with code {exitcode} (something in the worker called os._exit() or the "
        "process was shut down from outside)"
    )
