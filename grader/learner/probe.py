"""Run one graded function on one case's inputs and read back its raw outputs.

It serves the notebook's hidden cells and visible checks (in the learner's kernel) and the
grading sandbox (which sends the outcome to a trusted judge); it needs no test text, only a
:class:`~grader.learner.probe_io.CaseInputs`. Calls per kind (tripwires armed), each of which
the judge can recompute:

- "forward", "pool", "worker_pool": ``out`` = f(q, k, v, mask)
- "causal": ``out``; ``out_future`` with keys and values after ``cut`` replaced by
  future_keys/future_values; ``out_self`` with self_position's key and value moved by
  self_shift along its own query (per head, of norm sqrt(s)); ``out_past`` likewise with
  position 0's along past_position's query; ``prefix_rows``: row L-1 of the unmasked function
  on the first L positions, for each L in prefixes
- "bounded": ``out`` and ``out_calm`` on calm_queries and calm_keys
- "gradient": ``out``; ``grad_*`` of (out * upstream).sum(); ``fd_outputs``: f on float64
  inputs with queries, keys, values in turn moved by -/+ fd_step along their direction
- "unmodified": ``out`` and ``*_after``, the inputs after the call
- "heads": ``out`` (the parallel function) and ``own_out``, the learner's own
  attention_function applied head by head (or ``own_error``); only ``raised_like_own`` when
  the parallel function raises what attention_function raises on the heads
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from former.threads import torch_threads
from grader.learner.calls import (
    Calls,
    copy_as_given,
    describe_exception,
    from_numpy,
    input_tensors,
    quiet,
    read_back,
    tripwires,
    where_in_learner_code,
)
from grader.learner.counting_pool import InstrumentedPool
from grader.learner.forbidden import UNOBSERVED
from grader.learner.probe_io import CaseInputs, Outcome


def _replace_after(array: np.ndarray, other: np.ndarray, cut: int) -> np.ndarray:
    changed = np.array(array, copy=True)
    changed[:, cut + 1 :] = other[:, cut + 1 :]
    return changed


def _causal(calls: Calls, inputs: CaseInputs) -> dict[str, Any]:
    q, k, v = inputs.queries, inputs.keys, inputs.values
    cut, p = int(inputs.cut), int(inputs.self_position)
    outputs = {"out": calls.read("on the case's inputs")}
    future = (
        q,
        _replace_after(k, inputs.future_keys, cut),
        _replace_after(v, inputs.future_values, cut),
    )
    outputs["out_future"] = calls.read("with later keys and values changed", future)
    outputs["out_self"] = calls.read(
        "with one position's key and value changed", _towards_query(inputs, p, p)
    )
    past = int(inputs.past_position)
    outputs["out_past"] = calls.read(
        "with the first position's key and value changed", _towards_query(inputs, 0, past)
    )
    rows = []
    for length in np.asarray(inputs.prefixes).tolist():
        prefix = tuple(np.array(x[:, :length], copy=True) for x in (q, k, v))
        what = f"on the first {length} position(s) without the mask"
        rows.append(calls.read(what, prefix, mask=False)[:, length - 1])
    outputs["prefix_rows"] = np.stack(rows)
    return outputs


def _towards_query(inputs: CaseInputs, p: int, r: int) -> tuple[np.ndarray, ...]:
    """q, k, v with key and value at position p moved by self_shift times the direction of
    position r's query (per head, of norm sqrt(s)): if r sees p, it gives p a clear weight
    whatever the scale, and its output moves with p's value."""
    q, k, v = inputs.queries, inputs.keys, inputs.values
    b, t, width = np.shape(q)
    heads = int(inputs.heads)
    s = width // heads
    own = np.asarray(q, dtype=np.float64)[:, r].reshape(b, heads, s)
    norm = np.sqrt((own**2).sum(-1, keepdims=True))
    direction = (own / np.maximum(norm, 1e-12) * np.sqrt(s)).reshape(b, width)
    moved = []
    for x in (k, v):
        x = np.array(x, copy=True)
        x[:, p] += (float(inputs.self_shift) * direction).astype(x.dtype)
        moved.append(x)
    return np.array(q, copy=True), moved[0], moved[1]


def _bounded(calls: Calls, inputs: CaseInputs) -> dict[str, Any]:
    outputs = {"out": calls.read("on the case's inputs")}
    calm = (inputs.calm_queries, inputs.calm_keys, inputs.values)
    outputs["out_calm"] = calls.read("on the same inputs with moderate scores", calm)
    return outputs


def _gradient(calls: Calls, inputs: CaseInputs) -> dict[str, Any]:
    q, k, v = input_tensors(inputs)
    result = calls.raw("on the case's inputs", (q, k, v))
    outputs: dict[str, Any] = {"out": read_back(result, "the output")}
    calls.current = "in backward()"
    with tripwires().armed():
        outputs.update(_gradients(result, inputs.upstream, q, k, v))
    base = [np.asarray(getattr(inputs, n), dtype=np.float64) for n in ("queries", "keys", "values")]
    step = float(inputs.fd_step)
    moved = []
    for i, name in enumerate(("queries", "keys", "values")):
        direction = np.asarray(getattr(inputs, f"direction_{name}"), dtype=np.float64)
        pair = []
        for sign in (-1.0, 1.0):
            arrays = list(base)
            arrays[i] = base[i] + sign * step * direction
            pair.append(
                calls.read(
                    f"on float64 inputs with {name} moved a little", tuple(arrays), plain=True
                )
            )
        moved.append(np.stack(pair))
    outputs["fd_outputs"] = np.stack(moved)
    return outputs


