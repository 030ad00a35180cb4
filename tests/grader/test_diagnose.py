"""Diagnoses: every catalogued mistake is named, right answers are recognised whatever the
shapes, other errors are located, and pool misuse is read from an instrumented pool's log."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from learner_code import HAND_WRITTEN_MISTAKES, written_out

from former.attention import sdpa_attention
from grader.learner.counting_pool import InstrumentedPool, function_origin
from grader.learner.diagnose import compare, diagnose_attention
from grader.learner.mistakes import MISTAKES, MISTAKES_BY_KEY
from grader.learner.pool_mistakes import POOL_MISTAKES, diagnose_pool_usage
from solutions import attention as solution


def inputs(b=2, t=5, heads=3, s=4, dtype=torch.float32, scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, t, heads * s, generator=generator, dtype=dtype) for _ in range(3))
    return q * scale, k * scale, v


def test_catalogue_has_the_mistakes_learners_make():
    keys = {m.key for m in MISTAKES}
    assert {
        "missing_scale",
        "scale_one_over_s",
        "scale_sqrt_emb",
        "scale_times_sqrt_s",
        "softmax_wrong_axis",
        "heads_not_transposed",
        "output_not_transposed",
        "mask_missing",
        "mask_inverted",
        "mask_hides_diagonal",
        "mask_after_softmax",
        "keys_values_swapped",
        "unstable_softmax",
    } <= keys
    assert {m.key for m in POOL_MISTAKES} >= {
        "pool_not_used",
        "one_item_for_all_heads",
        "worker_not_importable",
    }
    for mistake in [*MISTAKES, *POOL_MISTAKES]:
        assert mistake.title and mistake.hint and mistake.title != mistake.hint


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.key)
def test_each_mistake_is_diagnosed_by_name(mistake, dtype):
    q, k, v = inputs(dtype=dtype, scale=math.sqrt(1000) if mistake.needs_large_scores else 1.0)
    diagnosis = diagnose_attention(mistake.apply(q, k, v, 3, True), q, k, v, 3, True)
    assert not diagnosis.correct
    assert diagnosis.mistake == mistake.key
    assert mistake.title in diagnosis.message and mistake.hint in diagnosis.message


def test_mistakes_read_from_numpy_arrays_too():
    q, k, v = inputs()
    out = MISTAKES_BY_KEY["keys_values_swapped"].apply(q, k, v, 3, False)
    arrays = [x.numpy() for x in (out, q, k, v)]
    assert diagnose_attention(*arrays, 3, False).mistake == "keys_values_swapped"


def test_a_mask_hiding_the_diagonal_with_minus_1e9_is_still_named():
    q, k, v = inputs()
    b, t, e = q.shape
    qh, kh, vh = (x.view(b, t, 3, 4).transpose(1, 2) for x in (q, k, v))
    scores = qh @ kh.transpose(-1, -2) / 2
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(0), -1e9)
    out = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, t, e)  # row 0: finite, uniform
    assert diagnose_attention(out, q, k, v, 3, True).mistake == "mask_hides_diagonal"


def test_mask_mistakes_are_invisible_without_the_mask():
    q, k, v = inputs()
    for mistake in MISTAKES:
        if mistake.needs_mask:
            assert diagnose_attention(mistake.apply(q, k, v, 3, False), q, k, v, 3, False).correct


def test_every_catalogued_mistake_has_a_hand_written_version():
    assert set(HAND_WRITTEN_MISTAKES) == {m.key for m in MISTAKES}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.key)
def test_hand_written_mistakes_are_diagnosed_by_name(mistake, dtype):
    large = mistake.needs_large_scores
    for seed in range(3):
        q, k, v = inputs(dtype=dtype, scale=math.sqrt(1000) if large else 1.0, seed=seed)
        wrong = HAND_WRITTEN_MISTAKES[mistake.key](q, k, v, 3, True)
        assert diagnose_attention(wrong, q, k, v, 3, True).mistake == mistake.key


@pytest.mark.parametrize("mask", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.key)
def test_catalogued_mistakes_reproduce_hand_written_ones(mistake, mask):
    """The catalogue builds each mistake from the fused kernel; it must equal the real thing."""
    large = mistake.needs_large_scores
    for dtype in (torch.float32, torch.float64):
        q, k, v = inputs(t=7, dtype=dtype, scale=math.sqrt(1000) if large else 1.0, seed=3)
        expected = HAND_WRITTEN_MISTAKES[mistake.key](q, k, v, 3, mask)
        torch.testing.assert_close(
            mistake.apply(q, k, v, 3, mask), expected, equal_nan=True, atol=1e-5, rtol=1e-4
        )


def styles(q, k, v, heads, mask, style):
    if style == "solution":
        return solution.multihead_attention(q, k, v, heads, mask)
    if style == "written_out":
        return written_out(q, k, v, heads, mask)
    s = q.size(-1) // heads
    outs = []
    for i in range(heads):  # a loop over heads, masking with a large negative number
        qi, ki, vi = (x[..., i * s : (i + 1) * s] for x in (q, k, v))
        scores = qi @ ki.transpose(1, 2) / math.sqrt(s)
        if mask:
            t = scores.size(-1)
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -1e9)
        outs.append(scores.softmax(-1) @ vi)
    return torch.cat(outs, dim=-1)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 9),
    heads=st.integers(1, 5),
    s=st.integers(1, 6),
    mask=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    style=st.sampled_from(["solution", "written_out", "loop"]),
    seed=st.integers(0, 2**16),
)
def test_correct_outputs_are_recognised_whatever_the_shapes(
    b, t, heads, s, mask, dtype, style, seed
):
    q, k, v = inputs(b, t, heads, s, dtype=dtype, seed=seed)
    diagnosis = diagnose_attention(styles(q, k, v, heads, mask, style), q, k, v, heads, mask)
    assert diagnosis.correct, diagnosis.message
    assert diagnosis.mistake is None


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    t=st.integers(2, 8),
    heads=st.integers(2, 4),
    s=st.integers(2, 5),
    mask=st.booleans(),
    data=st.data(),
)
def test_an_unknown_error_is_located_by_batch_head_position_feature(b, t, heads, s, mask, data):
    q, k, v = inputs(b, t, heads, s, dtype=torch.float64)
    out = sdpa_attention(q, k, v, heads, mask)
    batch = data.draw(st.integers(0, b - 1))
    position = data.draw(st.integers(0, t - 1))
    head = data.draw(st.integers(0, heads - 1))
    feature = data.draw(st.integers(0, s - 1))
    out[batch, position, head * s + feature] += 10.0
    diagnosis = diagnose_attention(out, q, k, v, heads, mask)
    assert not diagnosis.correct and diagnosis.mistake is None
    assert (
        f"batch {batch}, head {head}, position {position}, feature {feature}" in diagnosis.message
    )


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ((2, 3, 5, 4), "the heads are not merged back"),
        ((2, 5, 3, 4), "reshape to (b, t, heads * s)"),
        ((6, 5, 4), "still folded into the batch"),
        ((2, 5, 5), "attention weights"),
    ],
)
def test_shape_problems_are_explained(shape, words):
    q, k, v = inputs()
    diagnosis = diagnose_attention(torch.zeros(shape), q, k, v, 3, False)
    assert diagnosis.mistake == "wrong_shape"
    assert str(shape) in diagnosis.message and words in diagnosis.message


def test_a_missing_return_is_pointed_out():
    q, k, v = inputs()
    diagnosis = diagnose_attention(None, q, k, v, 3, False)
    assert diagnosis.mistake == "not_a_tensor" and "return" in diagnosis.message


def test_nan_output_on_small_scores_is_reported_as_non_finite():
    q, k, v = inputs()
    out = sdpa_attention(q, k, v, 3, False)
    out[1, 2, 7] = float("nan")
    diagnosis = diagnose_attention(out, q, k, v, 3, False)
    assert diagnosis.mistake == "nonfinite"
    assert "batch 1, head 1, position 2, feature 3" in diagnosis.message


# -- the pool --------------------------------------------------------------------------------


def head_attention(args):
    return solution.attention_function(args)


def echo(args):
    return args


def per_head_items(q, k, v, heads, mask):
    s = q.size(-1) // heads
    return [tuple(x[..., i * s : (i + 1) * s] for x in (q, k, v)) + (mask,) for i in range(heads)]


def test_instrumented_pool_records_function_and_items():
    q, k, v = inputs()
    pool = InstrumentedPool()
    results = pool.map(head_attention, per_head_items(q, k, v, 3, True))
    assert torch.allclose(torch.cat(results, -1), sdpa_attention(q, k, v, 3, True), atol=1e-5)
    (call,) = pool.calls
    assert (call.method, call.function, call.n_items) == ("map", "head_attention", 3)
    assert call.module == __name__ and call.importable
    assert call.items[0]["parts"][0] == {"type": "Tensor", "shape": [2, 5, 4], "dtype": "float32"}
    assert call.items[0]["parts"][3] == {"type": "bool", "value": True}
    assert diagnose_pool_usage(pool.log(), 3, head_shape=(2, 5, 4)).correct


def test_functions_worker_processes_cannot_import_are_recognised():
    def local(args):
        return args

    assert not function_origin(local)[2]
    assert not function_origin(lambda args: args)[2]
    local.__module__, local.__qualname__ = "__main__", "attention_function"
    assert "notebook" in function_origin(local)[3]
    assert function_origin(solution.attention_function)[2]


def log_of(run):
    pool = InstrumentedPool()
    run(pool)
    return pool.log()


@pytest.mark.parametrize(
    ("run", "mistake"),
    [
        (lambda pool: None, "pool_not_used"),
        (lambda pool: pool.map(echo, [inputs()]), "one_item_for_all_heads"),
        (
            lambda pool: [
                pool.map(head_attention, [item]) for item in per_head_items(*inputs(), 3, False)
            ],
            "several_map_calls",
        ),
        (
            lambda pool: pool.map(head_attention, per_head_items(*inputs(), 3, False)[:2]),
            "wrong_number_of_items",
        ),
        (
            lambda pool: pool.map(echo, [inputs()[0]] * 3),
            "items_not_per_head",
        ),
        (
            lambda pool: pool.map(lambda a: a, per_head_items(*inputs(), 3, False)),
            "worker_not_importable",
        ),
    ],
    ids=["serial", "one_item", "several_calls", "two_items", "bare_tensors", "lambda"],
)
def test_each_pool_mistake_is_diagnosed_by_name(run, mistake):
    diagnosis = diagnose_pool_usage(log_of(run), 3, head_shape=(2, 5, 4))
    assert not diagnosis.correct and diagnosis.mistake == mistake
    assert "Hint:" in diagnosis.message


def test_a_worker_pool_refuses_an_unimportable_function_without_starting_work():
    with InstrumentedPool(1) as pool:
        with pytest.raises(Exception, match="cannot import"):
            pool.map(lambda a: a, [1, 2])
    assert pool.calls[0].n_items == 2 and not pool.calls[0].importable


def test_diagnoses_do_not_depend_on_monkeypatched_comparisons(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    q, k, v = inputs()
    wrong = MISTAKES_BY_KEY["missing_scale"].apply(q, k, v, 3, False)
    assert diagnose_attention(wrong, q, k, v, 3, False).mistake == "missing_scale"


def test_map_async_and_imap_count_as_one_call_per_head():
    q, k, v = inputs()
    for method in ("map_async", "imap"):
        pool = InstrumentedPool()
        result = getattr(pool, method)(head_attention, per_head_items(q, k, v, 3, False))
        outs = result.get() if method == "map_async" else list(result)
        assert torch.allclose(torch.cat(outs, -1), sdpa_attention(q, k, v, 3), atol=1e-5)
        assert diagnose_pool_usage(pool.calls, 3, head_shape=(2, 5, 4)).correct


def test_the_instrumented_pool_takes_what_a_real_pool_takes():
    q, k, v = inputs()
    pool, seen = InstrumentedPool(result_scale=2.0), []
    items = per_head_items(q, k, v, 3, False)
    pool.map_async(head_attention, items, 1, callback=seen.append).get(timeout=5)
    list(pool.imap_unordered(head_attention, items, chunksize=2))
    pool.map(head_attention, items, chunksize=3)
    assert [c.method for c in pool.calls] == ["map_async", "imap_unordered", "map"]
    (results,) = seen
    assert torch.allclose(torch.cat(results, -1), 2 * sdpa_attention(q, k, v, 3), atol=1e-5)


def test_the_pool_log_holds_each_returned_tensor_after_the_scale_and_none_for_the_rest():
    q, k, v = inputs()
    pool = InstrumentedPool(result_scale=2.0)
    outs = pool.map(head_attention, per_head_items(q, k, v, 3, False))
    pool.map(len, per_head_items(q, k, v, 3, False))
    first, second = pool.log()
    assert [r.dtype for r in first["results"]] == [np.float64] * 3
    for out, logged in zip(outs, first["results"], strict=True):
        np.testing.assert_array_equal(out.double().numpy(), logged)
    assert second["results"] == [None, None, None]


def test_parts_of_an_output_can_be_compared_at_the_whole_outputs_scale():
    part = np.array([0.01, 0.02])
    assert not compare(part + 1e-5, part, 2e-4).ok
    assert compare(part + 1e-5, part, 2e-4, scale=1.0).ok


def test_inf_or_nan_on_large_scores_is_named_an_unstable_softmax_even_when_rows_differ():
    q, k, v = inputs(scale=math.sqrt(1000))
    out = sdpa_attention(q, k, v, 3, True)
    out[0, 3, :4] = float("inf")  # one head of one position overflowed, nothing else
    diagnosis = diagnose_attention(out, q, k, v, 3, True)
    assert diagnosis.mistake == "unstable_softmax"
    assert "batch 0, head 0, position 3" in diagnosis.message
