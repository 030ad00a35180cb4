"""The nbgrader course: the committed release is current, nothing hidden leaks, bundles and
solution releases behave. Budget: about 30 s (one nbgrader generate_assignment)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from conftest import REPO_ROOT

from grader.course import bundle, release, release_solutions
from grader.course import course_dir as course_folder
from grader.judge.program import GRADED_FUNCTIONS

COURSE = REPO_ROOT / "notebooks"
RELEASE = course_folder.release_path(COURSE)
MASTER = course_folder.master_path(COURSE)


def copy_course(destination: Path) -> Path:
    """A fresh course folder holding only what an instructor authors: config and source."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(COURSE / "nbgrader_config.py", destination)
    shutil.copytree(COURSE / "source", destination / "source")
    return destination


def comparable(nb) -> list[tuple]:
    """What a learner gets from a cell: type, source, and its nbgrader role (not checksums)."""
    rows = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        role = tuple(
            (key, meta[key])
            for key in ("grade_id", "grade", "solution", "locked", "points")
            if key in meta
        )
        rows.append((cell.cell_type, cell.source, role))
    return rows


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    tmp = copy_course(tmp_path_factory.mktemp("course"))
    return release.generate_release(tmp)


def test_committed_release_is_up_to_date(regenerated):
    fresh = nbformat.read(regenerated, as_version=4)
    committed = nbformat.read(RELEASE, as_version=4)
    assert comparable(fresh) == comparable(committed), (
        "notebooks/release is stale: run `make release` and commit the result"
    )


def test_release_has_stubs_and_no_hidden_tests(regenerated):
    text = RELEASE.read_text()
    assert course_folder.hidden_test_leaks(text) == []
    assert bundle.solution_code_leaks(text, bundle.reference_bodies()) == []
    nb = nbformat.read(RELEASE, as_version=4)
    stubs = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert [c.metadata.nbgrader.grade_id for c in stubs] == list(GRADED_FUNCTIONS)
    assert all("raise NotImplementedError()" in c.source for c in stubs)
    points = {
        c.metadata.nbgrader.grade_id: c.metadata.nbgrader.points
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }
    assert sum(v for k, v in points.items() if k.startswith("test_task1")) == 60
    assert sum(v for k, v in points.items() if k.startswith("test_task2")) == 40


def test_release_files_are_only_the_notebook(regenerated):
    assert sorted(p.name for p in regenerated.parent.iterdir()) == [course_folder.NOTEBOOK]


# --------------------------------------------------------------------------- solution release


