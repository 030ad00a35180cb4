"""``python -m grader release-solutions``: the solutions, once the lab is over.

It writes the master without hidden tests, solution markers or outputs, plus
``lab_solutions.py`` (the graded functions, which Task 3 loads), to the nbgrader exchange as
``transformers_from_scratch_solutions`` or to ``--out DIR``: at the assignment's due date (the
one in the gradebook), or ``--at``/``--after-minutes``, never before the due date unless
``--before-due``; ``--detach`` waits in the background instead of holding the terminal.
``nbgrader generate_solution`` would keep the hidden tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from grader.course.course_dir import (
    ASSIGNMENT,
    COURSE_DIR,
    CourseError,
    course_config,
    hidden_test_leaks,
    master_path,
    open_gradebook,
    remove_hidden_tests,
    remove_solution_markers,
)
from grader.course.release import solution_module

SOLUTIONS_ASSIGNMENT = f"{ASSIGNMENT}_solutions"
SOLUTIONS_MODULE = "lab_solutions.py"
SOLUTIONS_DOC = "Reference solutions of the Transformers From Scratch lab (released after the lab)."
DEFAULT_EXCHANGE = "/srv/nbgrader/exchange"
# The time budgets of the notebook's tasks before Task 3 (0, 1, the optional one and 2): the
# due date a lab starting now should get, after which the solutions come out.
MINUTES_BEFORE_SOLUTIONS = 80


def solution_notebook(master: Path) -> nbformat.NotebookNode:
    """The master notebook as learners may read it after the lab: no hidden tests, no outputs."""
    nb = nbformat.read(master, as_version=4)
    for cell in nb.cells:
        cell.source = remove_solution_markers(remove_hidden_tests(cell.source))
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    title = nbformat.v4.new_markdown_cell(
        "# Solutions: Transformers from scratch\n\n"
        "The lab notebook with the reference answers filled in. Read it next to your own; "
        "Task 3 of your notebook loads `lab_solutions.py` from this folder and compares."
    )
    title.id = "solutions-title"
    nb.cells.insert(0, title)
    return nb


def exchange_outbound(course_dir: Path) -> Path:
    """``<Exchange.root>/<course_id>/outbound/<solutions assignment>`` from the course config."""
    config = course_config(course_dir)
    course_id = config.CourseDirectory.get("course_id")
    if not course_id:
        raise CourseError(f"{course_dir / 'nbgrader_config.py'} sets no CourseDirectory.course_id.")
    root = Path(config.Exchange.get("root", DEFAULT_EXCHANGE))
    return root / course_id / "outbound" / SOLUTIONS_ASSIGNMENT


def release_time(at: str | None, after_minutes: float | None, now: dt.datetime) -> dt.datetime:
    """When to release: ``--at HH:MM`` today (local time), or ``--after-minutes`` from now."""
    if after_minutes is not None:
        if after_minutes < 0:
            raise CourseError(f"--after-minutes must not be negative, got {after_minutes}.")
        return now + dt.timedelta(minutes=after_minutes)
    if at is None:
        return now
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at)
    if not match:
        raise CourseError(f"--at wants a local time like 14:10, got {at!r}.")
    when = now.replace(hour=int(match[1]), minute=int(match[2]), second=0, microsecond=0)
    if when < now - dt.timedelta(minutes=1):
        raise CourseError(
            f"{at} has already passed today ({now:%H:%M} now). Leave out --at to release now."
        )
    return when


def wait_until(when: dt.datetime) -> None:
    """Sleep until ``when``, saying so once a minute."""
    while (left := (when - dt.datetime.now()).total_seconds()) > 0:
        print(f"releasing the solutions at {when:%H:%M:%S} ({left / 60:.1f} min from now)")
        time.sleep(min(left, 60))


def write_solutions(destination: Path, master: Path, force: bool = False) -> list[Path]:
    """Write the solution notebook and module into ``destination``; never silently replace."""
    files = {
        f"{SOLUTIONS_ASSIGNMENT}.ipynb": nbformat.writes(solution_notebook(master)) + "\n",
        SOLUTIONS_MODULE: solution_module(master, SOLUTIONS_DOC),
    }
    for name, text in files.items():
        if leaks := hidden_test_leaks(text):
            raise CourseError(f"Refusing to release {name}: it contains hidden test text {leaks}.")
        path = destination / name
        if path.exists() and path.read_text() != text and not force:
            raise CourseError(f"{path} exists and differs; use --force to replace it.")
    destination.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (destination / name).write_text(text)
    return [destination / name for name in files]


def due_date(course_dir: Path, assignment: str = ASSIGNMENT) -> dt.datetime | None:
    """The assignment's due date in the course's gradebook, as local time (None: not set)."""
    from nbgrader.api import MissingEntry

    if not (Path(course_dir) / "gradebook.db").is_file():
        return None
    with open_gradebook(course_dir) as gradebook:
        try:
            due = gradebook.find_assignment(assignment).duedate  # naive UTC
        except MissingEntry:
            return None
    if due is None:
        return None
    return due.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)


def check_not_before_due(when: dt.datetime, due: dt.datetime | None, course_dir: Path) -> None:
    """Refuse to give learners the solutions while they may still submit."""
    if due is None:
        suggested = dt.datetime.now(dt.timezone.utc) + dt.timedelta(
            minutes=MINUTES_BEFORE_SOLUTIONS
        )
        raise CourseError(
            f"{ASSIGNMENT} has no due date in {course_dir / 'gradebook.db'}, so the solutions "
            "could reach learners who have not submitted. Set one, e.g. for a lab starting now "
            f"(its tasks before Task 3 take {MINUTES_BEFORE_SOLUTIONS} min): cd {course_dir} && "
            f"nbgrader db assignment add {ASSIGNMENT} --duedate '{suggested:%Y-%m-%d %H:%M} UTC'"
            "; or pass --before-due to release anyway."
        )
    if when < due:
        raise CourseError(
            f"{ASSIGNMENT} is due {due:%Y-%m-%d %H:%M:%S}, after the release time "
            f"{when:%Y-%m-%d %H:%M:%S}: learners could copy the solutions into their "
            "submission. Leave out --at/--after-minutes to release at the due date, or pass "
            "--before-due to release anyway."
        )


def later_command(args: argparse.Namespace, course_dir: Path, when: dt.datetime) -> list[str]:
    """This release as a command that waits for nothing: it runs at ``when``."""
    command = [sys.executable, "-m", "grader", "release-solutions", "--course-dir", str(course_dir)]
    command += ["--out", str(args.out.resolve())] if args.out else []
    command += ["--force"] * args.force + ["--before-due"] * args.before_due
    return [*command, "--when", when.isoformat()]


def detach(command: list[str], log: Path) -> int:
    """Start ``command`` in its own session (it survives the terminal closing), its output
    going to ``log``; return its process id."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return child.pid


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m grader release-solutions")
    parser.add_argument("--course-dir", type=Path, default=COURSE_DIR, help="nbgrader course root")
    parser.add_argument("--force", action="store_true", help="replace a different release")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--at", help="release at this local time today, e.g. 14:10")
    when.add_argument("--after-minutes", type=float, help="release this many minutes from now")
    when.add_argument("--when", help=argparse.SUPPRESS)  # ISO time, for --detach and at(1)
    parser.add_argument("--out", type=Path, help="write here instead of the nbgrader exchange")
    parser.add_argument(
        "--before-due",
        action="store_true",
        help="release even before the assignment's due date (or without one)",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="wait in the background (log in grader_results/) and give the terminal back",
    )
    return parser.parse_args(argv[1:])


