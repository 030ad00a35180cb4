"""The examples the visible checks run and the properties they compute from them.

A property takes ``run(q, k, v, heads, mask)``, the learner's function called through the
contract of its task, and returns a :class:`~grader.learner.diagnose.Diagnosis` (or ``(passed,
detail)``) judged by the grader's own rules: the one tolerance, the mistake catalogue, the pool
log, the names the grader can recreate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from former.attention import sdpa_attention
from grader.learner.diagnose import (
    Diagnosis,
    compare,
    diagnose_attention,
    diagnose_pool_usage,
    has_large_scores,
    locate,
    named_mistake,
    tolerance,
)
from grader.learner.mistakes import MISTAKES_BY_KEY, POOL_MISTAKES_BY_KEY
from grader.learner.probe import describe_exception
from grader.learner.replay import Cell, parse_statements, plan_replay

# The small visible example: (b, t, heads, s).
EXAMPLE = (2, 5, 3, 4)
LARGE = math.sqrt(1000.0)  # q and k scaled so that scores are around ±1000
# (b, t, heads, s, mask): one position, one head, head size 1.
DEGENERATE = ((1, 1, 1, 1, False), (3, 1, 2, 4, True), (2, 6, 1, 8, True), (2, 5, 4, 1, True))
Run = Callable[..., Any]


def example_inputs(
    b: int, t: int, heads: int, s: int, *, dtype: torch.dtype = torch.float32, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * b + 100 * t + 10 * heads + s)
    q, k, v = (
        torch.randn(b, t, heads * s, generator=generator, dtype=torch.float64) for _ in range(3)
    )
    return (q * scale).to(dtype), (k * scale).to(dtype), v.to(dtype)


def attention_case(
    run: Run, b: int, t: int, heads: int, s: int, mask: bool, **example: Any
) -> Diagnosis:
    q, k, v = example_inputs(b, t, heads, s, **example)
    return diagnose_attention(
        run(q.clone(), k.clone(), v.clone(), heads, mask), q, k, v, heads, mask
    )


def degenerate_sizes(run: Run) -> Diagnosis:
    for b, t, heads, s, mask in DEGENERATE:
        diagnosis = attention_case(run, b, t, heads, s, mask)
        if not diagnosis.correct:
            sizes = f"b={b}, t={t}, heads={heads}, s={s}, mask={mask}"
            return Diagnosis(False, diagnosis.mistake, f"With {sizes}: {diagnosis.message}")
    return Diagnosis(True, None, "")


def gradients(run: Run, b: int, t: int, heads: int, s: int) -> Diagnosis:
    """Do gradients of (out * upstream).sum() reach q, k and v, and equal the reference's?"""
    q, k, v = example_inputs(b, t, heads, s, dtype=torch.float64)
    mine = [x.clone().requires_grad_(True) for x in (q, k, v)]
    out = run(*mine, heads, True)
    forward = diagnose_attention(out, q, k, v, heads, True)
    if not forward.correct:
        return Diagnosis(
            False, forward.mistake, f"The output is wrong, so are its gradients. {forward.message}"
        )
    if not out.requires_grad:
        return Diagnosis(
            False,
            "no_gradient",
            "The output does not track gradients: avoid .detach(), .data, .numpy(), "
            "torch.no_grad() and building the result in a fresh tensor.",
        )
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    try:
        (out.to(torch.float64) * upstream).sum().backward()
    except Exception as error:  # noqa: BLE001 - e.g. in-place ops autograd cannot undo
        return Diagnosis(False, "no_gradient", f"backward() failed: {describe_exception(error)}")
    theirs = [x.clone().requires_grad_(True) for x in (q, k, v)]
    (sdpa_attention(*theirs, heads, True) * upstream).sum().backward()
    for name, got, want in zip(("queries", "keys", "values"), mine, theirs, strict=True):
        if got.grad is None:
            return Diagnosis(
                False, "no_gradient", f"{name} gets no gradient: the output does not depend on it."
            )
        result = compare(got.grad.numpy(), want.grad.numpy(), tolerance())
        if not result.ok:
            return Diagnosis(
                False,
                "wrong_gradient",
                f"The output is right but the gradient of {name} is not (largest error "
                f"{result.max_error:.3g}); avoid in-place writes into tensors autograd still needs.",
            )
    return Diagnosis(True, None, "")


