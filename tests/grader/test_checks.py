"""Visible checks: what a learner sees printed under their cell, for stubs, right and wrong answers."""

from __future__ import annotations

import pytest
import torch
from learner_code import (
    HAND_WRITTEN_MISTAKES,
    STYLES,
    bmm_style,
    fixed_table_style,
    parallel_with,
)

from grader.judge.hidden_cells import HiddenTestFailure, run_group
from grader.learner.checks import (
    check_attention_function,
    check_multihead_attention,
    check_parallel_multihead_attention,
)
from grader.learner.counting_pool import InstrumentedPool
from grader.learner.mistakes import MISTAKES_BY_KEY
from grader.learner.report import MORE_WHEN_GRADED
from solutions import attention as solution

CAUSAL_LINE = (
    "causal mask (mask=True): later positions change nothing, each position sees itself and earlier ones, "
    "position i gets what your function without the mask gives on positions 0..i"
)
LARGE_LINE = "stable on large scores (around ±1000): finite, within the range of the values"
GRADIENT_LINE = (
    "gradients reach queries, keys and values and agree with finite differences of your "
    "function (with mask)"
)


def stub_attention(queries, keys, values, heads, mask=False):
    raise NotImplementedError


def stub_head(args):
    raise NotImplementedError


def stub_parallel(queries, keys, values, heads, mask=False, pool=None):
    raise NotImplementedError


@pytest.mark.parametrize(
    ("check", "stub"),
    [
        (check_multihead_attention, stub_attention),
        (check_attention_function, stub_head),
        (check_parallel_multihead_attention, stub_parallel),
    ],
    ids=["multihead_attention", "attention_function", "parallel_multihead_attention"],
)
def test_a_stub_is_not_implemented_yet_not_a_traceback(check, stub, capsys):
    report = check(stub)
    printed = capsys.readouterr()
    assert "✗ not implemented yet — fill in the cell above" in printed.out
    assert "Traceback" not in printed.out + printed.err
    assert report.not_implemented and not report.passed


def test_the_solutions_pass_every_check(capsys):
    assert check_multihead_attention(solution.multihead_attention).passed
    assert check_attention_function(solution.attention_function).passed
    report = check_parallel_multihead_attention(
        solution.parallel_multihead_attention, reference=solution.multihead_attention
    )
    assert report.passed
    printed = capsys.readouterr().out
    assert "✗" not in printed
    assert "✓ causal mask" in printed and "✓ one pool.map call with one" in printed


def unscaled_head(args):
    """One head without the 1/sqrt(s) scale, importable by worker processes."""
    q, k, v, mask = args
    return HAND_WRITTEN_MISTAKES["missing_scale"](q, k, v, 1, mask)


def test_a_parallel_version_that_disagrees_by_its_named_mistake_shows_one_cross(capsys):
    """A right serial function beside a parallel one built on an unscaled head: the
    disagreement follows from the mistake named above, not a second ✗."""
    check_parallel_multihead_attention(
        parallel_with(unscaled_head), reference=solution.multihead_attention
    )
    printed = capsys.readouterr().out
    assert printed.count("✗") == 1, printed
    assert "✗ matches the reference on a small example (no mask)" in printed
    assert "· agrees with your multihead_attention: follows from the failure above" in printed


def test_a_wrong_answer_names_the_mistake_and_its_hint(capsys):
    mistake = MISTAKES_BY_KEY["missing_scale"]
    report = check_multihead_attention(HAND_WRITTEN_MISTAKES["missing_scale"])
    printed = capsys.readouterr().out
    assert not report.passed and report.mistakes[0] == "missing_scale"
    assert "✗ matches the reference on a small example (no mask)" in printed
    assert "· scales the scores by 1/sqrt(s): follows from the failure above" in printed
    assert mistake.title in printed and mistake.hint in printed
    assert printed.count(mistake.hint) == 1  # said once; later lines follow from it
    assert printed.count("✗") == 1  # one ✗: the line to act on
    # The causal mask, robustness and gradients are properties a missing scale keeps.
    for line in ("causal mask", "stable on large scores", "one position", "gradients reach"):
        assert all(r.passed for r in report.results if r.name.startswith(line)), line


