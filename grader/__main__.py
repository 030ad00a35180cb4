"""``python -m grader COMMAND ...``: one entry point for every instructor command."""

from __future__ import annotations

import importlib
import os
import sys

# jsonschema (under nbformat) imports rfc3987_syntax when installed, for the "iri" string
# formats, and that module compiles dozens of Earley grammars as it loads: seconds at the start
# of every command. No notebook or gradebook schema uses those formats, so jsonschema is told
# the module is absent (it then leaves those two formats unchecked).
sys.modules.setdefault("rfc3987_syntax", None)

# command -> module whose ``main(argv)`` runs it (argv[0] is the command)
COMMANDS = {
    "autograde": "grader.course.autograde",
    "report": "grader.course.roster",
    "release": "grader.course.release",
    "release-solutions": "grader.course.release_solutions",
    "student-bundle": "grader.course.bundle",
    "hub": "grader.course.hub",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m grader {" + ",".join(COMMANDS) + "} [options]")
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    from grader.course.course_dir import nbgrader_env

    os.environ.update(nbgrader_env())  # nbgrader runs alembic and jupyter by name
    try:
        return int(importlib.import_module(COMMANDS[argv[0]]).main(argv) or 0)
    except RuntimeError as error:  # CourseError, GradebookError: the message says what to do
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
