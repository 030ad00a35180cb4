"""The grading kernel: a submitted notebook run top to bottom in a real IPython shell.

Forked by :mod:`grader.sandbox.server` from its clean state, it runs every code cell it is sent
in order, as Jupyter would (magics, ``!`` escapes, ``%%writefile``, mutation, files written by
code, later rebinding), and at each test cell the cell's visible part and then the hidden
cases, on the function the notebook has bound at that moment. Nothing here is trusted: it runs
after submission code, so it only produces raw outputs (files) and progress lines for the
server; the judge decides. Pool cases get a :class:`ServerPool`, whose results pass through
the server, which keeps what the judge needs to know about them.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from grader.learner.calls import describe_exception, tripwires
from grader.learner.counting_pool import PoolMethods, describe_call
from grader.learner.probe import probe_case
from grader.learner.probe_io import CaseInputs, Outcome

# Result tensors larger than this are not sent through the server's pool (elements).
POOL_RESULT_LIMIT = 2**20


class Lines:
    """JSON lines over a pair of pipes: ``send`` to the server, ``ask`` for its reply."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.out = os.fdopen(write_fd, "w", buffering=1)
        self.replies = os.fdopen(read_fd, "r")
        self.owner = os.getpid()

    def send(self, message: dict) -> None:
        self.quit_if_a_copy()
        self.out.write(json.dumps(message) + "\n")

    def quit_if_a_copy(self) -> None:
        """A process the submission forked from the kernel, come back to the kernel's code,
        ends here: only the kernel speaks to the server and writes results."""
        if os.getpid() != self.owner:
            os._exit(0)

    def ask(self, message: dict) -> dict:
        self.send(message)
        line = self.replies.readline()
        if not line:
            raise RuntimeError("the grader's pool did not answer")
        return json.loads(line)


# Attempts to import ``solutions`` made by the notebook or its functions.
_SOLUTION_IMPORTS: list[str] = []


def block_solutions() -> None:
    """Importing ``solutions`` fails in the sandbox anyway (it is not mounted); record that it
    was tried, so that the verdict says so."""

    class _Solutions:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split(".")[0] == "solutions":
                _SOLUTION_IMPORTS.append(f"import {name}")
                raise ImportError("solutions are not available to submissions")
            return None

    sys.meta_path.insert(0, _Solutions)


