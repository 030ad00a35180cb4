"""Run a submission's code in a bubblewrap sandbox, bounded in memory, CPU, processes and time.

The sandboxed process sees the system, the Python installation and the public ``former`` and
``grader`` packages, read-only; its scratch folder as ``/home/learner`` (the one writable
place) and a private ``/tmp``; no network, none of the grader's environment variables. The
course, ``solutions/``, the gradebook and other submissions are not mounted. The kernel counts
RLIMIT_NPROC per user id and not for root, so a root grader runs each parallel job as a user
id of its own; memory and wall clock are also watched from outside. Without bwrap, code runs
with the resource limits only, after a loud warning: fine for a trial run, not for a class.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

SANDBOX_HOME = "/home/learner"
# RLIMIT_NPROC is counted per user id: one id per parallel job bounds one sandbox, not the class.
FIRST_SANDBOX_UID = 61000

_SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": SANDBOX_HOME,
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MPLBACKEND": "Agg",
}


@dataclass(frozen=True)
class Limits:
    """Resource bounds for one sandbox (a submission's probe processes)."""

    memory_mb: int = 4096  # address space per process, and resident memory of the whole tree
    cpu_seconds: int = 120  # CPU time per process
    processes: int = 64  # processes and threads of the sandbox's user id
    wall_seconds: float = 60.0  # wall clock for one test cell: its visible part and hidden cases
    file_mb: int = 256  # largest file a process may write
    cell_seconds: float = 30.0  # wall clock for each other notebook cell
    notebook_seconds: float = 600.0  # wall clock for a whole submission, every run of it


def bwrap_executable() -> str | None:
    """Path of bubblewrap, or None where it is missing (or the platform is not Linux)."""
    return shutil.which("bwrap") if sys.platform.startswith("linux") else None


_UNSANDBOXED = f"""
{"!" * 78}
WARNING: bubblewrap (bwrap) is not available, so submissions run WITHOUT a sandbox:
they can read and write your files and reach the network. Only resource limits
apply. Grade a class on Linux with bubblewrap installed (apt install bubblewrap).
{"!" * 78}"""
_warned = False


def warn_unsandboxed() -> None:
    """Say loudly, once, that submissions will run with resource limits only."""
    global _warned
    if not _warned:
        _warned = True
        print(_UNSANDBOXED, file=sys.stderr)
        warnings.warn("grading without a sandbox (bwrap not found)", RuntimeWarning, stacklevel=2)


def sandbox_uid(slot: int) -> int | None:
    """User id the sandbox of parallel job ``slot`` runs as; None keeps the grader's own."""
    return FIRST_SANDBOX_UID + slot if os.geteuid() == 0 else None


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    # The dynamic loader's cache and Debian's alternatives links, nothing else from /etc.
    for name in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"):
        args += ["--ro-bind-try", name, name]
    # CPU topology, read by torch's thread-pool set-up.
    return args + ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]


def bwrap_command(command: list[str], scratch: Path, slot: int) -> list[str]:
    """The bwrap command line that runs ``command`` with only ``scratch`` writable."""
    bwrap = bwrap_executable()
    if bwrap is None:
        raise RuntimeError("bwrap is not available; install bubblewrap (apt install bubblewrap)")
    args = [bwrap, "--die-with-parent", "--new-session", "--clearenv"]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--hostname", "sandbox"]
    if sandbox_uid(slot) is None:
        # Unprivileged: a user namespace, in which RLIMIT_NPROC counts this sandbox only.
        args += ["--unshare-user"]
    else:
        # Root: only the capabilities the probe needs to switch to the sandbox's user id,
        # which it does before any submission code runs.
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    args += _system_binds()
    # The private /tmp comes first, so an environment or checkout under /tmp (a CI clone)
    # is bound on top of it rather than hidden by it.
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--tmpfs", "/dev/shm", "--perms", "1777", "--tmpfs", "/tmp"]
    # The environment, the installation it was made from, and the repository's public
    # packages where the installed finder expects them.
    python = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    repo = Path(__file__).resolve().parents[2]
    packages = [path for path in (repo / "former", repo / "grader") if path.is_dir()]
    mounted = sorted(root for root in python if root.exists()) + packages
    # Folders bwrap creates on the way to a mount point default to 0700: readable by root
    # only, and the probe is not root for long.
    already_there = {Path("/"), Path("/tmp"), Path("/dev"), Path("/dev/shm"), Path("/proc")}
    parents = {p for path in [*mounted, Path(SANDBOX_HOME)] for p in path.parents} - already_there
    for parent in sorted(parents, key=lambda path: len(path.parts)):
        args += ["--perms", "0755", "--dir", str(parent)]
    for root in mounted:
        args += ["--ro-bind", str(root), str(root)]
    args += ["--bind", str(scratch), SANDBOX_HOME, "--chdir", SANDBOX_HOME]
    for name, value in _SANDBOX_ENV.items():
        args += ["--setenv", name, value]
    return args + ["--"] + command