def test_an_inverted_mask_is_one_failure_and_lines_that_follow_from_it(capsys):
    report = check_multihead_attention(HAND_WRITTEN_MISTAKES["mask_inverted"])
    printed = capsys.readouterr().out
    assert printed.count("✗") == 1 and "✗ causal mask (mask=True)" in printed
    assert MISTAKES_BY_KEY["mask_inverted"].title in printed
    assert "· causal mask on long sequences (t = 512, the training length): follows" in printed
    assert "✓ gradients reach queries, keys and values" in printed
    assert report.mistakes == ["mask_inverted"]


def test_a_mask_mistake_fails_only_the_mask_lines(capsys):
    report = check_multihead_attention(HAND_WRITTEN_MISTAKES["mask_after_softmax"])
    printed = capsys.readouterr().out
    assert "✓ matches the reference on a small example (no mask)" in printed
    assert "✗ causal mask (mask=True): later positions change nothing" in printed
    assert report.mistakes[0] == "mask_after_softmax"
    assert [r.name for r in report.results if not r.passed] == [
        CAUSAL_LINE,
        "causal mask on long sequences (t = 512, the training length)",
        "causal mask given as mask=1",
    ]


def test_an_unstable_softmax_fails_the_large_scores_line(capsys):
    report = check_multihead_attention(HAND_WRITTEN_MISTAKES["unstable_softmax"])
    printed = capsys.readouterr().out
    assert "✗ stable on large scores (around ±1000)" in printed
    assert [r.name for r in report.results if not r.passed] == [LARGE_LINE]


def test_learner_errors_show_type_message_and_line(capsys):
    def broken(queries, keys, values, heads, mask=False):
        scores = queries @ keys  # forgot to transpose the keys
        return scores

    report = check_multihead_attention(broken)
    printed = capsys.readouterr().out
    assert not report.passed
    assert "raised RuntimeError" in printed
    assert "scores = queries @ keys" in printed and "in broken" in printed
    assert "Traceback" not in printed


def test_an_error_only_with_the_mask_marks_that_line(capsys):
    def mask_unfinished(queries, keys, values, heads, mask=False):
        if mask:
            raise NotImplementedError("mask")
        return solution.multihead_attention(queries, keys, values, heads)

    report = check_multihead_attention(mask_unfinished)
    printed = capsys.readouterr().out
    assert "✓ matches the reference on a small example (no mask)" in printed
    assert "✗ causal mask" in printed and "not implemented yet" in printed
    assert not report.passed and not report.not_implemented


def test_a_detached_output_fails_only_the_gradient_line(capsys):
    def detached(queries, keys, values, heads, mask=False):
        return solution.multihead_attention(queries, keys, values, heads, mask).detach()

    report = check_multihead_attention(detached)
    failed = [r for r in report.results if not r.passed]
    assert [r.name for r in failed] == [GRADIENT_LINE]
    assert "does not track gradients" in capsys.readouterr().out


def test_a_serial_parallel_version_is_told_to_use_the_pool(capsys):
    def serial(queries, keys, values, heads, mask=False, pool=None):
        return solution.multihead_attention(queries, keys, values, heads, mask)

    report = check_parallel_multihead_attention(serial, pool=InstrumentedPool())
    printed = capsys.readouterr().out
    assert not report.passed and report.mistakes == ["pool_not_used"]
    assert "✓ matches the reference" in printed
    assert "✗ one pool.map call with one (q, k, v, mask) item per head" in printed


