"""Instructor commands for the nbgrader course in ``notebooks/``.

    python -m grader release                   # regenerate the student notebook (nbgrader)
    python -m grader release-solutions [--at 14:10 | --after-minutes 70] [--out DIR] [--force]
    python -m grader student-bundle [--out DIR] [--force]

``release`` runs ``nbgrader generate_assignment`` on the master notebook and
writes ``notebooks/release/transformers_from_scratch/``.

``release-solutions`` writes what learners get once the lab is over: the
master notebook with every hidden test removed, the solution markers dropped
and the outputs cleared, plus ``lab_solutions.py`` (the three graded functions,
which Task 3 of the notebook loads). ``nbgrader generate_solution`` is not
used: it keeps the hidden tests. By default it goes to the nbgrader exchange
as the assignment ``transformers_from_scratch_solutions``, so learners fetch it
from JupyterLab's Assignments list; ``--out DIR`` writes it to a folder instead.
With ``--at``/``--after-minutes`` it waits (in the foreground) until then.

``student-bundle`` builds ``student-bundle/transformers_from_scratch/`` and a zip
of it: the student notebook, ``former``, the public parts of ``grader`` the
notebook uses, ``model.py`` and a set-up README. It refuses to ship anything
that contains hidden test text or code from ``solutions/``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
COURSE_DIR = REPO_ROOT / "notebooks"
ASSIGNMENT = "transformers_from_scratch"
SOLUTIONS_ASSIGNMENT = f"{ASSIGNMENT}_solutions"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
SOLUTIONS_MODULE = "lab_solutions.py"
GRADED_FUNCTIONS = ("multihead_attention", "attention_function", "parallel_multihead_attention")
DEFAULT_EXCHANGE = "/srv/nbgrader/exchange"

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# Text that only hidden tests contain; none of it may reach a learner.
HIDDEN_TEST_TEXT = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "hidden_tests", "run_group(")


class CourseError(RuntimeError):
    """A course command cannot do what was asked; the message says what to change."""


# --------------------------------------------------------------------------- paths


def master_path(course_dir: Path = COURSE_DIR) -> Path:
    return course_dir / "source" / ASSIGNMENT / NOTEBOOK


def release_path(course_dir: Path = COURSE_DIR) -> Path:
    return course_dir / "release" / ASSIGNMENT / NOTEBOOK


# --------------------------------------------------------------------------- nbgrader cells


def nbgrader_metadata(grade_id: str, *, solution: bool = False, points: int | None = None) -> dict:
    """A cell's ``nbgrader`` metadata as JupyterLab's Create Assignment toolbar writes it: an
    "Autograded answer" with ``solution=True``, an "Autograder tests" cell with ``points``."""
    metadata = {
        "grade": points is not None,
        "grade_id": grade_id,
        "locked": not solution,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        metadata["points"] = points
    return metadata


def graded_cells(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """grade_id -> cell, for every cell nbgrader grades or replaces (answers and tests)."""
    return {
        cell.metadata["nbgrader"]["grade_id"]: cell
        for cell in nb.cells
        if "grade_id" in cell.get("metadata", {}).get("nbgrader", {})
    }


# --------------------------------------------------------------------------- release


def nbgrader_env(**extra: str) -> dict[str, str]:
    """The environment for an nbgrader subprocess: it runs ``alembic`` and ``jupyter`` by name,
    so the folder of this Python's scripts comes first on PATH even in an unactivated venv."""
    env = dict(os.environ, **extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_nbgrader(args: list[str], course_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course_dir`` (where its nbgrader_config.py is)."""
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course_dir,
        capture_output=True,
        text=True,
        env=nbgrader_env(**env),
    )


def learner_work_in(notebook: Path) -> list[str]:
    """Signs that someone worked in a generated student notebook: answers typed into solution
    cells (their checksum no longer matches the stub's) or outputs of cells that ran."""
    from nbgrader.utils import compute_checksum, is_solution

    nb = nbformat.read(notebook, as_version=4)
    signs = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if is_solution(cell) and "checksum" in meta and compute_checksum(cell) != meta["checksum"]:
            signs.append(f"answer in cell {meta.get('grade_id')!r}")
    if any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"):
        signs.append("cell outputs")
    return signs


def generate_release(course_dir: Path = COURSE_DIR, force: bool = False) -> Path:
    """Run ``nbgrader generate_assignment`` in ``course_dir``; return the student notebook.

    Refuses (unless ``force``) to replace a student notebook someone has worked in.
    """
    if not master_path(course_dir).exists():
        raise CourseError(f"No master notebook at {master_path(course_dir)}.")
    existing = release_path(course_dir)
    if existing.exists() and not force and (signs := learner_work_in(existing)):
        raise CourseError(
            f"{existing} has been worked in ({', '.join(signs)}); regenerating would lose it. "
            "Copy the notebook elsewhere, then run again with --force."
        )
    result = run_nbgrader(["generate_assignment", ASSIGNMENT, "--force"], course_dir)
    if result.returncode != 0:
        raise CourseError(
            f"nbgrader generate_assignment failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    path = release_path(course_dir)
    leaks = hidden_test_leaks(path.read_text())
    if leaks:
        raise CourseError(f"{path} still contains hidden test text: {leaks}")
    return path


# --------------------------------------------------------------------------- leak checks


def hidden_test_leaks(text: str) -> list[str]:
    """The pieces of hidden test text found in ``text`` (empty when clean)."""
    return [marker for marker in HIDDEN_TEST_TEXT if marker in text]


def _code_lines(source: str) -> list[str]:
    """Non-blank, non-comment lines, whitespace-normalised."""
    lines = []
    for line in source.splitlines():
        stripped = " ".join(line.split())
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def reference_bodies(repo_root: Path = REPO_ROOT) -> dict[str, list[str]]:
    """function name -> code lines of its body (docstring left out) in solutions/attention.py."""
    source = (repo_root / "solutions" / "attention.py").read_text()
    lines = source.splitlines()
    bodies = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            if body:
                segment = "\n".join(lines[body[0].lineno - 1 : node.end_lineno])
                bodies[node.name] = _code_lines(segment)
    return bodies


def solution_code_leaks(text: str, bodies: dict[str, list[str]], window: int = 3) -> list[str]:
    """Names of reference functions of which ``window`` consecutive code lines appear in ``text``."""
    haystack = "\n".join(_code_lines(text))
    found = []
    for name, body in bodies.items():
        runs = ["\n".join(body[i : i + window]) for i in range(max(1, len(body) - window + 1))]
        if any(run and run in haystack for run in runs):
            found.append(name)
    return found


# --------------------------------------------------------------------------- solutions


def remove_hidden_tests(source: str) -> str:
    """Drop every BEGIN/END HIDDEN TESTS region (markers included)."""
    kept, hidden = [], False
    for line in source.split("\n"):
        if BEGIN_HIDDEN in line:
            if hidden:
                raise CourseError("Nested BEGIN HIDDEN TESTS in the master notebook.")
            hidden = True
        elif END_HIDDEN in line:
            if not hidden:
                raise CourseError("END HIDDEN TESTS without BEGIN in the master notebook.")
            hidden = False
        elif not hidden:
            kept.append(line)
    if hidden:
        raise CourseError("BEGIN HIDDEN TESTS without END in the master notebook.")
    return "\n".join(kept).rstrip("\n")


def remove_solution_markers(source: str) -> str:
    """A solution cell's source as a learner hands it in: the BEGIN/END SOLUTION lines dropped."""
    return "\n".join(
        line for line in source.split("\n") if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION)
    )


def solution_function(source: str, name: str) -> str:
    """The source of function ``name`` in a solution cell: markers and cell magics
    (``%%writefile``) dropped, so that it compares with ``solutions/attention.py``."""
    code = "\n".join(
        line for line in remove_solution_markers(source).split("\n") if not line.startswith("%")
    )
    lines = code.split("\n")
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return "\n".join(lines[node.lineno - 1 : node.end_lineno])
    raise CourseError(f"The solution cell {name!r} defines no function {name}.")


def solution_notebook(master: Path) -> nbformat.NotebookNode:
    """The master notebook as learners may read it after the lab: no hidden tests, no outputs."""
    nb = nbformat.read(master, as_version=4)
    for cell in nb.cells:
        cell.source = remove_solution_markers(remove_hidden_tests(cell.source))
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.insert(
        0,
        nbformat.v4.new_markdown_cell(
            "# Solutions: Transformers from scratch\n\n"
            "The lab notebook with the reference answers filled in. Read it next to your own; "
            "Task 3 of your notebook loads `lab_solutions.py` from this folder and compares."
        ),
    )
    nb.cells[0].id = "solutions-title"
    return nb


def solution_module(master: Path) -> str:
    """``lab_solutions.py``: the graded functions exactly as in the master's solution cells."""
    cells = graded_cells(nbformat.read(master, as_version=4))
    missing = [name for name in GRADED_FUNCTIONS if name not in cells]
    if missing:
        raise CourseError(f"The master notebook has no solution cell for {missing}.")
    functions = {name: solution_function(cells[name].source, name) for name in GRADED_FUNCTIONS}
    header = (
        '"""Reference solutions of the Transformers From Scratch lab (released after the lab)."""\n'
        "\nimport math\n\nimport torch\n"
    )
    return header + "".join(f"\n\n{functions[name]}\n" for name in GRADED_FUNCTIONS)


def exchange_outbound(course_dir: Path) -> Path:
    """``<Exchange.root>/<course_id>/outbound/<solutions assignment>`` from the course config."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    course_id = config.CourseDirectory.get("course_id")
    if not course_id:
        raise CourseError(f"{course_dir / 'nbgrader_config.py'} sets no CourseDirectory.course_id.")
    root = Path(config.Exchange.get("root", DEFAULT_EXCHANGE))
    return root / course_id / "outbound" / SOLUTIONS_ASSIGNMENT


def release_time(at: str | None, after_minutes: float | None, now: dt.datetime) -> dt.datetime:
    """When to release: ``--at HH:MM`` today (local time), or ``--after-minutes`` from now."""
    if at is not None and after_minutes is not None:
        raise CourseError("Give either --at or --after-minutes, not both.")
    if after_minutes is not None:
        if after_minutes < 0:
            raise CourseError(f"--after-minutes must not be negative, got {after_minutes}.")
        return now + dt.timedelta(minutes=after_minutes)
    if at is not None:
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at)
        if not match:
            raise CourseError(f"--at wants a local time like 14:10, got {at!r}.")
        when = now.replace(hour=int(match[1]), minute=int(match[2]), second=0, microsecond=0)
        if when < now - dt.timedelta(minutes=1):
            raise CourseError(
                f"{at} has already passed today ({now:%H:%M} now). Leave out --at to release now."
            )
        return when
    return now


def wait_until(when: dt.datetime, log=print) -> None:
    """Sleep until ``when``, saying so once a minute."""
    while True:
        left = (when - dt.datetime.now()).total_seconds()
        if left <= 0:
            return
        log(f"releasing the solutions at {when:%H:%M:%S} ({left / 60:.1f} min from now)")
        time.sleep(min(left, 60))


def write_solutions(destination: Path, master: Path, force: bool = False) -> list[Path]:
    """Write the solution notebook and module into ``destination``; never silently replace."""
    notebook_text = nbformat.writes(solution_notebook(master)) + "\n"
    module_text = solution_module(master)
    files = {f"{SOLUTIONS_ASSIGNMENT}.ipynb": notebook_text, SOLUTIONS_MODULE: module_text}
    for name, text in files.items():
        leaks = hidden_test_leaks(text)
        if leaks:
            raise CourseError(f"Refusing to release {name}: it contains hidden test text {leaks}.")
    for name, text in files.items():
        path = destination / name
        if path.exists() and path.read_text() != text and not force:
            raise CourseError(f"{path} exists and differs; use --force to replace it.")
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        (destination / name).write_text(text)
        written.append(destination / name)
    return written


# --------------------------------------------------------------------------- student bundle

BUNDLE_NAME = ASSIGNMENT
BUNDLE_README = """\
# Transformers from scratch: the lab

You implement multi-head self-attention, plug it into `former` (a small
Transformer package), train a sentiment classifier on IMDB reviews and run the
attention heads in parallel processes.

## Set up (once)

Python 3.10 or newer. In this folder:

```bash
python3 -m venv .venv
.venv/bin/pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
.venv/bin/pip install -e ".[lab]"
```

(On Windows use `.venv\\Scripts\\pip`; on a Mac drop `--index-url ...`.)
Add `,sagemaker` inside the brackets to try the optional SageMaker cell.

## Work

```bash
.venv/bin/jupyter lab transformers_from_scratch.ipynb
```

Work through the notebook top to bottom. The visible checks under each task
tell you what is right and what looks wrong; the **Validate** button runs the
whole notebook the way the grader will. Submit the notebook when you are done.

The first run downloads the IMDB reviews (84 MB) into `~/.cache/former`.
Without network the notebook uses a small generated corpus and says so; if you
already have the data, set `LAB_IMDB` to the `aclImdb_v1.tar.gz` archive, an
extracted `aclImdb` folder or the `IMDB Dataset.csv` file.
"""


def _grader_imports(source: str, module: str) -> set[str]:
    """Modules of the ``grader`` package that ``source`` (module ``module``) imports."""
    found = set()
    package = module.rpartition(".")[0] if module else ""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("grader")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base]) if base else ".".join(parts)
            if base == "grader" or base.startswith("grader."):
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _notebook_code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(
        "\n".join(
            line for line in cell.source.split("\n") if not line.lstrip().startswith(("%", "!"))
        )
        for cell in nb.cells
        if cell.cell_type == "code"
    )


def public_grader_modules(notebook: Path, repo_root: Path = REPO_ROOT) -> list[Path]:
    """The files of ``grader`` the notebook needs: what it imports, and what those import."""
    package_dir = repo_root / "grader"

    def file_of(module: str) -> Path | None:
        relative = Path(*module.split("."))
        for candidate in (
            repo_root / relative.with_suffix(".py"),
            repo_root / relative / "__init__.py",
        ):
            if candidate.is_file():
                return candidate
        return None

    todo = {"grader"} | _grader_imports(_notebook_code(notebook), "")
    seen: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        path = file_of(module)
        if path is None or module in seen:
            continue
        seen[module] = path
        source = path.read_text()
        name = module if path.name != "__init__.py" else f"{module}.__init__"
        todo |= _grader_imports(source, name)
    for module, path in seen.items():
        if re.search(r"^\s*(from|import)\s+solutions\b", path.read_text(), re.MULTILINE):
            raise CourseError(
                f"{path} ({module}) imports solutions, but the notebook needs it: public "
                "grader modules must not use solutions/."
            )
    assert all(path.is_relative_to(package_dir) for path in seen.values())
    return sorted(set(seen.values()))


def _package_files(directory: Path) -> Iterable[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def bundle_files(repo_root: Path = REPO_ROOT, course_dir: Path = COURSE_DIR) -> dict[str, bytes]:
    """Relative path in the bundle -> content."""
    notebook = release_path(course_dir)
    if not notebook.exists():
        raise CourseError(
            f"No student notebook at {notebook}; run `python -m grader release` first."
        )
    files = {NOTEBOOK: notebook.read_bytes(), "README.md": BUNDLE_README.encode()}
    for path in _package_files(repo_root / "former"):
        files[path.relative_to(repo_root).as_posix()] = path.read_bytes()
    for path in public_grader_modules(notebook, repo_root):
        files[path.relative_to(repo_root).as_posix()] = path.read_bytes()
    for name in ("model.py", "pyproject.toml"):
        if (repo_root / name).is_file():
            files[name] = (repo_root / name).read_bytes()
    return files


def check_bundle(files: dict[str, bytes], repo_root: Path = REPO_ROOT) -> None:
    """Raise unless no file holds hidden test text or code from solutions/."""
    bodies = reference_bodies(repo_root)
    problems = []
    for name, content in files.items():
        text = content.decode("utf-8", errors="replace")
        if leaks := hidden_test_leaks(text):
            problems.append(f"{name}: hidden test text {leaks}")
        if leaks := solution_code_leaks(text, bodies):
            problems.append(f"{name}: solution code of {leaks}")
        if name.startswith("solutions/"):
            problems.append(f"{name}: part of solutions/")
    if problems:
        raise CourseError("The student bundle would leak:\n  " + "\n  ".join(problems))


def write_zip(files: dict[str, bytes], path: Path, root: str) -> None:
    """A reproducible zip: sorted entries, fixed timestamps."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{root}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])


def _same_tree(a: Path, b: Path) -> bool:
    comparison = filecmp.dircmp(a, b, ignore=["__pycache__", ".ipynb_checkpoints"])
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(a / d, b / d) for d in comparison.common_dirs)


def build_student_bundle(
    out: Path, force: bool = False, repo_root: Path = REPO_ROOT, course_dir: Path = COURSE_DIR
) -> tuple[Path, Path]:
    """Write ``out/<bundle>/`` and ``out/<bundle>.zip``; return both paths."""
    files = bundle_files(repo_root, course_dir)
    check_bundle(files, repo_root)
    folder, archive = out / BUNDLE_NAME, out / f"{BUNDLE_NAME}.zip"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / BUNDLE_NAME
        for name, content in files.items():
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            (staged / name).write_bytes(content)
        staged_zip = Path(tmp) / archive.name
        write_zip(files, staged_zip, BUNDLE_NAME)
        if folder.exists():
            if (
                _same_tree(folder, staged)
                and archive.exists()
                and filecmp.cmp(archive, staged_zip, shallow=False)
            ):
                return folder, archive
            if not force:
                raise CourseError(
                    f"{folder} exists and differs from the bundle built now (a learner's edits, "
                    "or an older release). Move it away, or use --force to replace it."
                )
            shutil.rmtree(folder)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, folder)
        shutil.copyfile(staged_zip, archive)
    return folder, archive


# --------------------------------------------------------------------------- command line


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m grader {command}")
    parser.add_argument("--course-dir", type=Path, default=COURSE_DIR, help="nbgrader course root")
    if command == "release":
        parser.add_argument("--force", action="store_true", help="replace a worked-in release")
    if command == "release-solutions":
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--at", help="release at this local time today, e.g. 14:10")
        when.add_argument("--after-minutes", type=float, help="release this many minutes from now")
        parser.add_argument("--out", type=Path, help="write here instead of the nbgrader exchange")
        parser.add_argument("--force", action="store_true", help="replace a different release")
    if command == "student-bundle":
        parser.add_argument("--out", type=Path, default=Path("student-bundle"))
        parser.add_argument("--force", action="store_true", help="replace a different bundle")
    return parser


def main(argv: list[str]) -> int:
    command, args = argv[0], _parser(argv[0]).parse_args(argv[1:])
    course_dir = args.course_dir.resolve()
    try:
        if command == "release":
            path = generate_release(course_dir, force=args.force)
            print(f"wrote {path}")
        elif command == "release-solutions":
            destination = args.out or exchange_outbound(course_dir)
            when = release_time(args.at, args.after_minutes, dt.datetime.now())
            # Build once before waiting, so that a broken master fails now, not at release time.
            solution_module(master_path(course_dir))
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
        elif command == "student-bundle":
            folder, archive = build_student_bundle(
                args.out.resolve(), args.force, course_dir=course_dir
            )
            print(f"student bundle: {folder} and {archive}")
        else:
            raise CourseError(f"unknown course command {command!r}")
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = [
    "CourseError",
    "build_student_bundle",
    "check_bundle",
    "generate_release",
    "graded_cells",
    "hidden_test_leaks",
    "nbgrader_metadata",
    "public_grader_modules",
    "release_time",
    "remove_solution_markers",
    "solution_code_leaks",
    "solution_function",
    "solution_module",
    "solution_notebook",
    "write_solutions",
]
