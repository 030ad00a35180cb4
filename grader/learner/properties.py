"""The properties a case checks, judged on the probe's outcome by the grader's own rules.

The visible checks and the judge share them: the one tolerance, the mistake catalogue, the
pool log. Each takes the case's :class:`~grader.learner.probe_io.CaseInputs` and the
:class:`~grader.learner.probe_io.Outcome` and returns a
:class:`~grader.learner.diagnose.Diagnosis`.
"""

from __future__ import annotations

import numpy as np

from grader.learner.diagnose import (
    Diagnosis,
    compare,
    diagnose_attention,
    has_large_scores,
    locate,
    named_mistake,
    tolerance,
)
from grader.learner.mistakes import MISTAKES_BY_KEY
from grader.learner.pool_mistakes import POOL_MISTAKES_BY_KEY, diagnose_pool_usage
from grader.learner.probe_io import CaseInputs, Outcome


def _array(value: object) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def case_tolerance(inputs: CaseInputs) -> float:
    """The tolerance for a case's inputs (``diagnose.tolerance``, wider for large scores)."""
    return tolerance(has_large_scores(inputs.queries, inputs.keys, inputs.head_count))


def _where(index: tuple[int, ...], inputs: CaseInputs) -> str:
    return locate(index, inputs.head_count, inputs.queries.shape[-1])


def causal_verdict(inputs: CaseInputs, outcome: Outcome) -> Diagnosis:
    """Causality as a property of the learner's own function (probe kind "causal"): later
    keys and values change no earlier output, each position sees itself and the first
    position, and the masked output at position i is the unmasked function's on the first
    i + 1 positions."""
    tol = case_tolerance(inputs)
    out, cut = _array(outcome.out), int(inputs.cut)
    # Parts of the output are compared at the whole output's scale, as values are.
    with np.errstate(invalid="ignore"):
        scale = float(np.abs(np.where((out - out) == 0, out, 0.0)).max(initial=0.0))
    future = compare(_array(outcome.out_future)[:, : cut + 1], out[:, : cut + 1], tol, scale=scale)
    if not future.ok:
        return Diagnosis(
            False,
            "mask_sees_future",
            f"Changing the keys and values after position {cut} changed your masked output at "
            f"{_where(future.index, inputs)}: with mask=True, position i may only look at "
            "positions j <= i. Set the scores of later keys to -inf BEFORE the softmax.",
        )
    p, r = int(inputs.self_position), int(inputs.past_position or 0)
    unseen = _unmoved(outcome.out_self, out, p, inputs)
    if unseen:
        return Diagnosis(
            False,
            "mask_hides_self",
            f"Changing the key and value at position {p} did not change your masked output "
            f"there ({unseen}): each position must still see itself (j <= i includes j = i).",
        )
    unseen = _unmoved(outcome.out_past, out, r, inputs) if r > 0 else ""
    if unseen:
        return Diagnosis(
            False,
            "mask_hides_past",
            f"Changing the key and value at position 0 did not change your masked output "
            f"at position {r} ({unseen}): with mask=True each position still sees every "
            "earlier one.",
        )
    lengths = np.asarray(inputs.prefixes).tolist()
    for row, length in zip(_array(outcome.prefix_rows), lengths, strict=True):
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