def prepare_scratch(scratch: Path, slot: int, *, sandboxed: bool) -> None:
    """Create an empty scratch folder the sandbox's user may write."""
    scratch.mkdir(parents=True, exist_ok=False)
    uid = sandbox_uid(slot) if sandboxed else None
    if uid is None:
        scratch.chmod(0o700)
    else:
        # Group root, so that bwrap (root without capabilities) can enter it before the
        # probe switches user.
        os.chown(scratch, uid, 0)
        scratch.chmod(0o770)


def start(scratch: Path, limits: Limits, slot: int, errors: Path) -> subprocess.Popen:
    """Start the probe server (``-I``: no environment variables, no cwd on sys.path) in a new
    sandbox whose only writable folder is ``scratch``; ``errors`` gets what it prints first."""
    sandboxed = bwrap_executable() is not None
    prepare_scratch(scratch, slot, sandboxed=sandboxed)
    uid = sandbox_uid(slot) if sandboxed else None
    command = [sys.executable, "-I", "-m", "grader.sandbox.server"]
    command += ["--limits", json.dumps(asdict(limits))]
    command += ["--uid", str(uid)] if uid is not None else []
    if sandboxed:
        argv, cwd = bwrap_command(command, scratch, slot), None
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    else:
        warn_unsandboxed()
        argv, cwd = command + ["--home", "."], scratch
        env = dict(_SANDBOX_ENV, HOME=str(scratch), PATH=os.environ.get("PATH", ""))
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors.open("ab"),
        cwd=cwd,
        env=env,
        start_new_session=True,  # its own process group: the wall-clock kill reaches all of it
        text=True,
        bufsize=1,
    )


# -- watching and stopping a sandbox from outside (the sandbox cannot interfere) -------------


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident bytes) for every process on the machine."""
    page = os.sysconf("SC_PAGE_SIZE")
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[21]) * page)
    return table


def process_tree(root: int) -> tuple[list[int], int]:
    """(pids of ``root`` and all its descendants, their total resident memory in bytes)."""
    if not os.path.isdir("/proc"):
        return [root], 0
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            tree.append(pid)
            todo.extend(children.get(pid, []))
    return tree, sum(table[pid][1] for pid in tree)


def memory_in_use(root: int) -> int:
    """Bytes of memory the process tree under ``root`` holds (shared pages counted once)."""
    tree, resident = process_tree(root)
    total = 0
    for pid in tree:
        with suppress(OSError, ValueError), open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            pss = next((line for line in handle if line.startswith(b"Pss:")), None)
            total += int(pss.split()[1]) * 1024 if pss else 0
    return total or resident


def kill(process: subprocess.Popen) -> None:
    """Stop a sandbox and everything it started, even processes that left its group."""
    tree, _ = process_tree(process.pid)
    for pid in [process.pid, *tree]:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    for stream in (process.stdin, process.stdout):
        with suppress(OSError):
            stream.close()
