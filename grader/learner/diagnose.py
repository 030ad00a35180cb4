"""Name what is wrong with an attention output, in plain words.

:func:`diagnose_attention` compares a learner's output with a float64 reference
(``former.attention.sdpa_attention``), then with every catalogued mistake recomputed on the
same inputs, else locates the largest error (``pool_mistakes`` reads a pool log). It needs
no instructor's solutions, so the visible checks and the judge share it.
Comparisons use only numpy operators (``allclose`` could be replaced by code in the kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from former.attention import sdpa_attention, split_heads
from former.threads import torch_threads
from grader.learner.mistakes import MISTAKES, MISTAKES_BY_KEY

# Scaled scores beyond this overflow exp() in float32 (e^88 is float32's limit).
LARGE_SCORE = 80.0


@dataclass(frozen=True)
class Diagnosis:
    """correct: output matches; mistake: a catalogue key (or a shape/problem key); message: words."""

    correct: bool
    mistake: str | None
    message: str


@dataclass(frozen=True)
class Comparison:
    """How far ``actual`` is from ``expected``: max error, where, relative to the output's scale."""

    ok: bool
    max_error: float
    index: tuple[int, ...]
    scale: float
    nonfinite: int  # entries of actual that are inf/NaN where expected is finite


def tolerance(large_scores: bool = False) -> float:
    """Allowed error relative to the output's scale: float32 rounding, whatever the dtype.

    The one policy of the checks and the judge, for outputs and gradients: float32 work is
    right for float64 inputs too (every catalogued mistake is off by far more). Scores around
    ±1000 keep fewer digits in float32, so they get ten times more room.
    """
    return 2e-3 if large_scores else 2e-4


def has_large_scores(queries: object, keys: object, heads: int) -> bool:
    """Are the scaled scores large enough to overflow exp() in float32?"""
    return max_scaled_score(_as_tensor(queries), _as_tensor(keys), heads) > LARGE_SCORE


def distinct(expected: float, got: float) -> tuple[str, str]:
    """Both numbers with just enough digits to show that they differ."""
    for digits in range(4, 18):
        a, b = f"{expected:.{digits}g}", f"{got:.{digits}g}"
        if a != b:
            return a, b
    return repr(expected), repr(got)


def _finite(x: np.ndarray) -> np.ndarray:
    # x - x is NaN for inf and NaN, 0 otherwise: finite test from operators only.
    with np.errstate(invalid="ignore"):  # inf - inf is the point here, not a problem
        return (x - x) == 0


