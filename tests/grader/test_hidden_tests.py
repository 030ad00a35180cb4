"""Hidden test cases: correct answers in every style pass, each known mistake fails where it
should, and nothing a learner does in the kernel (monkeypatching, warnings) changes a verdict."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from learner_code import (
    HAND_WRITTEN_MISTAKES,
    IDIOM_MISTAKES,
    IDIOMS,
    STYLES,
    bmm_style,
    einsum_style,
    fixed_table_style,
    head_by_einsum,
    in_idiom,
    parallel_with,
)

from grader.judge.cases import case_inputs, expected_outputs
from grader.judge.hidden_cells import HiddenTestFailure, run_group
from grader.judge.rules import judge_case
from grader.learner.mistakes import MISTAKES, MISTAKES_BY_KEY
from grader.learner.probe import probe_case
from grader.learner.probe_io import Outcome
from solutions import attention as solution
from solutions.hidden_cases import CASES, GENERATION_CONTEXT, GROUPS, KINDS, TRAINING_LENGTH

TASK1 = [g for g in GROUPS if g.startswith("test_task1")]


def namespace_for(function):
    return {
        "multihead_attention": function,
        "attention_function": solution.attention_function,
        "parallel_multihead_attention": solution.parallel_multihead_attention,
    }


# -- the groups ----------------------------------------------------------------------------------


def test_groups_give_task1_60_and_task2_40_points():
    points = {g.grade_id: g.points for g in GROUPS.values()}
    assert points == {
        "test_task1_values": 20,
        "test_task1_mask": 15,
        "test_task1_robust": 10,
        "test_task1_gradients": 15,
        "test_task2_attention_function": 10,
        "test_task2_parallel_values": 15,
        "test_task2_pool_usage": 15,
    }
    assert sum(g.points for g in GROUPS.values() if g.task == 1) == 60
    assert sum(g.points for g in GROUPS.values() if g.task == 2) == 40
    for group in GROUPS.values():
        assert group.cases and all(c.grade_id == group.grade_id for c in group.cases)


def test_cases_cover_what_the_design_promises():
    cases = list(CASES.values())
    assert {c.dtype for c in cases} == {"float32", "float64"}
    assert {c.mask for c in cases} == {True, False}
    assert {c.kind for c in cases} == set(KINDS)
    assert any(c.kind == "gradient" and c.mask for c in cases)
    assert any(c.large_scores for c in cases)
    for size in ("length", "heads", "head_size"):
        assert any(
            getattr(c, size) == (1, 1) and c.function == "multihead_attention" for c in cases
        )
    assert any(c.batch[0] < c.batch[1] and c.heads[0] < c.heads[1] for c in cases), "random shapes"


@pytest.mark.parametrize(
    "function", ["multihead_attention", "attention_function", "parallel_multihead_attention"]
)
def test_cases_cover_what_the_lab_runs(function):
    from former.classifier import ClassifierConfig
    from former.generator import GeneratorConfig

    assert TRAINING_LENGTH >= ClassifierConfig().max_length
    assert GENERATION_CONTEXT >= GeneratorConfig().context
    cases = [c for c in CASES.values() if c.function == function]
    masked = [c for c in cases if c.mask]
    assert max(c.length[1] for c in masked) >= TRAINING_LENGTH, "the training length, masked"
    assert any(c.layout == "sliced" for c in cases), "slices of a wider tensor"
    assert any(c.mask_as == "int" for c in cases), "a mask given as 1"
    assert any(c.batch == (1, 1) for c in cases) and any(c.length == (1, 1) for c in cases)
    if function != "attention_function":
        assert max(c.heads[1] for c in cases) >= 16
    if function == "multihead_attention":
        assert any(GENERATION_CONTEXT in range(c.length[0], c.length[1] + 1) for c in masked)
        assert any(c.requires_grad for c in cases) and any(c.head_size == (1, 1) for c in cases)


def test_long_cases_stay_cheap():
    for case in CASES.values():
        if case.length[1] >= GENERATION_CONTEXT:
            assert case.batch[1] * case.heads[1] * case.head_size[1] <= 8, case.name


def test_case_inputs_are_plain_data_reproducible_from_the_seed():
    case = CASES["random_float32"]
    first, again, other = case_inputs(case, 1), case_inputs(case, 1), case_inputs(case, 2)
    arrays = first.to_arrays()
    assert all(isinstance(value, np.ndarray) and value.dtype != object for value in arrays.values())
    assert all(np.array_equal(a, b) for a, b in zip(first.tensors(), again.tensors(), strict=True))
    assert not np.array_equal(first.queries, other.queries)
    assert first.queries.dtype == np.float32
    assert case_inputs(CASES["random_float64"], 1).queries.dtype == np.float64


def test_large_score_cases_overflow_a_softmax_without_the_max():
    inputs = case_inputs(CASES["large_scores_float32"], 3)
    q, k, v = (torch.from_numpy(x) for x in inputs.tensors())
    heads = inputs.heads
    s = q.size(-1) // heads
    scores = q.view(*q.shape[:2], heads, s).transpose(1, 2) @ k.view(
        *k.shape[:2], heads, s
    ).transpose(1, 2).transpose(-1, -2)
    assert 300 < float((scores / math.sqrt(s)).abs().median()) < 3000
    assert not torch.isfinite(MISTAKES_BY_KEY["unstable_softmax"].apply(q, k, v, heads)).all()


# -- correct answers pass ------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES, ids=lambda f: f.__name__)
def test_correct_styles_pass_every_task1_group_in_the_kernel(style, capsys):
    for grade_id in TASK1:
        run_group(grade_id, namespace_for(style))
    assert "failed" not in capsys.readouterr().out


@pytest.mark.parametrize("style", STYLES, ids=lambda f: f.__name__)
def test_correct_styles_pass_every_case_through_the_judge(style):
    seed = 987654321  # not the notebook's seed: the judge's inputs are new
    for case in CASES.values():
        if case.kind == "worker_pool":
            continue
        function = {
            "multihead_attention": style,
            "attention_function": head_by_einsum,
            "parallel_multihead_attention": parallel_with(head_by_einsum),
        }[case.function]
        inputs = case_inputs(case, seed)
        probe = probe_case(inputs, function)
        verdict = judge_case(case, inputs, probe)
        assert verdict.passed, verdict.message


def test_task2_solutions_pass_including_real_worker_processes():
    for grade_id in ("test_task2_attention_function", "test_task2_parallel_values"):
        run_group(grade_id, vars(solution))
    run_group("test_task2_pool_usage", vars(solution))  # starts two real workers


def stacked(attention_function):
    """Items from a generator, results stacked and reshaped."""

    def parallel_multihead_attention(queries, keys, values, heads, mask=False, pool=None):
        b, t, e = queries.shape
        items = (
            tuple(x.chunk(heads, -1)[i] for x in (queries, keys, values)) + (mask,)
            for i in range(heads)
        )
        return torch.stack(pool.map(attention_function, items), 2).reshape(b, t, e)

    return parallel_multihead_attention


def unpacked(attention_function):
    """Results unpacked, then concatenated."""

    def parallel_multihead_attention(queries, keys, values, heads, mask=False, pool=None):
        parts = zip(*(x.tensor_split(heads, -1) for x in (queries, keys, values)), strict=True)
        first, *rest = pool.map(attention_function, [(q, k, v, mask) for q, k, v in parts])
        return torch.cat((first, *rest), dim=-1)

    return parallel_multihead_attention


@pytest.mark.parametrize("idiom", [parallel_with, stacked, unpacked], ids=lambda f: f.__name__)
def test_task2_idioms_earn_the_pool_usage_points(idiom):
    namespace = {"parallel_multihead_attention": idiom(solution.attention_function)}
    for grade_id in ("test_task2_parallel_values", "test_task2_pool_usage"):
        run_group(grade_id, namespace)


def decoy_len(queries, keys, values, heads, mask=False, pool=None):
    items = [
        tuple(x.chunk(heads, -1)[i] for x in (queries, keys, values)) + (mask,)
        for i in range(heads)
    ]
    pool.map(len, items)
    return torch.cat([solution.attention_function(item) for item in items], -1)


def decoy_discarded(queries, keys, values, heads, mask=False, pool=None):
    parallel_with(solution.attention_function)(queries, keys, values, heads, mask, pool)
    return solution.multihead_attention(queries, keys, values, heads, mask)


@pytest.mark.parametrize("decoy", [decoy_len, decoy_discarded], ids=lambda f: f.__name__)
def test_a_decoy_pool_call_loses_the_pool_usage_points_with_a_diagnosis(decoy):
    namespace = {"parallel_multihead_attention": decoy}
    run_group("test_task2_parallel_values", namespace)  # the values are right
    with pytest.raises(HiddenTestFailure, match="not built from what pool.map returns"):
        run_group("test_task2_pool_usage", namespace)


def test_the_forbidden_rule_applies_in_the_notebooks_hidden_cells_too():
    def fused(queries, keys, values, heads, mask=False):
        b, t, e = queries.shape
        q, k, v = (
            x.reshape(b, t, heads, e // heads).transpose(1, 2) for x in (queries, keys, values)
        )
        with torch._C.DisableTorchFunction():
            out = torch._C._nn.scaled_dot_product_attention(q, k, v, is_causal=bool(mask))
        return out.transpose(1, 2).reshape(b, t, e)

    for grade_id in TASK1:
        with pytest.raises(HiddenTestFailure, match="executes F.scaled_dot_product_attention"):
            run_group(grade_id, namespace_for(fused))


@pytest.mark.parametrize("size", [64, 128, 200])
def test_a_causal_table_of_fixed_size_fails_on_what_the_lab_runs(size):
    fixed = fixed_table_style(size)
    run_group("test_task1_values", namespace_for(fixed))
    with pytest.raises(HiddenTestFailure, match="masked_training_length"):
        run_group("test_task1_mask", namespace_for(fixed))


def test_a_mask_tested_with_is_true_fails_when_given_one():
    def strict(queries, keys, values, heads, mask=False):
        return bmm_style(queries, keys, values, heads, mask is True)

    with pytest.raises(HiddenTestFailure, match=r"(?s)1 of .*mask_given_as_one.*mask=1"):
        run_group("test_task1_mask", namespace_for(strict))


def test_view_after_slicing_fails_on_sliced_inputs_when_it_cannot_view():
    def flattens_with_view(queries, keys, values, heads, mask=False):
        b, t, e = queries.shape
        flat = queries.view(b, t * e)  # a slice of a wider tensor cannot be viewed like this
        return bmm_style(flat.view(b, t, e), keys, values, heads, mask)

    with pytest.raises(HiddenTestFailure, match="sliced_inputs"):
        run_group("test_task1_values", namespace_for(flattens_with_view))


# -- wrong answers fail where they should, with the diagnosis -------------------------------------


def failing_groups(function) -> dict[str, str]:
    failures = {}
    for grade_id in TASK1:
        try:
            run_group(grade_id, namespace_for(function))
        except HiddenTestFailure as failure:
            failures[grade_id] = str(failure)
    return failures


# Which tests each catalogued mistake fails: the test of the property it breaks first, then
# only properties it really breaks too. A wrong softmax axis leaks later queries into earlier
# outputs and its weights do not sum to 1; a wrong head layout mixes positions; swapped keys
# and values give outputs outside the values' range; a hidden diagonal gives NaN at the first
# position (with -inf), so NaN gradients.
FAILS = {
    "missing_scale": {"values"},
    "scale_one_over_s": {"values"},
    "scale_sqrt_emb": {"values"},
    "scale_times_sqrt_s": {"values"},
    "softmax_wrong_axis": {"values", "mask", "robust"},
    "heads_not_transposed": {"values", "mask"},
    "output_not_transposed": {"values", "mask"},
    "mask_missing": {"mask"},
    "mask_inverted": {"mask"},
    "mask_hides_diagonal": {"mask", "gradients"},
    "mask_after_softmax": {"mask"},
    "keys_values_swapped": {"values", "robust"},
    "unstable_softmax": {"robust"},
}


def test_the_table_covers_the_catalogue():
    assert set(FAILS) == {m.key for m in MISTAKES}


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.key)
def test_each_mistake_costs_the_tests_of_what_it_breaks_and_is_named(mistake):
    failures = failing_groups(HAND_WRITTEN_MISTAKES[mistake.key])
    assert {g.removeprefix("test_task1_") for g in failures} == FAILS[mistake.key]
    first = next(g for g in TASK1 if g in failures)
    assert mistake.title in failures[first]


@pytest.mark.parametrize("idiom", IDIOMS)
@pytest.mark.parametrize("mistake", IDIOM_MISTAKES)
def test_scale_and_mask_mistakes_cost_their_own_test_in_every_idiom(idiom, mistake):
    failures = failing_groups(in_idiom(idiom, mistake))
    expected = "test_task1_values" if mistake == "missing_scale" else "test_task1_mask"
    assert expected in failures
    assert MISTAKES_BY_KEY[mistake].title in failures[expected]
    # A hidden diagonal with -inf also gives NaN gradients; nothing else costs another test.
    assert set(failures) - {expected} <= (
        {"test_task1_gradients"} if mistake == "mask_hides_diagonal" else set()
    )


@pytest.mark.parametrize("idiom", IDIOMS)
def test_right_answers_in_every_idiom_pass(idiom):
    assert failing_groups(in_idiom(idiom)) == {}


def test_a_backward_that_disagrees_with_the_forward_costs_the_gradient_test_only():
    class HalfGradient(torch.autograd.Function):
        """The identity, with a backward that halves what passes through."""

        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad / 2

    def halved(queries, keys, values, heads, mask=False):
        return bmm_style(HalfGradient.apply(queries), keys, values, heads, mask)

    failures = failing_groups(halved)
    assert set(failures) == {"test_task1_gradients"}
    assert (
        "backward disagrees with your own forward for queries" in failures["test_task1_gradients"]
    )


def test_monkeypatched_comparisons_do_not_rescue_a_wrong_answer(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch.testing, "assert_close", lambda *a, **k: None)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np.testing, "assert_allclose", lambda *a, **k: None)
    wrong = HAND_WRITTEN_MISTAKES["missing_scale"]
    with pytest.raises(HiddenTestFailure, match="not scaled"):
        run_group("test_task1_values", namespace_for(wrong))


def test_references_use_genuine_torch_even_when_the_kernel_patched_it(monkeypatch):
    monkeypatch.setattr(torch, "softmax", lambda x, dim: x)
    monkeypatch.setattr(torch, "bmm", lambda a, b: torch.zeros(a.shape[0], a.shape[1], b.shape[2]))
    monkeypatch.setattr(torch.Tensor, "masked_fill", lambda self, *a: self, raising=False)
    run_group("test_task1_mask", namespace_for(einsum_style))  # uses none of them
    with pytest.raises(HiddenTestFailure):
        run_group("test_task1_mask", namespace_for(bmm_style))  # its own results are wrong now


def test_warnings_and_stderr_from_learner_code_cost_nothing_and_stay_quiet(capfd):
    def noisy(queries, keys, values, heads, mask=False):
        warnings.warn("a learner's warning", UserWarning, stacklevel=1)
        print("learner writes to stderr", file=sys.stderr)
        return bmm_style(queries, keys, values, heads, mask)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # even a kernel that turns warnings into errors
        run_group("test_task1_values", namespace_for(noisy))
    captured = capfd.readouterr()
    assert captured.err == ""
    assert (
        f"{len(GROUPS['test_task1_values'].cases)}/{len(GROUPS['test_task1_values'].cases)} cases passed"
        in captured.out
    )


def test_in_place_changes_to_the_inputs_fail_where_they_break_something():
    def scales_in_place(queries, keys, values, heads, mask=False):
        queries /= math.sqrt(queries.size(-1) // heads)
        return HAND_WRITTEN_MISTAKES["missing_scale"](queries, keys, values, heads, mask)

    # Inputs that require grad (as in training) refuse in-place writes: only that case fails.
    with pytest.raises(HiddenTestFailure, match="1 of .* failed:\n- inputs_require_grad.*in-place"):
        run_group("test_task1_values", namespace_for(scales_in_place))
    with pytest.raises(HiddenTestFailure, match="changed its `queries` argument in place"):
        run_group("test_task1_robust", namespace_for(scales_in_place))


def test_a_detached_output_fails_the_gradient_group_only():
    def detached(queries, keys, values, heads, mask=False):
        return bmm_style(queries, keys, values, heads, mask).detach()

    run_group("test_task1_values", namespace_for(detached))
    with pytest.raises(HiddenTestFailure, match="does not track gradients"):
        run_group("test_task1_gradients", namespace_for(detached))


def test_a_stub_is_reported_as_not_implemented():
    def stub(queries, keys, values, heads, mask=False):
        raise NotImplementedError

    with pytest.raises(HiddenTestFailure, match="not implemented yet"):
        run_group("test_task1_values", namespace_for(stub))
    with pytest.raises(HiddenTestFailure, match="multihead_attention is not defined"):
        run_group("test_task1_values", {})


def test_learner_errors_name_the_line_without_a_traceback():
    def broken(queries, keys, values, heads, mask=False):
        return queries @ keys  # (b, t, e) @ (b, t, e): shapes do not fit

    with pytest.raises(HiddenTestFailure) as failure:
        run_group("test_task1_values", namespace_for(broken))
    message = str(failure.value)
    assert "RuntimeError" in message and "return queries @ keys" in message
    assert "Traceback" not in message


# -- the parallel version ------------------------------------------------------------------------


def serial_loop(queries, keys, values, heads, mask=False, pool=None):
    return solution.multihead_attention(queries, keys, values, heads, mask)


def one_item_for_all_heads(queries, keys, values, heads, mask=False, pool=None):
    def everything(args):
        return solution.multihead_attention(*args)

    return pool.map(everything, [(queries, keys, values, heads, mask)])[0]


def notebook_defined_worker(queries, keys, values, heads, mask=False, pool=None):
    def attention_function(args):  # what a learner writes in a notebook cell
        return solution.attention_function(args)

    attention_function.__module__ = "__main__"
    attention_function.__qualname__ = "attention_function"
    return parallel_with(attention_function)(queries, keys, values, heads, mask, pool)


@pytest.mark.parametrize(
    ("function", "mistake"),
    [
        (serial_loop, "pool_not_used"),
        (one_item_for_all_heads, "one_item_for_all_heads"),
        (notebook_defined_worker, "worker_not_importable"),
    ],
    ids=["serial_loop", "one_item", "notebook_worker"],
)
def test_pool_mistakes_lose_the_pool_usage_points_only(function, mistake):
    seed = 11
    run_group("test_task2_parallel_values", {"parallel_multihead_attention": function})
    verdicts = []
    for case in GROUPS["test_task2_pool_usage"].cases:
        if case.kind == "worker_pool" and mistake != "worker_not_importable":
            continue  # real workers are slow to start; the notebook worker is refused before
        inputs = case_inputs(case, seed)
        probe = probe_case(inputs, function)
        verdicts.append(judge_case(case, inputs, probe))
    assert not all(v.passed for v in verdicts)
    assert {v.diagnosis for v in verdicts if not v.passed} == {mistake}


def test_judge_reads_errors_that_came_back_as_numpy_strings():
    case = CASES["small_float32"]
    inputs = case_inputs(case, 5)
    arrays = {"error": np.array("NotImplementedError"), "error_where": np.array("")}
    verdict = judge_case(case, inputs, Outcome.from_arrays(arrays))
    assert not verdict.passed and verdict.diagnosis == "not_implemented"
    good = Outcome.from_arrays({"out": expected_outputs(case, inputs)["out"].astype(np.float32)})
    assert judge_case(case, inputs, good).passed


LEARNER = Path(__file__).resolve().parents[2] / "grader" / "learner"


def test_the_package_shipped_to_learners_holds_no_hidden_test_text_or_solution_code():
    from grader.course import bundle
    from grader.course import course_dir as course_folder

    bodies = bundle.reference_bodies()
    for path in LEARNER.glob("*.py"):
        text = path.read_text()
        assert course_folder.hidden_test_leaks(text) == [], path.name
        assert bundle.solution_code_leaks(text, bodies) == [], path.name


def test_the_package_shipped_to_learners_never_imports_solutions_or_the_instructors_parts():
    modules = [f"grader.learner.{path.stem}" for path in LEARNER.glob("*.py")]
    code = (
        f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'solutions' or "
        "m.startswith(('grader.judge', 'grader.sandbox', 'grader.course'))]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(LEARNER.parent.parent))


def test_the_solutions_are_data_that_import_nothing_from_the_grader():
    code = (
        "import sys, solutions.attention, solutions.hidden_cases\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'grader'], sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(LEARNER.parent.parent))


def test_hidden_cells_find_the_solutions_without_the_repository_on_the_path(tmp_path):
    cell = (  # a hidden cell as plain nbgrader runs it: from the course folder, no PYTHONPATH
        "import sys\n"
        "from grader.judge.instructor import REPOSITORY, load_solutions\n"
        "assert str(REPOSITORY) not in sys.path\n"
        "from grader.judge.hidden_cells import run_group\n"
        "ns = {'multihead_attention': load_solutions().attention.multihead_attention}\n"
        "run_group('test_task1_values', ns)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-I", "-c", cell], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "test_task1_values: 9/9 cases passed" in done.stdout


def test_the_judge_says_where_to_grade_from_when_there_are_no_solutions(monkeypatch, tmp_path):
    from grader.judge import instructor

    monkeypatch.setattr(instructor, "REPOSITORY", tmp_path)
    with pytest.raises(RuntimeError, match="grade from the instructor's copy of the repository"):
        instructor.load_solutions()


# -- Task 2: each test its own property --------------------------------------------------------

NOTEBOOK_CELLS = """
import math
import torch


