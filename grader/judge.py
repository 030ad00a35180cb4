"""The trusted judge: grades one submission from the raw outputs of its sandboxed functions.

It never runs submission code. For each graded function it hands the sandboxed probe
(``grader.probe_server``) inputs generated with a secret seed, as plain data, reads back
raw outputs as plain data and compares them with ``solutions/`` through the hidden cases
(``solutions.hidden_tests``: the same definitions the master notebook's hidden cells use).
A function that crashes, hangs, runs out of memory or floods processes loses its own
tests; the probe is restarted in a fresh sandbox for the next function.

A function whose run executed a forbidden built-in (``grader.forbidden``) scores zero on
every test that runs it, with status ``forbidden``. Every result records the seed its
inputs were drawn from, so a regrade with that seed gives the same scores and feedback.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader import sandbox
from grader.forbidden import explain as explain_forbidden
from grader.program import GRADED_FUNCTIONS, Program, read_program
from grader.sandbox import Limits

# Submission statuses, worst first: the first that applies names the submission.
STATUSES = ("forbidden", "memory", "processes", "timeout", "crashed", "invalid", "missing", "ok")
_POLL_SECONDS = 0.2
_MEMORY_CHECK_SECONDS = 0.5
_START_SECONDS = 120.0  # time the probe may take to start (torch import on a busy machine)
_SIGXCPU = getattr(signal, "SIGXCPU", 24)


@dataclass
class TestResult:
    """One nbgrader test cell (grade_id) of one submission."""

    grade_id: str
    task: int
    function: str
    points: float
    max_points: float
    status: str
    cases: list[dict] = field(default_factory=list)  # CaseResult fields

    @property
    def passed(self) -> bool:
        return self.points == self.max_points


@dataclass
class SubmissionResult:
    student: str
    assignment: str
    notebook: str
    status: str
    tests: list[TestResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed: int | None = None  # of the hidden inputs; instructor-side, never shown to learners

    @property
    def diagnoses(self) -> list[str]:
        keys = [case["diagnosis"] for test in self.tests for case in test.cases]
        return list(dict.fromkeys(key for key in keys if key))

    def score(self, task: int | None = None) -> float:
        return sum(t.points for t in self.tests if task is None or t.task == task)

    def max_score(self, task: int | None = None) -> float:
        return sum(t.max_points for t in self.tests if task is None or t.task == task)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SubmissionResult:
        tests = [TestResult(**test) for test in data.get("tests", [])]
        return cls(**{**data, "tests": tests})


@dataclass
class Plan:
    """The hidden cases of a grading run, their inputs (from ``seed``) and reference outputs."""

    groups: dict[str, Any]
    inputs: dict[str, dict]
    expected: dict[str, dict]
    seed: int

    def test_cells(self) -> dict[str, set[str]]:
        """For each graded function, the grade ids of the test cells that call it."""
        cells: dict[str, set[str]] = {}
        for group in self.groups.values():
            cells.setdefault(group.function, set()).add(group.grade_id)
        return cells

    def cases_of(self, function: str) -> list:
        return [
            case
            for group in self.groups.values()
            if group.function == function
            for case in group.cases
        ]


def new_seed() -> int:
    """A fresh secret seed for a grading run."""
    return secrets.randbits(63)


def make_plan(seed: int | None = None, cases_per_group: int | None = None) -> Plan:
    """Draw every case's inputs from ``seed`` (a new secret one if None) and compute the
    reference outputs.

    cases_per_group: keep only the first N cases of each test (trial runs, tests of the
    grader itself); full grading uses them all.
    """
    seed = new_seed() if seed is None else int(seed)
    groups = {}
    tests = hidden_tests()
    for grade_id, group in tests.GROUPS.items():
        cases = group.cases[:cases_per_group] if cases_per_group else group.cases
        groups[grade_id] = type(group)(
            group.grade_id, group.task, group.points, group.function, cases
        )
    inputs, expected = {}, {}
    for group in groups.values():
        for case in group.cases:
            inputs[case.name] = tests.case_inputs(case, seed)
            expected[case.name] = tests.expected_outputs(case, inputs[case.name])
    return Plan(groups, inputs, expected, seed)


def hidden_tests():
    """``solutions.hidden_tests``, from the repository this grader belongs to.

    Instructor-side only: the judge and the report import it; nothing that runs in the
    sandbox does (``solutions/`` is not even mounted there).
    """
    try:
        from solutions import hidden_tests as module
    except ModuleNotFoundError:
        repo = Path(__file__).resolve().parent.parent
        if not (repo / "solutions" / "hidden_tests.py").is_file():
            raise RuntimeError(
                f"the hidden tests (solutions/hidden_tests.py) are not in {repo}: grade from "
                "the instructor's copy of the repository"
            ) from None
        sys.path.insert(0, str(repo))
        from solutions import hidden_tests as module
    return module


# -- one submission -------------------------------------------------------------------------


@dataclass
class _Outcome:
    """What came back for one function: per-case outputs, and how the probe ended."""

    status: str = "ok"
    message: str = ""
    outputs: dict[str, dict] = field(default_factory=dict)
    records: dict[str, dict] = field(default_factory=dict)
    program_errors: list[str] = field(default_factory=list)


def grade_submission(
    notebook: Path,
    student: str,
    assignment: str,
    plan: Plan,
    *,
    limits: Limits,
    work_dir: Path,
    slot: int = 0,
) -> SubmissionResult:
    """Grade one submitted notebook. Always returns a result, whatever the submission does."""
    started = time.monotonic()
    result = SubmissionResult(student, assignment, Path(notebook).stem, "ok", seed=plan.seed)
    if not Path(notebook).exists():
        result.status = "missing"
        result.messages.append(f"no submitted notebook {Path(notebook).name}")
        result.tests = all_failed(plan, "missing", "no notebook was submitted")
        return result
    try:
        program = read_program(Path(notebook), plan.test_cells())
    except ValueError as error:
        result.status = "invalid"
        result.messages.append(str(error))
        result.tests = all_failed(plan, "invalid", "the notebook could not be read")
        return result

    outcomes = _run_functions(program, plan, limits, Path(work_dir), slot)
    for function, outcome in outcomes.items():
        for error in outcome.program_errors:
            message = f"while re-running what {function} needs from your notebook: {error}"
            if message not in result.messages:
                result.messages.append(message)
        unbound = [name for name in program.unbound.get(function, []) if name != function]
        if unbound and plan.cases_of(function):
            result.messages.append(
                f"{function} uses {', '.join(f'`{n}`' for n in unbound)}, which no plain "
                "statement above its tests binds (a magic, exec or globals() does not "
                "count): define it in a cell above with an ordinary statement"
            )
        if outcome.message:
            result.messages.append(f"{function}: {outcome.message}")
    result.tests = _judge(plan, outcomes)
    statuses = {test.status for test in result.tests}
    result.status = next((status for status in STATUSES if status in statuses), "ok")
    result.seconds = round(time.monotonic() - started, 2)
    return result


def all_failed(plan: Plan, status: str, message: str) -> list[TestResult]:
    tests = []
    for group in plan.groups.values():
        cases = [
            {"name": case.name, "passed": False, "message": message, "diagnosis": status}
            for case in group.cases
        ]
        tests.append(
            TestResult(group.grade_id, group.task, group.function, 0, group.points, status, cases)
        )
    return tests


def _judge(plan: Plan, outcomes: dict[str, _Outcome]) -> list[TestResult]:
    judge_case = hidden_tests().judge_case
    forbidden = _forbidden_functions(outcomes)
    tests = []
    for group in plan.groups.values():
        outcome = outcomes[group.function]
        cases = []
        for case in group.cases:
            if group.function in forbidden:
                message = f"{case.name}: not graded: " + explain_forbidden(
                    [forbidden[group.function]]
                )
                cases.append(
                    {
                        "name": case.name,
                        "passed": False,
                        "message": message,
                        "diagnosis": "forbidden",
                    }
                )
                continue
            outputs = outcome.outputs.get(case.name)
            if outputs is None:
                cases.append(
                    {
                        "name": case.name,
                        "passed": False,
                        "message": f"{case.name}: {outcome.message or 'no result'}",
                        "diagnosis": outcome.status if outcome.status != "ok" else "crashed",
                    }
                )
                continue
            record = outcome.records.get(case.name, {})
            verdict = judge_case(
                case,
                plan.inputs[case.name],
                outputs,
                record.get("pool_log"),
                expected=plan.expected[case.name],
            )
            case_result = asdict(verdict)
            if not verdict.passed:
                case_result["diagnosis"] = _resource_diagnosis(verdict.message) or (
                    verdict.diagnosis or "wrong_output"  # no catalogued mistake matched
                )
            cases.append(case_result)
        passed = all(case["passed"] for case in cases)
        status = "forbidden" if group.function in forbidden else _case_status(outcome, cases)
        tests.append(
            TestResult(
                group.grade_id,
                group.task,
                group.function,
                group.points if passed else 0,
                group.points,
                status,
                cases,
            )
        )
    return tests


def _resource_diagnosis(message: str) -> str | None:
    """ "memory" or "processes" when the learner's code died of hitting a sandbox limit."""
    if "can't allocate memory" in message or "MemoryError" in message:
        return "memory"
    if "Resource temporarily unavailable" in message:
        return "processes"
    return None


