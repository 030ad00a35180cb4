"""What the grader replays of a notebook for each graded function: the statements that bind
the names it uses, never the training runs around them; and what it cannot recreate."""

from __future__ import annotations

import nbformat
import pytest

from grader.course.nbgrader import nbgrader_metadata
from grader.judge.program import read_program
from grader.learner.replay import plan_replay, read_cell

TESTS = {
    "multihead_attention": {"test_task1_values"},
    "attention_function": {"test_task2_attention_function"},
    "parallel_multihead_attention": {"test_task2_parallel_values"},
}


def replayed(*cells: str, needed=("multihead_attention",)) -> tuple[list[str], set[str]]:
    plan = plan_replay(set(needed), [read_cell(c, i) for i, c in enumerate(cells, 1)])
    return [s.source for s in plan.statements], plan.unbound


def test_an_assignment_in_a_training_cell_is_replayed_without_the_training():
    sources, unbound = replayed(
        "from former.training import fit_classifier, pick_device\n"
        "device = pick_device()\n"
        "metrics = fit_classifier(model, data, config, device=device)",
        "def multihead_attention(q, k, v, heads, mask=False):\n    return q.to(device)",
    )
    assert sources == [
        "from former.training import fit_classifier, pick_device",
        "device = pick_device()",
        "def multihead_attention(q, k, v, heads, mask=False):\n    return q.to(device)",
    ]
    assert unbound == set()


def test_names_bound_after_the_definition_still_count():
    sources, _ = replayed(
        "def multihead_attention(q, k, v, heads, mask=False):\n    return helper(q) * SCALE",
        "import math\nSCALE = 1 / math.sqrt(4)\nprint(SCALE)",
        "def helper(x):\n    return x + OFFSET\nOFFSET = 0.0\nplt.plot([1, 2])",
    )
    assert "print(SCALE)" not in sources and "plt.plot([1, 2])" not in sources
    assert {"import math", "SCALE = 1 / math.sqrt(4)", "OFFSET = 0.0"} <= set(sources)


def test_the_last_binding_before_the_call_wins_and_earlier_ones_are_dropped():
    sources, _ = replayed(
        "LIMIT = expensive_download()",
        "LIMIT = 512",
        "def multihead_attention(q, k, v, heads, mask=False):\n    return q[:, :LIMIT]",
    )
    assert sources[0] == "LIMIT = 512" and "expensive_download()" not in " ".join(sources)


def test_names_set_by_magics_exec_or_globals_cannot_be_recreated():
    sources, unbound = replayed(
        "%time WIDTH = 4",
        "exec('HEIGHT = 2')",
        "globals()['DEPTH'] = 1",
        "def multihead_attention(q, k, v, heads, mask=False):\n    return q * WIDTH * HEIGHT * DEPTH",
    )
    assert unbound == {"WIDTH", "HEIGHT", "DEPTH"}
    assert len(sources) == 1


def test_conditional_bindings_keep_the_earlier_ones():
    sources, _ = replayed(
        "EPS = 1e-9",
        "if USE_GPU:\n    EPS = 1e-6",
        "USE_GPU = False",
        "def multihead_attention(q, k, v, heads, mask=False):\n    return q + EPS",
        needed=("multihead_attention",),
    )
    assert sources[:2] == ["EPS = 1e-9", "if USE_GPU:\n    EPS = 1e-6"]


def test_a_writefile_cell_becomes_a_file_and_its_import_is_replayed():
    cells = [
        read_cell(
            "%%writefile my_transformer_model.py\nimport torch\ndef attention_function(args):\n    return args[0]",
            1,
        ),
        read_cell("from my_transformer_model import attention_function\nrun_the_speed_test()", 2),
    ]
    plan = plan_replay({"attention_function"}, cells)
    assert plan.files == [
        (
            "my_transformer_model.py",
            "import torch\ndef attention_function(args):\n    return args[0]",
        )
    ]
    assert [s.source for s in plan.statements] == [
        "from my_transformer_model import attention_function"
    ]


def _notebook(tmp_path, *cells: tuple[str | None, str]):
    nb = nbformat.v4.new_notebook()
    for grade_id, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        if grade_id in TESTS:
            cell.metadata["nbgrader"] = nbgrader_metadata(grade_id, solution=True)
        elif grade_id:
            cell.metadata["nbgrader"] = nbgrader_metadata(grade_id, points=10)
        nb.cells.append(cell)
    path = tmp_path / "lab.ipynb"
    nbformat.write(nb, path)
    return path


def test_each_function_sees_the_notebook_as_it_is_above_its_tests(tmp_path):
    path = _notebook(
        tmp_path,
        (None, "import torch\nSCALE = 0.5"),
        (
            "multihead_attention",
            "def multihead_attention(q, k, v, heads, mask=False):\n    return q * SCALE",
        ),
        ("test_task1_values", "out = multihead_attention(q, k, v, 2)"),
        (None, "SCALE = 2.0  # after the tests: plain nbgrader graded with 0.5"),
        (
            "attention_function",
            "%%writefile my_transformer_model.py\ndef attention_function(args):\n    return args[0]",
        ),
        (
            "parallel_multihead_attention",
            "from my_transformer_model import attention_function\n"
            "def parallel_multihead_attention(q, k, v, heads, mask=False, pool=None):\n"
            "    return multihead_attention(q, k, v, heads) + 0 * len(pool.map(attention_function, []))",
        ),
        ("test_task2_attention_function", "# visible part"),
        ("test_task2_parallel_values", "# visible part"),
    )
    program = read_program(path, TESTS)
    mha = [step["source"] for step in program.steps["multihead_attention"]]
    assert mha == ["SCALE = 0.5", mha[1]] and mha[1].startswith("def multihead_attention")
    parallel = [step.get("source") for step in program.steps["parallel_multihead_attention"]]
    assert any(s.startswith("SCALE = 2.0") for s in parallel)  # above its own tests: it counts
    assert program.steps["attention_function"][0] == {
        "file": "my_transformer_model.py",
        "source": "def attention_function(args):\n    return args[0]",
    }
    assert all(not names for names in program.unbound.values())


def test_a_file_that_is_not_a_notebook_is_refused(tmp_path):
    path = tmp_path / "lab.ipynb"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable notebook"):
        read_program(path, TESTS)