def _unmodified(calls: Calls, inputs: CaseInputs) -> dict[str, Any]:
    tensors = input_tensors(inputs)
    outputs = {"out": read_back(calls.raw("on the case's inputs", tensors), "the output")}
    for name, tensor in zip(("queries", "keys", "values"), tensors, strict=True):
        outputs[f"{name}_after"] = copy_as_given(tensor)
    return outputs


def _heads(calls: Calls, inputs: CaseInputs) -> dict[str, Any]:
    tensors = input_tensors(inputs)
    try:
        result = calls.raw("on the case's inputs", tensors)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the learner's code may raise anything
        # Raising what the learner's own attention_function raises on these heads is that
        # function's failure (Test 5's), not the parallel version's.
        own = _own_heads(calls.fn, inputs, input_tensors(inputs))
        if own.get("own_error", "").startswith(describe_exception(error)):
            return {"raised_like_own": own["own_error"]}
        raise
    outputs: dict[str, Any] = {"out": read_back(result, "the output")}
    outputs.update(_own_heads(calls.fn, inputs, tensors))
    return outputs


def _own_heads(fn: Callable, inputs: CaseInputs, tensors: tuple) -> dict[str, Any]:
    """``own_out``: the ``attention_function`` that ``fn``'s module sees, applied head by
    head and concatenated; or ``own_error`` when there is none or it raised."""
    own = getattr(fn, "__globals__", {}).get("attention_function")
    if not callable(own):
        return {"own_error": "no attention_function is defined where your function is"}
    heads = int(inputs.heads)
    s = tensors[0].shape[-1] // heads
    flag: bool | int = bool(inputs.mask)
    if inputs.mask_as == "int":
        flag = int(flag)
    try:
        parts = []
        for i in range(heads):
            head = tuple(x[:, :, i * s : (i + 1) * s] for x in tensors)
            with tripwires().armed():
                parts.append(read_back(own((*head, flag)), f"attention_function's head {i}"))
        return {"own_out": np.concatenate(parts, axis=-1)}
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the learner's code may raise anything
        where = where_in_learner_code(error)
        return {"own_error": describe_exception(error) + (f" ({where})" if where else "")}


def _forward(calls: Calls, inputs: CaseInputs) -> dict[str, Any]:
    return {"out": calls.read("on the case's inputs")}


_PROBES: dict[str, Callable[[Calls, dict[str, Any]], dict[str, Any]]] = {
    "forward": _forward,
    "causal": _causal,
    "bounded": _bounded,
    "gradient": _gradient,
    "unmodified": _unmodified,
    "heads": _heads,
    "pool": _forward,
    "worker_pool": _forward,
}


def probe_case(
    inputs: CaseInputs, fn: Callable, *, make_pool: Callable[[str], Any] | None = None
) -> Outcome:
    """Run ``fn`` on one case and read back its outcome (see the module docstring).

    make_pool(mode): the pool to hand a parallel function ("inline" or "workers"); by
    default an InstrumentedPool that applies inputs.pool_scale. Its ``log()`` comes back.
    """
    kind = inputs.kind
    outputs: dict[str, Any] = {}
    pool: Any = None
    calls: Calls | None = None
    wires = tripwires()
    with quiet(), torch_threads(1):
        try:
            mode = inputs.pool
            if mode not in {"", "inline", "workers"}:
                raise ValueError(f"unknown pool mode {mode!r}")
            if kind not in _PROBES:
                raise ValueError(f"unknown case kind {kind!r}")
            if mode and make_pool is not None:
                pool = make_pool(mode)
            elif mode:
                workers = 2 if mode == "workers" else 0
                pool = InstrumentedPool(workers, result_scale=inputs.pool_scale)
            calls = Calls(fn, inputs, pool)
            outputs.update(_PROBES[kind](calls, inputs))
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the learner's code may raise anything
            outputs["error"] = describe_exception(error)
            outputs["error_where"] = where_in_learner_code(error)
            outputs["error_call"] = calls.current if calls is not None else ""
        finally:
            pool_log = pool.log() if pool is not None else None
            if pool is not None:
                pool.terminate()
    seen = wires.take()
    if "error" in outputs:  # a call that raised computed nothing to observe
        seen = [what for what in seen if what != UNOBSERVED]
    return Outcome(**outputs, pool_log=pool_log, forbidden=seen)


def _gradients(result: torch.Tensor, upstream: np.ndarray, q, k, v) -> dict[str, Any]:
    if not result.requires_grad:
        return {
            "grad_error": "the output does not track gradients: no .detach(), .data, .numpy(), "
            "torch.no_grad() or in-place writes into a fresh tensor on the way"
        }
    weights = from_numpy(np.array(upstream, copy=True)).to(result.dtype)
    (result * weights).sum().backward()
    grads: dict[str, Any] = {}
    for name, tensor in (("queries", q), ("keys", k), ("values", v)):
        if tensor.grad is None:
            grads["grad_error"] = f"{name} got no gradient: the output does not depend on it"
        else:
            grads[f"grad_{name}"] = read_back(tensor.grad, f"the gradient of {name}")
    return grads
