"""Shapes, causality, padding and the attention plug of the former models."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from former import CTransformer, GTransformer, SelfAttention, TransformerBlock
from former.attention import (
    AttentionNotImplementedError,
    AttentionShapeError,
    sdpa_attention,
)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 12),
    heads=st.integers(1, 4),
    s=st.integers(1, 6),
    wide=st.booleans(),
    mask=st.booleans(),
)
def test_self_attention_keeps_shape(b, t, heads, s, wide, mask):
    emb = heads * s
    layer = SelfAttention(emb, heads=heads, mask=mask, wide=wide, attention="sdpa")
    assert layer.head_size == (emb if wide else s)
    assert layer(torch.randn(b, t, emb)).shape == (b, t, emb)


def attention_written_out(q, k, v, heads, mask):
    """Multi-head attention step by step, to check the fused kernel's head layout and mask."""
    b, t, e = q.shape
    s = e // heads
    qh, kh, vh = (x.view(b, t, heads, s).transpose(1, 2) for x in (q, k, v))
    scores = qh @ kh.transpose(-2, -1) / math.sqrt(s)
    if mask:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2).reshape(b, t, e)


@settings(max_examples=20, deadline=None)
@given(t=st.integers(1, 10), heads=st.integers(1, 4), s=st.integers(1, 5), mask=st.booleans())
def test_sdpa_attention_is_multihead_attention(t, heads, s, mask):
    q, k, v = torch.randn(3, 2, t, heads * s, dtype=torch.float64).unbind(0)
    torch.testing.assert_close(
        sdpa_attention(q, k, v, heads, mask), attention_written_out(q, k, v, heads, mask)
    )


def test_sdpa_attention_has_gradients_in_float64():
    q, k, v = (torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda *x: sdpa_attention(*x, 2, True), (q, k, v))


@pytest.mark.parametrize("wide", [False, True])
def test_block_and_models_shapes(wide):
    block = TransformerBlock(16, 4, mask=False, wide=wide, attention="sdpa")
    assert block(torch.randn(2, 5, 16)).shape == (2, 5, 16)
    c = CTransformer(16, 4, 2, 20, 50, 3, wide=wide, attention="sdpa")
    out = c(torch.randint(0, 50, (2, 7)))
    assert out.shape == (2, 3)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2))
    g = GTransformer(16, 4, 2, 20, 256, wide=wide, attention="sdpa")
    assert g(torch.randint(0, 256, (2, 7))).shape == (2, 7, 256)


@settings(max_examples=15, deadline=None)
@given(t=st.integers(2, 12), data=st.data())
def test_gtransformer_is_causal(t, data):
    i = data.draw(st.integers(0, t - 2))
    j = data.draw(st.integers(i + 1, t - 1))
    torch.manual_seed(0)
    model = GTransformer(16, 2, 2, 16, 32, attention="sdpa").eval()
    x = torch.randint(0, 32, (1, t))
    y = x.clone()
    y[0, j] = (x[0, j] + 1) % 32
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0, : i + 1], model(y)[0, : i + 1])
        assert not torch.allclose(model(x)[0, j], model(y)[0, j])


@pytest.mark.parametrize("max_pool", [True, False])
def test_pooling_ignores_padding(max_pool):
    torch.manual_seed(0)
    model = CTransformer(16, 2, 1, 32, 40, 2, max_pool=max_pool, attention="sdpa").eval()
    padded = torch.cat([torch.randint(2, 40, (1, 6)), torch.zeros(1, 10, dtype=torch.long)], 1)
    mask = padded != 0
    with torch.no_grad():
        h = model.backbone(padded, mask)[:, :6]
        pooled = h.max(dim=1).values if max_pool else h.mean(dim=1)
        expected = torch.log_softmax(model.toprobs(pooled), dim=1)
        torch.testing.assert_close(model(padded, mask), expected)
        assert not torch.allclose(model(padded), expected)


def test_no_attention_points_at_task_1():
    with pytest.raises(AttentionNotImplementedError, match="Task 1") as info:
        CTransformer(16, 2, 1, 8, 10, 2)
    assert isinstance(info.value, NotImplementedError)
    assert "multihead_attention" in str(info.value) and "sdpa" in str(info.value)