def attention_function(args):
    q, k, v, mask = args
    scores = q @ k.transpose(1, 2){scale}
    if mask:
        t = q.size(1)
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


def parallel_multihead_attention(queries, keys, values, heads, mask=False, pool=None):
    s = queries.size(-1) // heads
    items = [
        tuple(x[:, :, i * s : (i + 1) * s] for x in (queries, keys, values)) + (mask,)
        for i in range(heads)
    ]
    results = pool.map(attention_function, items)
    return torch.cat({order}, dim=-1)
"""


def notebook(scale: str = " / math.sqrt(q.size(-1))", order: str = "results") -> dict:
    """A namespace as a notebook leaves it: both functions defined in the same place."""
    namespace: dict = {"__name__": "learner_notebook"}
    exec(NOTEBOOK_CELLS.format(scale=scale, order=order), namespace)
    return namespace


def task2_failures(namespace: dict) -> dict[str, str]:
    failures = {}
    for grade_id in ("test_task2_attention_function", "test_task2_parallel_values"):
        try:
            run_group(grade_id, namespace)
        except HiddenTestFailure as failure:
            failures[grade_id] = str(failure)
    for case in GROUPS["test_task2_pool_usage"].cases:
        if case.kind == "worker_pool":
            continue  # functions from exec cannot be imported by workers
        inputs = case_inputs(case, 3)
        probe = probe_case(inputs, namespace["parallel_multihead_attention"])
        verdict = judge_case(case, inputs, probe)
        if not verdict.passed:
            failures["test_task2_pool_usage"] = verdict.message
    return failures


def test_a_wrong_attention_function_costs_test_5_only():
    failures = task2_failures(notebook(scale=""))
    assert set(failures) == {"test_task2_attention_function"}
    assert MISTAKES_BY_KEY["missing_scale"].title in failures["test_task2_attention_function"]


def test_heads_assembled_in_the_wrong_order_cost_the_parallel_values_only():
    failures = task2_failures(notebook(order="results[::-1]"))
    assert set(failures) == {"test_task2_parallel_values"}
    assert (
        "differs from your attention_function applied head by head"
        in failures["test_task2_parallel_values"]
    )


def test_the_pool_log_carries_what_the_pool_returned_after_its_scale():
    case = CASES["one_item_per_head"]
    inputs = case_inputs(case, 4)
    probe = probe_case(inputs, solution.parallel_multihead_attention)
    (call,) = probe.pool_log
    assert len(call["results"]) == inputs.heads == call["n_items"]
    s = inputs.queries.shape[-1] // inputs.heads
    for i, result in enumerate(call["results"]):
        assert result.dtype == np.float64
        np.testing.assert_allclose(result, probe.out[..., i * s : (i + 1) * s])
    unscaled = expected_outputs(case, inputs)["out"][..., :s]
    np.testing.assert_allclose(call["results"][0], unscaled * inputs.pool_scale, rtol=1e-4)


def test_pool_usage_is_judged_from_the_pools_results_not_the_reference():
    case = CASES["one_item_per_head"]
    inputs = case_inputs(case, 4)
    probe = probe_case(inputs, notebook(scale="")["parallel_multihead_attention"])
    assert judge_case(case, inputs, probe).passed  # wrong values
    (call,) = probe.pool_log
    call["results"] = [r * 1.01 for r in call["results"]]  # the output is not these
    verdict = judge_case(case, inputs, probe)
    assert not verdict.passed and verdict.diagnosis == "pool_results_unused"


def test_a_probe_uses_the_pool_it_is_given():
    made = []

    def make_pool(mode):
        from grader.learner.counting_pool import InstrumentedPool

        made.append(mode)
        return InstrumentedPool(result_scale=3.0)

    case = CASES["one_item_per_head_masked"]
    inputs = case_inputs(case, 4)
    probe = probe_case(inputs, solution.parallel_multihead_attention, make_pool=make_pool)
    assert made == ["inline"]
    np.testing.assert_allclose(
        probe.out, 3.0 * expected_outputs(case, inputs)["out"], rtol=1e-4
    )


def test_an_attention_function_that_raises_costs_test_5_and_not_the_parallel_values():
    namespace = notebook()
    exec(  # a causal table cut for 200 positions: the training length, 512, raises
        "TABLE = torch.ones(200, 200, dtype=torch.bool).triu(1)\n"
        "def attention_function(args):\n"
        "    q, k, v, mask = args\n"
        "    scores = q @ k.transpose(1, 2) / math.sqrt(q.size(-1))\n"
        "    if mask:\n"
        "        t = q.size(1)\n"
        "        scores = scores.masked_fill(TABLE[:t, :t], float('-inf'))\n"
        "    return scores.softmax(-1) @ v\n",
        namespace,
    )
    failures = task2_failures(namespace)
    assert set(failures) == {"test_task2_attention_function"}
    assert "head_masked_training_length" in failures["test_task2_attention_function"]


def test_a_function_that_returns_its_values_is_not_seen_computing_attention():
    def own_values(queries, keys, values, heads, mask=False):
        return values.clone()

    failures = failing_groups(own_values)
    assert set(failures) == {
        "test_task1_values",
        "test_task1_mask",
        "test_task1_robust",
        "test_task1_gradients",
    }
    assert all("did not see it compute attention" in text for text in failures.values())


def test_values_mixed_in_without_attention_work_are_not_causal_attention():
    def mixed(queries, keys, values, heads, mask=False):
        b, t, e = values.shape
        weights = torch.softmax(queries @ keys.transpose(1, 2), -1)  # computed, then ignored
        return values + 0 * (weights.sum() + (queries * keys).sum())

    failures = failing_groups(mixed)
    assert "did not change your masked output at position" in failures["test_task1_mask"]
