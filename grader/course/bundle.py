"""``python -m grader student-bundle``: what a learner downloads.

``student-bundle/transformers_from_scratch/`` and a zip of it: the student notebook,
``former``, the ``grader.learner`` package (which never imports ``solutions``), ``model.py``
and a set-up README. It refuses to ship hidden test text or solution code.
"""

from __future__ import annotations

import argparse
import io
import shutil
import zipfile
from pathlib import Path

import nbformat

from grader.course.course_dir import (
    ASSIGNMENT,
    BEGIN_SOLUTION,
    COURSE_DIR,
    END_SOLUTION,
    NOTEBOOK,
    REPO_ROOT,
    CourseError,
    graded_cells,
    hidden_test_leaks,
    master_path,
    release_path,
)
from grader.judge.program import GRADED_FUNCTIONS

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


def _code_lines(source: str) -> list[str]:
    """Non-blank, non-comment lines, whitespace-normalised."""
    lines = (" ".join(line.split()) for line in source.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def reference_bodies() -> dict[str, list[str]]:
    """Graded function -> code lines of its answer: the master's solution region, which
    ``solutions/attention.py`` holds too."""
    cells = graded_cells(nbformat.read(master_path(), as_version=4))
    return {
        name: _code_lines(cells[name].source.split(BEGIN_SOLUTION)[1].split(END_SOLUTION)[0])
        for name in GRADED_FUNCTIONS
    }


def solution_code_leaks(text: str, bodies: dict[str, list[str]], window: int = 3) -> list[str]:
    """Names of reference functions of which ``window`` consecutive code lines appear in ``text``."""
    haystack = "\n".join(_code_lines(text))
    found = []
    for name, body in bodies.items():
        runs = ["\n".join(body[i : i + window]) for i in range(max(1, len(body) - window + 1))]
        if any(run and run in haystack for run in runs):
            found.append(name)
    return found


def _files_under(directory: Path) -> dict[str, bytes]:
    """Relative path -> content of the files under ``directory``, caches left out."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
        and not {"__pycache__", ".ipynb_checkpoints"} & set(path.parts)
        and path.suffix != ".pyc"
    }


def bundle_files(course_dir: Path = COURSE_DIR) -> dict[str, bytes]:
    """Relative path in the bundle -> content."""
    notebook = release_path(course_dir)
    if not notebook.exists():
        raise CourseError(
            f"No student notebook at {notebook}; run `python -m grader release` first."
        )
    files = {NOTEBOOK: notebook.read_bytes(), "README.md": BUNDLE_README.encode()}
    for package in ("former", "grader/learner"):
        files |= {
            f"{package}/{name}": content
            for name, content in _files_under(REPO_ROOT / package).items()
        }
    for name in ("grader/__init__.py", "model.py", "pyproject.toml"):
        if (REPO_ROOT / name).is_file():
            files[name] = (REPO_ROOT / name).read_bytes()
    return files


def check_bundle(files: dict[str, bytes]) -> None:
    """Raise unless no file holds hidden test text or code from solutions/."""
    bodies = reference_bodies()
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


def zip_bytes(files: dict[str, bytes], root: str) -> bytes:
    """A reproducible zip of ``files`` under ``root/``: sorted entries, fixed timestamps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{root}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def build_student_bundle(
    out: Path, force: bool = False, course_dir: Path = COURSE_DIR
) -> tuple[Path, Path]:
    """Write ``out/<bundle>/`` and ``out/<bundle>.zip``; return both paths."""
    files = bundle_files(course_dir)
    check_bundle(files)
    folder, archive = out / BUNDLE_NAME, out / f"{BUNDLE_NAME}.zip"
    zipped = zip_bytes(files, BUNDLE_NAME)
    if folder.exists():
        if _files_under(folder) == files and archive.is_file() and archive.read_bytes() == zipped:
            return folder, archive
        if not force:
            raise CourseError(
                f"{folder} exists and differs from the bundle built now (a learner's edits, "
                "or an older release). Move it away, or use --force to replace it."
            )
        shutil.rmtree(folder)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    archive.write_bytes(zipped)
    return folder, archive


def main(argv: list[str]) -> int:
    """``argv``: ``student-bundle`` and its options."""
    parser = argparse.ArgumentParser(prog="python -m grader student-bundle")
    parser.add_argument("--course-dir", type=Path, default=COURSE_DIR, help="nbgrader course root")
    parser.add_argument("--out", type=Path, default=Path("student-bundle"))
    parser.add_argument("--force", action="store_true", help="replace a different bundle")
    args = parser.parse_args(argv[1:])
    out, course_dir = args.out.resolve(), args.course_dir.resolve()
    folder, archive = build_student_bundle(out, args.force, course_dir=course_dir)
    print(f"student bundle: {folder} and {archive}")
    return 0
