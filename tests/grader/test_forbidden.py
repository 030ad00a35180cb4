"""The forbidden-operator rule: what a graded function executes counts, by any route,
and nothing else does (a mention in a docstring, a check elsewhere in the cell)."""

from __future__ import annotations

import concurrent.futures
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grader.learner.calls import tripwires
from grader.learner.forbidden import TAMPERING, Tripwires
from grader.learner.probe import probe_case
from grader.learner.probe_io import CaseInputs

Q = torch.randn(1, 2, 3, 4)


def _via_disabled_overrides():
    with torch._C.DisableTorchFunction():
        return torch._C._nn.scaled_dot_product_attention(Q, Q, Q, is_causal=True)


def _in_a_thread():
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(F.scaled_dot_product_attention, Q, Q, Q).result()


ROUTES = {
    "F": lambda: F.scaled_dot_product_attention(Q, Q, Q),
    "getattr": lambda: getattr(F, "scaled_dot_" + "product_attention")(Q, Q, Q),
    "torch._C._nn": lambda: torch._C._nn.scaled_dot_product_attention(Q, Q, Q),
    "torch.ops.aten": lambda: torch.ops.aten.scaled_dot_product_attention(Q, Q, Q),
    "fused kernel": lambda: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(Q, Q, Q),
    "overrides off": _via_disabled_overrides,
    "another thread": _in_a_thread,
}


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_to_fused_attention_is_recorded(route):
    wires = tripwires()
    with wires.armed():
        ROUTES[route]()
    assert wires.take() == ["F.scaled_dot_product_attention"]


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_module_is_recorded_on_either_path(need_weights):
    wires = tripwires()
    layer = torch.nn.MultiheadAttention(4, 2)
    with wires.armed():
        layer(Q[0], Q[0], Q[0], need_weights=need_weights)
    assert "nn.MultiheadAttention" in wires.take()


def test_attention_written_out_and_unarmed_calls_are_not_recorded():
    wires = tripwires()
    with wires.armed():
        torch.softmax(Q @ Q.transpose(-1, -2) / math.sqrt(4), dim=-1) @ Q
    assert wires.take() == []
    F.scaled_dot_product_attention(Q, Q, Q)
    assert wires.take() == []


def test_switching_the_profiler_off_or_replacing_it_is_tampering():
    wires = tripwires()

    def stop():
        torch.autograd._disable_profiler()
        F.scaled_dot_product_attention(Q, Q, Q)

    def replace():
        torch.autograd._disable_profiler()
        with torch.autograd.profiler.profile():
            F.scaled_dot_product_attention(Q, Q, Q)

    for call in (stop, replace):
        with wires.armed():
            call()
        assert wires.take() == [TAMPERING]


def test_armed_blocks_nest():
    wires = tripwires()
    with wires.armed():
        with wires.armed():
            F.scaled_dot_product_attention(Q, Q, Q)
        torch.ones(1)
    assert wires.take() == ["F.scaled_dot_product_attention"]


def test_a_second_set_of_tripwires_records_too():
    first, second = tripwires(), Tripwires()
    layer = torch.nn.MultiheadAttention(4, 2)
    with second.armed():
        layer(Q[0], Q[0], Q[0])
    assert "nn.MultiheadAttention" in second.take() and first.take() == []


def _inputs(**extra):
    rng = np.random.default_rng(0)
    arrays = {
        n: rng.standard_normal((2, 5, 8)).astype(np.float32) for n in ("queries", "keys", "values")
    }
    given = {"function": "multihead_attention", "kind": "forward", "heads": 2, "mask": True}
    return CaseInputs(**{**given, **arrays, **extra})


def test_a_mention_of_a_forbidden_name_costs_nothing():
    def multihead_attention(queries, keys, values, heads, mask=False):
        """Not F.scaled_dot_product_attention, nor nn.MultiheadAttention: written out."""
        b, t, e = queries.shape
        s = e // heads
        q, k, v = (x.view(b, t, heads, s).transpose(1, 2) for x in (queries, keys, values))
        scores = q @ k.transpose(-1, -2) / math.sqrt(s)  # F.scaled_dot_product_attention(q, k, v)
        if mask:
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -math.inf)
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e)

    assert probe_case(_inputs(), multihead_attention).forbidden == []


def test_a_forbidden_operator_on_some_inputs_only_is_recorded_for_those():
    def sometimes(queries, keys, values, heads, mask=False):
        b, t, e = queries.shape
        split = [x.view(b, t, heads, e // heads).transpose(1, 2) for x in (queries, keys, values)]
        if mask:
            out = F.scaled_dot_product_attention(*split, is_causal=True)
        else:
            out = torch.softmax(split[0] @ split[1].transpose(-1, -2) / math.sqrt(e // heads), -1)
            out = out @ split[2]
        return out.transpose(1, 2).reshape(b, t, e)

    assert probe_case(_inputs(), sometimes).forbidden == ["F.scaled_dot_product_attention"]
    assert probe_case(_inputs(mask=False), sometimes).forbidden == []
