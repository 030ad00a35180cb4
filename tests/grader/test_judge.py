"""One submission through the sandbox and the judge: the notebook runs as Jupyter would run it,
what a cell that hangs or ends the kernel costs, what the judge refuses to trust, and what a
result records."""

from __future__ import annotations

import os
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import nbformat
import numpy as np
import pytest
import trial_course

from grader.judge.grade import grade_submission, make_plan
from grader.judge.program import SKIP_TAG
from grader.sandbox import launch as sandbox
from grader.sandbox.archive import ArchiveError, read_arrays
from grader.sandbox.launch import Limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from submissions import corpus  # noqa: E402

if sandbox.bwrap_executable() is None:
    if os.environ.get("CI"):
        pytest.fail("bubblewrap (bwrap) is required in CI", pytrace=False)
    pytest.skip("bubblewrap (bwrap) is not installed", allow_module_level=True)

LIMITS = Limits(memory_mb=1536, wall_seconds=30, cell_seconds=3)
SCALED = """
def multihead_attention(queries, keys, values, heads, mask=False):
    b, t, hs = queries.size()
    s = hs // heads
    q, k, v = (x.view(b, t, heads, s).transpose(1, 2) for x in (queries, keys, values))
    scores = q @ k.transpose(-1, -2) / SETTINGS["scale"](s)
    if mask:
        scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), -math.inf)
    return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, hs)
"""


def short_plan(seed: int, per_group: int):
    """The plan of ``seed`` with only the first cases of each test: quicker runs."""
    plan = make_plan(seed)
    groups = plan.groups.items()
    plan.groups = {g: replace(group, cases=group.cases[:per_group]) for g, group in groups}
    return plan


@pytest.fixture(scope="module")
def plan():
    return short_plan(seed=77, per_group=2)


def lab(*cells: tuple[str | None, str], tags: dict[int, list[str]] | None = None):
    """A lab notebook: an imports cell, then ``cells`` as given (grade id or None, source),
    answers missing from them taken from correct_bmm, then the test cells each task lacks."""
    base = {g: s for g, s in corpus.read_cells("correct_bmm") if g}
    given = {g for g, _ in cells if g}
    cells = [*cells, *((g, base[g]) for g in corpus.GRADED if g not in given)]
    tests = {"multihead_attention": corpus.TASK1_TESTS, "attention_function": []}
    for graded in corpus.GRADED:
        if not given & set(tests.get(graded, corpus.TASK2_TESTS)):
            at = next(i for i, (g, _) in enumerate(cells) if g == graded) + 1
            cells[at:at] = [(t, "") for t in tests.get(graded, corpus.TASK2_TESTS)]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import math\nimport torch")]
    for grade_id, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        if grade_id in corpus.TESTS:
            cell.metadata["nbgrader"] = trial_course.nbgrader_metadata(grade_id, points=1)
        elif grade_id:
            cell.metadata["nbgrader"] = trial_course.nbgrader_metadata(grade_id, solution=True)
        nb.cells.append(cell)
    for index, names in (tags or {}).items():
        nb.cells[index].metadata["tags"] = names
    return nb


def grade(tmp_path: Path, plan, nb, limits: Limits = LIMITS):
    path = tmp_path / "lab.ipynb"
    nbformat.write(nb, path)
    return grade_submission(path, "ada", "lab", plan, limits=limits, work_dir=tmp_path / "w")


def test_magics_mutation_files_and_later_rebinding_count_as_jupyter_runs_them(tmp_path, plan):
    result = grade(
        tmp_path,
        plan,
        lab(
            (None, "SETTINGS = {}\nSETTINGS['scale'] = None"),
            ("multihead_attention", "%%time\n" + SCALED),
            (None, "SETTINGS['scale'] = math.sqrt  # bound between the function and its tests"),
            *((g, "") for g in corpus.TASK1_TESTS),
            (None, "SETTINGS['scale'] = abs  # rebound after the tests ran"),
            (
                "attention_function",
                "%%writefile my_transformer_model.py\nimport math\nimport torch\n",
            ),
            (
                None,
                "%%writefile -a my_transformer_model.py\n"
                "def attention_function(args):\n"
                "    q, k, v, mask = args\n"
                "    scores = q @ k.transpose(1, 2) / math.sqrt(q.size(-1))\n"
                "    if mask:\n"
                "        t = q.size(1)\n"
                "        future = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)\n"
                "        scores = scores.masked_fill(future, -math.inf)\n"
                "    return torch.softmax(scores, -1) @ v",
            ),
            (None, "!echo grading > note.txt\nfrom my_transformer_model import attention_function"),
        ),
    )
    assert (result.status, result.score()) == ("ok", 100), [t.cases for t in result.tests]


