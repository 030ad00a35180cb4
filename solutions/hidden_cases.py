"""The hidden test cases of the lab, defined once: sizes, dtypes, masks and forms, their
inputs drawn from a seed as plain data, and the reference outputs in float64.

The cases cover what the lab itself runs: the classifier's training length and the
generator's context, inputs sliced from a wider tensor and requiring grad (as a model passes
them), a mask given as any truthy value, and, for Task 2, an output that must be assembled
from the pool's results. ``solutions.hidden_tests`` judges them. Instructor-only.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from grader.learner.probe import property_inputs
from solutions import attention as reference

# Inputs of the notebook's hidden cells; the sandboxed grader records the seed it used.
NOTEBOOK_SEED = 2020

POOL_KINDS = ("pool", "worker_pool")
# What each kind of case checks (see grader.learner.probe for the calls it makes).
KINDS = {
    "forward": "values, compared with the reference",
    "causal": "causality of the learner's own masked function",
    "bounded": "finite output within the range of the values on huge scores",
    "unmodified": "inputs left unmodified",
    "gradient": "the learner's backward against finite differences of its forward",
    "heads": "the parallel output against the learner's own attention_function, head by head",
    "pool": "one map call, one item per head, output assembled from the pool's results",
    "worker_pool": "the same with worker processes, which must import the mapped function",
}

# Scores q·k/sqrt(s) of a "large scores" case are around ±LARGE_SCORE: exp() overflows.
LARGE_SCORE = 1000.0
# The longest sequences the lab runs: the classifier trains on 256 tokens, the character
# generator on windows of 128 (a test keeps these in step with former's defaults).
TRAINING_LENGTH = 256
GENERATION_CONTEXT = 128

Range = tuple[int, int]


@dataclass(frozen=True)
class Case:
    """One hidden test case; sizes are inclusive ranges, drawn from the seed. kind and the
    other fields are the probe's inputs of the same names (see ``grader.learner.probe``)."""

    name: str
    grade_id: str
    function: str
    batch: Range
    length: Range
    heads: Range
    head_size: Range
    kind: str = "forward"
    dtype: str = "float32"
    mask: bool = False
    large_scores: bool = False
    pool: str = ""
    layout: str = "contiguous"
    mask_as: str = "bool"
    requires_grad: bool = False


@dataclass(frozen=True)
class Group:
    """One nbgrader test cell: all its cases must pass for its points."""

    grade_id: str
    task: int
    points: int
    function: str
    cases: list[Case]


def _case(
    name: str, b: int | Range, t: int | Range, h: int | Range, s: int | Range, **options: Any
) -> dict[str, Any]:
    """A case's fields: batch, length, heads and head size, each a number or a range."""
    b, t, h, s = ((x, x) if isinstance(x, int) else x for x in (b, t, h, s))
    return dict(name=name, batch=b, length=t, heads=h, head_size=s, **options)


