"""Run one graded function on one case's inputs and return its raw outputs as plain data.

It serves the notebook's hidden cells and visible checks (in the learner's kernel) and the
grading sandbox (which sends the outputs to a trusted judge); it needs no test text, only
these inputs:

- ``function``: "multihead_attention" | "attention_function" | "parallel_multihead_attention"
- ``kind``: what property the case checks, and so which calls the probe makes:
  "forward" (one call), "causal", "bounded", "gradient", "unmodified", "heads" (the
  parallel version against the learner's own attention_function), "pool", "worker_pool"
- ``queries``, ``keys``, ``values``: arrays (b, t, heads * s), (b, t, s) for attention_function
- ``heads`` (int), ``mask`` (bool)
- ``mask_as``: "bool" (``mask`` passed as True/False) or "int" (as 1/0)
- ``layout``: "contiguous", or "sliced" (slices of one wider tensor, as a model passes them)
- ``requires_grad`` (bool): inputs are leaves that require grad, as in training
- ``pool``: "" (none), "inline" (an in-process InstrumentedPool) or "workers" (two worker
  processes that find functions by module name, as under spawn); ``pool_scale``: the pool
  multiplies every result by it, so the output shows whether it was built from them
- and per kind (see :func:`property_inputs`): "causal": ``cut`` (int), ``future_keys``,
  ``future_values`` (arrays like keys), ``self_position``, ``past_position`` (ints),
  ``self_shift`` (float),
  ``prefixes`` (int array of lengths); "bounded": ``calm_queries``, ``calm_keys``;
  "gradient": ``upstream`` (array like the output), ``direction_queries``,
  ``direction_keys``, ``direction_values`` (float64 arrays), ``fd_step`` (float)

Calls per kind (every one with the tripwires armed), each the judge can recompute:

- "causal": ``out`` = f(q, k, v, mask); ``out_future`` = f(q, k', v', mask), k' and v' equal to
  k and v at positions <= cut and to future_keys/future_values after it; ``out_self`` =
  f(q, k'', v'', mask), k'' and v'' = k and v with self_shift * d added at position
  self_position, d: that position's query, per head scaled to norm sqrt(s); ``out_past``
  likewise with position 0's key and value moved along the query of past_position;
  ``prefix_rows`` (n, b, width): row L-1 of f(q[:, :L], k[:, :L], v[:, :L], mask=False) for
  each L in prefixes
- "bounded": ``out`` and ``out_calm`` = f(calm_queries, calm_keys, v, mask)
- "gradient": ``out``; ``grad_queries``, ``grad_keys``, ``grad_values`` of
  (out * upstream).sum(); ``fd_outputs`` (3, 2, b, t, width): f on float64 inputs with
  queries, keys, values in turn moved by -fd_step and +fd_step times their direction
- "unmodified": ``out`` and ``queries_after``, ... in the input dtype
- "heads": ``out`` = the parallel function's output and ``own_out``: the learner's own
  ``attention_function`` (the one the parallel function's module sees) applied head by head,
  concatenated; or ``own_error`` when there is none or it raised; when the parallel
  function raises what attention_function raises on the heads, only ``raised_like_own``
- "forward", "pool", "worker_pool": ``out``

Outputs are float64 arrays unless noted; a failure gives ``error`` ("Type: message"),
``error_where`` (the learner's line) and ``error_call`` (which call raised), and
``grad_error`` for a missing gradient. :class:`ProbeResult` also carries the pool's log and
lists the forbidden operators the calls executed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from former.threads import torch_threads
from grader.learner.forbidden import UNOBSERVED, Tripwires, attention_work, stderr_silenced
from grader.learner.pool import InstrumentedPool

# Private handles on the C implementations: a learner who monkeypatches torch.Tensor
# methods in the kernel cannot change how outputs are read back.
_TensorBase = torch._C.TensorBase
_detach = _TensorBase.detach
_to_double = _TensorBase.double
_to_cpu = _TensorBase.cpu
_to_numpy = _TensorBase.numpy
_is_floating = _TensorBase.is_floating_point
_from_numpy = torch.from_numpy

# Frames from these folders are machinery, not the learner's code.
_MACHINERY = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (torch.__file__, np.__file__, __file__, contextlib.__file__)
)
_SOLUTIONS = os.sep + "solutions" + os.sep


@dataclass
class ProbeResult:
    outputs: dict[str, Any]
    pool_log: list[dict[str, Any]] | None = None
    forbidden: list[str] = field(default_factory=list)


@functools.cache
def tripwires() -> Tripwires:
    """The process's one set of tripwires (it wraps torch's attention entry points once)."""
    return Tripwires()


def where_in_learner_code(error: BaseException) -> str:
    """'line 12 in multihead_attention: scores = q @ k' for the innermost learner frame."""
    frames = traceback.extract_tb(error.__traceback__)
    mine = [
        f
        for f in frames
        if not os.path.abspath(f.filename).startswith(_MACHINERY) and _SOLUTIONS not in f.filename
    ]
    if not mine:
        return ""
    frame = mine[-1]
    code = (frame.line or "").strip()
    return f"line {frame.lineno} in {frame.name}" + (f": {code}" if code else "")


def describe_exception(error: BaseException) -> str:
    """'ValueError: message' (one line, bounded), never a traceback."""
    message = " ".join(str(error).split())
    if len(message) > 400:
        message = message[:400] + " ..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow warnings and stderr (Python and file-descriptor level) while learner code runs:
    they never cost points, and plain nbgrader fails a test cell that writes to stderr."""
    with stderr_silenced(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# -- the inputs of each property --------------------------------------------------------------

SELF_SHIFT = 10.0  # one position's key and value move this far along its own query
FD_STEP = 1e-3  # central differences in float64: truncation and float32 rounding both ~1e-5


def property_inputs(kind: str, inputs: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The extra inputs ``kind`` needs, drawn from ``rng`` for ``inputs`` (queries etc.); a
    "bounded" case brings its own calm_queries and calm_keys."""
    b, t, width = np.shape(inputs["queries"])
    dtype = np.asarray(inputs["queries"]).dtype
    extra: dict[str, Any] = {}
    if kind == "causal":
        extra["cut"] = int(rng.integers(0, max(t - 1, 1)))  # positions after it get replaced
        for name in ("future_keys", "future_values"):
            extra[name] = rng.standard_normal((b, t, width)).astype(dtype)
        extra["self_position"] = int(rng.integers(0, min(t, 4)))  # early: its weight is not tiny
        extra["self_shift"] = SELF_SHIFT
        extra["past_position"] = int(rng.integers(1, t)) if t > 1 else 0  # sees position 0
        lengths = {1, int(rng.integers(1, t + 1)), t}
        extra["prefixes"] = np.array(sorted(lengths), dtype=np.int64)
    elif kind == "gradient":
        extra["upstream"] = rng.standard_normal((b, t, width)).astype(dtype)
        for name in ("queries", "keys", "values"):
            extra[f"direction_{name}"] = rng.standard_normal((b, t, width))
        extra["fd_step"] = FD_STEP
    return extra


# -- calling the learner's function -----------------------------------------------------------


def input_tensors(
    inputs: dict[str, Any], arrays: tuple[Any, Any, Any] | None = None, *, plain: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """queries, keys, values (or ``arrays`` in their place) as the case hands them over
    (layout, requires_grad); ``plain``: contiguous leaves that need no grad."""
    if arrays is None:
        arrays = (inputs["queries"], inputs["keys"], inputs["values"])
    wants_grad = not plain and (
        inputs["kind"] == "gradient" or bool(inputs.get("requires_grad", False))
    )
    sliced = not plain and inputs.get("layout", "contiguous") == "sliced"
    tensors = []
    for given in arrays:
        array = np.array(given, copy=True)
        w = array.shape[-1]
        if sliced:
            # The middle third of (b, t, 3w): what q, k, v = qkv.chunk(3, dim=-1) hands over.
            wide = np.zeros((*array.shape[:-1], 3 * w), dtype=array.dtype)
            wide[..., w : 2 * w] = array
            tensors.append(_from_numpy(wide).requires_grad_(wants_grad)[..., w : 2 * w])
        else:
            tensors.append(_from_numpy(array).requires_grad_(wants_grad))
    return tensors[0], tensors[1], tensors[2]


def _read_back(value: object, what: str) -> np.ndarray:
    if not isinstance(value, _TensorBase):
        raise TypeError(
            f"{what} is a {type(value).__name__}, expected a torch.Tensor"
            + (" (did you forget `return`?)" if value is None else "")
        )
    if not _is_floating(value):
        raise TypeError(f"{what} has dtype {value.dtype}, expected a floating-point tensor")
    return np.array(_to_numpy(_to_cpu(_to_double(_detach(value)))), dtype=np.float64, copy=True)


def call_function(fn: Callable, inputs: dict[str, Any], q, k, v, pool, mask: bool | None = None):
    """Call ``fn`` the way the learner contract says for ``inputs['function']``; mask: the
    case's mask unless given."""
    name = inputs["function"]
    flag: bool | int = bool(inputs["mask"]) if mask is None else bool(mask)
    if inputs.get("mask_as", "bool") == "int":
        flag = int(flag)  # any truthy value counts as the causal mask
    if name == "attention_function":
        return fn((q, k, v, flag))
    if name == "parallel_multihead_attention":
        return fn(q, k, v, int(inputs["heads"]), flag, pool=pool)
    return fn(q, k, v, int(inputs["heads"]), flag)


class _Calls:
    """The learner's function called on variations of one case, tripwires armed; a failure
    remembers which call raised."""

    def __init__(self, fn: Callable, inputs: dict[str, Any], pool: Any) -> None:
        self.fn, self.inputs, self.pool = fn, inputs, pool
        self.current = "on the case's inputs"

    def raw(self, what: str, tensors: tuple, mask: bool | None = None) -> object:
        self.current = what
        with tripwires().armed(_work(self.inputs, tensors[0])):
            return call_function(self.fn, self.inputs, *tensors, self.pool, mask)

    def read(
        self,
        what: str,
        arrays: tuple | None = None,
        *,
        mask: bool | None = None,
        plain: bool = False,
    ) -> np.ndarray:
        tensors = input_tensors(self.inputs, arrays, plain=plain)
        return _read_back(self.raw(what, tensors, mask), "the output")


def _replace_after(array: np.ndarray, other: np.ndarray, cut: int) -> np.ndarray:
    changed = np.array(array, copy=True)
    changed[:, cut + 1 :] = other[:, cut + 1 :]
    return changed


def _causal(calls: _Calls, inputs: dict[str, Any]) -> dict[str, Any]:
    q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
    cut, p = int(inputs["cut"]), int(inputs["self_position"])
    outputs = {"out": calls.read("on the case's inputs")}
    future = (
        q,
        _replace_after(k, inputs["future_keys"], cut),
        _replace_after(v, inputs["future_values"], cut),
    )
    outputs["out_future"] = calls.read("with later keys and values changed", future)
    outputs["out_self"] = calls.read(
        "with one position's key and value changed", _towards_query(inputs, p, p)
    )
    past = int(inputs["past_position"])
    outputs["out_past"] = calls.read(
        "with the first position's key and value changed", _towards_query(inputs, 0, past)
    )
    rows = []
    for length in np.asarray(inputs["prefixes"]).tolist():
        prefix = tuple(np.array(x[:, :length], copy=True) for x in (q, k, v))
        what = f"on the first {length} position(s) without the mask"
        rows.append(calls.read(what, prefix, mask=False)[:, length - 1])
    outputs["prefix_rows"] = np.stack(rows)
    return outputs


def _towards_query(inputs: dict[str, Any], p: int, r: int) -> tuple[np.ndarray, ...]:
    """q, k, v with key and value at position p moved by self_shift times the direction of
    position r's query (per head, of norm sqrt(s)): if r sees p, it gives p a clear weight
    whatever the scale, and its output moves with p's value."""
    q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
    b, t, width = np.shape(q)
    heads = int(inputs["heads"])
    s = width // heads
    own = np.asarray(q, dtype=np.float64)[:, r].reshape(b, heads, s)
    norm = np.sqrt((own**2).sum(-1, keepdims=True))
    direction = (own / np.maximum(norm, 1e-12) * np.sqrt(s)).reshape(b, width)
    moved = []
    for x in (k, v):
        x = np.array(x, copy=True)
        x[:, p] += (float(inputs["self_shift"]) * direction).astype(x.dtype)
        moved.append(x)
    return np.array(q, copy=True), moved[0], moved[1]


def _bounded(calls: _Calls, inputs: dict[str, Any]) -> dict[str, Any]:
    outputs = {"out": calls.read("on the case's inputs")}
    calm = (inputs["calm_queries"], inputs["calm_keys"], inputs["values"])
    outputs["out_calm"] = calls.read("on the same inputs with moderate scores", calm)
    return outputs


def _gradient(calls: _Calls, inputs: dict[str, Any]) -> dict[str, Any]:
    q, k, v = input_tensors(inputs)
    result = calls.raw("on the case's inputs", (q, k, v))
    outputs: dict[str, Any] = {"out": _read_back(result, "the output")}
    calls.current = "in backward()"
    with tripwires().armed():
        outputs.update(_gradients(result, inputs["upstream"], q, k, v))
    base = [np.asarray(inputs[n], dtype=np.float64) for n in ("queries", "keys", "values")]
    step = float(inputs["fd_step"])
    moved = []
    for i, name in enumerate(("queries", "keys", "values")):
        direction = np.asarray(inputs[f"direction_{name}"], dtype=np.float64)
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


def _unmodified(calls: _Calls, inputs: dict[str, Any]) -> dict[str, Any]:
    tensors = input_tensors(inputs)
    outputs = {"out": _read_back(calls.raw("on the case's inputs", tensors), "the output")}
    for name, tensor in zip(("queries", "keys", "values"), tensors, strict=True):
        outputs[f"{name}_after"] = np.array(_to_numpy(_detach(tensor)), copy=True)
    return outputs


def _heads(calls: _Calls, inputs: dict[str, Any]) -> dict[str, Any]:
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
    outputs: dict[str, Any] = {"out": _read_back(result, "the output")}
    outputs.update(_own_heads(calls.fn, inputs, tensors))
    return outputs


def _own_heads(fn: Callable, inputs: dict[str, Any], tensors: tuple) -> dict[str, Any]:
    """``own_out``: the ``attention_function`` that ``fn``'s module sees, applied head by
    head and concatenated; or ``own_error`` when there is none or it raised."""
    own = getattr(fn, "__globals__", {}).get("attention_function")
    if not callable(own):
        return {"own_error": "no attention_function is defined where your function is"}
    heads = int(inputs["heads"])
    s = tensors[0].shape[-1] // heads
    flag: bool | int = bool(inputs["mask"])
    if inputs.get("mask_as", "bool") == "int":
        flag = int(flag)
    try:
        parts = []
        for i in range(heads):
            head = tuple(x[:, :, i * s : (i + 1) * s] for x in tensors)
            with tripwires().armed():
                parts.append(_read_back(own((*head, flag)), f"attention_function's head {i}"))
        return {"own_out": np.concatenate(parts, axis=-1)}
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the learner's code may raise anything
        where = where_in_learner_code(error)
        return {"own_error": describe_exception(error) + (f" ({where})" if where else "")}


def _forward(calls: _Calls, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"out": calls.read("on the case's inputs")}


_PROBES: dict[str, Callable[[_Calls, dict[str, Any]], dict[str, Any]]] = {
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
    inputs: dict[str, Any], fn: Callable, *, make_pool: Callable[[str], Any] | None = None
) -> ProbeResult:
    """Run ``fn`` on one case and read back its outputs (see the module docstring).

    make_pool(mode): the pool to hand a parallel function ("inline" or "workers"); by
    default an InstrumentedPool that applies inputs["pool_scale"]. Its ``log()`` comes back.
    """
    kind = inputs["kind"]
    outputs: dict[str, Any] = {}
    pool: Any = None
    calls: _Calls | None = None
    wires = tripwires()
    with quiet(), torch_threads(1):
        try:
            mode = str(inputs.get("pool", ""))
            if mode not in {"", "inline", "workers"}:
                raise ValueError(f"unknown pool mode {mode!r}")
            if kind not in _PROBES:
                raise ValueError(f"unknown case kind {kind!r}")
            if mode and make_pool is not None:
                pool = make_pool(mode)
            elif mode:
                scale = float(inputs.get("pool_scale", 1.0))
                pool = InstrumentedPool(2 if mode == "workers" else 0, result_scale=scale)
            calls = _Calls(fn, inputs, pool)
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
    return ProbeResult(outputs, pool_log, seen)


def _work(inputs: dict[str, Any], queries: torch.Tensor) -> tuple[int, int] | None:
    """What a call must be seen computing: attention's work for its queries' size, except
    in the parallel version, whose heads the pool computes (its record is the evidence)."""
    if inputs["function"] == "parallel_multihead_attention":
        return None
    b, t, width = queries.shape
    heads = int(inputs["heads"]) if inputs["function"] == "multihead_attention" else 1
    return attention_work(b, t, heads, max(width // heads, 1))


def _gradients(result: torch.Tensor, upstream: np.ndarray, q, k, v) -> dict[str, Any]:
    if not result.requires_grad:
        return {
            "grad_error": "the output does not track gradients: no .detach(), .data, .numpy(), "
            "torch.no_grad() or in-place writes into a fresh tensor on the way"
        }
    weights = _from_numpy(np.array(upstream, copy=True)).to(result.dtype)
    (result * weights).sum().backward()
    grads: dict[str, Any] = {}
    for name, tensor in (("queries", q), ("keys", k), ("values", v)):
        if tensor.grad is None:
            grads["grad_error"] = f"{name} got no gradient: the output does not depend on it"
        else:
            grads[f"grad_{name}"] = _read_back(tensor.grad, f"the gradient of {name}")
    return grads