def make_shell():
    """An IPython shell as a notebook kernel has it, without a GUI or a history file."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class GradingShell(InteractiveShell):
        def enable_gui(self, gui=None):  # no event loop while grading: figures stay inline
            return None

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    return GradingShell.instance(config=config)


def run_kernel(request: dict, lines: Lines, home: str, snapshot: dict) -> None:
    """Run the request's cells; see the module docstring. ``home``: the grader's folder, where
    case inputs are read and outputs written; cells run in ``home/work``."""
    from grader.learner.forbidden import tampered

    os.environ["NBGRADER_EXECUTION"] = "autograde"  # the notebook's own switch: quick, no AWS
    os.chdir(os.path.join(home, "work"))
    sys.path.insert(0, os.getcwd())
    shell = make_shell()
    probes = request.get("probes", {})
    results = open(os.path.join(home, "out.jsonl"), "a", buffering=1)  # noqa: SIM115
    # Attempts to import solutions, by whom: a graded function's own cell, or "*" (any other
    # cell, which every function may have used).
    attempts: dict[str, list[str]] = {}
    for cell in request["cells"]:
        test = cell.get("test")
        lines.send({"event": "start", "cell": cell["number"], "test": test})
        before = len(_SOLUTION_IMPORTS)
        error = _run_cell(shell, cell["source"])
        attempts.setdefault(cell.get("answer") or "*", []).extend(_SOLUTION_IMPORTS[before:])
        if test in probes:
            function = probes[test]["function"]
            for index, inputs in enumerate(_case_inputs(home, probes[test])):
                fn = shell.user_ns.get(function)
                pool = ServerPoolFactory(lines, test, index)
                before = len(_SOLUTION_IMPORTS)
                outcome = _probe(inputs, fn, function, pool)
                lines.quit_if_a_copy()
                np.savez(os.path.join(home, f"out-{test}-{index}.npz"), **outcome.to_arrays())
                forbidden = outcome.forbidden
                changed = tampered(snapshot, (tripwires(),))
                tried = attempts.get(function, []) + attempts.get("*", [])
                forbidden += list(dict.fromkeys(tried + _SOLUTION_IMPORTS[before:]))
                record = {"test": test, "index": index, "forbidden": forbidden}
                results.write(json.dumps({**record, "tampered": changed}) + "\n")
        lines.send({"event": "end", "cell": cell["number"], "test": test, "error": error})
    lines.send({"event": "finished"})


def _run_cell(shell, source: str) -> str | None:
    """Run one cell as Jupyter would; "Type: message" when it raised, else None."""
    result = shell.run_cell(source, store_history=True)
    error = result.error_before_exec or result.error_in_exec
    return describe_exception(error) if error is not None else None


def _probe(inputs: CaseInputs, fn: Any, name: str, make_pool: Callable) -> Outcome:
    if not callable(fn):
        return Outcome(error=f"NameError: {name} is not defined (or not a function)")
    return probe_case(inputs, fn, make_pool=make_pool)


def _case_inputs(home: str, probe: dict) -> list[CaseInputs]:
    """Each case's inputs from the judge's .npz ("i/<name>")."""
    cases: dict[int, dict] = {}
    with np.load(os.path.join(home, probe["inputs"]), allow_pickle=False) as stored:
        for key in stored.files:
            index, _, name = key.partition("/")
            cases.setdefault(int(index), {})[name] = stored[key]
    return [CaseInputs.from_arrays(cases[index]) for index in sorted(cases)]


# -- the pool of pool cases ----------------------------------------------------------------


class ServerPoolFactory:
    """``make_pool`` for one case: every pool it makes sends its work through the server."""

    def __init__(self, lines: Lines, test: str, index: int) -> None:
        self.lines, self.test, self.index = lines, test, index

    def __call__(self, mode: str) -> ServerPool:
        return ServerPool(self, mode)


class ServerPool(PoolMethods):
    """Pool-like ``map`` whose results come back through the server, which records the call,
    applies the judge's scale and, in "workers" mode, computes the items in clean processes
    of its own that find the function by its module's name (as spawned workers would)."""

    def __init__(self, factory: ServerPoolFactory, mode: str) -> None:
        self.factory, self.mode = factory, mode
        self.calls = 0

    def log(self) -> list:
        return []  # the judge reads the server's record, never this process's

    def _run(self, method: str, func: Callable, items: list, star: bool = False) -> list:
        call = describe_call(method, func, items)
        self.calls += 1
        stem = f"pool-{self.factory.test}-{self.factory.index}-{self.calls}"
        folder = os.path.dirname(os.getcwd())
        if self.mode == "workers":
            if call.importable:  # an unimportable function is refused by the server, as Pool would
                _save_items(os.path.join(folder, f"{stem}-items.npz"), items)
            raw = None
        else:
            raw = [func(*item) if star else func(item) for item in items]
            _save_results(os.path.join(folder, f"{stem}-raw.npz"), raw)
        reply = self.factory.lines.ask(
            {
                "event": "pool",
                "test": self.factory.test,
                "case": self.factory.index,
                "stem": stem,
                "mode": self.mode,
                "star": star,
                "call": asdict(call),
            }
        )
        if reply.get("refused"):
            raise pickle.PicklingError(reply["refused"])
        if reply.get("error"):
            raise RuntimeError(reply["error"])
        returned = _load_results(os.path.join(folder, f"{stem}-returned.npz"), len(items))
        if raw is not None:  # what was no tensor comes back as the function returned it
            pairs = zip(returned, raw, strict=True)
            returned = [r if isinstance(x, torch.Tensor) else x for r, x in pairs]
        return returned


def _save_items(path: str, items: list) -> None:
    """Items as "i/j" arrays (part j of item i) plus "i/kind"; tensors, numbers, tuples."""
    arrays: dict[str, np.ndarray] = {}
    for i, item in enumerate(items):
        parts = item if isinstance(item, (tuple, list)) else (item,)
        arrays[f"{i}/kind"] = np.array("tuple" if isinstance(item, (tuple, list)) else "one")
        for j, part in enumerate(parts):
            if isinstance(part, torch.Tensor):
                arrays[f"{i}/{j}"] = part.detach().cpu().numpy()
                arrays[f"{i}/{j}.tensor"] = np.array(True)
            elif isinstance(part, (bool, int, float)) or part is None:
                arrays[f"{i}/{j}"] = np.array(json.dumps(part))
            else:
                raise pickle.PicklingError(
                    f"the grader's pool sends tensors, numbers and tuples of them; item {i} "
                    f"holds a {type(part).__name__}"
                )
    np.savez(path, **arrays)


def _save_results(path: str, results: list) -> None:
    arrays = {}
    for i, result in enumerate(results):
        if isinstance(result, torch.Tensor) and result.numel() <= POOL_RESULT_LIMIT:
            arrays[str(i)] = result.detach().cpu().numpy()
    np.savez(path, **arrays)


def _load_results(path: str, count: int) -> list:
    with np.load(path, allow_pickle=False) as stored:
        found = {int(key): torch.from_numpy(stored[key].copy()) for key in stored.files}
    return [found.get(i) for i in range(count)]