def test_a_worker_defined_in_the_notebook_is_flagged(capsys):
    def attention_function(args):
        return solution.attention_function(args)

    attention_function.__module__ = "__main__"  # as if defined in a notebook cell
    report = check_attention_function(attention_function)
    printed = capsys.readouterr().out
    assert report.mistakes == ["worker_not_importable"]
    assert "✗ importable by worker processes" in printed and "%%writefile" in printed


def test_a_wrong_head_function_is_diagnosed(capsys):
    def unscaled(args):
        q, k, v, mask = args
        return HAND_WRITTEN_MISTAKES["missing_scale"](q, k, v, 1, mask)

    report = check_attention_function(unscaled)
    assert report.mistakes[0] == "missing_scale"
    assert "not scaled" in capsys.readouterr().out


def test_checks_work_with_a_real_pool(capsys):
    import multiprocessing

    # one thread per worker: a fork after torch has run could deadlock otherwise
    with multiprocessing.get_context("fork").Pool(2, torch.set_num_threads, (1,)) as pool:
        report = check_parallel_multihead_attention(
            solution.parallel_multihead_attention, pool=pool
        )
    assert report.passed, capsys.readouterr().out


def test_report_repr_is_one_line():
    report = check_multihead_attention(solution.multihead_attention)
    count = len(report.results)
    assert repr(report) == f"<CheckReport multihead_attention: {count}/{count} checks passed>"
    assert torch.get_num_threads() >= 1


# -- the grader's rules, seen before submission ---------------------------------------------


@pytest.mark.parametrize("style", STYLES, ids=lambda f: f.__name__)
def test_every_correct_style_passes_and_is_told_more_cases_come(style, capsys):
    report = check_multihead_attention(style)
    printed = capsys.readouterr().out
    assert report.passed, printed
    assert MORE_WHEN_GRADED in printed


@pytest.mark.parametrize(("error", "passes"), [(2e-5, True), (2e-3, False)])
def test_checks_and_hidden_cases_draw_the_line_at_the_same_error(error, passes, capsys):
    def off_by(queries, keys, values, heads, mask=False):
        out = bmm_style(queries, keys, values, heads, mask)
        return out + error * out.detach().abs().amax()  # relative to the output's scale

    assert check_multihead_attention(off_by).passed is passes
    failed = []
    for grade_id in ("test_task1_values", "test_task1_mask"):
        try:
            run_group(grade_id, {"multihead_attention": off_by})
        except HiddenTestFailure:
            failed.append(grade_id)
    assert (failed == []) is passes


def test_a_fixed_size_causal_table_fails_the_long_sequence_line(capsys):
    report = check_multihead_attention(fixed_table_style(64))
    assert [r.name for r in report.results if not r.passed] == [
        "causal mask on long sequences (t = 512, the training length)"
    ]