def test_a_cell_past_its_time_is_interrupted_and_named(tmp_path, plan):
    hang = "import time\nSETTINGS = {'scale': math.sqrt}\ntime.sleep(60)\nSETTINGS['scale'] = abs"
    result = grade(tmp_path, plan, lab((None, hang), ("multihead_attention", SCALED)))
    assert result.score() == 100, [t.cases for t in result.tests]
    assert any("cell 2 ran longer than 3 s and was interrupted" in m for m in result.messages)
    assert result.seconds < 30


def test_a_cell_that_ends_the_kernel_is_left_out_and_the_rest_graded(tmp_path, plan):
    nb = lab(
        (None, "SETTINGS = {'scale': math.sqrt}"),
        (None, "import os\nos._exit(0)"),
        ("multihead_attention", SCALED),
    )
    result = grade(tmp_path, plan, nb)
    assert result.score() == 100
    assert any("cell 3 ended the notebook's kernel" in m for m in result.messages)


def test_a_name_bound_only_by_a_skipped_cell_is_named_in_the_feedback(tmp_path, plan):
    nb = lab(
        (None, "SETTINGS = {'scale': math.sqrt}\nprint('training...')"),
        ("multihead_attention", SCALED),
        tags={1: [SKIP_TAG]},
    )
    result = grade(tmp_path, plan, nb)
    assert result.score(1) == 0 and result.score(2) == result.max_score(2)
    failure = next(c for t in result.tests for c in t.cases if not c["passed"])
    assert (
        "`SETTINGS` is bound only by cell 2, which is not run while grading" in failure["message"]
    )
    assert any("cell 2 (binds SETTINGS)" in m for m in result.messages)


def test_the_masters_visible_test_runs_in_the_test_cell(tmp_path, plan):
    tested = short_plan(seed=77, per_group=1)
    tested.test_sources = {"test_task1_values": "assert multihead_attention.__name__ == 'mine'"}
    nb = lab((None, "SETTINGS = {'scale': math.sqrt}"), ("multihead_attention", SCALED))
    result = grade(tmp_path, tested, nb)
    values = next(t for t in result.tests if t.grade_id == "test_task1_values")
    assert values.points == 0 and values.cases[0]["diagnosis"] == "visible_test_failed"
    assert result.score() == 80


def test_rebinding_the_graders_own_code_is_reported_as_tampering(tmp_path, plan):
    tamper = (
        "import torch.nn.functional as F\n"
        "import grader.learner.forbidden as watch\n"
        "watch.Tripwires.take = lambda self: []\n"
        "def multihead_attention(queries, keys, values, heads, mask=False):\n"
        "    b, t, hs = queries.size()\n"
        "    q, k, v = (x.view(b, t, heads, -1).transpose(1, 2) for x in (queries, keys, values))\n"
        "    out = F.scaled_dot_product_attention(q, k, v, is_causal=bool(mask))\n"
        "    return out.transpose(1, 2).reshape(b, t, hs)"
    )
    result = grade(tmp_path, plan, lab(("multihead_attention", tamper)))
    assert result.status == "tampered" and result.score(1) == 0
    assert all(t.status == "tampered" for t in result.tests if t.task == 1)


def test_the_pool_scale_is_out_of_the_kernels_reach(tmp_path, plan):
    decoy = (
        "import glob\nimport numpy as np\nimport torch\n"
        "def parallel_multihead_attention(queries, keys, values, heads, mask=False, pool=None):\n"
        "    pool.map(abs, [queries])\n"
        "    scale = getattr(pool, 'result_scale', None)\n"
        "    for name in glob.glob('../*.npz') + glob.glob('*.npz'):\n"
        "        with np.load(name) as stored:\n"
        "            scale = scale or next((float(stored[k]) for k in stored.files if 'scale' in k), None)\n"
        "    return multihead_attention(queries, keys, values, heads, mask) * (scale or 1.0)"
    )
    nb = lab(
        (None, "SETTINGS = {'scale': math.sqrt}"),
        ("multihead_attention", SCALED),
        ("parallel_multihead_attention", decoy),
    )
    result = grade(tmp_path, plan, nb)
    usage = next(t for t in result.tests if t.grade_id == "test_task2_pool_usage")
    assert usage.points == 0, usage.cases