def unmodified(run: Run, b: int, t: int, heads: int, s: int) -> tuple[bool, str]:
    q, k, v = (
        torch.randn(b, t, heads * s, generator=torch.Generator().manual_seed(i)) for i in range(3)
    )
    copies = [x.clone() for x in (q, k, v)]
    run(q, k, v, heads, True)
    for name, before, after in zip(("queries", "keys", "values"), copies, (q, k, v), strict=True):
        if not torch.equal(before, after):
            return False, f"your function changed `{name}` in place; work on new tensors instead"
    return True, ""


def sliced_inputs(run: Run, heads: int, *, requires_grad: bool = True) -> Diagnosis:
    """Inputs (b=2, t=6, s=4) as a model hands them over: slices of one wider tensor
    (requiring grad, as in training), and the mask given as 1 rather than True."""
    s = 4
    q, k, v = example_inputs(2, 6, heads, s)
    wide = torch.cat([q, k, v], dim=-1).requires_grad_(requires_grad)
    width = heads * s
    out = run(*(wide[..., i * width : (i + 1) * width] for i in range(3)), heads, 1)
    return diagnose_attention(out, q, k, v, heads, True)


def importable(ok: bool, why: str) -> Diagnosis:
    """The verdict on whether worker processes can import the mapped function."""
    mistake = POOL_MISTAKES_BY_KEY["worker_not_importable"]
    return Diagnosis(ok, None if ok else mistake.key, "" if ok else f"{why}. Hint: {mistake.hint}")


def unrecreatable_names(fn: Callable, name: str) -> Diagnosis | None:
    """A failure naming the notebook variables ``fn`` uses that the grader's replay
    (``grader.learner.replay``) of the cells run so far would leave unbound; None when there
    are none, outside a notebook, or for module functions."""
    namespace = getattr(fn, "__globals__", None) or {}
    history = namespace.get("In")
    if getattr(fn, "__module__", None) != "__main__" or not isinstance(history, list):
        return None
    cells = [Cell(i, parse_statements(code, i)) for i, code in enumerate(history) if code]
    unbound = plan_replay({name}, cells).unbound
    names = sorted(n for n in unbound if n in namespace and n != name)
    if not names:
        return None
    one = len(names) == 1
    return Diagnosis(
        False,
        "unbound_names",
        f"{', '.join(f'`{n}`' for n in names)} {'is' if one else 'are'} set by a magic, exec or "
        "globals(), which the grader does not re-run (it re-runs only the ordinary statements "
        f"that bind the names your function uses): set {'it' if one else 'them'} with an "
        "ordinary statement in a cell above, or inside the function",
    )


def built_from_results(run: Run, calls: list) -> Diagnosis:
    """With a pool that scales every result by 2.5, a function that assembles its output
    from the results returns 2.5 times the answer; one that computes the heads some other
    way returns the answer itself. A misuse of the pool, if any, is the better explanation."""
    b, t, heads, s = EXAMPLE
    q, k, v = example_inputs(b, t, heads, s)
    out = run(q.clone(), k.clone(), v.clone(), heads, False, result_scale=2.5)
    usage = diagnose_pool_usage(calls, heads, head_shape=(b, t, s), require_importable=False)
    if not usage.correct:
        return usage
    if not isinstance(out, torch.Tensor):
        return diagnose_attention(out, q, k, v, heads, False)
    got = out.detach().double()
    scaled = diagnose_attention(got / 2.5, q, k, v, heads, False)
    if not scaled.correct and diagnose_attention(got, q, k, v, heads, False).correct:
        return named_mistake(POOL_MISTAKES_BY_KEY["pool_results_unused"])
    return scaled


def agrees(run: Run, reference: Run) -> tuple[bool, str]:
    q, k, v = example_inputs(2, 7, 4, 3)
    parallel = run(q.clone(), k.clone(), v.clone(), 4, True)
    serial = reference(q.clone(), k.clone(), v.clone(), 4, True)
    if not isinstance(serial, torch.Tensor) or not isinstance(parallel, torch.Tensor):
        return False, "both functions must return tensors"
    result = compare(
        parallel.detach().double().numpy(), serial.detach().double().numpy(), tolerance()
    )
    if result.ok:
        return True, ""
    return (
        False,
        f"they differ by up to {result.max_error:.3g}; check each against the reference above",
    )


# -- verdicts on a probe's outputs: the rules the visible checks and the judge share -----------