def test_fused_attention_by_any_route_is_a_failed_check(capsys):
    def fused(queries, keys, values, heads, mask=False):
        b, t, e = queries.shape
        q, k, v = (x.view(b, t, heads, e // heads).transpose(1, 2) for x in (queries, keys, values))
        out = torch.ops.aten.scaled_dot_product_attention(q, k, v, is_causal=bool(mask))
        return out.transpose(1, 2).reshape(b, t, e)

    report = check_multihead_attention(fused)
    printed = capsys.readouterr().out
    assert not report.passed and "forbidden" in report.mistakes
    assert "✗ uses no built-in attention" in printed and "F.scaled_dot_product_attention" in printed


def test_a_decoy_pool_call_is_told_its_output_ignores_the_results(capsys):
    def decoy(queries, keys, values, heads, mask=False, pool=None):
        s = queries.size(-1) // heads
        items = [
            tuple(x[..., i * s : (i + 1) * s] for x in (queries, keys, values)) + (mask,)
            for i in range(heads)
        ]
        pool.map(solution.attention_function, items)
        return solution.multihead_attention(queries, keys, values, heads, mask)

    report = check_parallel_multihead_attention(decoy, pool=InstrumentedPool())
    printed = capsys.readouterr().out
    assert report.mistakes == ["pool_results_unused"]
    assert "✗ the output is built from the results pool.map returns" in printed


def test_names_only_skipped_cells_bind_are_flagged_before_submission(capsys):
    namespace = {"__name__": "__main__", "device": "cpu", "config": None}
    exec(
        "import math\nimport torch\n"
        "def multihead_attention(queries, keys, values, heads, mask=False):\n"
        "    b, t, e = queries.shape\n"
        "    s = e // heads\n"
        "    q, k, v = (x.view(b, t, heads, s).transpose(1, 2) for x in (queries, keys, values))\n"
        "    scores = q @ k.transpose(-1, -2) / math.sqrt(s) + 0 * (config is None)\n"
        "    if mask:\n"
        "        future = torch.ones(t, t, dtype=torch.bool, device=device).triu(1)\n"
        "        scores = scores.masked_fill(future, -math.inf)\n"
        "    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e)",
        namespace,
    )
    report = check_multihead_attention(namespace["multihead_attention"])
    printed = capsys.readouterr().out
    assert report.mistakes == ["skipped_names"]
    assert "`config` is bound in the lab only by cells that are not run while grading" in printed
    assert "`device`" not in printed  # the set-up cell binds it, and every grading run has it


def test_a_wrong_attention_function_is_named_once_and_the_parallel_version_is_judged_on_it(
    capsys,
):
    namespace: dict = {"__name__": "learner_notebook"}
    exec(
        "import torch\n"
        "def attention_function(args):\n"
        "    q, k, v, mask = args\n"
        "    scores = q @ k.transpose(1, 2)\n"  # no scale
        "    if mask:\n"
        "        t = q.size(1)\n"
        "        hidden = torch.ones(t, t, dtype=torch.bool).triu(1)\n"
        "        scores = scores.masked_fill(hidden, float('-inf'))\n"
        "    return scores.softmax(-1) @ v\n"
        "def parallel_multihead_attention(queries, keys, values, heads, mask=False, pool=None):\n"
        "    s = queries.size(-1) // heads\n"
        "    items = [tuple(x[..., i * s:(i + 1) * s] for x in (queries, keys, values)) + (mask,)\n"
        "             for i in range(heads)]\n"
        "    return torch.cat(pool.map(attention_function, items), dim=-1)\n",
        namespace,
    )
    report = check_parallel_multihead_attention(namespace["parallel_multihead_attention"])
    printed = capsys.readouterr().out
    # (functions made by exec cannot be imported by workers: that is said too)
    assert report.mistakes == ["missing_scale", "worker_not_importable"]
    assert "✓ equals your attention_function applied head by head (mask=True)" in printed
    assert "✓ the output is built from the results pool.map returns" in printed


def test_a_backward_that_disagrees_with_the_forward_fails_the_gradient_line(capsys):
    class Doubled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    def doubled(queries, keys, values, heads, mask=False):
        return bmm_style(queries, Doubled.apply(keys), values, heads, mask)

    report = check_multihead_attention(doubled)
    printed = capsys.readouterr().out
    assert [r.name for r in report.results if not r.passed] == [GRADIENT_LINE]
    assert "backward disagrees with your own forward for keys" in printed


def inverted_mask(queries, keys, values, heads, mask=False):
    b, t, e = queries.shape
    s = e // heads
    q, k, v = (x.view(b, t, heads, s).transpose(1, 2) for x in (queries, keys, values))
    scores = q @ k.transpose(-2, -1) / s**0.5
    if mask:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).tril(-1), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e)


def test_the_first_failure_points_at_the_line_to_look_at(capsys):
    check_multihead_attention(inverted_mask)
    printed = capsys.readouterr().out
    start = inverted_mask.__code__.co_firstlineno
    line = "scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).tril(-1)"
    assert f"↳ look at line {start + 6} of inverted_mask: {line}" in printed
    assert printed.count("look at line") == 1  # the lines that follow do not repeat it
