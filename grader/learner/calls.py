"""Calling the learner's function as the probe does: the contract of its task, the case's
layout, the forbidden-operator tripwires armed, errors described in one line and outputs read
back through torch's C methods (which code in the kernel cannot monkeypatch).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from grader.learner.forbidden import Tripwires, attention_work, stderr_silenced
from grader.learner.probe_io import CaseInputs

# Private handles on the C implementations: a learner who monkeypatches torch.Tensor
# methods in the kernel cannot change how outputs are read back.
_TensorBase = torch._C.TensorBase
_detach = _TensorBase.detach
_to_double = _TensorBase.double
_to_cpu = _TensorBase.cpu
_to_numpy = _TensorBase.numpy
_is_floating = _TensorBase.is_floating_point
from_numpy = torch.from_numpy

# Frames from these folders are machinery, not the learner's code.
_MACHINERY = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (torch.__file__, np.__file__, __file__, contextlib.__file__)
)
_SOLUTIONS = os.sep + "solutions" + os.sep


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


# -- calling the learner's function -----------------------------------------------------------


def input_tensors(
    inputs: CaseInputs, arrays: tuple[Any, Any, Any] | None = None, *, plain: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """queries, keys, values (or ``arrays`` in their place) as the case hands them over
    (layout, requires_grad); ``plain``: contiguous leaves that need no grad."""
    if arrays is None:
        arrays = (inputs.queries, inputs.keys, inputs.values)
    wants_grad = not plain and (
        inputs.kind == "gradient" or bool(inputs.requires_grad)
    )
    sliced = not plain and inputs.layout == "sliced"
    tensors = []
    for given in arrays:
        array = np.array(given, copy=True)
        w = array.shape[-1]
        if sliced:
            # The middle third of (b, t, 3w): what q, k, v = qkv.chunk(3, dim=-1) hands over.
            wide = np.zeros((*array.shape[:-1], 3 * w), dtype=array.dtype)
            wide[..., w : 2 * w] = array
            tensors.append(from_numpy(wide).requires_grad_(wants_grad)[..., w : 2 * w])
        else:
            tensors.append(from_numpy(array).requires_grad_(wants_grad))
    return tensors[0], tensors[1], tensors[2]


def read_back(value: object, what: str) -> np.ndarray:
    if not isinstance(value, _TensorBase):
        raise TypeError(
            f"{what} is a {type(value).__name__}, expected a torch.Tensor"
            + (" (did you forget `return`?)" if value is None else "")
        )
    if not _is_floating(value):
        raise TypeError(f"{what} has dtype {value.dtype}, expected a floating-point tensor")
    return np.array(_to_numpy(_to_cpu(_to_double(_detach(value)))), dtype=np.float64, copy=True)


def copy_as_given(tensor: torch.Tensor) -> np.ndarray:
    """A numpy copy of an input tensor in its own dtype (was it modified by the call?)."""
    return np.array(_to_numpy(_detach(tensor)), copy=True)


def call_function(fn: Callable, inputs: CaseInputs, q, k, v, pool, mask: bool | None = None):
    """Call ``fn`` the way the learner contract says for ``inputs.function``; mask: the
    case's mask unless given."""
    name = inputs.function
    flag: bool | int = bool(inputs.mask) if mask is None else bool(mask)
    if inputs.mask_as == "int":
        flag = int(flag)  # any truthy value counts as the causal mask
    if name == "attention_function":
        return fn((q, k, v, flag))
    if name == "parallel_multihead_attention":
        return fn(q, k, v, int(inputs.heads), flag, pool=pool)
    return fn(q, k, v, int(inputs.heads), flag)


class Calls:
    """The learner's function called on variations of one case, tripwires armed; a failure
    remembers which call raised."""

    def __init__(self, fn: Callable, inputs: CaseInputs, pool: Any) -> None:
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
        return read_back(self.raw(what, tensors, mask), "the output")


def _work(inputs: CaseInputs, queries: torch.Tensor) -> tuple[int, int] | None:
    """What a call must be seen computing: attention's work for its queries' size, except
    in the parallel version, whose heads the pool computes (its record is the evidence)."""
    if inputs.function == "parallel_multihead_attention":
        return None
    b, t, width = queries.shape
    heads = int(inputs.heads) if inputs.function == "multihead_attention" else 1
    return attention_work(b, t, heads, max(width // heads, 1))


