"""Runs inside the sandbox: serves the judge's requests to run a submission's graded functions.

Started once per submission (torch is imported once), it takes the sandbox's user id when root
and sets its limits. For each request (a JSON line from ``grader.judge.channel``) it forks a
fresh child that replays the function's program in a fresh ``__main__``, as a notebook kernel
would, and probes each case, writing plain data (.npz, JSON; no pickle) case by case, so a hang
keeps the cases before it. How the child ended goes back on a channel children cannot reach.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import sys
import time
import types
from contextlib import suppress

OUTPUT_LIMIT = 64 * 2**20  # bytes of output arrays per case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.sandbox.server")
    parser.add_argument("--limits", required=True, help="the sandbox's Limits, as JSON")
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--home", default=None)
    args = parser.parse_args(argv)

    from grader.sandbox.launch import SANDBOX_HOME, Limits

    limits = Limits(**json.loads(args.limits))
    home = os.path.abspath(args.home or SANDBOX_HOME)
    if args.uid is not None:
        _become(args.uid)
    _harden()
    _set_limit(resource.RLIMIT_NPROC, limits.processes)
    _set_limit(resource.RLIMIT_FSIZE, limits.file_mb * 2**20)
    _set_limit(resource.RLIMIT_CORE, 0)

    # The channel is a private copy of stdout; children get their own stdout/stderr files.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)

    import numpy  # noqa: F401 - imported once here, inherited by every child
    import torch

    import grader.learner.probe  # noqa: F401

    # No operator profiling here: a child forked after a profiler ran in its parent hangs.
    torch.set_num_threads(1)
    channel.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        channel.write(json.dumps(_serve(request, limits, home, args.home is None)) + "\n")
    return 0


def _become(uid: int) -> None:
    """Root in the sandbox: take the sandbox's own unprivileged user id, for good."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("could not switch to the sandbox user")


def _harden() -> None:
    """No privilege gains on exec; children may not read this process's memory or files."""
    with suppress(OSError, AttributeError):  # not Linux: nothing to harden
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


def _set_limit(which: int, value: int) -> None:
    with suppress(ValueError, OSError):  # a platform without this limit
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def _serve(request: dict, limits, home: str, in_sandbox: bool) -> dict:
    pid = _fork()
    if pid == 0:
        code = 0
        try:
            _child(request, limits, home)
        except BaseException:  # noqa: BLE001 - whatever happens, the child ends here
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    _stop_leftovers(pid, in_sandbox)
    signaled = os.WIFSIGNALED(status)
    return {
        "token": request["token"],
        "exitcode": None if signaled else os.WEXITSTATUS(status),
        "signal": os.WTERMSIG(status) if signaled else None,
    }


def _fork() -> int:
    """fork, waiting up to 10 s while processes a previous child left are still being reaped."""
    for _ in range(200):
        with suppress(BlockingIOError):
            return os.fork()
        time.sleep(0.05)
    return os.fork()


def _stop_leftovers(child: int, in_sandbox: bool) -> None:
    """Kill what the child left running, so the next function starts on a clean slate."""
    if not in_sandbox:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child, signal.SIGKILL)
        return
    # Own pid namespace: everything but its init (1) and this process is the child's.
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, os.getpid()):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)


# -- the child: runs submission code ---------------------------------------------------------


