"""``python -m grader hub``: a JupyterHub for one class on this machine, for a trial.

It sets up ``--dir``: the instructor's course (``home/<instructor>/course``, a copy of the course
folder with the assignment generated, due in ``--due-in-minutes``, the roster imported and the
assignment released into the shared exchange ``exchange/``), then runs JupyterHub with
``notebooks/hub/jupyterhub_config.py``. Learners sign in with the shared password, fetch the
assignment from the Assignments tab, Validate and Submit; the instructor, in their own server's
terminal, runs ``nbgrader collect``, ``python -m grader autograde`` and ``nbgrader
release_feedback`` in ``~/course``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import stat
import sys
from pathlib import Path

from grader.course.course_dir import (
    COURSE_DIR,
    CourseError,
    nbgrader_env,
    run_nbgrader,
)
from grader.course.release_solutions import MINUTES_BEFORE_SOLUTIONS

HUB_CONFIG_DIR = COURSE_DIR / "hub"
# where `make hub` installs configurable-http-proxy (npm), inside the environment
PROXY = Path(sys.prefix) / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"


def proxy_command() -> str:
    """configurable-http-proxy: the environment's (``make hub`` installs it), else on PATH."""
    if PROXY.is_file():
        return str(PROXY)
    found = shutil.which("configurable-http-proxy")
    if found is None:
        raise CourseError(
            "configurable-http-proxy is not installed: `make hub` installs it with npm "
            f"(npm install --prefix {PROXY.parents[2]} configurable-http-proxy)"
        )
    return found


def course_env(hub_dir: Path, instructor: str) -> dict[str, str]:
    """What every hub user's nbgrader reads (see notebooks/hub/nbgrader_config.py)."""
    return {
        "JUPYTER_CONFIG_PATH": str(HUB_CONFIG_DIR),
        "TFS_EXCHANGE": str(hub_dir / "exchange"),
        "TFS_COURSE_CONFIG": str(hub_dir / "home" / instructor / "course" / "nbgrader_config.py"),
        "TFS_HUB_INSTRUCTOR": instructor,
    }


def instructor_nbgrader(hub_dir: Path, instructor: str, *args: str) -> str:
    """``nbgrader ARGS`` as the instructor runs it in their hub terminal, in ``~/course``."""
    home = hub_dir / "home" / instructor
    env = {**course_env(hub_dir, instructor), "HOME": str(home), "JUPYTERHUB_USER": instructor}
    done = run_nbgrader(list(args), home / "course", **env)
    if done.returncode != 0:
        raise CourseError(f"nbgrader {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def prepare(
    hub_dir: Path,
    instructor: str,
    learners: list[str],
    *,
    source: Path = COURSE_DIR / "source",
    due_in_minutes: float = MINUTES_BEFORE_SOLUTIONS,
) -> Path:
    """The instructor's course in ``hub_dir``: the course config, the assignments of
    ``source`` (nbgrader's ``source/<assignment>/`` folders) due in ``due_in_minutes`` and
    released into the shared exchange, the learners on the roster; returns the course folder."""
    course = hub_dir / "home" / instructor / "course"
    if course.exists():
        raise CourseError(f"{course} exists: use a new --dir, or delete {hub_dir} first")
    course.mkdir(parents=True)
    shutil.copy(COURSE_DIR / "nbgrader_config.py", course)
    shutil.copytree(source, course / "source")
    exchange = hub_dir / "exchange"
    exchange.mkdir(parents=True, exist_ok=True)
    # world-writable with the sticky bit, as nbgrader's exchange wants it
    exchange.chmod(stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO | stat.S_ISVTX)
    roster = hub_dir / "roster.csv"
    roster.write_text("id\n" + "".join(f"{name}\n" for name in learners))
    due = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=due_in_minutes)
    nbgrader = lambda *args: instructor_nbgrader(hub_dir, instructor, *args)  # noqa: E731
    nbgrader("db", "student", "import", str(roster))
    for assignment in sorted(path.name for path in source.iterdir() if path.is_dir()):
        nbgrader("generate_assignment", assignment)
        nbgrader("db", "assignment", "add", assignment, f"--duedate={due:%Y-%m-%d %H:%M:%S} UTC")
        nbgrader("release_assignment", assignment)
    return course


def hub_env(hub_dir: Path, port: int, instructor: str, learners: list[str], password: str):
    """The environment of the JupyterHub process (notebooks/hub/jupyterhub_config.py reads it)."""
    env = nbgrader_env()
    env.pop("PYTHONPATH", None)  # nothing of the repository beyond the installed packages
    return {
        **env,
        **course_env(hub_dir, instructor),
        "TFS_HUB_DIR": str(hub_dir),
        "TFS_HUB_PORT": str(port),
        "TFS_HUB_INSTRUCTOR": instructor,
        "TFS_HUB_LEARNERS": ",".join(learners),
        "TFS_HUB_PASSWORD": password,
        "TFS_HUB_PROXY": proxy_command(),
    }


def main(argv: list[str]) -> int:
    """``argv``: ``hub`` and its options."""
    parser = argparse.ArgumentParser(prog="python -m grader hub", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/transformers-hub"))
    parser.add_argument("--port", type=int, default=8000, help="the hub's port (and the next 2)")
    parser.add_argument("--instructor", default="instructor")
    parser.add_argument("--learners", default="ada,ben,cy", help="comma-separated hub names")
    parser.add_argument("--password", default="trial", help="everyone's password (trial only)")
    parser.add_argument("--due-in-minutes", type=float, default=MINUTES_BEFORE_SOLUTIONS)
    args = parser.parse_args(argv[1:])
    hub_dir = args.dir.resolve()
    learners = [name for name in args.learners.split(",") if name]
    env = hub_env(hub_dir, args.port, args.instructor, learners, args.password)
    if not (hub_dir / "home" / args.instructor / "course").exists():
        prepare(hub_dir, args.instructor, learners, due_in_minutes=args.due_in_minutes)
    config = HUB_CONFIG_DIR / "jupyterhub_config.py"
    print(
        f"JupyterHub at http://127.0.0.1:{args.port} ({args.instructor}, {args.learners}; "
        f"password {args.password!r}); course in {hub_dir}",
        flush=True,
    )
    command = [sys.executable, "-m", "jupyterhub", "-f", str(config)]
    os.chdir(hub_dir)
    os.execvpe(command[0], command, env)  # the hub replaces this process: Ctrl-C stops it
    return 0  # not reached
