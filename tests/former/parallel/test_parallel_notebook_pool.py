"""Task 2's pool in a real notebook kernel runs the learner's current ``attention_function``.

A learner writes a wrong ``attention_function``, runs the checks, fixes it, re-runs the
``%%writefile`` cell and the cells below it (not the cell that made the pool): the parallel
check and Test 6 must see the fix, as the grader does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
from conftest import shared_file
from nbclient import NotebookClient

from grader.course.course_dir import master_path

SCALE = "/ math.sqrt(s)"


def hidden_tests_removed(source: str) -> str:
    """A test cell as the learner's copy holds it: without its hidden part."""
    return re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", source, flags=re.S)


def fix_after_a_wrong_answer(cells: list[dict]) -> list[tuple[str, str]]:
    """(label, source) of the cells a learner runs: set-up, Task 1, the pool, a wrong
    ``attention_function`` (no scale) and its checks, then the fix and the cells below it."""
    by_id = {cell.get("id"): "".join(cell["source"]) for cell in cells}
    correct = by_id["attention_function"]
    assert SCALE in correct
    wrong = correct.replace(SCALE, "")
    pool_cells = [key for key in ("restore", "cpu-count", "make-pool") if key in by_id]
    after_edit = ["check-af", "parallel_multihead_attention"]
    return [
        *((key, by_id[key]) for key in ("setup", "multihead_attention", "save-module")),
        *((key, by_id[key]) for key in pool_cells),
        ("wrong attention_function", wrong),
        *((key, by_id[key]) for key in after_edit),
        ("check before the fix", by_id["check-parallel"]),
        ("fixed attention_function", correct),
        *((key, by_id[key]) for key in after_edit),
        ("check after the fix", by_id["check-parallel"]),
        ("test 6", hidden_tests_removed(by_id["test_task2_parallel_values"])),
        ("close-pool", by_id["close-pool"]),
    ]


def run_in_a_kernel(steps: list[tuple[str, str]], workdir: Path) -> dict[str, str]:
    """Run the steps as cells of one notebook in a fresh kernel; each step's text output."""
    import os

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for _, source in steps]
    env = dict(os.environ, LAB_QUICK="1", LAB_IMDB=str(shared_file("imdb_sample.csv")),
               FORMER_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")  # fmt: skip
    NotebookClient(
        nb, timeout=300, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(workdir)}},
    ).execute(env=env, cwd=str(workdir))  # fmt: skip
    outputs = {}
    for (label, _), cell in zip(steps, nb.cells, strict=True):
        parts = []
        for out in cell.outputs:
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type == "error":
                parts.append(f"{out.ename}: {out.evalue}")
        outputs[label] = "".join(parts)
    return outputs


def stale_pool_scenario(notebook: Path, workdir: Path) -> dict[str, str]:
    cells = json.loads(notebook.read_text())["cells"]
    return run_in_a_kernel(fix_after_a_wrong_answer(cells), workdir)


def test_a_fixed_attention_function_reaches_the_pool_without_remaking_it(tmp_path: Path) -> None:
    outputs = stale_pool_scenario(master_path(), tmp_path)
    before, after = outputs["check before the fix"], outputs["check after the fix"]
    print(before, after, sep="\n")
    assert "✗" in before and "scale" in before.lower()  # the wrong function ran in the pool
    assert "✗" not in after and "✓" in after, after
    assert "parallel equals serial, with and without the mask: ok" in outputs["test 6"]
    assert "Error" not in outputs["close-pool"]
    assert outputs["restore"].startswith("Nothing to restore")  # a top-to-bottom run


def test_after_a_restart_one_cell_restores_the_answers_and_the_pool(tmp_path: Path) -> None:
    """A fresh kernel (a restart) and the saved notebook: the restore cell alone brings back
    what Task 2's cells need, without training."""
    notebook = tmp_path / "transformers_from_scratch.ipynb"
    notebook.write_text(master_path().read_text())
    cells = {c.get("id"): "".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]}
    names = ("data", "device", "multihead_attention", "attention_function", "pool",
             "parallel_multihead_attention", "build_classifier")  # fmt: skip
    steps = [
        ("restore", cells["restore"]),
        ("names", f"print([n for n in {names!r} if n not in globals()])"),
        ("check", cells["check-parallel"]),
        ("close-pool", cells["close-pool"]),
    ]
    outputs = run_in_a_kernel(steps, tmp_path)
    assert "Restored from transformers_from_scratch.ipynb" in outputs["restore"], outputs["restore"]
    assert "smoke" not in outputs["restore"] and "s on cpu" not in outputs["restore"]  # no training
    assert outputs["names"].strip() == "[]"
    assert "✗" not in outputs["check"] and "✓" in outputs["check"], outputs["check"]
