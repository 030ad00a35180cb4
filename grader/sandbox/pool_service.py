"""The server's side of a pool case's pool: what the judge learns about each ``map`` call.

The kernel asks; this module, running in the clean server, answers. In "inline" mode the kernel
has computed the items itself and hands over the raw results; in "workers" mode a process forked
from the server imports the mapped function by its module's name and computes them, watched by
the forbidden-operator tripwires. Either way the results are multiplied by the judge's scale
for the case (which the kernel never sees), written back for the kernel, and recorded as
evidence: the call's description and the results exactly as returned.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time
from contextlib import suppress

import numpy as np

from grader.sandbox.archive import ArchiveError, read_arrays
from grader.sandbox.server import ARCHIVE_LIMIT, EVIDENCE_LIMIT, fork, set_limit


class PoolError(Exception):
    """A pool call the server could not serve; the kernel's map raises with this message."""


def serve_pool_call(
    message: dict, request: dict, home: str, limits, deadline: float
) -> tuple[dict, dict | None]:
    """(reply to the kernel, evidence for the judge or None)."""
    test, case, stem = message.get("test"), message.get("case"), str(message.get("stem", ""))
    scales = request.get("scales", {}).get(test)
    if not isinstance(scales, list) or not isinstance(case, int) or not 0 <= case < len(scales):
        return {"error": "this pool belongs to no case being graded"}, None
    if not stem.replace("-", "").replace("_", "").isalnum():
        return {"error": "bad pool call"}, None
    call = message.get("call") if isinstance(message.get("call"), dict) else {}
    forbidden: list[str] = []
    workers = message.get("mode") == "workers"
    if workers and not call.get("importable"):
        refused = (
            f"Worker processes cannot import the mapped function: {call.get('why_not_importable')}"
            ". Define it in a module (e.g. with %%writefile my_transformer_model.py) and import it."
        )
        evidence = {"test": test, "case": case, "call": {**_described(call), "results": []}}
        return {"refused": refused}, evidence
    try:
        if workers:
            star = bool(message.get("star"))
            raw, forbidden = _compute_in_worker(call, stem, star, home, limits, deadline)
        else:
            raw = read_archive(os.path.join(home, f"{stem}-raw.npz"))
    except PoolError as error:
        return {"error": str(error)}, None
    n_items = int(call.get("n_items", 0) or 0)
    scale = float(scales[case])
    returned = {
        key: (value.astype(np.float64) * scale).astype(value.dtype)
        for key, value in raw.items()
        if key.isdigit() and int(key) < n_items and value.dtype.kind == "f"
    }
    np.savez(os.path.join(home, f"{stem}-returned.npz"), **returned)
    results = [
        returned[str(i)].astype(np.float64).tolist()
        if str(i) in returned and returned[str(i)].size <= EVIDENCE_LIMIT
        else None
        for i in range(min(n_items, 64))
    ]
    evidence = {
        "test": test,
        "case": case,
        "call": {**_described(call), "results": results, "forbidden": forbidden},
    }
    return {"ok": True}, evidence


def _described(call: dict) -> dict:
    """The kernel's description of the call, kept to plain, bounded fields."""
    fields = ("method", "function", "module", "importable", "why_not_importable", "n_items")
    described = {name: call.get(name) for name in fields}
    items = call.get("items")
    described["items"] = items[:64] if isinstance(items, list) else []
    if len(json.dumps(described)) > 2**16:  # descriptions are small: this one is not honest
        described["items"] = []
    return described


def read_archive(path: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz the kernel wrote, within ARCHIVE_LIMIT bytes."""
    try:
        return read_arrays(path, ARCHIVE_LIMIT)
    except ArchiveError as error:
        raise PoolError(f"the pool's data could not be read: {error}") from None


def _compute_in_worker(
    call: dict, stem: str, star: bool, home: str, limits, deadline: float
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fork a clean worker that imports the function by name and computes every item."""
    module, function = str(call.get("module", "")), str(call.get("function", ""))
    read_fd, write_fd = os.pipe()
    pid = fork()
    if pid == 0:
        os.close(read_fd)
        code = 0
        try:
            _worker(module, function, stem, star, home, limits, write_fd)
        except BaseException:  # noqa: BLE001 - the worker ends here whatever happens
            code = 3
        os._exit(code)
    os.close(write_fd)
    report = _read_report(read_fd, deadline)
    os.close(read_fd)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if report is None:
        raise PoolError("the pool's worker gave no result in time (or died computing it)")
    if report.get("error"):
        raise PoolError(str(report["error"])[:600])
    forbidden = [str(name) for name in report.get("forbidden", [])][:20]
    return read_archive(os.path.join(home, f"{stem}-raw.npz")), forbidden


def _read_report(fd: int, deadline: float) -> dict | None:
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    data = b""
    try:
        while b"\n" not in data and len(data) < 2**16:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        selector.close()
    try:
        report = json.loads(data.partition(b"\n")[0])
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def _worker(
    module: str, function: str, stem: str, star: bool, home: str, limits, write_fd: int
) -> None:
    """In the forked worker: a spawned worker's view (the function by module name), one torch
    thread, the tripwires armed around each call."""
    import importlib
    import sys
    import types

    import torch

    from grader.learner.calls import describe_exception, quiet, tripwires

    out = os.fdopen(write_fd, "w", buffering=1)
    set_limit(resource.RLIMIT_AS, limits.memory_mb * 2**20)
    set_limit(resource.RLIMIT_CPU, limits.cpu_seconds)
    os.chdir(os.path.join(home, "work"))
    sys.path.insert(0, os.getcwd())
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        items = _items(read_archive(os.path.join(home, f"{stem}-items.npz")))
        target = importlib.import_module(module)
        for part in function.split("."):
            target = getattr(target, part)
        wires, results = tripwires(), {}
        with quiet(), wires.armed():
            for i, item in enumerate(items):
                value = target(*item) if star else target(item)
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    results[str(i)] = value.detach().cpu().numpy()
        np.savez(os.path.join(home, f"{stem}-raw.npz"), **results)
        out.write(json.dumps({"forbidden": wires.take()}) + "\n")
    except BaseException as error:  # noqa: BLE001 - the learner's function may raise anything
        out.write(json.dumps({"error": describe_exception(error)}) + "\n")


def _items(arrays: dict[str, np.ndarray]) -> list:
    """The kernel's items back as tensors, numbers and tuples (see kernel._save_items)."""
    import torch

    items: dict[int, dict] = {}
    for key, value in arrays.items():
        index, _, part = key.partition("/")
        items.setdefault(int(index), {})[part] = value
    rebuilt = []
    for index in sorted(items):
        parts, kind = items[index], str(items[index].get("kind", "one"))
        values = []
        for j in range(len(parts)):
            if str(j) not in parts:
                break
            value = parts[str(j)]
            values.append(
                torch.from_numpy(value.copy()) if f"{j}.tensor" in parts else json.loads(str(value))
            )
        rebuilt.append(tuple(values) if kind == "tuple" else values[0])
    return rebuilt
