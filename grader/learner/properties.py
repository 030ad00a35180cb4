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
from grader.learner.probe import probe_case, property_inputs
from grader.learner.report import LearnerError, NotImplementedYet
from grader.learner.skipped import skipped_names_used

# The small visible example: (b, t, heads, s).
EXAMPLE = (2, 5, 3, 4)
LARGE = math.sqrt(1000.0)  # q and k scaled so that scores are around ±1000
Run = Callable[..., Any]


def example_inputs(
    b: int, t: int, heads: int, s: int, *, dtype: torch.dtype = torch.float32, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * b + 100 * t + 10 * heads + s)
    q, k, v = (
        torch.randn(b, t, heads * s, generator=generator, dtype=torch.float64) for _ in range(3)
    )
    return (q * scale).to(dtype), (k * scale).to(dtype), v.to(dtype)


def importable(ok: bool, why: str) -> Diagnosis:
    """The verdict on whether worker processes can import the mapped function."""
    mistake = POOL_MISTAKES_BY_KEY["worker_not_importable"]
    return Diagnosis(ok, None if ok else mistake.key, "" if ok else f"{why}. Hint: {mistake.hint}")


def names_only_skipped_cells_bind(fn: Callable) -> Diagnosis | None:
    """A failure naming the globals ``fn`` reads that, in the lab, only cells the grader does
    not run bind (``grader.learner.skipped``); None when there are none."""
    names = skipped_names_used(fn)
    if not names:
        return None
    one = len(names) == 1
    return Diagnosis(
        False,
        "skipped_names",
        f"{', '.join(f'`{n}`' for n in names)} {'is' if one else 'are'} bound in the lab only "
        "by cells that are not run while grading (training, plots, SageMaker, the optional "
        f"task), so your function would fail there: bind {'it' if one else 'them'} in a cell "
        "of your own above the function, or inside it (if you already do, ignore this)",
    )


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


def text_value(value: object) -> str:
    """A text output, whether a str or (after an .npz round trip) a 0-d numpy string array."""
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else ""
    return "" if value is None else str(value)


def case_tolerance(inputs: dict[str, Any]) -> float:
    """The tolerance for a case's inputs (``diagnose.tolerance``, wider for large scores)."""
    heads = 1 if inputs["function"] == "attention_function" else int(inputs["heads"])
    return tolerance(has_large_scores(inputs["queries"], inputs["keys"], heads))


def _where(index: tuple[int, ...], inputs: dict[str, Any]) -> str:
    heads = 1 if inputs["function"] == "attention_function" else int(inputs["heads"])
    return locate(index, heads, np.shape(inputs["queries"])[-1])


def causal_verdict(inputs: dict[str, Any], outputs: dict[str, Any]) -> Diagnosis:
    """Causality as a property of the learner's own function (probe kind "causal"): later
    keys and values change no earlier output, each position sees itself and the first
    position, and the masked output at position i is the unmasked function's on the first
    i + 1 positions."""
    tol = case_tolerance(inputs)
    out, cut = _array(outputs["out"]), int(inputs["cut"])
    # Parts of the output are compared at the whole output's scale, as values are.
    with np.errstate(invalid="ignore"):
        scale = float(np.abs(np.where((out - out) == 0, out, 0.0)).max(initial=0.0))
    future = compare(
        _array(outputs["out_future"])[:, : cut + 1], out[:, : cut + 1], tol, scale=scale
    )
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
    r = int(inputs.get("past_position", 0))
    if r > 0:
        moved = np.abs(_array(outputs["out_past"])[:, r] - out[:, r]).reshape(b, heads, -1)
        sees = moved.max(-1, initial=0.0) >= 1e-4 * float(inputs["self_shift"])
        if not sees.all():
            batch, head = (int(i) for i in np.argwhere(~sees)[0])
            return Diagnosis(
                False,
                "mask_hides_past",
                f"Changing the key and value at position 0 did not change your masked output "
                f"at position {r} ({_where((batch, r, head * (width // heads)), inputs)}): "
                "with mask=True each position still sees every earlier one.",
            )
    for row, length in zip(
        _array(outputs["prefix_rows"]), np.asarray(inputs["prefixes"]).tolist(), strict=True
    ):
        prefix = compare(row, out[:, length - 1], tol, scale=scale)
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
    (probe kind "heads"), right or wrong as that function may be; without one, the values
    are compared with the reference. Raising what attention_function raises on the heads
    holds too: that is attention_function's failure."""
    raised = text_value(outputs.get("raised_like_own"))
    if raised:
        return Diagnosis(
            True, None, f"your attention_function raises {raised} on these heads (Test 5)"
        )
    if outputs.get("own_out") is None:
        q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
        heads = int(inputs["heads"])
        diagnosis = diagnose_attention(outputs["out"], q, k, v, heads, bool(inputs["mask"]))
        if diagnosis.correct:
            return diagnosis
        why = text_value(outputs.get("own_error"))
        return Diagnosis(
            False,
            diagnosis.mistake,
            f"{diagnosis.message} (compared with the reference: {why})"
            if why
            else diagnosis.message,
        )
    # Heads computed through a pool that scales its results carry its scale (none by default).
    own = _array(outputs["own_out"]) * float(inputs.get("pool_scale", 1.0))
    result = compare(_array(outputs["out"]), own, case_tolerance(inputs))
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