def _case_status(outcome: _Outcome, cases: list[dict]) -> str:
    for case in cases:
        if not case["passed"] and case["diagnosis"] in {"memory", "processes"}:
            return case["diagnosis"]
    return outcome.status


def _forbidden_functions(outcomes: dict[str, _Outcome]) -> dict[str, str]:
    """function -> what forbidden thing it executed (the tripwires' records)."""
    used: dict[str, str] = {}
    for function in GRADED_FUNCTIONS:
        names: list[str] = []
        for record in outcomes[function].records.values():
            names.extend(record.get("forbidden") or [])
        if names:
            used[function] = ", ".join(dict.fromkeys(names))
    # The parallel version maps attention_function over the heads: it inherits its verdict.
    if "attention_function" in used and "parallel_multihead_attention" not in used:
        used["parallel_multihead_attention"] = (
            used["attention_function"] + " (in attention_function)"
        )
    return used


# -- talking to the sandboxed probe ------------------------------------------------------------


class _Probe:
    """A running sandbox with the probe server in it."""

    def __init__(self, work_dir: Path, limits: Limits, slot: int) -> None:
        self.scratch = work_dir / f"sandbox-{secrets.token_hex(4)}"
        sandbox.prepare_scratch(
            self.scratch, slot, sandboxed=sandbox.bwrap_executable() is not None
        )
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
                    if not chunk:
                        return None, "crashed"
                    self.buffer += chunk
                    if len(self.buffer) > 2**20:
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


