"""The judge's end of the line to the sandboxed server (``grader.sandbox.server``).

It sends the cells and the cases' inputs, and reads the server's report as the kernel runs
(each cell's start and end, each pool call with its results), watching memory and silence from
outside. A cell that ends the kernel is recorded and the notebook runs again from the top
without it, so it costs only what depends on it. Outcomes are read back bounded.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from grader.judge.cases import Plan
from grader.judge.program import Cell, Program
from grader.learner.probe_io import Outcome
from grader.sandbox import launch as sandbox
from grader.sandbox.archive import ArchiveError, read_arrays
from grader.sandbox.launch import Limits
from grader.sandbox.server import INTERRUPT_GRACE_SECONDS

_POLL_SECONDS = 0.2
_MEMORY_CHECK_SECONDS = 0.5
_START_SECONDS = 120.0  # time the server may take to start (torch import on a busy machine)
_SILENCE_MARGIN = 15.0  # seconds the server may stay silent beyond a cell's own limit
_MAX_RUNS = 6  # runs of one notebook: the first, and one more for each cell that ended one
_CASE_BYTES = 64 * 2**20  # one case's outputs, unpacked
_CASE_ELEMENTS = 2**24  # elements of one output array


@dataclass
class TestRun:
    """What came back for one test cell."""

    ran: bool = False
    status: str = "ok"  # or how its kernel ended: "timeout", "crashed", "memory"
    visible_error: str | None = None
    outputs: dict[int, Outcome] = field(default_factory=dict)  # case index -> outcome
    records: dict[int, dict] = field(default_factory=dict)  # case index -> forbidden, tampered
    pool: dict[int, list[dict]] = field(default_factory=dict)  # case index -> the server's calls


@dataclass
class NotebookRun:
    """The whole run: tests, and what happened to cells (errors, interruptions, deaths)."""

    tests: dict[str, TestRun] = field(default_factory=dict)
    cell_errors: dict[int, str] = field(default_factory=dict)
    interrupted: list[int] = field(default_factory=list)
    ended_kernel: dict[int, str] = field(default_factory=dict)  # cell -> why


class Sandbox:
    """A running sandbox with the server in it."""

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
            message = json.loads(line)
        except ValueError:
            return None, "crashed"
        return (message, "") if isinstance(message, dict) else (None, "crashed")

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


def run_notebook(
    program: Program, plan: Plan, limits: Limits, work_dir: Path, slot: int
) -> NotebookRun:
    """Run the program's cells with the plan's hidden cases at their test cells."""
    work_dir.mkdir(parents=True, exist_ok=True)
    run = NotebookRun()
    functions = {group.grade_id: group.function for group in plan.groups.values()}
    run.tests = {grade_id: TestRun() for grade_id in functions}
    cells = list(program.cells)
    last = max((cell.number for cell in cells), default=0)
    missing = enumerate(program.missing_tests, 1)
    cells += [Cell(last + i, plan.test_sources.get(g, ""), g) for i, g in missing]
    pending = {g for g in functions if plan.groups[g].cases}
    box: Sandbox | None = None
    deadline = time.monotonic() + limits.notebook_seconds
    try:
        for _ in range(_MAX_RUNS):
            if time.monotonic() >= deadline:
                for grade_id in pending:
                    run.tests[grade_id].status = "timeout"
                run.cell_errors[0] = (
                    f"grading stopped: the notebook ran longer than {limits.notebook_seconds:g} s "
                    "in all"
                )
                break
            if box is None:
                box, why = _start(work_dir, limits, slot)
                if why:
                    for grade_id in pending:
                        run.tests[grade_id].status = "crashed"
                    run.cell_errors[0] = why
                    break
            died, box_dead = _run_once(box, cells, pending, plan, run, deadline)
            _collect(box.scratch, plan, pending, run)
            pending = {g for g in pending if not run.tests[g].ran}
            if box_dead:
                box.close()
                box = None
            if died is None:
                break
            number, why = died.get("cell"), str(died.get("why") or "crashed")
            if not isinstance(number, int):
                break  # the kernel ended between cells: nothing to leave out
            run.ended_kernel[number] = why
            test = next((cell.test for cell in cells if cell.number == number), None)
            if test in pending:
                run.tests[test].status = why
                pending.discard(test)
            cells = [cell for cell in cells if cell.number != number]
    finally:
        if box is not None:
            box.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    return run


def _start(work_dir: Path, limits: Limits, slot: int) -> tuple[Sandbox, str]:
    box = Sandbox(work_dir, limits, slot)
    ready, why = box.read_line(_START_SECONDS)
    if ready is None:
        box.close()
        detail = box.errors.read_text(errors="replace")[-600:].strip()
        return box, f"the sandbox did not start ({why}): {detail}"
    return box, ""


def _run_once(
    box: Sandbox,
    cells: list[Cell],
    pending: set[str],
    plan: Plan,
    run: NotebookRun,
    deadline: float,
) -> tuple[dict | None, bool]:
    """One run of the cells; (how the kernel died or None, whether the sandbox died too)."""
    request = {"cells": [asdict(cell) for cell in cells], "probes": {}, "scales": {}}
    for grade_id in pending:
        group = plan.groups[grade_id]
        name = f"in-{grade_id}-{secrets.token_hex(4)}.npz"
        inputs = [plan.inputs[case.name] for case in group.cases]
        arrays = {
            f"{index}/{key}": value
            for index, case_inputs in enumerate(inputs)
            for key, value in case_inputs.to_arrays().items()
        }
        np.savez(box.scratch / name, **arrays)
        os.chmod(box.scratch / name, 0o644)
        request["probes"][grade_id] = {"function": group.function, "inputs": name}
        # The pool's scale stays with the judge and the server: the kernel never sees it.
        request["scales"][grade_id] = [case_inputs.pool_scale for case_inputs in inputs]
    if not box.send(request):
        return {"why": "crashed"}, True
    limits = box.limits
    silence = max(limits.cell_seconds, limits.wall_seconds) + INTERRUPT_GRACE_SECONDS
    current: dict = {}
    while True:
        left = deadline - time.monotonic()
        message, why = box.read_line(min(silence + _SILENCE_MARGIN, max(left, 0.0)))
        if message is None:
            return {**current, "why": why}, True
        event = message.get("event")
        if event == "start":
            current = {"cell": message.get("cell"), "test": message.get("test")}
        elif event == "end":
            _record_end(message, pending, run)
            current = {}
        elif event == "pool":
            _record_pool(message, pending, run)
        elif event == "done":
            died = message.get("died")
            return (died if isinstance(died, dict) else None), False


def _record_end(message: dict, pending: set[str], run: NotebookRun) -> None:
    number, test, error = message.get("cell"), message.get("test"), message.get("error")
    if not isinstance(number, int):
        return
    if message.get("interrupted"):
        run.interrupted.append(number)
    if test in pending:
        run.tests[test].ran = True
        run.tests[test].visible_error = str(error)[:600] if error else None
    elif error and not test:
        run.cell_errors[number] = str(error)[:600]


def _record_pool(message: dict, pending: set[str], run: NotebookRun) -> None:
    test, case, call = message.get("test"), message.get("case"), message.get("call")
    if test not in pending or not isinstance(case, int) or not isinstance(call, dict):
        return
    calls = run.tests[test].pool.setdefault(case, [])
    if len(calls) < 16:
        results = call.get("results") if isinstance(call.get("results"), list) else []
        call["results"] = [_evidence_array(result) for result in results[:64]]
        calls.append(call)


def _evidence_array(value: object) -> np.ndarray | None:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array if array.size <= _CASE_ELEMENTS else None


def _collect(scratch: Path, plan: Plan, pending: set[str], run: NotebookRun) -> None:
    """Read back what the kernel wrote for pending tests, as plain data, bounded."""
    path = scratch / "out.jsonl"
    try:
        if path.is_symlink() or path.stat().st_size > 2**22:
            return
        lines = path.read_text(errors="replace").splitlines()[:4096]
    except OSError:
        return
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        test = record.get("test") if isinstance(record, dict) else None
        index = record.get("index") if isinstance(record, dict) else None
        if test not in pending or not isinstance(index, int):
            continue
        if not 0 <= index < len(plan.groups[test].cases):
            continue
        outputs = _read_outputs(scratch / f"out-{test}-{index}.npz")
        if outputs is None:
            continue
        forbidden, changed = record.get("forbidden"), record.get("tampered")
        run.tests[test].outputs[index] = outputs
        run.tests[test].records[index] = {
            "forbidden": [str(f) for f in forbidden][:20] if isinstance(forbidden, list) else [],
            "tampered": [str(c) for c in changed][:20] if isinstance(changed, list) else [],
        }


def _read_outputs(path: Path) -> Outcome | None:
    try:
        arrays = read_arrays(path, _CASE_BYTES)
    except ArchiveError:
        return None
    # Bounded numbers and texts only: nothing else an archive may hold is looked at.
    kept = {k: v for k, v in arrays.items() if v.size <= _CASE_ELEMENTS and v.dtype.kind in "fiubU"}
    return Outcome.from_arrays(kept)
