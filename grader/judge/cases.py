"""The hidden cases of a grading run: their inputs drawn from a seed, the reference outputs.

Inputs are plain data (:class:`~grader.learner.probe_io.CaseInputs`) that the sandbox hands
to the probe; reference outputs come from the instructor's ``solutions.attention`` in
float64, computed before any learner code runs.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from grader.judge.instructor import load_solutions
from grader.learner.probe_io import CaseInputs, draw_inputs


@dataclass
class Plan:
    """The hidden cases of a grading run, their inputs (from ``seed``) and reference outputs."""

    groups: dict[str, Any]  # grade id -> solutions.hidden_cases.Group
    inputs: dict[str, CaseInputs]  # case name -> inputs
    expected: dict[str, dict[str, np.ndarray]]  # case name -> expected_outputs
    seed: int
    # grade id -> the visible part of the master's test cell (nbgrader puts it back when it
    # grades); a test without one runs the submission's own cell.
    test_sources: dict[str, str] = field(default_factory=dict)

    def tests(self) -> dict[str, str | None]:
        """Each test cell's grade id -> the visible source to run in its place, or None."""
        return {grade_id: self.test_sources.get(grade_id) for grade_id in self.groups}


def case_inputs(case: Any, seed: int) -> CaseInputs:
    """The inputs of ``case`` (a ``solutions.hidden_cases.Case``) for ``seed``."""
    # Each case gets its own stream, stable across Python runs (no hash randomisation).
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(case.name.encode())])
    ranges = (case.batch, case.length, case.heads, case.head_size)
    sizes = tuple(int(rng.integers(lo, hi + 1)) for lo, hi in ranges)
    large = load_solutions().hidden_cases.LARGE_SCORE if case.large_scores else 0.0
    names = ("mask", "dtype", "mask_as", "layout", "requires_grad", "pool")
    options = {name: getattr(case, name) for name in names}
    inputs = draw_inputs(
        rng, case.function, case.kind, sizes, large_scores=large, case=case.name, **options
    )
    if case.kind in ("pool", "worker_pool"):
        # A scale no one guesses: only an output built from the pool's results carries it.
        inputs.pool_scale = float(rng.uniform(1.5, 3.0))
    return inputs


@contextlib.contextmanager
def pristine_torch() -> Iterator[None]:
    """Temporarily undo monkeypatches of the torch functions the reference uses, as far as
    practical: module functions come back from torch's C tables; Python-level attributes on
    ``torch.Tensor`` that do not come from torch are hidden."""
    originals = torch._C._VariableFunctions
    restored: dict[str, Any] = {}
    for name in ("bmm", "softmax", "triu", "ones", "cat", "matmul", "from_numpy", "exp"):
        current, original = getattr(torch, name, None), getattr(originals, name, None)
        if original is not None and current is not original:
            restored[name] = current
            setattr(torch, name, original)
    hidden: dict[str, Any] = {}
    for name, value in list(vars(torch.Tensor).items()):
        module = getattr(value, "__module__", None)
        if module is not None and not str(module).startswith("torch") and not name.startswith("__"):
            hidden[name] = value
            delattr(torch.Tensor, name)
    try:
        yield
    finally:
        for name, value in restored.items():
            setattr(torch, name, value)
        for name, value in hidden.items():
            setattr(torch.Tensor, name, value)


def expected_outputs(case: Any, inputs: CaseInputs) -> dict[str, np.ndarray]:
    """``out``: the reference output in float64 (what value cases compare with, and the shape
    every case's output must have); for "unmodified" cases also the inputs as given."""
    reference = load_solutions().attention
    q, k, v = (torch.from_numpy(np.array(x, dtype=np.float64)) for x in inputs.tensors())
    with pristine_torch():
        if case.function == "attention_function":
            out = reference.attention_function((q, k, v, inputs.mask))
        else:
            out = reference.multihead_attention(q, k, v, inputs.heads, inputs.mask)
        expected = {"out": out.detach().numpy().copy()}
    if case.kind == "unmodified":
        for name, array in zip(("queries", "keys", "values"), inputs.tensors(), strict=True):
            expected[f"{name}_after"] = np.array(array, copy=True)
    return expected


def describe_inputs(inputs: CaseInputs) -> str:
    """'b=2, t=5, heads=3, s=4, float32, causal mask' (sizes and form, never values)."""
    b, t, width = inputs.queries.shape
    sizes = f"b={b}, t={t}, heads={inputs.heads}, s={width // inputs.heads}"
    if inputs.function == "attention_function":
        sizes = f"b={b}, t={t}, s={width}"
    mask = "causal mask" + (" (mask=1)" if inputs.mask_as == "int" else "")
    parts = [sizes, str(inputs.queries.dtype), mask if inputs.mask else "no mask"]
    if inputs.layout == "sliced":
        parts.append("inputs sliced from a wider tensor")
    if inputs.requires_grad:
        parts.append("inputs require grad")
    return ", ".join(parts)