def main(argv: list[str]) -> int:
    """``argv``: ``release-solutions`` and its options."""
    args = parse_args(argv)
    course_dir = args.course_dir.resolve()
    destination = args.out or exchange_outbound(course_dir)
    now, due = dt.datetime.now(), due_date(course_dir)
    if args.when:
        when = dt.datetime.fromisoformat(args.when)
    elif args.at is None and args.after_minutes is None and due and not args.before_due:
        when = max(now, due)  # by default, at the due date
    else:
        when = release_time(args.at, args.after_minutes, now)
    if not args.before_due:
        check_not_before_due(when, due, course_dir)
    # Build once before waiting, so that a broken master fails now, not at release time.
    solution_module(master_path(course_dir), SOLUTIONS_DOC)
    if when > now and not args.when:
        command = later_command(args, course_dir, when)
        if args.detach:
            log = course_dir / "grader_results" / "release-solutions.log"
            pid = detach(command, log)
            print(
                f"releasing the solutions at {when:%Y-%m-%d %H:%M:%S} in the background "
                f"(process {pid}, log {log}); `kill {pid}` cancels"
            )
            return 0
        # at(1) frees the terminal; cron or a systemd timer could run the same command
        line = shlex.quote(f"cd {Path.cwd()} && {shlex.join(command)}")
        print(
            "to give this terminal back, cancel (Ctrl-C) and run with --detach, or:\n"
            f"  echo {line} | at {when:%H:%M %Y-%m-%d}"
        )
    wait_until(when)
    try:
        written = write_solutions(destination, master_path(course_dir), force=args.force)
    except PermissionError as error:
        raise CourseError(
            f"Cannot write to {destination} ({error}). Create the nbgrader exchange "
            "(see nbgrader's docs) or pass --out DIR."
        ) from error
    for path in written:
        print(f"released {path}")
    return 0
