"""Runs inside the sandbox: the clean process that runs submitted notebooks and watches them.

Started once per submission, before any submission code exists in it (torch and IPython are
imported once, here), it takes the sandbox's user id when root and sets its limits. For each
request (a JSON line from ``grader.judge.channel``) it forks a fresh kernel
(:mod:`grader.sandbox.kernel`) that runs the notebook's cells, and relays the kernel's progress
to the judge on a channel the kernel cannot reach. It never runs submission code itself, so
what it reports is the grader's own observation:

- how each cell ended, and which ran past its time (interrupted) or ended the kernel;
- every call of a pool case's pool: the items' shapes, and the results it handed back, after
  multiplying them by the judge's scale, which only this process and the judge know. In
  "workers" mode the items are computed by processes forked from this clean one, which find
  the function by its module's name, as spawned workers do.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import selectors
import shutil
import signal
import sys
import time
from contextlib import suppress

from grader.sandbox.launch import process_tree

INTERRUPT_GRACE_SECONDS = 3.0  # after SIGINT, before the kernel is killed
EVIDENCE_LIMIT = 2**15  # elements of one pool result the judge gets back as evidence
ARCHIVE_LIMIT = 2**26  # bytes a pool archive from the kernel may hold, unpacked
_SIGXCPU = getattr(signal, "SIGXCPU", 24)


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
    set_limit(resource.RLIMIT_NPROC, limits.processes)
    set_limit(resource.RLIMIT_FSIZE, limits.file_mb * 2**20)
    set_limit(resource.RLIMIT_CORE, 0)

    # The channel is a private copy of stdout; kernels close it and write to log files.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    os.environ["IPYTHONDIR"] = "/tmp/ipython"

    import IPython.core.interactiveshell  # noqa: F401 - imported once here, for every kernel
    import numpy  # noqa: F401
    import torch

    import grader.learner.calls as calls
    import grader.learner.counting_pool as pool
    import grader.learner.forbidden as forbidden
    import grader.learner.probe as probe
    import grader.learner.probe_io as probe_io
    import grader.sandbox.kernel as kernel

    # No operator profiling here: a child forked after a profiler ran in its parent hangs.
    torch.set_num_threads(1)
    snapshot = forbidden.integrity_snapshot([forbidden, calls, probe, probe_io, pool, kernel])
    channel.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        Run(request, limits, home, channel, snapshot, in_sandbox=args.home is None).serve()
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


def set_limit(which: int, value: int) -> None:
    with suppress(ValueError, OSError):  # a platform without this limit
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def fork() -> int:
    """fork, waiting up to 10 s while processes a previous kernel left are still being reaped."""
    for _ in range(200):
        with suppress(BlockingIOError):
            return os.fork()
        time.sleep(0.05)
    return os.fork()


class Run:
    """One request: a kernel runs the cells; this process watches it and serves its pool."""

    def __init__(
        self, request: dict, limits, home: str, channel, snapshot: dict, *, in_sandbox: bool
    ) -> None:
        self.request, self.limits, self.home = request, limits, home
        self.channel, self.snapshot, self.in_sandbox = channel, snapshot, in_sandbox
        self.current: dict | None = None  # the cell running now: {"cell", "test"}
        self.before_test: set[int] = set()  # the kernel's processes when a test cell started
        self.interrupted = False
        self.timed_out = False

    def serve(self) -> None:
        work = os.path.join(self.home, "work")
        shutil.rmtree(work, ignore_errors=True)  # each run starts from the submitted notebook
        os.mkdir(work)
        to_kernel_r, to_kernel_w = os.pipe()
        from_kernel_r, from_kernel_w = os.pipe()
        pid = fork()
        if pid == 0:
            os.close(to_kernel_w)
            os.close(from_kernel_r)
            self._kernel(from_kernel_w, to_kernel_r)
        os.close(to_kernel_r)
        os.close(from_kernel_w)
        self.pid, self.replies = pid, os.fdopen(to_kernel_w, "w", buffering=1)
        finished = self._watch(from_kernel_r)
        os.close(from_kernel_r)
        status = self._reap(finished)
        stop_leftovers(self.in_sandbox)
        died = None
        if not finished:
            died = {**(self.current or {}), **status}
        self._tell({"event": "done", "died": died})

    def _kernel(self, write_fd: int, read_fd: int) -> None:
        """The forked kernel: runs submission code until it ends, then exits."""
        code = 0
        try:
            os.setpgid(0, 0)
            os.close(self.channel.fileno())  # the judge's channel is the server's alone
            log = os.open(os.path.join(self.home, "kernel.log"), os.O_WRONLY | os.O_CREAT, 0o600)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
            set_limit(resource.RLIMIT_AS, self.limits.memory_mb * 2**20)
            set_limit(resource.RLIMIT_CPU, self.limits.cpu_seconds)
            from grader.sandbox.kernel import Lines, block_solutions, run_kernel

            block_solutions()
            run_kernel(self.request, Lines(write_fd, read_fd), self.home, self.snapshot)
        except BaseException:  # noqa: BLE001 - whatever happens, the kernel ends here
            code = 3
        os._exit(code)

    def _watch(self, fd: int) -> bool:
        """Relay the kernel's lines until it finishes (True) or dies or is killed (False)."""
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        buffer = b""
        deadline = time.monotonic() + self.limits.cell_seconds
        try:
            while True:
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    message = _parse(line)
                    if message is None:
                        return False
                    if message.get("event") == "finished":
                        return True
                    deadline = self._handle(message, deadline)
                now = time.monotonic()
                if now >= deadline:
                    if self.interrupted:
                        self.timed_out = True
                        return False
                    with suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGINT)
                    self.interrupted = True
                    deadline = now + INTERRUPT_GRACE_SECONDS
                    continue
                if selector.select(deadline - now):
                    chunk = os.read(fd, 65536)
                    if not chunk or len(buffer) > 2**20:
                        return False
                    buffer += chunk
        finally:
            selector.close()

    def _handle(self, message: dict, deadline: float) -> float:
        """Act on one kernel line; returns the deadline of what runs next."""
        event = message.get("event")
        if event == "start":
            self.current = {"cell": message.get("cell"), "test": message.get("test")}
            self.interrupted = False
            if self.current["test"]:
                self.before_test = self._processes()
            self._tell({"event": "start", **self.current})
            seconds = self.limits.wall_seconds if self.current["test"] else self.limits.cell_seconds
            return time.monotonic() + seconds
        if event == "end":
            if (self.current or {}).get("test"):
                self._stop_processes_of_the_test()
            error = message.get("error")
            ended = {**(self.current or {}), "error": str(error)[:600] if error else None}
            self._tell({"event": "end", **ended, "interrupted": self.interrupted})
            self.current, self.interrupted = None, False
            return time.monotonic() + self.limits.cell_seconds
        if event == "pool":
            self._serve_pool(message, deadline)
        return deadline

    def _stop_processes_of_the_test(self) -> None:
        """Kill what the test cell's calls started and left running (a graded function that
        forks), so the tests after it start with the processes the notebook itself made."""
        for pid in self._processes() - self.before_test - {self.pid, os.getpid(), 1}:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _processes(self) -> set[int]:
        """The kernel's processes: in the sandbox's own pid namespace every process there
        (orphans are re-parented to its init), elsewhere the kernel's descendants."""
        if not self.in_sandbox:
            return set(process_tree(self.pid)[0])
        return {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}

    def _serve_pool(self, message: dict, deadline: float) -> None:
        from grader.sandbox.pool_service import serve_pool_call

        reply, evidence = serve_pool_call(message, self.request, self.home, self.limits, deadline)
        self.replies.write(json.dumps(reply) + "\n")
        if evidence is not None:
            self._tell({"event": "pool", **evidence})

    def _reap(self, finished: bool) -> dict:
        """Wait for the kernel (killing it unless it finished); how it ended."""
        if not finished:
            with suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        with suppress(OSError):
            self.replies.close()
        signaled = os.WIFSIGNALED(status)
        number = os.WTERMSIG(status) if signaled else None
        timed_out = self.timed_out or self.interrupted or number == _SIGXCPU
        why = "timeout" if timed_out else "crashed"
        exitcode = None if signaled else os.WEXITSTATUS(status)
        return {"why": why, "exitcode": exitcode, "signal": None if self.timed_out else number}

    def _tell(self, message: dict) -> None:
        self.channel.write(json.dumps(message) + "\n")


def _parse(line: bytes) -> dict | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def stop_leftovers(in_sandbox: bool) -> None:
    """Kill what the kernel left running, so the next run starts on a clean slate."""
    if not in_sandbox:
        return  # outside a pid namespace the kernel's own group was killed above
    # Own pid namespace: everything but its init (1) and this process is the kernel's.
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, os.getpid()):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
    with suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


if __name__ == "__main__":
    sys.exit(main())
