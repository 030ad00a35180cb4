"""The learner's path through the master notebook, as the README describes it: one task
numbering, the optional task after the graded ones, Task 1's recipe behind a hint, quick mode
switchable in the first cell, the scale experiment."""

from __future__ import annotations

import json
import math
import re

import matplotlib
import pytest
import torch
from conftest import REPO_ROOT

from grader.course.course_dir import master_path

CELLS = json.loads(master_path().read_text())["cells"]
IDS = [cell.get("id") for cell in CELLS]


def source(cell_id: str) -> str:
    return "".join(CELLS[IDS.index(cell_id)]["source"])


def notebook_tasks() -> list[str]:
    """The task numbers of the notebook's level-2 headings, in order."""
    headings = [line for cell in CELLS if cell["cell_type"] == "markdown"
                for line in "".join(cell["source"]).splitlines() if line.startswith("## ")]  # fmt: skip
    return [m.group(1) for h in headings if (m := re.match(r"## Task (\d+) ·", h))]


def test_readme_and_notebook_number_the_tasks_alike() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    learners = readme[readme.index("## For learners") : readme.index("### Training from")]
    listed = re.findall(r"^(\d+)\. \*\*", learners, flags=re.M)
    assert listed == notebook_tasks() == ["0", "1", "2", "3"]
    intro_table = re.findall(r"^\| (\d+|optional) \|", source("intro"), flags=re.M)
    assert intro_table == ["0", "1", "2", "optional", "3"]


def test_the_optional_task_comes_after_every_graded_cell() -> None:
    graded = [i for i, cell in enumerate(CELLS) if cell["metadata"].get("nbgrader", {}).get("grade")
              or cell["metadata"].get("nbgrader", {}).get("solution")]  # fmt: skip
    assert IDS.index("generation") > max(graded)
    assert IDS.index("generation") < IDS.index("task3")


def test_task1_keeps_the_contract_in_view_and_folds_the_recipe() -> None:
    text = source("task1")
    shown, _, folded = text.partition("<details>")
    assert "**The contract.**" in shown and "(b, t, heads * s)" in shown and "√s" in shown
    assert "Not allowed here" in shown
    assert "</summary>" in folded and "1. scores" in folded and "--transpose(1, 2)-->" in folded
    assert "1. scores" not in shown


@pytest.mark.parametrize(
    ("quick_mode", "lab_quick", "expected"),
    [("None", "", False), ("None", "1", True), ("True", "", True), ("False", "1", False)],
)
def test_quick_mode_is_a_switch_in_the_first_cell(
    quick_mode: str, lab_quick: str, expected: bool, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("LAB_QUICK", lab_quick)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    cell = source("setup")
    assert "QUICK_MODE = None" in cell
    namespace: dict = {}
    exec(cell.replace("QUICK_MODE = None", f"QUICK_MODE = {quick_mode}", 1), namespace)
    assert namespace["QUICK"] is expected
    assert f"quick mode: {expected}" in capsys.readouterr().out
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # grading always trains briefly
    exec(cell.replace("QUICK_MODE = None", f"QUICK_MODE = {quick_mode}", 1), namespace)
    assert namespace["QUICK"] is True


def test_the_scale_experiment_shows_the_softmax_saturating_without_the_scale(capsys) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace = {"torch": torch, "plt": plt}
    cell = source("scale-experiment")
    exec(cell, namespace)
    exec(cell.replace("SCALE_SCORES = True", "SCALE_SCORES = False", 1), namespace)
    curves = namespace["entropy_curves"]
    scaled, unscaled = curves["scaled by 1/√s"], curves["not scaled"]
    assert max(scaled) - min(scaled) < 0.5 and min(scaled) > math.log2(32) - 1  # spread, always
    assert unscaled[-1] < 1 < scaled[-1]  # one-hot, nearly, for large heads


def test_the_restore_cell_is_the_second_code_cell_as_the_readme_says() -> None:
    code_cells = [cell.get("id") for cell in CELLS if cell["cell_type"] == "code"]
    assert code_cells[:2] == ["setup", "restore"]  # its behaviour: test_parallel_notebook_pool
    assert "run its second code cell alone" in (REPO_ROOT / "README.md").read_text()


def test_the_own_attention_run_trains_with_word_pairs_on_10000_reviews() -> None:
    """As the README says: outside quick mode, 10,000 reviews, and a model built for them with
    the most frequent word pairs (classifier_for picks them from the training reviews)."""
    cell = source("train-mha")
    statement = cell[cell.index("config = ClassifierConfig(") :]
    statement = statement[: statement.index("\n)\n") + 3]
    namespace = {"QUICK": False, "data": type("Data", (), {"vocab": range(50_000)})()}
    exec("from former.classifier import ClassifierConfig\n" + statement, namespace)
    assert namespace["config"].bigrams > 0
    assert "smaller(data, 256 if QUICK else 10_000," in cell
    assert "model = classifier_for(config, train_data, attention=multihead_attention)" in cell