def _array(value: object) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def case_tolerance(inputs: dict[str, Any]) -> float:
    """The tolerance for a case's inputs (``diagnose.tolerance``, wider for large scores)."""
    heads = 1 if inputs["function"] == "attention_function" else int(inputs["heads"])
    return tolerance(has_large_scores(inputs["queries"], inputs["keys"], heads))


def _where(index: tuple[int, ...], inputs: dict[str, Any]) -> str:
    heads = 1 if inputs["function"] == "attention_function" else int(inputs["heads"])
    return locate(index, heads, np.shape(inputs["queries"])[-1])


def causal_verdict(inputs: dict[str, Any], outputs: dict[str, Any]) -> Diagnosis:
    """Causality as a property of the learner's own function (probe kind "causal"): later
    keys and values change no earlier output, each position sees itself, and the masked
    output at position i is the unmasked function's on the first i + 1 positions."""
    tol = case_tolerance(inputs)
    out, cut = _array(outputs["out"]), int(inputs["cut"])
    future = compare(_array(outputs["out_future"])[:, : cut + 1], out[:, : cut + 1], tol)
    if not future.ok:
        return Diagnosis(
            False,
            "mask_sees_future",
            f"Changing the keys and values after position {cut} changed your masked output at "
            f"{_where(future.index, inputs)}: with mask=True, position i may only look at "
            "positions j <= i. Set the scores of later keys to -inf BEFORE the softmax.",
        )
    p, heads = int(inputs["self_position"]), max(int(inputs["heads"]), 1)
    b, _, width = out.shape
    moved = np.abs(_array(outputs["out_self"])[:, p] - out[:, p]).reshape(b, heads, -1)
    # Seen, the moved key gets a clear weight and the output moves by about self_shift;
    # hidden, the output does not move at all (NaN never counts as moving).
    sees = moved.max(-1, initial=0.0) >= 1e-4 * float(inputs["self_shift"])
    if not sees.all():
        batch, head = (int(i) for i in np.argwhere(~sees)[0])
        return Diagnosis(
            False,
            "mask_hides_self",
            f"Changing the key and value at position {p} did not change your masked output "
            f"there ({_where((batch, p, head * (width // heads)), inputs)}): each position "
            "must still see itself (j <= i includes j = i).",
        )
    for row, length in zip(
        _array(outputs["prefix_rows"]), np.asarray(inputs["prefixes"]).tolist(), strict=True
    ):
        prefix = compare(row, out[:, length - 1], tol)
        if not prefix.ok:
            return Diagnosis(
                False,
                "mask_not_prefix",
                f"Your masked output at position {length - 1} differs from your own function "
                f"without the mask on the first {length} positions (largest difference "
                f"{prefix.max_error:.3g}): with mask=True each position should attend exactly "
                "as if the positions after it did not exist.",
            )
    return Diagnosis(True, None, "")


def bounded_verdict(inputs: dict[str, Any], outputs: dict[str, Any]) -> Diagnosis:
    """Huge scores give finite output wherever moderate ones do, within the range of the
    values: attention output is a weighted average of value rows (probe kind "bounded")."""
    out, calm, values = (
        _array(outputs["out"]),
        _array(outputs["out_calm"]),
        _array(inputs["values"]),
    )
    with np.errstate(invalid="ignore"):
        rows = ((calm - calm) == 0).all(-1)  # positions moderate scores keep finite
        broken = rows & ~((out - out) == 0).all(-1)
    if broken.any():
        batch, position = (int(i) for i in np.argwhere(broken)[0])
        return named_mistake(
            MISTAKES_BY_KEY["unstable_softmax"],
            f"{int(broken.sum())} positions give inf/NaN on scores around ±1000 where moderate "
            f"scores give finite output, first batch {batch}, position {position}",
        )
    slack = tolerance(True) * max(float(np.abs(values).max(initial=0.0)), 1e-6)
    # Per batch entry: the range over all positions and features (each feature's own range
    # would also hold, but a layout mistake is Test 1's to report).
    low, high = values.min(axis=(1, 2), keepdims=True), values.max(axis=(1, 2), keepdims=True)
    outside = rows[..., None] & ((out < low - slack) | (out > high + slack))
    if outside.any():
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        return Diagnosis(
            False,
            "out_of_range",
            f"On scores around ±1000 your output leaves the range of the values (first at "
            f"{_where(index, inputs)}, value {out[index]:.4g}): attention output is a weighted "
            "average of value rows, with weights >= 0 that sum to 1. Is the softmax taken "
            "over the keys, and stable for large scores?",
        )
    return Diagnosis(True, None, "")


