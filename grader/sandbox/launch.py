"""Run a submission's code in a bubblewrap sandbox, bounded in memory, CPU, processes and time.

What the sandboxed process sees (Linux with ``bwrap``):
- the system (``/usr`` and its ``/bin``, ``/lib`` links), the Python installation and the
  virtual environment, and the public ``former`` and ``grader`` packages, all read-only;
- one writable folder, the submission's own scratch folder, mounted as ``/home/learner``
  (its working directory and ``$HOME``), a private ``/tmp``, its own ``/proc`` and ``/dev``;
- no network (own network namespace), its own process-id, IPC and host-name namespaces;
- an environment with a handful of neutral variables (``--clearenv``): none of the grader's.

The course folder, ``solutions/``, the gradebook and other submissions are simply not
mounted. The sandbox dies with the grader (``--die-with-parent``).

Limits (:class:`Limits`, every one overridable from ``python -m grader autograde``):
- memory: ``RLIMIT_AS`` per process inside the sandbox, and the grader watches the resident
  memory of the whole process tree from outside and kills it past the same bound;
- CPU time: ``RLIMIT_CPU`` per process;
- processes: ``RLIMIT_NPROC``. The kernel counts it per real user id and ignores it for
  root, so when the grader runs as root the sandbox switches to a user id of its own
  (one per parallel job) before any submission code runs; an unprivileged grader gets a
  user namespace from bwrap, where the count covers that sandbox only;
- wall clock: enforced from outside by killing every process of the sandbox.

Without bwrap (macOS, Windows, a Linux without it) code runs with the resource limits only,
after a loud warning: fine for an instructor's own trial run, not for a class.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# Inside the sandbox the scratch folder is always here.
SANDBOX_HOME = "/home/learner"
# A root grader runs each parallel job's sandbox under its own unprivileged user id, so
# that RLIMIT_NPROC (counted per user id) bounds one sandbox, not the whole class.
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
    wall_seconds: float = 60.0  # wall clock for probing one graded function
    file_mb: int = 256  # largest file a process may write
    step_seconds: float = 10.0  # each notebook statement replayed for a function

    def to_dict(self) -> dict:
        return asdict(self)


def bwrap_executable() -> str | None:
    """Path of bubblewrap, or None where it is missing (or the platform is not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    return shutil.which("bwrap")


_warned = False


def warn_unsandboxed() -> None:
    """Say loudly, once, that submissions will run with resource limits only."""
    global _warned
    if _warned:
        return
    _warned = True
    message = (
        "\n" + "!" * 78 + "\n"
        "WARNING: bubblewrap (bwrap) is not available, so submissions run WITHOUT a sandbox:\n"
        "they can read and write your files and reach the network. Only resource limits\n"
        "apply. Grade a class on Linux with bubblewrap installed (apt install bubblewrap).\n"
        + "!"
        * 78
    )
    print(message, file=sys.stderr)
    warnings.warn("grading without a sandbox (bwrap not found)", RuntimeWarning, stacklevel=2)


def sandbox_uid(slot: int) -> int | None:
    """User id the sandbox of parallel job ``slot`` runs as; None keeps the grader's own."""
    return FIRST_SANDBOX_UID + slot if os.geteuid() == 0 else None


def _python_roots() -> list[Path]:
    """Folders the interpreter needs: the environment and the installation it was made from."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    return sorted(root for root in roots if root.exists())


def _public_packages() -> list[Path]:
    """The repository's public packages, mounted where the installed finder expects them."""
    repo = Path(__file__).resolve().parents[2]
    return [path for path in (repo / "former", repo / "grader") if path.is_dir()]


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
    args += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    return args


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
        # Root: no capabilities but the two the probe needs to switch to the sandbox's
        # own user id, which it does before any submission code runs.
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    args += _system_binds()
    # The private /tmp comes first, so an environment or checkout that lives under /tmp
    # (a CI clone, say) is bound on top of it rather than hidden by it.
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--tmpfs", "/dev/shm", "--perms", "1777", "--tmpfs", "/tmp"]
    mounted = _python_roots() + _public_packages()
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


def probe_command(limits: Limits, slot: int, *, sandboxed: bool) -> list[str]:
    """The probe's command line (``-I``: no environment variables, no cwd on sys.path)."""
    uid = sandbox_uid(slot) if sandboxed else None
    command = [sys.executable, "-I", "-m", "grader.sandbox.server", "--limits", _limits_arg(limits)]
    if uid is not None:
        command += ["--uid", str(uid)]
    if not sandboxed:
        command += ["--home", "."]
    return command


def _limits_arg(limits: Limits) -> str:
    return ",".join(f"{name}={value}" for name, value in limits.to_dict().items())


def parse_limits_arg(text: str) -> Limits:
    """Inverse of the ``--limits`` argument written by :func:`probe_command`."""
    kinds = {field.name: field.type for field in fields(Limits)}
    values: dict = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        values[name] = float(value) if kinds[name] == "float" else int(value)
    return Limits(**values)


def prepare_scratch(scratch: Path, slot: int, *, sandboxed: bool) -> None:
    """Create an empty scratch folder the sandbox's user may write."""
    scratch.mkdir(parents=True, exist_ok=False)
    uid = sandbox_uid(slot) if sandboxed else None
    if uid is not None:
        # Owned by the sandbox's user; group root so that bwrap (root without
        # capabilities) can enter it before the probe switches user.
        os.chown(scratch, uid, 0)
        scratch.chmod(0o770)
    else:
        scratch.chmod(0o700)


def start(scratch: Path, limits: Limits, slot: int, errors: Path) -> subprocess.Popen:
    """Start the probe for one submission in a sandbox whose only writable folder is ``scratch``.

    The returned process talks line-delimited JSON over stdin/stdout (see grader.sandbox.server).
    ``errors`` (outside the sandbox) receives what bwrap and the probe print before it starts.
    """
    sandboxed = bwrap_executable() is not None
    command = probe_command(limits, slot, sandboxed=sandboxed)
    if sandboxed:
        argv = bwrap_command(command, scratch, slot)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        cwd = None
    else:
        warn_unsandboxed()
        argv = command
        env = dict(_SANDBOX_ENV, HOME=str(scratch), PATH=os.environ.get("PATH", ""))
        cwd = scratch
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
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
                for line in handle:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            continue
    return total or resident


def kill(process: subprocess.Popen) -> None:
    """Stop a sandbox and everything it started, even processes that left its group."""
    tree, _ = process_tree(process.pid)
    for pid in [process.pid, *tree]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for stream in (process.stdin, process.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