def test_wrong_output_shape_names_expected_shape():
    def forgets_to_merge(q, k, v, heads, mask=False):
        b, t, hs = q.shape
        return q.view(b, t, heads, hs // heads)

    layer = SelfAttention(12, heads=3, attention=forgets_to_merge)
    with pytest.raises(AttentionShapeError, match=r"expected \(b, t, heads\*s\) = \(2, 5, 3\*4\)"):
        layer(torch.randn(2, 5, 12))


def test_missing_return_is_explained():
    layer = SelfAttention(8, heads=2, attention=lambda q, k, v, h, m=False: None)
    with pytest.raises(AttentionShapeError, match="forget `return`"):
        layer(torch.randn(1, 3, 8))


def test_import_string_plug(tmp_path, monkeypatch):
    (tmp_path / "my_attn_mod.py").write_text(
        textwrap.dedent(
            """
            from former.attention import sdpa_attention as multihead_attention
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    layer = SelfAttention(8, heads=2, attention="my_attn_mod:multihead_attention")
    assert layer(torch.randn(1, 3, 8)).shape == (1, 3, 8)
    with pytest.raises(ImportError, match="has no function 'nope'"):
        SelfAttention(8, heads=2, attention="my_attn_mod:nope")
    sys.modules.pop("my_attn_mod", None)


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("no_such_module_xyz:f", ImportError, "Cannot import module 'no_such_module_xyz'"),
        ("flash", ValueError, "Unknown attention 'flash'"),
        ("naive", ValueError, "use 'sdpa' or an import string"),
        (42, TypeError, "not int"),
    ],
)
def test_bad_attention_specs(spec, error, match):
    with pytest.raises(error, match=match):
        SelfAttention(8, heads=2, attention=spec)


def test_narrow_needs_divisible_heads():
    with pytest.raises(
        ValueError, match=r"heads \(3\) must divide the embedding size \(10\).*-H 2"
    ):
        SelfAttention(10, heads=3, attention="sdpa")


def test_too_long_sequence_is_explained():
    model = CTransformer(8, 2, 1, 4, 10, 2, attention="sdpa")
    with pytest.raises(ValueError, match="longer than the model's seq_length 4"):
        model(torch.randint(0, 10, (1, 5)))


def written_out_attention(q, k, v, heads, mask=False):
    """A learner's `multihead_attention`, written out (not the fused kernel): the padding fix
    must work through the contract, whatever implements it."""
    return attention_written_out(q, k, v, heads, mask)


@settings(max_examples=20, deadline=None)
@given(
    length=st.integers(1, 12),
    longest=st.integers(13, 24),
    max_pool=st.booleans(),
    wide=st.booleans(),
    attention=st.sampled_from(["sdpa", written_out_attention]),
    bigrams=st.booleans(),
    seed=st.integers(0, 3),
)
def test_padding_never_changes_a_prediction(
    length, longest, max_pool, wide, attention, bigrams, seed
):
    """A review alone, and the same review in a batch of longer ones (so padded), get the same
    probabilities: padded keys get no attention and no pooling."""
    torch.manual_seed(seed)
    keys = torch.tensor([2 * 40 + 3, 5 * 40 + 7, 3 * 40 + 2]) if bigrams else None
    model = CTransformer(
        16, 2, 2, 32, 40, 2, max_pool=max_pool, wide=wide, attention=attention, bigram_keys=keys
    ).eval()
    review = torch.randint(2, 10, (1, length))
    longer = torch.randint(2, 40, (2, longest))
    batch = torch.cat([torch.nn.functional.pad(review, (0, longest - length)), longer])
    with torch.no_grad():
        alone = model(review, torch.ones_like(review, dtype=torch.bool)).exp()
        in_batch = model(batch, batch != 0).exp()[:1]
    torch.testing.assert_close(in_batch, alone, atol=1e-6, rtol=1e-5)


def test_padded_keys_change_nothing_the_attention_sees_of_real_keys():
    """The extra feature that masks padded keys leaves the real scores at 1/sqrt(s)."""
    torch.manual_seed(0)
    layer = SelfAttention(12, heads=3, attention=written_out_attention).eval()
    x = torch.randn(1, 5, 12)
    padded = torch.cat([x, torch.randn(1, 4, 12)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 4])
    torch.testing.assert_close(layer(padded, mask)[:, :5], layer(x), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(layer(padded)[:, :5], layer(x), atol=1e-3)


def test_bigram_embedding_is_added_at_the_second_word_of_listed_pairs():
    model = CTransformer(8, 2, 1, 16, 10, 2, attention="sdpa", bigram_keys=torch.tensor([23, 47]))
    embedding = model.backbone.bigram_embedding
    x = torch.tensor([[2, 3, 4, 7, 2, 3, 0]])  # pairs 2-3 (key 23) twice, 4-7 (key 47) once
    assert embedding.ids(x).tolist() == [[0, 1, 0, 2, 0, 1, 0]]
    assert model.num_bigrams == 2
    assert torch.equal(embedding(x)[0, 0], torch.zeros(8))
    assert CTransformer(8, 2, 1, 16, 10, 2, attention="sdpa").num_bigrams == 0