def gradient_verdict(inputs: dict[str, Any], outputs: dict[str, Any]) -> Diagnosis:
    """The learner's backward agrees with central differences of its own forward, in float64,
    along one random direction per input, and reaches queries, keys and values."""
    if outputs.get("grad_error") is not None:
        return Diagnosis(False, "no_gradient", f"{str(outputs['grad_error']).capitalize()}.")
    out = _array(outputs["out"])
    with np.errstate(invalid="ignore"):
        if not ((out - out) == 0).all():
            return Diagnosis(
                False, "nonfinite", "The output has inf/NaN entries, so its gradients do too."
            )
    upstream, step = _array(inputs["upstream"]), float(inputs["fd_step"])
    moved = _array(outputs["fd_outputs"])
    for i, name in enumerate(("queries", "keys", "values")):
        grad = outputs.get(f"grad_{name}")
        if grad is None:
            return Diagnosis(False, "no_gradient", f"No gradient came back for {name}.")
        direction = _array(inputs[f"direction_{name}"])
        predicted = float((_array(grad) * direction).sum())
        measured = float(((moved[i, 1] - moved[i, 0]) * upstream).sum()) / (2 * step)
        floor = 1e-4 * float(np.sqrt((upstream**2).sum() * (direction**2).sum()))
        room = 2e-2 * max(abs(predicted), abs(measured)) + floor
        if not abs(predicted - measured) <= room:  # NaN fails too
            return Diagnosis(
                False,
                "wrong_gradient",
                f"Your backward disagrees with your own forward for {name}: along a random "
                f"direction the gradient predicts a change of {predicted:.4g}, finite differences "
                f"of your function give {measured:.4g}. Avoid in-place writes into tensors "
                "autograd still needs, .data, .detach() and hand-written backward code.",
            )
    return Diagnosis(True, None, "")


def head_by_head_verdict(inputs: dict[str, Any], outputs: dict[str, Any]) -> Diagnosis:
    """The parallel output equals the learner's own attention_function applied head by head
    (probe kind "heads"), right or wrong as that function may be."""
    result = compare(_array(outputs["out"]), _array(outputs["own_out"]), case_tolerance(inputs))
    if result.ok:
        return Diagnosis(True, None, "")
    return Diagnosis(
        False,
        "heads_misassembled",
        f"Your parallel output differs from your attention_function applied head by head "
        f"(largest difference {result.max_error:.3g} at {_where(result.index, inputs)}): head "
        "i's item holds features [i*s:(i+1)*s] of queries, keys and values, and its result goes "
        "back to the same features, in order.",
    )


def assembled_verdict(
    inputs: dict[str, Any], outputs: dict[str, Any], pool_log: list | None
) -> Diagnosis:
    """One map call with one (q, k, v, mask) item of shape (b, t, s) per head (importable for
    a worker pool), and an output put together from what the pool returned: each head's
    features equal one returned result (the pool scales results by a factor no one guesses)."""
    b, t, width = np.shape(inputs["queries"])
    heads = int(inputs["heads"])
    s = width // heads
    workers = inputs.get("pool") == "workers"
    usage = diagnose_pool_usage(
        pool_log or [], heads, head_shape=(b, t, s), require_importable=workers
    )
    if not usage.correct:
        return usage
    call = pool_log[0] if isinstance(pool_log[0], dict) else vars(pool_log[0])
    results = [None if r is None else _array(r) for r in call.get("results") or []]
    out = _array(outputs["out"])
    tol = case_tolerance(inputs)
    unused = list(range(len(results)))
    for head in range(heads):
        part = out[..., head * s : (head + 1) * s]
        found = next(
            (
                j
                for j in unused
                if results[j] is not None
                and results[j].shape == part.shape
                and compare(part, results[j], tol).ok
            ),
            None,
        )
        if found is None:
            return named_mistake(
                POOL_MISTAKES_BY_KEY["pool_results_unused"],
                f"head {head}'s features are none of the results pool.{call['method']} returned",
            )
        unused.remove(found)
    return Diagnosis(True, None, "")


VERDICTS = {
    "causal": causal_verdict,
    "bounded": bounded_verdict,
    "gradient": gradient_verdict,
    "heads": head_by_head_verdict,
}