def _run_functions(
    program: Program, plan: Plan, limits: Limits, work_dir: Path, slot: int
) -> dict[str, _Outcome]:
    work_dir.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, _Outcome] = {}
    probe: _Probe | None = None
    try:
        for function in GRADED_FUNCTIONS:
            cases = plan.cases_of(function)
            if not cases:
                outcomes[function] = _Outcome()
                continue
            if probe is None or not probe.alive:
                probe = _Probe(work_dir, limits, slot)
                ready, why = probe.read_line(_START_SECONDS)
                if ready is None:
                    probe.close()
                    detail = probe.errors.read_text(errors="replace")[-600:].strip()
                    outcomes[function] = _Outcome(
                        "crashed", f"the sandbox did not start ({why}): {detail}"
                    )
                    probe = None
                    continue
            outcome = _probe_function(probe, function, cases, program, plan)
            outcomes[function] = outcome
            if outcome.status != "ok":
                probe.close()
    finally:
        if probe is not None:
            probe.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    return outcomes


def _probe_function(
    probe: _Probe, function: str, cases: list, program: Program, plan: Plan
) -> _Outcome:
    token = secrets.token_hex(8)
    arrays, described = {}, []
    for index, case in enumerate(cases):
        scalars = {}
        for key, value in plan.inputs[case.name].items():
            if isinstance(value, np.ndarray):
                arrays[f"{index}/{key}"] = value
            else:
                scalars[key] = value.item() if isinstance(value, np.generic) else value
        described.append({"index": index, "scalars": scalars})
    inputs_file = f"in-{token}.npz"
    np.savez(probe.scratch / inputs_file, **arrays)
    os.chmod(probe.scratch / inputs_file, 0o644)
    request = {
        "token": token,
        "function": function,
        "step_seconds": probe.limits.step_seconds,
        "program": program.steps[function],
        "inputs": inputs_file,
        "cases": described,
    }
    outcome = _Outcome()
    if not probe.send(request):
        reply, why = None, "crashed"
    else:
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


def _collect(scratch: Path, token: str, cases: list, outcome: _Outcome) -> None:
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
        if "program_errors" in record:
            outcome.program_errors = [str(e)[:600] for e in record["program_errors"] or []][:10]
            continue
        index = record.get("index")
        if not isinstance(index, int) or not 0 <= index < len(cases):
            continue
        outputs = _read_outputs(scratch / f"out-{token}-{index}.npz")
        if outputs is None:
            continue
        name = cases[index].name
        outcome.outputs[name] = outputs
        pool_log = record.get("pool_log")
        forbidden = record.get("forbidden")
        outcome.records[name] = {
            "pool_log": pool_log if isinstance(pool_log, list) else None,
            "forbidden": [str(f) for f in forbidden] if isinstance(forbidden, list) else [],
        }


def _read_outputs(path: Path) -> dict | None:
    try:
        if path.is_symlink() or path.stat().st_size > 2**28:
            return None
        with np.load(path, allow_pickle=False) as stored:
            outputs = {}
            for key in stored.files:
                value = stored[key]
                outputs[key] = str(value) if value.dtype.kind == "U" else value
            return outputs
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
    if status == "crashed":
        how = ""
        if reply is not None and reply.get("signal"):
            how = f" (signal {reply['signal']})"
        elif reply is not None and reply.get("exitcode") not in (None, 0):
            how = f" (exit code {reply['exitcode']})"
        return (
            f"the process running it ended before finishing its tests{how}: os._exit, "
            "sys.exit in a child, a crash, or killing the grader's processes."
        )
    return ""
