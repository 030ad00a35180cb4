"""A picture for the mistakes a picture explains best: the learner's attention weights next to
the expected ones, for mask and softmax-axis mistakes.

The weights are read from the learner's own function, without asking it for them: with
one-hot value rows (value j of each head is the unit vector e_j) the output of a head is its
weight matrix, out[i] = sum_j w[i, j] e_j.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

# Mistakes whose weights look different at a glance: which cells are hidden, what sums to 1.
PICTURED = {
    "mask_missing": True,
    "mask_inverted": True,
    "mask_hides_diagonal": True,
    "mask_after_softmax": True,
    "softmax_wrong_axis": False,  # the columns sum to 1: clearest without a mask
}
T, S = 6, 8  # positions and head size: one-hot values need s >= t


def one_hot_inputs(heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random queries and keys, and values whose row j in every head is e_j: (1, T, heads * S)."""
    generator = torch.Generator().manual_seed(7)
    q, k = (torch.randn(1, T, heads * S, generator=generator) for _ in range(2))
    v = torch.zeros(1, T, heads, S)
    v[0, torch.arange(T), :, torch.arange(T)] = 1.0
    return q, k, v.reshape(1, T, heads * S)


def expected_weights(q: torch.Tensor, k: torch.Tensor, mask: bool) -> torch.Tensor:
    """The first head's weights (T, T), causal if ``mask``: PyTorch's attention applied to
    identity values (no softmax is written out here for a learner to copy)."""
    first_head = (q[:, :, :S], k[:, :, :S], torch.eye(T).unsqueeze(0))  # (1, T, S), (1, T, T)
    return F.scaled_dot_product_attention(*first_head, is_causal=mask)[0]  # (T, T)


def learner_weights(run: Callable[..., Any], heads: int, mask: bool) -> torch.Tensor | None:
    """The first head's weights (T, T) as the learner's ``run(q, k, v, heads, mask)`` computes
    them; None when it fails on these inputs."""
    q, k, v = one_hot_inputs(heads)
    try:
        out = run(q, k, v, heads, mask)
        return torch.as_tensor(out).detach().float()[0, :, :T].clone()  # (T, T)
    except Exception:  # noqa: BLE001 - the checks already report the learner's errors
        return None


def weights_figure(mine: torch.Tensor, expected: torch.Tensor, title: str):
    """Two heat maps side by side, query positions down and key positions across."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), constrained_layout=True)
    low, high = min(0.0, float(mine.nan_to_num().min())), max(1.0, float(mine.nan_to_num().max()))
    for axis, weights, name in zip(
        axes, (mine, expected), ("your weights", "expected"), strict=True
    ):
        image = axis.imshow(weights.numpy(), vmin=low, vmax=high, cmap="viridis")
        axis.set(title=name, xlabel="key position j", ylabel="query position i")
        axis.set_xticks(range(T))
        axis.set_yticks(range(T))
        sums = axis.secondary_yaxis("right")  # a softmax over the keys makes each row sum to 1
        sums.set_yticks(range(T), [f"Σ {row:.2f}" for row in weights.sum(dim=-1).tolist()])
    figure.colorbar(image, ax=axes, shrink=0.9, label="weight (blank: NaN)")
    figure.suptitle(title, fontsize=10)
    return figure


def picture_of_mistake(run: Callable[..., Any], heads: int, mistake: str | None, title: str):
    """The figure for ``mistake`` when it is one of PICTURED, shown under the cell when running
    in IPython; None otherwise."""
    if mistake not in PICTURED:
        return None
    mask = PICTURED[mistake]
    q, k, _ = one_hot_inputs(heads)
    mine = learner_weights(run, heads, mask)
    if mine is None or mine.shape != (T, T):
        return None
    figure = weights_figure(mine, expected_weights(q, k, mask), title)
    _show(figure)
    return figure


def _show(figure) -> None:
    """Display under the running cell, as LivePlot does, then free the figure."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(figure)
    plt.close(figure)
