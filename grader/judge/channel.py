"""The judge's end of the line to the sandboxed probe server (``grader.sandbox.server``).

For each graded function it starts a sandbox when none is alive, sends the function's program
and its cases' inputs as plain data, waits within the wall-clock limit while watching the
sandbox's memory from outside, and reads back the raw outputs, trusting nothing but their
shape. A function that crashes, hangs, runs out of memory or floods processes ends its
sandbox; the next function gets a fresh one.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader.judge.program import GRADED_FUNCTIONS, Program
from grader.sandbox import launch as sandbox
from grader.sandbox.launch import Limits

_POLL_SECONDS = 0.2
_MEMORY_CHECK_SECONDS = 0.5
_START_SECONDS = 120.0  # time the probe may take to start (torch import on a busy machine)
_SIGXCPU = getattr(signal, "SIGXCPU", 24)


@dataclass
class FunctionRun:
    """What came back for one function: per-case outputs, and how the probe ended."""

    status: str = "ok"
    message: str = ""
    outputs: dict[str, dict] = field(default_factory=dict)
    records: dict[str, dict] = field(default_factory=dict)
    program_errors: list[str] = field(default_factory=list)


class _Probe:
    """A running sandbox with the probe server in it."""

    def __init__(self, work_dir: Path, limits: Limits, slot: int) -> None:
        self.scratch = work_dir / f"sandbox-{secrets.token_hex(4)}"
        self.limits = limits
        self.errors = work_dir / f"{self.scratch.name}.stderr"
        self.process = sandbox.start(self.scratch, limits, slot, self.errors)
        self.buffer = b""
        self.alive = True

    def read_line(self, timeout: float) -> tuple[dict | None, str]:
        """(message, "") or (None, why: "timeout" | "memory" | "crashed")."""
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        fd = self.process.stdout.fileno()
        next_check = 0.0
        try:
            while b"\n" not in self.buffer:
                now = time.monotonic()
                if now >= deadline:
                    return None, "timeout"
                if selector.select(min(_POLL_SECONDS, deadline - now)):
                    chunk = os.read(fd, 65536)
                    self.buffer += chunk
                    if not chunk or len(self.buffer) > 2**20:
                        return None, "crashed"
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + _MEMORY_CHECK_SECONDS
                    if sandbox.memory_in_use(self.process.pid) > self.limits.memory_mb * 2**20:
                        return None, "memory"
        finally:
            selector.close()
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            return json.loads(line), ""
        except ValueError:
            return None, "crashed"

    def send(self, message: dict) -> bool:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        if self.alive:
            self.send({"quit": True})
            sandbox.kill(self.process)
            self.alive = False


def run_functions(
    program: Program, plan: Any, limits: Limits, work_dir: Path, slot: int
) -> dict[str, FunctionRun]:
    """Run each graded function's cases in a sandbox; a fresh one after any that failed."""
    work_dir.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, FunctionRun] = {}
    probe: _Probe | None = None
    try:
        for function in GRADED_FUNCTIONS:
            cases = plan.cases_of(function)
            if not cases:
                outcomes[function] = FunctionRun()
                continue
            if probe is None or not probe.alive:
                probe = _Probe(work_dir, limits, slot)
                ready, why = probe.read_line(_START_SECONDS)
                if ready is None:
                    probe.close()
                    detail = probe.errors.read_text(errors="replace")[-600:].strip()
                    message = f"the sandbox did not start ({why}): {detail}"
                    outcomes[function] = FunctionRun("crashed", message)
                    continue
            outcomes[function] = _probe_function(probe, function, cases, program, plan)
            if outcomes[function].status != "ok":
                probe.close()
    finally:
        if probe is not None:
            probe.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    return outcomes


def _probe_function(
    probe: _Probe, function: str, cases: list, program: Program, plan: Any
) -> FunctionRun:
    token = secrets.token_hex(8)
    inputs_file = probe.scratch / f"in-{token}.npz"
    # Case i's inputs as "i/<name>", scalars as 0-d arrays: an .npz that loads without pickle.
    arrays = {
        f"{index}/{name}": np.asarray(value)
        for index, case in enumerate(cases)
        for name, value in plan.inputs[case.name].items()
    }
    np.savez(inputs_file, **arrays)
    os.chmod(inputs_file, 0o644)
    request = {
        "token": token,
        "function": function,
        "program": program.steps[function],
        "inputs": inputs_file.name,
    }
    outcome = FunctionRun()
    reply, why = None, "crashed"
    if probe.send(request):
        reply, why = probe.read_line(probe.limits.wall_seconds)
        if reply is not None and reply.get("token") != token:
            reply, why = None, "crashed"
    if reply is None:
        probe.close()
        outcome.status = why
    elif reply.get("signal") == _SIGXCPU:
        outcome.status = "timeout"
    _collect(probe.scratch, token, cases, outcome)
    if outcome.status == "ok" and len(outcome.outputs) < len(cases):
        outcome.status = "crashed"
    outcome.message = _explain(outcome.status, probe.limits, reply)
    return outcome


def _collect(scratch: Path, token: str, cases: list, outcome: FunctionRun) -> None:
    """Read back what the child wrote, as plain data, trusting nothing but its shape."""
    path = scratch / f"out-{token}.jsonl"
    try:
        if path.is_symlink() or path.stat().st_size > 2**22:
            return
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("program_errors"), list):
            outcome.program_errors = [str(e)[:600] for e in record["program_errors"]][:10]
        index = record.get("index")
        if not isinstance(index, int) or not 0 <= index < len(cases):
            continue
        outputs = _read_outputs(scratch / f"out-{token}-{index}.npz")
        if outputs is not None:
            pool_log, forbidden = record.get("pool_log"), record.get("forbidden")
            outcome.outputs[cases[index].name] = outputs
            outcome.records[cases[index].name] = {
                "pool_log": pool_log if isinstance(pool_log, list) else None,
                "forbidden": [str(f) for f in forbidden] if isinstance(forbidden, list) else [],
            }


def _read_outputs(path: Path) -> dict | None:
    try:
        if path.is_symlink() or path.stat().st_size > 2**28:
            return None
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        return {
            key: str(value) if value.dtype.kind == "U" else value for key, value in arrays.items()
        }
    except Exception:  # noqa: BLE001 - a damaged file is no output, never a judge failure
        return None


def _explain(status: str, limits: Limits, reply: dict | None) -> str:
    if status == "timeout":
        return (
            f"stopped: it ran longer than {limits.wall_seconds:g} s (wall clock) or "
            f"{limits.cpu_seconds} s of CPU time. Look for an endless loop."
        )
    if status == "memory":
        return f"stopped: it used more than {limits.memory_mb} MiB of memory."
    if status != "crashed":
        return ""
    how = ""
    if reply is not None and reply.get("signal"):
        how = f" (signal {reply['signal']})"
    elif reply is not None and reply.get("exitcode") not in (None, 0):
        how = f" (exit code {reply['exitcode']})"
    return (
        f"the process running it ended before finishing its tests{how}: os._exit, "
        "sys.exit in a child, a crash, or killing the grader's processes."
    )