def compare(
    actual: np.ndarray, expected: np.ndarray, tol: float, *, scale: float | None = None
) -> Comparison:
    """Elementwise |actual - expected| <= tol * scale (scale: max |expected| unless given, as
    for a part of a larger output; at least 1e-6)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return Comparison(False, math.inf, (), 0.0, 0)
    if expected.size == 0:
        return Comparison(True, 0.0, (), 0.0, 0)
    expected_finite, actual_finite = _finite(expected), _finite(actual)
    finite_expected = expected.copy()
    finite_expected[~expected_finite] = 0.0
    if scale is None:
        scale = float(abs(finite_expected).max())
    scale = max(scale, 1e-6)
    nonfinite = int((expected_finite & ~actual_finite).sum())
    # Where both are non-finite (a masked-out NaN both sides) they agree; elsewhere compare.
    error = abs(actual - expected)
    error[~expected_finite & ~actual_finite] = 0.0
    error[expected_finite != actual_finite] = math.inf
    flat = int(error.argmax())
    max_error = float(error.reshape(-1)[flat])
    index = tuple(int(i) for i in np.unravel_index(flat, error.shape))
    return Comparison(max_error <= tol * scale, max_error, index, scale, nonfinite)


def _as_tensor(x: object) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    return torch.from_numpy(np.array(x, copy=True))


def _as_array(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def max_scaled_score(queries: torch.Tensor, keys: torch.Tensor, heads: int) -> float:
    """Largest |q·k| / sqrt(s) over all heads: how close the softmax is to overflowing."""
    q, k = split_heads(queries.double(), heads), split_heads(keys.double(), heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    return float(scores.abs().max()) if scores.numel() else 0.0


def locate(index: tuple[int, ...], heads: int, width: int) -> str:
    """'batch 1, head 2, position 4, feature 3' for an index into (b, t, heads * s)."""
    if len(index) != 3:
        return "at " + ", ".join(map(str, index))
    batch, position, feature = index
    s = max(width // max(heads, 1), 1)
    head_part = f"head {feature // s}, " if heads > 1 else ""
    return f"batch {batch}, {head_part}position {position}, feature {feature % s}"


def _matches(candidate: np.ndarray, output: np.ndarray, tol: float) -> bool:
    """Does ``output`` reproduce ``candidate``? Where a few candidate entries are NaN (a fully
    masked row) they are ignored: -inf and -1e9 masking differ only there."""
    finite = _finite(candidate)
    if finite.all() or finite.mean() < 0.5:
        return compare(output, candidate, tol).ok
    return compare(np.where(finite, output, 0.0), np.where(finite, candidate, 0.0), tol).ok


def _shape_problem(shape: tuple[int, ...], expected: tuple[int, ...], heads: int) -> str:
    b, t, hs = expected
    s = hs // heads
    weights = "these look like attention weights; multiply them with the values"
    known = {
        (b, heads, t, s): "(b, heads, t, s): the heads are not merged back; transpose(1, 2) "
        "and reshape to (b, t, heads * s)",
        (b, t, heads, s): "(b, t, heads, s): reshape to (b, t, heads * s) to concatenate the heads",
        (b * heads, t, s): "(b * heads, t, s): the heads are still folded into the batch; "
        "view as (b, heads, t, s), transpose(1, 2), reshape to (b, t, heads * s)",
        (b, t, s): "(b, t, s): only one head's width; concatenate all heads",
        (b, t, t): f"(b, t, t): {weights}",
        (b, heads, t, t): f"(b, heads, t, t): {weights}",
    }
    what = known.get(tuple(shape))
    got = f"The output has shape {tuple(shape)}, expected (b, t, heads * s) = {expected}"
    return f"{got}; it looks like {what}." if what else f"{got}."


def diagnose_attention(
    output: object,
    queries: object,
    keys: object,
    values: object,
    heads: int,
    mask: bool = False,
) -> Diagnosis:
    """Diagnose ``output`` (b, t, heads * s), which the learner returned for ``queries``,
    ``keys``, ``values`` (b, t, heads * s) and ``mask`` (tensors or arrays alike)."""
    if not isinstance(output, (torch.Tensor, np.ndarray)):
        hint = " Did you forget `return`?" if output is None else ""
        message = f"The function returned {type(output).__name__}, not a tensor.{hint}"
        return Diagnosis(False, "not_a_tensor", message)
    q, k, v = _as_tensor(queries), _as_tensor(keys), _as_tensor(values)
    got = _as_array(output)
    if tuple(got.shape) != tuple(q.shape):
        return Diagnosis(False, "wrong_shape", _shape_problem(got.shape, tuple(q.shape), heads))

    with torch_threads(1), torch.no_grad():
        large = max_scaled_score(q, k, heads) > LARGE_SCORE
        tol = tolerance(large)
        reference = sdpa_attention(q.double(), k.double(), v.double(), heads, mask).numpy()
        result = compare(got, reference, tol)
        if result.ok:
            return Diagnosis(True, None, "The output matches the reference.")
        for mistake in MISTAKES:
            if mistake.needs_mask and not mask:
                continue
            candidate = _as_array(mistake.apply(q.clone(), k.clone(), v.clone(), heads, mask))
            # A mistake indistinguishable from the right answer on these inputs says nothing.
            if not compare(candidate, reference, tol).ok and _matches(candidate, got, 10 * tol):
                return named_mistake(mistake)

    where = locate(result.index, heads, q.shape[-1])
    if result.nonfinite:
        if large:
            mistake = MISTAKES_BY_KEY["unstable_softmax"]
            return Diagnosis(
                False,
                mistake.key,
                f"It looks like {mistake.title}: {result.nonfinite} output entries are inf/NaN "
                f"(first at {where}) on scores up to ±{max_scaled_score(q, k, heads):.0f}. "
                f"Hint: {mistake.hint}",
            )
        message = (
            f"{result.nonfinite} output entries are inf/NaN where the answer is finite "
            f"(first at {where}). Look for a division by zero or a row with every score masked."
        )
        return Diagnosis(False, "nonfinite", message)
    expected_value, got_value = distinct(float(reference[result.index]), float(got[result.index]))
    return Diagnosis(
        False,
        None,
        f"The output differs from the reference; the largest error is {result.max_error:.3g} "
        f"(output scale {result.scale:.3g}) at {where}: expected {expected_value}, got "
        f"{got_value}. It matches none of the known mistakes; check each step's shape.",
    )


def named_mistake(mistake: Any, detail: str = "") -> Diagnosis:
    """'It looks like <title> (<detail>). Hint: <hint>' for a catalogued (pool) mistake."""
    detail = f" ({detail})" if detail else ""
    return Diagnosis(
        False, mistake.key, f"It looks like {mistake.title}{detail}. Hint: {mistake.hint}"
    )