def test_released_solutions_have_the_answers_and_no_hidden_tests(tmp_path):
    written = release_solutions.write_solutions(tmp_path, MASTER)
    names = sorted(p.name for p in written)
    assert names == ["lab_solutions.py", "transformers_from_scratch_solutions.ipynb"]
    for path in written:
        assert course_folder.hidden_test_leaks(path.read_text()) == [], path
    nb = nbformat.read(tmp_path / "transformers_from_scratch_solutions.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in code
    assert "raise NotImplementedError()" not in code
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")

    # the module is importable and its answers agree with the references
    import torch

    sys.path.insert(0, str(tmp_path))
    try:
        import lab_solutions
    finally:
        sys.path.remove(str(tmp_path))
    from solutions import attention

    q, k, v = torch.randn(3, 2, 7, 12)
    for mask in (False, True):
        assert torch.equal(
            lab_solutions.multihead_attention(q, k, v, 3, mask),
            attention.multihead_attention(q, k, v, 3, mask),
        )


def test_release_solutions_refuses_to_replace_a_different_release(tmp_path):
    (tmp_path / "lab_solutions.py").write_text("# someone's notes\n")
    with pytest.raises(course_folder.CourseError, match="--force"):
        release_solutions.write_solutions(tmp_path, MASTER)
    assert (tmp_path / "lab_solutions.py").read_text() == "# someone's notes\n"
    release_solutions.write_solutions(tmp_path, MASTER, force=True)
    assert "def multihead_attention" in (tmp_path / "lab_solutions.py").read_text()


def test_release_time_at_and_after_minutes():
    now = dt.datetime(2026, 1, 1, 13, 0, 30)
    assert release_solutions.release_time(None, None, now) == now
    assert release_solutions.release_time(None, 70, now) == now + dt.timedelta(minutes=70)
    assert release_solutions.release_time("14:10", None, now) == dt.datetime(2026, 1, 1, 14, 10)
    with pytest.raises(course_folder.CourseError, match="already passed"):
        release_solutions.release_time("12:00", None, now)
    with pytest.raises(course_folder.CourseError, match="14:10"):
        release_solutions.release_time("2pm", None, now)


def course_due(tmp_path: Path, due: dt.datetime | None) -> Path:
    """A course folder (config, source) whose gradebook has the lab due at local time ``due``,
    as `nbgrader db assignment add --duedate` records it, and its own exchange."""
    course = copy_course(tmp_path / "course")
    with (course / "nbgrader_config.py").open("a") as config:
        config.write(f"\nc.Exchange.root = {str(tmp_path / 'exchange')!r}\n")
    utc = due.astimezone(dt.timezone.utc).replace(tzinfo=None) if due else None
    with course_folder.open_gradebook(course) as gradebook:
        gradebook.update_or_create_assignment(course_folder.ASSIGNMENT, duedate=utc)
    return course


def run_release_solutions(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader", "release-solutions", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_release_solutions_command_waits_then_writes(tmp_path):
    course = course_due(tmp_path, dt.datetime.now() - dt.timedelta(hours=1))
    out = tmp_path / "outbound"
    args = ["--course-dir", str(course), "--after-minutes", "0.1", "--out", str(out)]
    result = run_release_solutions(*args)
    assert result.returncode == 0, result.stderr
    assert "releasing the solutions at" in result.stdout
    assert "| at " in result.stdout  # the line that frees the terminal next time
    assert (out / "lab_solutions.py").is_file()


def test_release_solutions_defaults_to_the_exchange_outbound(tmp_path):
    course = course_due(tmp_path, dt.datetime.now() - dt.timedelta(minutes=1))
    result = run_release_solutions("--course-dir", str(course))
    assert result.returncode == 0, result.stderr
    outbound = tmp_path / "exchange" / "transformers-from-scratch" / "outbound"
    assert (outbound / "transformers_from_scratch_solutions" / "lab_solutions.py").is_file()


def test_release_solutions_refuses_before_the_due_date_unless_forced(tmp_path):
    course = course_due(tmp_path, dt.datetime.now() + dt.timedelta(hours=2))
    outbound = tmp_path / "exchange" / "transformers-from-scratch" / "outbound"
    for minutes in ("0", "60"):
        refused = run_release_solutions("--course-dir", str(course), "--after-minutes", minutes)
        assert refused.returncode == 1, refused.stdout
        assert "is due" in refused.stderr and "--before-due" in refused.stderr
    assert not outbound.exists()
    forced = run_release_solutions("--course-dir", str(course), "--before-due")
    assert forced.returncode == 0, forced.stderr
    assert (outbound / "transformers_from_scratch_solutions" / "lab_solutions.py").is_file()


def test_release_solutions_without_a_due_date_says_how_to_set_one(tmp_path):
    course = course_due(tmp_path, None)
    refused = run_release_solutions("--course-dir", str(course))
    assert refused.returncode == 1
    assert "nbgrader db assignment add transformers_from_scratch --duedate" in refused.stderr
    assert f"{release_solutions.MINUTES_BEFORE_SOLUTIONS} min" in refused.stderr


def test_release_solutions_detached_gives_the_terminal_back_and_releases_at_the_due_date(
    tmp_path,
):
    due = dt.datetime.now() + dt.timedelta(seconds=15)
    course = course_due(tmp_path, due)
    started = dt.datetime.now()
    result = run_release_solutions("--course-dir", str(course), "--detach", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "in the background" in result.stdout
    outbound = tmp_path / "exchange" / "transformers-from-scratch" / "outbound"
    module = outbound / "transformers_from_scratch_solutions" / "lab_solutions.py"
    assert not module.exists()  # not before the due date
    log = course / "grader_results" / "release-solutions.log"
    for _ in range(180):
        if module.is_file():
            break
        time.sleep(0.5)
    assert module.is_file(), log.read_text() if log.exists() else "no log"
    assert dt.datetime.fromtimestamp(module.stat().st_mtime) >= due
    assert started < due


# --------------------------------------------------------------------------- student bundle


def test_student_bundle_holds_what_learners_need_and_nothing_hidden(tmp_path):
    folder, archive = bundle.build_student_bundle(tmp_path)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {
        "transformers_from_scratch.ipynb",
        "README.md",
        "former/__init__.py",
        "grader/__init__.py",
    } <= files
    learner = {
        p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "grader" / "learner").glob("*.py")
    }
    assert learner <= files, "the learner package ships whole"
    assert not any(name.startswith("solutions") for name in files)
    assert not any(
        name.startswith(("grader/judge", "grader/sandbox", "grader/course")) for name in files
    )
    assert "grader/__main__.py" not in files
    bodies = bundle.reference_bodies()
    for name in files:
        text = (folder / name).read_text(errors="replace")
        assert course_folder.hidden_test_leaks(text) == [], name
        assert bundle.solution_code_leaks(text, bodies) == [], name
    with zipfile.ZipFile(archive) as zipped:
        assert {n.removeprefix("transformers_from_scratch/") for n in zipped.namelist()} == files

    # the bundle's notebook finds former and grader from the bundle itself
    result = subprocess.run(
        [sys.executable, "-c", "import former, grader.learner.checks; print(former.__file__)"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(folder)


def test_student_bundle_refuses_to_overwrite_a_different_bundle(tmp_path):
    folder, _ = bundle.build_student_bundle(tmp_path)
    bundle.build_student_bundle(tmp_path)  # the same bundle again: fine
    (folder / "transformers_from_scratch.ipynb").write_text("{}")  # a learner's work
    with pytest.raises(course_folder.CourseError, match="--force"):
        bundle.build_student_bundle(tmp_path)
    assert (folder / "transformers_from_scratch.ipynb").read_text() == "{}"
    bundle.build_student_bundle(tmp_path, force=True)
    assert (folder / "transformers_from_scratch.ipynb").read_bytes() == RELEASE.read_bytes()


def test_leak_checks_catch_hidden_tests_and_solution_code():
    bodies = bundle.reference_bodies()
    hidden = 'from solutions.hidden_tests import run_group; run_group("x", globals())'
    assert course_folder.hidden_test_leaks(hidden)
    solution_text = (REPO_ROOT / "solutions" / "attention.py").read_text()
    assert set(bundle.solution_code_leaks(solution_text, bodies)) == set(GRADED_FUNCTIONS)
    with pytest.raises(course_folder.CourseError, match="leak"):
        bundle.check_bundle({"notes.py": solution_text.encode()})


def test_release_refuses_to_replace_a_worked_in_student_notebook(regenerated):
    assert release.learner_work_in(RELEASE) == [], "the committed release should be pristine"
    nb = nbformat.read(regenerated, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "multihead_attention":
            cell.source = cell.source.replace("raise NotImplementedError()", "return queries")
    nbformat.write(nb, regenerated)
    course_dir = regenerated.parents[2]
    with pytest.raises(course_folder.CourseError, match="worked in .*multihead_attention"):
        release.generate_release(course_dir)
    assert "return queries" in regenerated.read_text()


def test_solution_function_says_which_function_a_cell_lacks():
    source = "import torch\n\n\ndef helper(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"
    assert release.solution_function(source, "helper") == "def helper(x):\n    return x"
    with pytest.raises(course_folder.CourseError, match="defines no function multihead_attention"):
        release.solution_function(source, "multihead_attention")


def test_grader_commands_start_without_compiling_unused_iri_grammars():
    """nbformat's jsonschema would build rfc3987_syntax's grammars on every command's start."""
    probe = (
        "import sys, grader.__main__, nbformat.validator\n"
        "print(sys.modules.get('rfc3987_syntax') is None)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr


def test_learners_submit_before_task_3_and_its_budgets_give_the_suggested_due_date():
    nb = nbformat.read(MASTER, as_version=4)
    intro = nb.cells[0].source
    budgets = {}
    for line in intro.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[2].endswith(" min"):
            budgets[cells[0]] = int(cells[2].removesuffix(" min"))
    assert list(budgets) == ["0", "1", "2", "optional", "3"], budgets
    before_task_3 = sum(minutes for task, minutes in budgets.items() if task != "3")
    assert before_task_3 == release_solutions.MINUTES_BEFORE_SOLUTIONS
    assert f"{before_task_3}\nminutes" in intro or f"{before_task_3} minutes" in intro
    assert "*before* Task 3" in intro
    task3 = next(cell.source for cell in nb.cells if cell.get("id") == "task3")
    assert "Submit your notebook before this task" in task3
