"""The visible checks' picture for mask and softmax-axis mistakes: the learner's attention
weights, read from the learner's own function, next to the expected ones."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from learner_code import HAND_WRITTEN_MISTAKES, IDIOM_MISTAKES, IDIOMS, in_idiom

from grader.learner.checks import check_attention_function, check_multihead_attention
from grader.learner.weights_picture import (
    PICTURED,
    T,
    expected_weights,
    learner_weights,
    one_hot_inputs,
)
from solutions import attention as solution

matplotlib.use("Agg")


def _run(fn):
    return lambda q, k, v, heads, mask: fn(q, k, v, heads, mask)


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("idiom", ["reference", *IDIOMS])
def test_a_right_answer_gives_the_expected_weights(idiom: str, mask: bool) -> None:
    fn = solution.multihead_attention if idiom == "reference" else in_idiom(idiom)
    q, k, _ = one_hot_inputs(3)
    assert torch.allclose(
        learner_weights(_run(fn), 3, mask), expected_weights(q, k, mask), atol=1e-5
    )


def _pictured_samples():
    """Each pictured mistake as written out by hand and in every idiom that can make it."""
    for mistake in PICTURED:
        yield pytest.param(HAND_WRITTEN_MISTAKES[mistake], mistake, id=f"by_hand-{mistake}")
        if mistake in IDIOM_MISTAKES:
            for idiom in IDIOMS:
                yield pytest.param(in_idiom(idiom, mistake), mistake, id=f"{idiom}-{mistake}")


def _shows(mistake: str, weights: torch.Tensor) -> bool:
    """What the picture makes visible for each mistake."""
    future, past = torch.ones(T, T).triu(1).bool(), torch.ones(T, T).tril(-1).bool()
    rows, columns = weights.nansum(dim=-1), weights.nansum(dim=-2)
    return {
        "mask_missing": bool((weights[future] > 0).all()),
        "mask_inverted": bool((weights[past] == 0).all() and (weights[future] > 0).all()),
        # the first query sees no key: NaN, or spread evenly where -inf was written as -1e9
        "mask_hides_diagonal": bool(
            (weights[0].isnan().all() or torch.allclose(weights[0], torch.full((T,), 1 / T)))
            and (weights.diagonal()[1:] == 0).all()
        ),
        # hidden weights zeroed after normalising: only the last query's row still sums to 1
        "mask_after_softmax": bool((weights[future] == 0).all() and (rows[:-1] < 0.999).all()),
        "softmax_wrong_axis": bool(torch.allclose(columns, torch.ones(T), atol=1e-5)),
    }[mistake]


@pytest.mark.parametrize(("fn", "mistake"), list(_pictured_samples()))
def test_the_picture_shows_what_the_mistake_does(fn, mistake: str) -> None:
    weights = learner_weights(_run(fn), 3, PICTURED[mistake])
    assert _shows(mistake, weights)


def _images(report) -> list[torch.Tensor]:
    """The heat maps' arrays, masked (NaN) cells as NaN."""
    assert report.figure is not None, "the check drew no picture"
    arrays = [axis.images[0].get_array() for axis in report.figure.axes if axis.images]
    return [torch.as_tensor(np.ma.filled(np.ma.asarray(a, float), np.nan)) for a in arrays]


@pytest.mark.parametrize(("fn", "mistake"), list(_pictured_samples()))
def test_the_check_draws_the_learner_weights_next_to_the_expected(fn, mistake: str) -> None:
    report = check_multihead_attention(fn)
    assert mistake in report.mistakes
    mine, expected = _images(report)
    q, k, _ = one_hot_inputs(3)
    assert torch.allclose(expected.float(), expected_weights(q, k, PICTURED[mistake]))
    assert _shows(mistake, mine.float())


def test_one_head_checks_draw_it_too() -> None:
    def attention_function(args):
        q, k, v, mask = args
        return HAND_WRITTEN_MISTAKES["mask_inverted"](q, k, v, 1, mask)

    report = check_attention_function(attention_function)
    assert "mask_inverted" in report.mistakes
    assert _shows("mask_inverted", _images(report)[0].float())


@pytest.mark.parametrize(
    "mistake", ["missing_scale", "keys_values_swapped", "heads_not_transposed"]
)
def test_no_picture_where_it_does_not_help(mistake: str) -> None:
    assert check_multihead_attention(HAND_WRITTEN_MISTAKES[mistake]).figure is None


def test_a_right_answer_draws_nothing() -> None:
    assert check_multihead_attention(solution.multihead_attention).figure is None
