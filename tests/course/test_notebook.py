"""The lab notebook: the master runs top to bottom, the student version stops only at the stubs.

Budget: about 4 minutes on 2 busy cores (master ~150 s, student ~100 s, the rest < 10 s).
Both notebooks train for real, on the 2,500-review IMDB sample and tiny Shakespeare, in quick
mode (LAB_QUICK=1).
"""

from __future__ import annotations

import ast
import difflib
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import trial_course
from conftest import REPO_ROOT, shared_file
from nbclient import NotebookClient

from grader.course import course_dir as course_folder
from grader.course import release
from grader.judge.program import GRADED_FUNCTIONS

MASTER = course_folder.master_path()
RELEASE = course_folder.release_path()
VISIBLE_CHECKS = ("check_multihead_attention", "check_attention_function", "check_parallel")
# The optional generation task's causal model, after the quick budget (150 steps of a one-block
# model, seconds), scored 3.7 bits per character on tiny Shakespeare's validation text, against
# 8 for a uniform guess among bytes and 4.8 for letter frequencies alone: under 4.0, it has
# learned from what it reads, with a margin for other platforms' rounding.
QUICK_CAUSAL_BITS_LIMIT = 4.0


def lab_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a learner's kernel in CI: quick mode, real data, nothing downloaded."""
    env = dict(
        os.environ,
        LAB_QUICK="1",
        LAB_IMDB=str(shared_file("imdb_sample.csv")),
        LAB_SHAKESPEARE=str(shared_file("tinyshakespeare.txt")),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        FORMER_OFFLINE="1",
        AWS_EC2_METADATA_DISABLED="true",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        # CI shares two cores between many processes: more threads only contend for them
        OMP_NUM_THREADS="1",
    )
    for name in ("SAGEMAKER_ROLE", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "LAB_SOLUTIONS"):
        env.pop(name, None)
    env.update(extra)
    return env


def execute(notebook: Path, workdir: Path, env: dict[str, str], allow_errors: bool):
    """Run a copy of ``notebook`` in ``workdir``; return the executed notebook and seconds taken."""
    workdir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    client.execute(env=env, cwd=str(workdir))
    return nb, time.perf_counter() - start


def text_of(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return "".join(parts)


def errors_of(cell) -> list:
    return [o for o in cell.get("outputs", []) if o.output_type == "error"]


def generation_figures(nb) -> dict[str, tuple[float, float]]:
    """The generation task's table: each row's (causal, mask=False) figures, by row label."""
    cell = next(c for c in nb.cells if c.get("id") == "gen-compare")
    rows = re.findall(r"^(\S.*?) +(\d+\.\d+) +(\d+\.\d+)$", text_of(cell), re.M)
    return {label: (float(causal), float(leaky)) for label, causal, leaky in rows}


# --------------------------------------------------------------------------- the source


def test_master_solution_cells_hold_exactly_the_reference_solutions():
    from solutions import attention

    written = release.solution_module(MASTER, release.REFERENCE_DOC)
    committed = release.REFERENCE.read_text()
    assert committed == written, (
        "solutions/attention.py is not what the release writes from the master's solution "
        "cells: run `make release` and commit the result:\n"
        + "\n".join(
            difflib.unified_diff(
                committed.split("\n"), written.split("\n"), "committed", "release", lineterm=""
            )
        )
    )
    cells = course_folder.graded_cells(nbformat.read(MASTER, as_version=4))
    for name in GRADED_FUNCTIONS:
        cell = cells[name]
        assert cell.metadata.nbgrader == trial_course.nbgrader_metadata(name, solution=True)
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
        reference = inspect.getsource(getattr(attention, name)).rstrip("\n")
        assert release.solution_function(cell.source, name) == reference
        # and nothing else defines behaviour in the cell: only imports besides the function
        code = "\n".join(
            line
            for line in course_folder.remove_solution_markers(cell.source).split("\n")
            if line[:1] != "%"
        )
        others = [
            node
            for node in ast.parse(code).body
            if not isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.Expr)
        ]
        assert not others, f"solution cell {name} holds more than the function and imports"


def hidden_region(source: str) -> str:
    """The code between a test cell's hidden-test markers (which must appear once each)."""
    assert (
        source.count(course_folder.BEGIN_HIDDEN) == source.count(course_folder.END_HIDDEN) == 1
    ), source
    return source.split(course_folder.BEGIN_HIDDEN)[1].split(course_folder.END_HIDDEN)[0]


def test_master_test_cells_run_their_own_hidden_group():
    from solutions.hidden_cases import GROUPS

    nb = nbformat.read(MASTER, as_version=4)
    tests = {
        grade_id: cell
        for grade_id, cell in course_folder.graded_cells(nb).items()
        if cell.metadata.nbgrader.get("grade")
    }
    assert list(tests) == list(GROUPS), "one test cell per hidden group, in the groups' order"
    for grade_id, cell in tests.items():
        points = GROUPS[grade_id].points
        assert cell.metadata.nbgrader == trial_course.nbgrader_metadata(grade_id, points=points)
        assert f"({points} points)" in cell.source.split("\n")[0], cell.source
        hidden = ast.parse(hidden_region(cell.source))
        imports = [
            (node.module, [alias.name for alias in node.names])
            for node in hidden.body
            if isinstance(node, ast.ImportFrom)
        ]
        calls = [ast.unparse(node.value) for node in hidden.body if isinstance(node, ast.Expr)]
        assert imports == [("grader.judge.hidden_cells", ["run_group"])], cell.source
        assert calls == [f"run_group({grade_id!r}, globals())"], cell.source


