"""The lab notebook: the master runs top to bottom, the student version stops only at the stubs.

Budget: about 4 minutes on 2 busy cores (master ~130 s, student ~100 s, the rest < 10 s).
Both notebooks train for real, on the 2,500-review IMDB sample, in quick mode (LAB_QUICK=1).
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import REPO_ROOT, shared_file
from nbclient import NotebookClient

COURSE = REPO_ROOT / "notebooks"
MASTER = COURSE / "source" / "transformers_from_scratch" / "transformers_from_scratch.ipynb"
RELEASE = COURSE / "release" / "transformers_from_scratch" / "transformers_from_scratch.ipynb"
SOLUTION_IDS = ("multihead_attention", "attention_function", "parallel_multihead_attention")
VISIBLE_CHECKS = ("check_multihead_attention", "check_attention_function", "check_parallel")


def cells_by_grade_id(nb) -> dict:
    return {
        cell.metadata["nbgrader"]["grade_id"]: cell
        for cell in nb.cells
        if "nbgrader" in cell.get("metadata", {})
    }


def lab_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a learner's kernel in CI: quick mode, real data, nothing downloaded."""
    env = dict(
        os.environ,
        LAB_QUICK="1",
        LAB_IMDB=str(shared_file("imdb_sample.csv")),
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


# --------------------------------------------------------------------------- the source


def test_master_solution_cells_hold_exactly_the_reference_solutions():
    from solutions import attention

    cells = cells_by_grade_id(nbformat.read(MASTER, as_version=4))
    for name in SOLUTION_IDS:
        source = cells[name].source
        assert "### BEGIN SOLUTION" in source and "### END SOLUTION" in source
        without_markers = "\n".join(
            line
            for line in source.split("\n")
            if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
        )
        reference = inspect.getsource(getattr(attention, name)).rstrip("\n")
        assert reference in without_markers, (
            f"solution cell {name} differs from solutions/attention.py"
        )
        # and nothing else defines behaviour in the cell: only imports besides the function
        code = "\n".join(ln for ln in without_markers.split("\n") if not ln.startswith("%"))
        others = [
            node
            for node in ast.parse(code).body
            if not isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.Expr)
        ]
        assert not others, f"solution cell {name} holds more than the function and imports"


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
        [sys.executable, "-m", "grader", "release-solutions", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.timeout(900)
def test_master_runs_top_to_bottom_on_real_data(tmp_path, released_solutions):
    env = lab_env(
        tmp_path,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        LAB_SOLUTIONS=str(released_solutions),
    )
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
    assert images >= 3, "expected the live training plot, the heat maps and the speed-up plot"


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
