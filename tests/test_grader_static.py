"""The grader's parts that need no sandbox: forbidden-use scan, tripwires, program, feedback."""

from __future__ import annotations

import json

import nbformat
import pytest
import torch
import torch.nn.functional as F

from grader.feedback import render
from grader.forbidden import Tripwires, scan_source
from grader.judge import SubmissionResult
from grader.judge import TestResult as CellResult
from grader.program import read_program


@pytest.mark.parametrize(
    "source, expected",
    [
        ("out = F.scaled_dot_product_attention(q, k, v)", "F.scaled_dot_product_attention"),
        (
            "from torch.nn.functional import scaled_dot_product_attention as f",
            "F.scaled_dot_product_attention",
        ),
        ("f = getattr(F, 'scaled_dot_product_attention')", "F.scaled_dot_product_attention"),
        ("f = torch._C._nn.scaled_dot_product_attention", "F.scaled_dot_product_attention"),
        (
            "f = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu",
            "F.scaled_dot_product_attention",
        ),
        ("layer = nn.MultiheadAttention(8, 2)", "nn.MultiheadAttention"),
        ("out = F.multi_head_attention_forward(*args)", "F.multi_head_attention_forward"),
        ("from solutions.attention import multihead_attention", "import solutions.attention"),
        ("import importlib\nm = importlib.import_module('solutions')", "import solutions"),
        (
            "torch._C.DisableTorchFunction()",
            "DisableTorchFunction (switching off the grader's checks)",
        ),
    ],
)
def test_scan_names_each_forbidden_route(source: str, expected: str) -> None:
    assert expected in [finding.name for finding in scan_source(source)]


def test_scan_leaves_honest_code_and_prose_alone() -> None:
    source = '''
def multihead_attention(queries, keys, values, heads, mask=False):
    """Do not use F.scaled_dot_product_attention here: write it yourself."""
    # nn.MultiheadAttention would be cheating
    scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(queries.size(-1))
    return torch.bmm(torch.softmax(scores, dim=2), values)
'''
    assert scan_source(source) == []
    assert scan_source("this is not python (") == []


def test_tripwires_record_every_route_to_fused_attention() -> None:
    wires = Tripwires()
    q = torch.randn(1, 2, 3, 4)
    routes = {
        "F": lambda: F.scaled_dot_product_attention(q, q, q),
        "getattr": lambda: getattr(F, "scaled_dot_" + "product_attention")(q, q, q),
        "torch._C._nn": lambda: torch._C._nn.scaled_dot_product_attention(q, q, q),
        "torch.ops": lambda: torch.ops.aten.scaled_dot_product_attention(q, q, q),
    }
    for route, call in routes.items():
        with wires.armed():
            call()
        assert wires.take() == ["F.scaled_dot_product_attention"], route
    with wires.armed():
        torch.nn.MultiheadAttention(4, 2)(q[0], q[0], q[0])
    assert "nn.MultiheadAttention" in wires.take()
    with wires.armed():
        torch.softmax(torch.bmm(q[0], q[0].transpose(1, 2)), dim=-1)
    assert wires.take() == []
    F.scaled_dot_product_attention(q, q, q)  # unarmed: not recorded
    assert wires.take() == []


def _cell(source: str, grade_id: str | None = None, **meta) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if grade_id:
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "schema_version": 3, **meta}
    return cell


def test_program_keeps_graded_cells_and_only_what_they_need(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell("import torch\nimport matplotlib.pyplot as plt\nplt.plot([1])\n%matplotlib inline"),
        _cell("def helper(x):\n    return x * 2\n\ntrain_for_hours()"),
        _cell(
            "!pip install x\ndef multihead_attention(q, k, v, heads, mask=False):\n    return helper(torch.as_tensor(q))",
            "multihead_attention",
            solution=True,
        ),
        _cell(
            "from solutions.hidden_tests import run_group",
            "test_task1_values",
            grade=True,
            solution=False,
            points=20,
        ),
        _cell(
            "%%writefile my_transformer_model.py\nimport torch\ndef attention_function(args):\n"
            "    return args[0]",
            "attention_function",
            solution=True,
        ),
        _cell(
            "from my_transformer_model import attention_function\n"
            "def parallel_multihead_attention(q, k, v, heads, mask=False, pool=None):\n"
            "    return pool.map(attention_function, [q])",
            "parallel_multihead_attention",
            solution=True,
        ),
    ]
    path = tmp_path / "lab.ipynb"
    nbformat.write(nb, path)
    program = read_program(path)
    text = json.dumps(program.cells)
    assert "matplotlib" not in text and "train_for_hours" not in text and "run_group" not in text
    assert program.cells[0]["source"] == "import torch"
    assert "def helper" in program.cells[1]["source"]
    assert "pip" not in program.cells[2]["source"]
    writefile = [cell for cell in program.cells if cell["writefile"]]
    assert writefile[0]["writefile"] == "my_transformer_model.py"
    assert writefile[0]["source"].startswith("import torch")
    assert set(program.sources) == {
        "multihead_attention",
        "attention_function",
        "parallel_multihead_attention",
    }


def test_program_rejects_a_file_that_is_not_a_notebook(tmp_path) -> None:
    path = tmp_path / "lab.ipynb"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable notebook"):
        read_program(path)


def test_feedback_shows_verdicts_and_no_hidden_test_code() -> None:
    cases = [
        {
            "name": "small_float32",
            "passed": True,
            "message": "small_float32: passed",
            "diagnosis": None,
        },
        {
            "name": "masked",
            "passed": False,
            "message": "masked (b=2): <mask> missing",
            "diagnosis": "mask_missing",
        },
    ]
    result = SubmissionResult(
        "ada",
        "lab",
        "lab",
        "ok",
        [CellResult("test_task1_mask", 1, "multihead_attention", 0, 15, "ok", cases)],
    )
    page = render(result)
    assert "0 / 15" in page and "mask_missing" in page and "&lt;mask&gt; missing" in page
    assert "run_group" not in page and "HIDDEN" not in page and "solutions" not in page