def _build_groups() -> dict[str, Group]:
    mha, head, par = "multihead_attention", "attention_function", "parallel_multihead_attention"
    drawn = ((1, 4), (2, 16), (2, 6), (2, 12))  # b, t, heads, s: random shapes
    long, context = TRAINING_LENGTH, GENERATION_CONTEXT
    f64, masked = {"dtype": "float64"}, {"mask": True}
    causal, large = {"mask": True, "kind": "causal"}, {"large_scores": True, "kind": "bounded"}
    sliced, as_int, inline = {"layout": "sliced"}, {"mask_as": "int"}, {"pool": "inline"}
    grad, heads = {"kind": "gradient"}, {"kind": "heads", "pool": "inline"}
    table = {
        ("test_task1_values", 1, 20, mha): [
            _case("small_float32", 2, 5, 3, 4),
            _case("random_float32", *drawn),
            _case("random_float64", *drawn, **f64),
            _case("sixteen_heads_float64", 2, 9, 16, 2, **f64),
            _case("one_head_float64", 2, 6, 1, 8, **f64),
            _case("head_size_one", 2, 5, 4, 1),
            _case("training_length_batch_of_one", 1, long, 2, 4),
            _case("sliced_inputs", 2, 12, 3, 4, **sliced),
            _case("inputs_require_grad", 2, 7, 2, 4, requires_grad=True),
        ],
        # Causality as a property of the learner's own function, whatever its values.
        ("test_task1_mask", 1, 15, mha): [
            _case("masked_small_float32", 2, 5, 3, 4, **causal),
            _case("masked_random_float32", *drawn, **causal),
            _case("masked_random_float64", *drawn, **causal, **f64),
            _case("masked_one_position", 3, 1, 2, 4, **causal),
            _case("masked_one_head_float64", 2, 6, 1, 8, **causal, **f64),
            _case("masked_head_size_one", 2, 5, 4, 1, **causal),
            _case("masked_generation_context", 1, context, 2, 4, **causal),
            _case("masked_training_length", 1, long, 2, 2, **causal),
            _case("mask_given_as_one", 2, 6, 2, 4, **as_int, **causal),
            _case("masked_sliced_inputs", 2, 10, 2, 3, **sliced, **causal),
        ],
        # Finite, bounded output on huge scores; one position gives its own value (whatever
        # the scale); inputs left as they were.
        ("test_task1_robust", 1, 10, mha): [
            _case("large_scores_float32", 2, 8, 2, 4, **large),
            _case("large_scores_masked_float64", 2, 8, 3, 5, **large, **masked, **f64),
            _case("one_position", 3, 1, 2, 4),
            _case("all_sizes_one_float64", 1, 1, 1, 1, **f64),
            _case("inputs_unmodified", 2, 6, 2, 4, kind="unmodified", **masked),
        ],
        # The learner's backward against finite differences of its own forward.
        ("test_task1_gradients", 1, 15, mha): [
            _case("gradients_float64", 2, 5, 3, 4, **grad, **f64),
            _case("gradients_masked_float64", 2, 6, 2, 3, **grad, **masked, **f64),
            _case("gradients_masked_float32", *drawn, **grad, **masked),
            _case("gradients_masked_training_length", 1, long, 2, 2, **grad, **masked),
        ],
        ("test_task2_attention_function", 2, 10, head): [
            _case("head_float32", 2, 6, 1, 4),
            _case("head_masked_float64", (1, 3), (2, 12), 1, (2, 8), **masked, **f64),
            _case("head_one_position_masked", 2, 1, 1, 3, **masked),
            _case("head_large_scores_masked", 2, 7, 1, 4, **large, **masked),
            _case("head_masked_training_length", 1, long, 1, 4, **masked),
            _case("head_sliced_mask_as_one", 2, 8, 1, 4, **sliced, **as_int, **masked),
        ],
        ("test_task2_parallel_values", 2, 15, par): [
            _case("parallel_float32", 2, 6, 3, 4, **heads),
            _case("parallel_masked_float64", *drawn, **masked, **f64, **heads),
            _case("parallel_one_head_one_token_masked", 2, 1, 1, 6, **masked, **heads),
            _case("parallel_sixteen_heads_masked", 1, 8, 16, 2, **masked, **heads),
            _case("parallel_masked_training_length", 1, long, 2, 2, **masked, **heads),
            _case("parallel_sliced_mask_as_one", 2, 7, 3, 4, **sliced, **as_int, **masked, **heads),
        ],
        ("test_task2_pool_usage", 2, 15, par): [
            _case("one_item_per_head", 2, 6, 4, 3, kind="pool", **inline),
            _case("one_item_per_head_masked", 1, 5, 2, 4, kind="pool", **masked, **inline),
            _case("worker_processes", 2, 6, 3, 4, kind="worker_pool", pool="workers", **masked),
        ],
    }
    groups = {}
    for (grade_id, task, points, function), cases in table.items():
        made = [Case(**case, grade_id=grade_id, function=function) for case in cases]
        groups[grade_id] = Group(grade_id, task, points, function, made)
    return groups


