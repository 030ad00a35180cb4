"""PoolAttention inside former models: same outputs and gradients as serial attention."""

from __future__ import annotations

import copy

import pytest
import torch

from former import CTransformer, GTransformer
from former.attention import sdpa_attention
from former.parallel import PoolAttention, SerialPool, make_pool
from solutions.attention import attention_function


@pytest.fixture(scope="module")
def pool():
    with make_pool(2) as pool:
        yield pool


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
def test_backward_is_mapped_over_the_pool_and_matches_autograd(pool, mask):
    generator = torch.Generator().manual_seed(3)
    inputs = [torch.randn(2, 9, 12, generator=generator, requires_grad=True) for _ in range(3)]
    weights = torch.randn(2, 9, 12, generator=generator)

    calls_before = pool.traffic.calls
    (PoolAttention(pool)(*inputs, 4, mask) * weights).sum().backward()
    assert pool.traffic.calls - calls_before == 2  # one map forward, one map backward
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