def _child(request: dict, limits, home: str) -> None:
    os.setpgid(0, 0)
    token = request["token"]
    log = os.open(os.path.join(home, f"log-{token}.txt"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    _set_limit(resource.RLIMIT_AS, limits.memory_mb * 2**20)
    _set_limit(resource.RLIMIT_CPU, limits.cpu_seconds)
    os.chdir(home)
    sys.path.insert(0, home)

    import numpy as np

    # Case i's inputs are stored as "i/<name>"; scalars as 0-d arrays.
    cases: dict[int, dict] = {}
    with np.load(os.path.join(home, request["inputs"]), allow_pickle=False) as stored:
        for key in stored.files:
            index, _, name = key.partition("/")
            value = stored[key]
            cases.setdefault(int(index), {})[name] = value.item() if value.ndim == 0 else value
    results = open(os.path.join(home, f"out-{token}.jsonl"), "w", buffering=1)  # noqa: SIM115
    _block_solutions()

    writer = os.getpid()
    program_errors = _run_program(request["program"], home, limits.step_seconds)
    if os.getpid() != writer:
        os._exit(0)
    results.write(json.dumps({"program_errors": program_errors}) + "\n")
    name = request["function"]
    function = sys.modules["__main__"].__dict__.get(name)
    for index, inputs in sorted(cases.items()):
        outputs, record = _run_case(function, name, inputs)
        if os.getpid() != writer:
            os._exit(0)  # a copy the submission forked came back here: only the child reports
        path = os.path.join(home, f"out-{token}-{index}.npz")
        np.savez(path + ".tmp.npz", **_storable(outputs))
        os.replace(path + ".tmp.npz", path)
        results.write(json.dumps({**record, "index": index}) + "\n")


# Attempts to import ``solutions`` made by this child (its program or its calls).
_ATTEMPTS: list[str] = []


def _block_solutions() -> None:
    """Importing ``solutions`` fails in the sandbox anyway; record that it was tried."""

    class _Solutions:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split(".")[0] == "solutions":
                _ATTEMPTS.append(f"import {name}")
                raise ImportError("solutions are not available to submissions")
            return None

    sys.meta_path.insert(0, _Solutions)


class _StepTooLong(BaseException):
    """A replayed statement ran past its time (a training run, a download)."""


def _run_program(steps: list[dict], home: str, seconds: float) -> list[str]:
    """Replay the function's program in a fresh ``__main__``, as a notebook kernel would."""
    from grader.learner.probe import describe_exception, quiet

    main_module = types.ModuleType("__main__")
    main_module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main_module
    errors = []

    def too_long(signum, frame):
        raise _StepTooLong()

    signal.signal(signal.SIGALRM, too_long)
    for step in steps:
        if "file" in step:
            with open(os.path.join(home, os.path.basename(step["file"])), "w") as handle:
                handle.write(step["source"])
            continue
        quoted = " ".join(step["source"].split())
        quoted = quoted if len(quoted) <= 60 else quoted[:57] + "..."
        try:
            code = compile(step["source"], f"<{step['where']}>", "exec")
            signal.setitimer(signal.ITIMER_REAL, seconds)
            with quiet():
                exec(code, main_module.__dict__)
        except _StepTooLong:
            errors.append(
                f"{step['where']} (`{quoted}`) ran longer than {seconds:g} s, so it was "
                "stopped: the grader re-runs only the statements that bind names your "
                "function uses, and does not train or load data; bind what the function "
                "needs in a quick statement of its own"
            )
        except BaseException as error:  # noqa: BLE001 - a broken statement must not stop the others
            errors.append(f"{step['where']} (`{quoted}`): {describe_exception(error)}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return errors


def _run_case(function, name: str, inputs: dict) -> tuple[dict, dict]:
    """(plain-data outputs of grader.learner.probe.probe_case, JSON record) for one case."""
    from grader.learner.probe import probe_case

    if not callable(function):
        error = f"NameError: {name} is not defined (or not a function)"
        return {"error": error}, {"forbidden": [], "pool_log": None}
    result = probe_case(inputs, function)
    forbidden = result.forbidden + list(dict.fromkeys(_ATTEMPTS))
    return result.outputs, {"forbidden": forbidden, "pool_log": result.pool_log}


def _storable(outputs: dict) -> dict:
    """Arrays as they are, strings as numpy strings: an .npz that loads without pickle."""
    import numpy as np

    stored, size = {}, 0
    for key, value in outputs.items():
        array = np.array(value[:2000]) if isinstance(value, str) else np.asarray(value)
        if array.dtype == object:
            continue
        size += array.nbytes
        if size > OUTPUT_LIMIT:
            return {"error": np.array("ValueError: the outputs are too large")}
        stored[key] = array
    return stored


if __name__ == "__main__":
    sys.exit(main())
