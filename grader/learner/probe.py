"""Run one graded function on one case's inputs and return its raw outputs as plain data.

It serves the notebook's hidden cells (in the learner's kernel) and the grading sandbox
(which sends the outputs to a trusted judge); it needs no test text, only these inputs:

- ``function``: "multihead_attention" | "attention_function" | "parallel_multihead_attention"
- ``kind``: "forward" | "gradient" | "unmodified" | "pool" | "worker_pool"
- ``queries``, ``keys``, ``values``: arrays (b, t, heads * s), (b, t, s) for attention_function
- ``heads`` (int), ``mask`` (bool), ``upstream`` (array like the output; gradient cases)
- ``mask_as``: "bool" (``mask`` passed as True/False) or "int" (as 1/0)
- ``layout``: "contiguous", or "sliced" (slices of one wider tensor, as a model passes them)
- ``requires_grad`` (bool): inputs are leaves that require grad, as in training
- ``pool``: "" (none), "inline" (an in-process InstrumentedPool) or "workers" (two worker
  processes that find functions by module name, as under spawn); ``pool_scale``: the pool
  multiplies every result by it, so the output shows whether it was built from them

Outputs (float64 arrays unless noted): ``out``; ``grad_queries``, ``grad_keys``,
``grad_values`` (gradient cases); ``queries_after``, ... in the input dtype (unmodified
cases); or ``error`` ("Type: message") and ``error_where`` (the learner's line), and
``grad_error`` for a missing gradient. :class:`ProbeResult` also lists the forbidden
operators the call executed.
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
from grader.learner.forbidden import Tripwires, attention_work, stderr_silenced
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


def input_tensors(inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """queries, keys, values as the case hands them over (layout, requires_grad)."""
    wants_grad = inputs["kind"] == "gradient" or bool(inputs.get("requires_grad", False))
    tensors = []
    for name in ("queries", "keys", "values"):
        array = np.array(inputs[name], copy=True)
        w = array.shape[-1]
        if inputs.get("layout", "contiguous") == "sliced":
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


def call_function(fn: Callable, inputs: dict[str, Any], q, k, v, pool) -> object:
    """Call ``fn`` the way the learner contract says for ``inputs['function']``."""
    name = inputs["function"]
    mask = bool(inputs["mask"])
    if inputs.get("mask_as", "bool") == "int":
        mask = int(mask)  # any truthy value counts as the causal mask
    if name == "attention_function":
        return fn((q, k, v, mask))
    if name == "parallel_multihead_attention":
        return fn(q, k, v, int(inputs["heads"]), mask, pool=pool)
    return fn(q, k, v, int(inputs["heads"]), mask)


def probe_case(
    inputs: dict[str, Any], fn: Callable, *, make_pool: Callable[[str], Any] | None = None
) -> ProbeResult:
    """Run ``fn`` on one case and read back its outputs (see the module docstring).
    ``make_pool(mode)``: the pool for pool cases (default: an :class:`InstrumentedPool`)."""
    kind = inputs["kind"]
    q, k, v = input_tensors(inputs)
    outputs: dict[str, Any] = {}
    pool: Any = None
    wires = tripwires()
    with quiet(), torch_threads(1):
        try:
            mode, scale = str(inputs.get("pool", "")), float(inputs.get("pool_scale", 1.0))
            if mode not in {"", "inline", "workers"}:
                raise ValueError(f"unknown pool mode {mode!r}")
            if mode and make_pool is not None:
                pool = make_pool(mode)
            elif mode:
                pool = InstrumentedPool(2 if mode == "workers" else 0, result_scale=scale)
            with wires.armed(_work(inputs)):
                result = call_function(fn, inputs, q, k, v, pool)
            outputs["out"] = _read_back(result, "the output")
            if kind == "gradient":
                with wires.armed():
                    outputs.update(_gradients(result, inputs["upstream"], q, k, v))
            if kind == "unmodified":
                for name, tensor in (("queries", q), ("keys", k), ("values", v)):
                    outputs[f"{name}_after"] = np.array(_to_numpy(_detach(tensor)), copy=True)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the learner's code may raise anything
            outputs["error"] = describe_exception(error)
            outputs["error_where"] = where_in_learner_code(error)
        finally:
            pool_log = pool.log() if pool is not None else None
            if pool is not None:
                pool.terminate()
    return ProbeResult(outputs, pool_log, wires.take())


def _work(inputs: dict[str, Any]) -> tuple[int, int] | None:
    """What the call must be seen computing: attention's work, except for the parallel
    version, whose heads are computed by the pool (the pool's record is the evidence)."""
    if inputs["function"] == "parallel_multihead_attention":
        return None
    b, t, width = np.shape(inputs["queries"])
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