def test_master_cells_lint_clean_where_ruff_cannot_see_them():
    """ruff skips cells that start with a cell magic: lint the module %%writefile writes."""
    nb = nbformat.read(MASTER, as_version=4)
    written = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%writefile")]
    assert written, "the master writes my_transformer_model.py with %%writefile"
    for cell in written:
        magic, _, module = cell.source.partition("\n")
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--stdin-filename", magic.split()[-1], "-"],
            input=module + "\n",  # what %%writefile writes
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_master_is_saved_without_outputs():
    nb = nbformat.read(MASTER, as_version=4)
    ran = [c.id for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert ran == [], (
        "clear the master's outputs before committing it (Edit > Clear Outputs of All Cells)"
    )


def test_every_task_states_its_time_budget():
    text = "\n".join(c.source for c in nbformat.read(MASTER, as_version=4).cells)
    for heading in ("Task 0", "Task 1", "Task 2", "Task 3"):
        assert heading in text
    for budget in ("(10 min)", "(30 min)", "(20 min)"):
        assert budget in text


# --------------------------------------------------------------------------- execution


@pytest.fixture(scope="module")
def released_solutions(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("released")
    result = subprocess.run(
        # before any due date: this preview goes to a folder only the test reads
        [sys.executable, "-m", "grader", "release-solutions", "--out", str(out), "--before-due"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.timeout(900)
def test_master_runs_top_to_bottom_on_real_data(tmp_path, released_solutions):
    # As `make master` runs it: the hidden cells find solutions/ through the installed grader.
    env = lab_env(tmp_path, LAB_SOLUTIONS=str(released_solutions))
    nb, seconds = execute(MASTER, tmp_path / "master", env, allow_errors=True)
    print(f"master notebook executed in {seconds:.0f} s")
    failed = [(i, text_of(c)[-800:]) for i, c in enumerate(nb.cells) if errors_of(c)]
    assert not failed, f"cells failed: {failed}"

    joined = "\n".join(text_of(c) for c in nb.cells)
    assert "imdb_sample.csv" in joined or "IMDB" in joined, "the notebook did not use real data"
    assert "val_acc=" in joined, "no training metric lines"
    assert "AttentionNotImplementedError" in joined, "Task 0 did not show the framework's error"
    assert "dry run" in joined, "the SageMaker cell did not show a dry run"
    assert "solutions loaded from" in joined and "max |yours - solution|" in joined
    assert (tmp_path / "master" / "my_transformer_model.py").is_file()
    module = (tmp_path / "master" / "my_transformer_model.py").read_text()
    assert "def attention_function" in module and "def multihead_attention" in module
    images = sum(
        1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    )
    assert images >= 6, (
        "expected the live training plot, the heat maps, the generator's two live plots and "
        "attention maps, and the speed-up plot"
    )

    assert "1,003,854 training and 55,769 validation characters" in joined, "not tiny Shakespeare"
    assert "sample: [ROMEO:⏎]" in joined, "the generator printed no samples from its prompt"
    figures = generation_figures(nb)
    causal_bits, leaky_bits = figures["validation bits/char"]
    assert causal_bits < QUICK_CAUSAL_BITS_LIMIT, figures
    causal_loss, leaky_loss = figures["training loss, bits/char"]
    assert leaky_loss < causal_loss, f"without the mask, training loss should be lower: {figures}"
    assert figures["validation, mask switched on"][1] > causal_bits, (
        f"with its mask switched back on, the leaky model should do worse: {figures}"
    )


@pytest.mark.timeout(900)
def test_student_notebook_stops_only_at_the_stubs(tmp_path):
    nb, seconds = execute(RELEASE, tmp_path / "student", lab_env(tmp_path), allow_errors=True)
    print(f"student notebook executed in {seconds:.0f} s")
    first_stub = next(
        i
        for i, c in enumerate(nb.cells)
        if c.metadata.get("nbgrader", {}).get("grade_id") == "multihead_attention"
    )
    for index, cell in enumerate(nb.cells):
        for error in errors_of(cell):
            assert index > first_stub, f"cell {index} failed before the first stub: {text_of(cell)}"
            assert error.ename in ("NotImplementedError", "AttentionNotImplementedError"), (
                f"cell {index} failed with {error.ename}: {error.evalue}\n{cell.source[:300]}"
            )
    checks = [c for c in nb.cells if any(name in c.source for name in VISIBLE_CHECKS)]
    assert len(checks) == 3
    for cell in checks:
        assert not errors_of(cell), f"a visible check crashed: {text_of(cell)}"
        assert "not implemented yet" in text_of(cell)
    joined = "\n".join(text_of(c) for c in nb.cells)
    assert "not released yet" in joined, "Task 3 should say the solutions are not released"
    assert "val_acc=" in joined, "the Task 0 smoke run should train before any stub"