def _unmoved(moved_out: object, out: np.ndarray, position: int, inputs: CaseInputs) -> str:
    """Where a head's output at ``position`` did not move when a key and value it should see
    moved ("" when every one moved). Seen, the moved key gets a clear weight and the output
    moves by about self_shift; hidden, it does not move at all (NaN never counts as moving)."""
    b, _, width = out.shape
    heads = max(int(inputs.heads), 1)
    moved = np.abs(_array(moved_out)[:, position] - out[:, position]).reshape(b, heads, -1)
    sees = moved.max(-1, initial=0.0) >= 1e-4 * float(inputs.self_shift)
    if sees.all():
        return ""
    batch, head = (int(i) for i in np.argwhere(~sees)[0])
    return _where((batch, position, head * (width // heads)), inputs)


def bounded_verdict(inputs: CaseInputs, outcome: Outcome) -> Diagnosis:
    """Huge scores give finite output wherever moderate ones do, within the range of the
    values: attention output is a weighted average of value rows (probe kind "bounded")."""
    out, calm, values = _array(outcome.out), _array(outcome.out_calm), _array(inputs.values)
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


def gradient_verdict(inputs: CaseInputs, outcome: Outcome) -> Diagnosis:
    """The learner's backward agrees with central differences of its own forward, in float64,
    along one random direction per input, and reaches queries, keys and values."""
    if outcome.grad_error:
        return Diagnosis(False, "no_gradient", f"{str(outcome.grad_error).capitalize()}.")
    out = _array(outcome.out)
    with np.errstate(invalid="ignore"):
        if not ((out - out) == 0).all():
            return Diagnosis(
                False, "nonfinite", "The output has inf/NaN entries, so its gradients do too."
            )
    upstream, step = _array(inputs.upstream), float(inputs.fd_step)
    moved = _array(outcome.fd_outputs)
    for i, name in enumerate(("queries", "keys", "values")):
        grad = getattr(outcome, f"grad_{name}")
        if grad is None:
            return Diagnosis(False, "no_gradient", f"No gradient came back for {name}.")
        direction = _array(getattr(inputs, f"direction_{name}"))
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


def head_by_head_verdict(inputs: CaseInputs, outcome: Outcome) -> Diagnosis:
    """The parallel output equals the learner's own attention_function applied head by head
    (probe kind "heads"), right or wrong as that function may be; without one, the values
    are compared with the reference. Raising what attention_function raises on the heads
    holds too: that is attention_function's failure."""
    raised = outcome.raised_like_own
    if raised:
        return Diagnosis(
            True, None, f"your attention_function raises {raised} on these heads (Test 5)"
        )
    if outcome.own_out is None:
        q, k, v = inputs.queries, inputs.keys, inputs.values
        heads = int(inputs.heads)
        diagnosis = diagnose_attention(outcome.out, q, k, v, heads, bool(inputs.mask))
        if diagnosis.correct:
            return diagnosis
        why = outcome.own_error
        return Diagnosis(
            False,
            diagnosis.mistake,
            f"{diagnosis.message} (compared with the reference: {why})"
            if why
            else diagnosis.message,
        )
    # Heads computed through a pool that scales its results carry its scale (none by default).
    own = _array(outcome.own_out) * float(inputs.pool_scale)
    result = compare(_array(outcome.out), own, case_tolerance(inputs))
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


def assembled_verdict(inputs: CaseInputs, outcome: Outcome) -> Diagnosis:
    """One map call with one (q, k, v, mask) item of shape (b, t, s) per head (importable for
    a worker pool), and an output put together from what the pool returned: each head's
    features equal one returned result (the pool scales results by a factor no one guesses)."""
    b, t, width = np.shape(inputs.queries)
    heads = int(inputs.heads)
    s = width // heads
    workers = inputs.pool == "workers"
    usage = diagnose_pool_usage(
        outcome.pool_log or [], heads, head_shape=(b, t, s), require_importable=workers
    )
    if not usage.correct:
        return usage
    first = outcome.pool_log[0]
    call = first if isinstance(first, dict) else vars(first)
    results = [None if r is None else _array(r) for r in call.get("results") or []]
    out = _array(outcome.out)
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


def unmodified_verdict(inputs: CaseInputs, outcome: Outcome) -> Diagnosis:
    """queries, keys and values are bit for bit what they were after the call (NaN = NaN)."""
    for name in ("queries", "keys", "values"):
        after, before = outcome.after(name), np.asarray(getattr(inputs, name))
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


def property_verdict(inputs: CaseInputs, outcome: Outcome) -> Diagnosis:
    """The verdict on the property a case of any kind but "forward" checks, on an output of
    the right shape; a failure that reproduces a catalogued mistake names it."""
    if inputs.kind in ("pool", "worker_pool"):
        return assembled_verdict(inputs, outcome)
    verdict = VERDICTS[inputs.kind](inputs, outcome)
    return verdict if verdict.correct else named_if_catalogued(verdict, inputs, outcome.out)


def named_if_catalogued(verdict: Diagnosis, inputs: CaseInputs, out: object) -> Diagnosis:
    """A property failure, naming the catalogued mistake that ``out`` reproduces, if any: the
    feedback then names it, and a visible check shows a failure it causes as following from
    the first."""
    if verdict.mistake in MISTAKES_BY_KEY:
        return verdict
    q, k, v = inputs.queries, inputs.keys, inputs.values
    heads = 1 if inputs.function == "attention_function" else int(inputs.heads)
    named = diagnose_attention(out, q, k, v, heads, bool(inputs.mask))
    if named.mistake not in MISTAKES_BY_KEY:
        return verdict
    return Diagnosis(False, named.mistake, f"{verdict.message} {named.message}")
