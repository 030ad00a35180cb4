"""The cells the grader skips: tagged in the master, carried by the release, their names known to
the visible checks."""

from __future__ import annotations

import json
from pathlib import Path

from grader.judge.program import bound_names, read_program
from grader.learner.skipped import SKIP_TAG, SKIPPED_NAMES, skipped_names_used

REPO = Path(__file__).resolve().parents[2]
MASTER = REPO / "notebooks/source/transformers_from_scratch/transformers_from_scratch.ipynb"
RELEASE = REPO / "notebooks/release/transformers_from_scratch/transformers_from_scratch.ipynb"


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _skipped(cell: dict) -> bool:
    return SKIP_TAG in cell.get("metadata", {}).get("tags", [])


def test_skipped_names_are_those_only_the_masters_skipped_cells_bind():
    skipped, ran = set(), set()
    for cell in _code_cells(MASTER):
        (skipped if _skipped(cell) else ran).update(bound_names("".join(cell["source"])))
    assert SKIPPED_NAMES == skipped - ran, (
        "update grader.learner.skipped.SKIPPED_NAMES: "
        f"missing {sorted(skipped - ran - SKIPPED_NAMES)}, extra {sorted(SKIPPED_NAMES - (skipped - ran))}"
    )


def test_training_data_sagemaker_and_optional_cells_are_skipped_and_nothing_graded_is():
    skipped = ["".join(c["source"]) for c in _code_cells(MASTER) if _skipped(c)]
    for marker in ("fit_classifier(", "load_imdb(", "sagemaker", "fit_generator(", "speedup"):
        assert any(marker in source for source in skipped), marker
    assert not any(
        _skipped(c) for c in _code_cells(MASTER) if c.get("metadata", {}).get("nbgrader")
    )
    assert "device" not in SKIPPED_NAMES  # bound by the set-up cell, which every run has


def test_the_release_carries_the_tags_so_submissions_do():
    tagged = lambda path: [c.get("id") for c in _code_cells(path) if _skipped(c)]  # noqa: E731
    assert tagged(RELEASE) == tagged(MASTER)
    program = read_program(RELEASE, {})
    assert len(program.skipped) == len(tagged(MASTER))
    assert "data" in {name for names in program.skipped.values() for name in names}


def test_a_function_reading_a_skipped_name_is_found():
    def uses_config(queries, keys, values, heads, mask=False):
        def inner():
            return config.emb  # noqa: F821 - the point of the test

        return inner()

    def plain(queries, keys, values, heads, mask=False):
        return queries

    assert skipped_names_used(uses_config) == ["config"]
    assert skipped_names_used(plain) == []