GROUPS: dict[str, Group] = _build_groups()
CASES: dict[str, Case] = {case.name: case for group in GROUPS.values() for case in group.cases}


# -- inputs and expected outputs (plain data) ---------------------------------------------------


def case_inputs(case: Case, seed: int) -> dict[str, Any]:
    """The inputs of ``case`` for ``seed``, as plain data (keys: see ``grader.learner.probe``)."""
    # Each case gets its own stream, stable across Python runs (no hash randomisation).
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(case.name.encode())])
    b, t, heads, s = (
        int(rng.integers(lo, hi + 1))
        for lo, hi in (case.batch, case.length, case.heads, case.head_size)
    )
    q, k, v = (rng.standard_normal((b, t, heads * s)) for _ in range(3))
    dtype = np.dtype(case.dtype)
    inputs: dict[str, Any] = {"case": case.name, "heads": heads, "mask": bool(case.mask)}
    if case.large_scores:
        # q·k/sqrt(s) then has standard deviation LARGE_SCORE; the calm ones are around ±1.
        inputs.update(calm_queries=q.astype(dtype), calm_keys=k.astype(dtype))
        factor = math.sqrt(LARGE_SCORE)
        q, k = q * factor, k * factor
    for name in ("function", "kind", "mask_as", "layout", "requires_grad", "pool"):
        inputs[name] = getattr(case, name)
    inputs.update(queries=q.astype(dtype), keys=k.astype(dtype), values=v.astype(dtype))
    inputs.update(property_inputs(case.kind, inputs, rng))
    if case.kind in POOL_KINDS:
        # A scale no one guesses: only an output built from the pool's results carries it.
        inputs["pool_scale"] = float(rng.uniform(1.5, 3.0))
    return inputs


def _float64(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float64, copy=True))


@contextlib.contextmanager
def pristine_torch() -> Iterator[None]:
    """Temporarily undo monkeypatches of the torch functions the reference uses, as far as
    practical: module functions come back from torch's C tables; Python-level attributes on
    ``torch.Tensor`` that do not come from torch are hidden."""
    originals = torch._C._VariableFunctions
    restored: dict[str, Any] = {}
    for name in ("bmm", "softmax", "triu", "ones", "cat", "matmul", "from_numpy", "exp"):
        current = getattr(torch, name, None)
        original = getattr(originals, name, None)
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


def expected_outputs(case: Case, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The reference output for ``inputs``, from ``solutions.attention`` in float64: what
    value cases compare with, and the shape every case's output must have."""
    q, k, v = (_float64(inputs[n]) for n in ("queries", "keys", "values"))
    heads, mask = int(inputs["heads"]), bool(inputs["mask"])
    with pristine_torch():
        if case.function == "attention_function":
            out = reference.attention_function((q, k, v, mask))
        else:
            out = reference.multihead_attention(q, k, v, heads, mask)
        expected = {"out": out.detach().numpy().copy()}
    if case.kind == "unmodified":
        for name in ("queries", "keys", "values"):
            expected[f"{name}_after"] = np.array(inputs[name], copy=True)
    return expected


def describe_inputs(inputs: dict[str, Any]) -> str:
    """'b=2, t=5, heads=3, s=4, float32, causal mask' (sizes and form, never values)."""
    b, t, width = inputs["queries"].shape
    heads = int(inputs["heads"])
    sizes = f"b={b}, t={t}, heads={heads}, s={width // heads}"
    if inputs["function"] == "attention_function":
        sizes = f"b={b}, t={t}, s={width}"
    mask = "causal mask" + (" (mask=1)" if inputs.get("mask_as") == "int" else "")
    parts = [sizes, str(inputs["queries"].dtype), mask if inputs["mask"] else "no mask"]
    if inputs.get("layout") == "sliced":
        parts.append("inputs sliced from a wider tensor")
    if inputs.get("requires_grad"):
        parts.append("inputs require grad")
    return ", ".join(parts)