def unmodified_verdict(inputs: dict[str, Any], outputs: dict[str, Any]) -> Diagnosis:
    """queries, keys and values are bit for bit what they were after the call (NaN = NaN)."""
    for name in ("queries", "keys", "values"):
        after, before = outputs.get(f"{name}_after"), np.asarray(inputs[name])
        same = after is not None and np.shape(after) == before.shape
        if same:
            after = np.asarray(after)
            same = bool(((after == before) | ((after != after) & (before != before))).all())
        if not same:
            return Diagnosis(
                False,
                "inputs_modified",
                f"Your function changed its `{name}` argument in place (e.g. `{name} /= ...`, "
                "`masked_fill_`, or writing into a view); work on new tensors instead.",
            )
    return Diagnosis(True, None, "")


VERDICTS = {
    "unmodified": unmodified_verdict,
    "causal": causal_verdict,
    "bounded": bounded_verdict,
    "gradient": gradient_verdict,
    "heads": head_by_head_verdict,
}


# -- the visible checks' probes: the judge's calls and verdicts on small examples -------------


def visible_inputs(
    function: str,
    kind: str,
    b: int,
    t: int,
    heads: int,
    s: int,
    *,
    mask: bool,
    dtype: str = "float32",
    large: bool = False,
    mask_as: str = "bool",
    layout: str = "contiguous",
    requires_grad: bool = False,
    pool: str = "",
) -> dict[str, Any]:
    """A small example in the probe's input format, drawn from a seed made of its sizes."""
    rng = np.random.default_rng([b, t, heads, s, int(mask), int(large)])
    q, k, v = (rng.standard_normal((b, t, heads * s)) for _ in range(3))
    inputs: dict[str, Any] = {"heads": heads, "mask": mask}
    if large:
        inputs.update(calm_queries=q.astype(dtype), calm_keys=k.astype(dtype))
        q, k = q * LARGE, k * LARGE
    inputs.update(
        function=function,
        kind=kind,
        mask_as=mask_as,
        layout=layout,
        requires_grad=requires_grad,
        pool=pool,
        queries=q.astype(dtype),
        keys=k.astype(dtype),
        values=v.astype(dtype),
    )
    inputs.update(property_inputs(kind, inputs, rng))
    return inputs


def probe_property(
    report: Any,
    fn: Callable,
    inputs: dict[str, Any],
    *,
    make_pool: Callable[[str], Any] | None = None,
) -> Diagnosis:
    """Run the probe on ``inputs`` and judge it as the grader does ("forward": against the
    reference, with the mistake catalogue); forbidden operators go to ``report``."""
    result = probe_case(inputs, fn, make_pool=make_pool)
    if result.forbidden:
        report.note_forbidden(result.forbidden)
    outputs = result.outputs
    error = outputs.get("error")
    if error:
        if str(error).startswith("NotImplementedError"):
            raise NotImplementedYet()
        details = "; ".join(x for x in (outputs.get("error_where"), outputs.get("error_call")) if x)
        raise LearnerError(f"raised {error}" + (f" ({details})" if details else ""))
    if inputs["kind"] == "heads" and outputs.get("raised_like_own") is not None:
        return head_by_head_verdict(inputs, outputs)
    q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
    heads = int(inputs["heads"])
    out = outputs["out"]
    if tuple(np.shape(out)) != tuple(np.shape(q)) or inputs["kind"] == "forward":
        return diagnose_attention(out, q, k, v, heads, bool(inputs["mask"]))
    if inputs["kind"] in ("pool", "worker_pool"):
        return assembled_verdict(inputs, outputs, result.pool_log)
    verdict = VERDICTS[inputs["kind"]](inputs, outputs)
    return verdict if verdict.correct else named_if_catalogued(verdict, inputs, out)


def named_if_catalogued(verdict: Diagnosis, inputs: dict[str, Any], out: object) -> Diagnosis:
    """A property failure, naming the catalogued mistake that ``out`` reproduces, if any: the
    feedback then names it, and a visible check shows a failure it causes as following from
    the first."""
    if verdict.mistake in MISTAKES_BY_KEY:
        return verdict
    q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
    heads = 1 if inputs["function"] == "attention_function" else int(inputs["heads"])
    named = diagnose_attention(out, q, k, v, heads, bool(inputs["mask"]))
    if named.mistake not in MISTAKES_BY_KEY:
        return verdict
    return Diagnosis(False, named.mistake, f"{verdict.message} {named.message}")