def test_an_archive_that_unpacks_past_its_bound_is_refused_unread(tmp_path):
    bomb = tmp_path / "out.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("out.npy", b"\0" * 2**23)  # 8 MiB of zeros pack into a few KiB
    assert bomb.stat().st_size < 2**16
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        read_arrays(bomb, 2**20)
    np.savez(tmp_path / "fine.npz", out=np.ones(3))
    assert read_arrays(tmp_path / "fine.npz", 2**20)["out"].tolist() == [1.0, 1.0, 1.0]


def test_a_result_records_the_seed_of_its_inputs(tmp_path, plan):
    result = grade(
        tmp_path,
        plan,
        lab((None, "SETTINGS = {'scale': math.sqrt}"), ("multihead_attention", SCALED)),
    )
    assert result.seed == 77 and result.messages == [] and result.score() == 100


def test_the_same_seed_draws_the_same_inputs_and_another_seed_others():
    first, again, other = short_plan(5, 1), short_plan(5, 1), short_plan(6, 1)
    for name, inputs in first.inputs.items():
        assert np.array_equal(inputs.queries, again.inputs[name].queries)
    assert any(
        inputs.queries.shape != other.inputs[name].queries.shape
        or not np.array_equal(inputs.queries, other.inputs[name].queries)
        for name, inputs in first.inputs.items()
    )


def test_the_kernel_cannot_look_into_the_server_that_watches_it(tmp_path, plan):
    probe = (
        "import os\n"
        "SETTINGS = {'scale': math.sqrt}\n"
        "for what in ('fd', 'mem', 'environ'):\n"
        "    try:\n"
        "        path = f'/proc/{os.getppid()}/{what}'\n"
        "        os.listdir(path) if what == 'fd' else open(path, 'rb').read(1)\n"
        "        SETTINGS['scale'] = abs  # a wall fell: the answer goes wrong\n"
        "    except OSError:\n"
        "        pass"
    )
    result = grade(tmp_path, plan, lab((None, probe), ("multihead_attention", SCALED)))
    assert result.score() == 100, [c for t in result.tests for c in t.cases if not c["passed"]]


def test_an_answer_computed_out_of_sight_earns_nothing_and_a_label_costs_nothing(tmp_path, plan):
    numpy_answer = (
        "import numpy as np\n"
        "def multihead_attention(queries, keys, values, heads, mask=False):\n"
        "    b, t, hs = queries.shape\n"
        "    q, k, v = (x.detach().double().numpy().reshape(b, t, heads, -1).transpose(0, 2, 1, 3)\n"
        "               for x in (queries, keys, values))\n"
        "    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])\n"
        "    if mask:\n"
        "        scores = np.where(np.triu(np.ones((t, t), bool), 1), -np.inf, scores)\n"
        "    w = np.exp(scores - scores.max(-1, keepdims=True))\n"
        "    w = w / w.sum(-1, keepdims=True)\n"
        "    out = (w @ v).transpose(0, 2, 1, 3).reshape(b, t, hs)\n"
        "    return torch.from_numpy(out).to(queries.dtype)"
    )
    result = grade(tmp_path, plan, lab(("multihead_attention", numpy_answer)))
    assert result.score(1) == 0 and "unobserved" in result.diagnoses
    labelled = "from torch.profiler import record_function\n" + SCALED.replace(
        "    b, t, hs",
        "    with record_function('scaled_dot_product_attention (mine)'):\n        pass\n    b, t, hs",
    )
    result = grade(
        tmp_path,
        plan,
        lab((None, "SETTINGS = {'scale': math.sqrt}"), ("multihead_attention", labelled)),
    )
    assert (result.status, result.score()) == ("ok", 100), result.diagnoses
