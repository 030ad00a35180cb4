"""PoolAttention inside former models: same outputs and gradients as serial attention."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from former import CTransformer, GTransformer
from former.attention import sdpa_attention
from former.parallel import HeadPool, PoolAttention, SerialPool, make_pool
from former.parallel.pool_attention import PIECE_SCORE_BYTES, InPieces, rows_per_piece
from solutions.attention import attention_function


@pytest.fixture(scope="module")
def pool():
    with make_pool(2) as pool:
        yield pool


def failing_head(args):
    raise RuntimeError("no head today")


def twin_models(model_class, pool_attention, **kwargs):
    torch.manual_seed(0)
    serial = model_class(attention=sdpa_attention, **kwargs)
    pooled = model_class(attention=pool_attention, **kwargs)
    pooled.load_state_dict(serial.state_dict())
    return serial.eval(), pooled.eval()


def test_classifier_with_pool_attention_equals_serial_model(pool):
    serial, pooled = twin_models(
        CTransformer,
        PoolAttention(pool),
        emb=32,
        heads=4,
        depth=2,
        seq_length=40,
        num_tokens=100,
        num_classes=3,
    )
    tokens = torch.randint(0, 100, (3, 40))
    padding = torch.ones(3, 40, dtype=torch.bool)
    padding[1, 25:] = False
    with torch.no_grad():
        expected = serial(tokens, padding)
        actual = pooled(tokens, padding)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)


def test_generator_with_learner_head_function_keeps_causality(pool):
    # the learner's one-head function (here the reference one) as the mapped function
    serial, pooled = twin_models(
        GTransformer,
        PoolAttention(pool, head_function=attention_function),
        emb=24,
        heads=3,
        depth=1,
        seq_length=16,
        num_tokens=50,
    )
    tokens = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(pooled(tokens), serial(tokens), atol=1e-6, rtol=0)
        changed = tokens.clone()
        changed[:, 10:] = (changed[:, 10:] + 1) % 50
        torch.testing.assert_close(pooled(changed)[:, :10], pooled(tokens)[:, :10])


@pytest.mark.parametrize("mask", [False, True])
def test_backward_is_mapped_over_the_pool_and_matches_autograd(pool, mask, monkeypatch):
    real_map = HeadPool.map
    generator = torch.Generator().manual_seed(3)
    inputs = [torch.randn(2, 9, 12, generator=generator, requires_grad=True) for _ in range(3)]
    weights = torch.randn(2, 9, 12, generator=generator)

    maps = []

    def counted_map(self, *args):
        maps.append(args)
        return real_map(self, *args)

    monkeypatch.setattr(HeadPool, "map", counted_map)
    (PoolAttention(pool)(*inputs, 4, mask) * weights).sum().backward()
    assert len(maps) == 2  # one map forward, one map backward
    pooled_grads = [x.grad.clone() for x in inputs]

    for x in inputs:
        x.grad = None
    (sdpa_attention(*inputs, 4, mask) * weights).sum().backward()
    for pooled, expected in zip(pooled_grads, (x.grad for x in inputs), strict=True):
        torch.testing.assert_close(pooled, expected, atol=1e-6, rtol=1e-5)


def test_a_training_step_with_pool_attention_matches_serial(pool):
    serial, pooled = twin_models(
        CTransformer,
        PoolAttention(pool),
        emb=16,
        heads=2,
        depth=1,
        seq_length=12,
        num_tokens=30,
        num_classes=2,
    )
    tokens = torch.randint(0, 30, (4, 12))
    labels = torch.tensor([0, 1, 1, 0])
    for model in (serial, pooled):
        model.train()
        torch.nn.functional.nll_loss(model(tokens), labels).backward()
    for (name, a), (_, b) in zip(serial.named_parameters(), pooled.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_serial_pool_and_deepcopy():
    attention = PoolAttention(SerialPool())
    assert copy.deepcopy(attention) is attention
    q = torch.randn(1, 5, 6)
    torch.testing.assert_close(attention(q, q, q, 2), sdpa_attention(q, q, q, 2))


def test_pool_attention_needs_a_pool():
    with pytest.raises(TypeError, match="make_pool"):
        PoolAttention(object())


# -- heads computed in cache-sized pieces -------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 5), t=st.integers(1, 12), rows=st.integers(1, 6), mask=st.booleans())
def test_a_head_in_pieces_equals_the_whole_head(b, t, rows, mask):
    generator = torch.Generator().manual_seed(b * 100 + t)
    q, k, v = (torch.randn(b, t, 3, generator=generator) for _ in range(3))
    whole = attention_function((q, k, v, mask))
    torch.testing.assert_close(InPieces(attention_function, rows)((q, k, v, mask)), whole)


def test_pieces_keep_each_score_matrix_within_the_budget():
    assert rows_per_piece(128) * 128 * 128 * 4 <= PIECE_SCORE_BYTES
    assert rows_per_piece(512) == 1  # (1, 512, 512) float32 scores: exactly the budget
    assert rows_per_piece(4096) == 1  # never less than one batch entry


@pytest.mark.parametrize("mask", [False, True])
def test_long_inputs_go_in_pieces_with_the_same_outputs_and_gradients(pool, mask):
    # t = 600: one batch entry's scores already exceed the budget, so each worker
    # computes its heads one batch entry at a time, forward and backward.
    assert rows_per_piece(600) == 1
    generator = torch.Generator().manual_seed(5)
    inputs = [torch.randn(3, 600, 8, generator=generator, requires_grad=True) for _ in range(3)]
    weights = torch.randn(3, 600, 8, generator=generator)
    attention = PoolAttention(pool, head_function=attention_function)

    out = attention(*inputs, 2, mask)
    (out * weights).sum().backward()
    pooled_grads = [x.grad.clone() for x in inputs]
    for x in inputs:
        x.grad = None
    expected = sdpa_attention(*inputs, 2, mask)
    (expected * weights).sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    for pooled, grad in zip(pooled_grads, (x.grad for x in inputs), strict=True):
        torch.testing.assert_close(pooled, grad, atol=1e-6, rtol=1e-5)


def test_a_head_function_in_pieces_is_still_named_in_errors(pool):
    # The pieces wrapper must not hide whose function failed.
    attention = PoolAttention(pool, head_function=failing_head)
    q = torch.randn(2, 600, 4)
    with pytest.raises(RuntimeError, match="no head today") as caught:
        attention(q, q, q, 2)
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "test_parallel_attention.failing_head" in notes
