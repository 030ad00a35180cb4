"""``python -m grader COMMAND ...``: one entry point for every instructor command."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# command -> module whose ``main(argv)`` runs it
COMMANDS = {
    "autograde": "grader.autograde",
    "report": "grader.report",
    "release": "grader.course",
    "release-solutions": "grader.course",
    "student-bundle": "grader.course",
}


def put_scripts_on_path() -> None:
    """nbgrader's gradebook runs ``alembic`` (and nbgrader runs ``jupyter``) by name: find
    them beside this interpreter, so an environment works without being activated."""
    scripts = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if scripts not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([scripts, path]) if path else scripts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: python -m grader {" + ",".join(COMMANDS) + "} [options]")
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    put_scripts_on_path()
    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
