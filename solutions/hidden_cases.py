"""The hidden test cases of the lab, defined once: sizes, dtypes, masks and forms, their
inputs drawn from a seed as plain data, and the reference outputs in float64.

The cases cover what the lab itself runs: sequences as long as the classifier's training
length and the generator's context, inputs sliced from a wider tensor and requiring grad
(as a model passes them), a mask given as any truthy value, and, for Task 2, an output
that must be assembled from the pool's results. ``solutions.hidden_tests`` judges them.
Instructor-only: never shipped to learners.
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

from solutions import attention as reference

# Inputs of the notebook's hidden cells; the sandboxed grader records the seed it used.
NOTEBOOK_SEED = 2020

FUNCTIONS = ("multihead_attention", "attention_function", "parallel_multihead_attention")
KINDS = ("forward", "gradient", "unmodified", "pool", "worker_pool")
POOL_KINDS = ("pool", "worker_pool")

# Scores q·k/sqrt(s) of a "large scores" case are around ±LARGE_SCORE: exp() overflows.
LARGE_SCORE = 1000.0
# The longest sequences the lab runs: the classifier trains on 256 tokens, the character
# generator on windows of 128 (a test keeps these in step with former's defaults).
TRAINING_LENGTH = 256
GENERATION_CONTEXT = 128

Range = tuple[int, int]


@dataclass(frozen=True)
class Case:
    """One hidden test case. Sizes are inclusive ranges, drawn from the seed.

    layout: "contiguous" or "sliced" (inputs are slices of a wider tensor); mask_as:
    "bool" or "int" (mask passed as 1/0); pool: "", "inline" or "workers" (see grader.learner.probe).
    """

    name: str
    grade_id: str
    function: str
    kind: str
    batch: Range
    length: Range
    heads: Range
    head_size: Range
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


def _sizes(value: int | Range) -> Range:
    return (value, value) if isinstance(value, int) else value


def _case(
    name: str,
    kind: str = "forward",
    *,
    b: int | Range,
    t: int | Range,
    h: int | Range = 1,
    s: int | Range,
    **options: Any,
) -> dict[str, Any]:
    return dict(
        name=name,
        kind=kind,
        batch=_sizes(b),
        length=_sizes(t),
        heads=_sizes(h),
        head_size=_sizes(s),
        **options,
    )


def _group(grade_id: str, task: int, points: int, function: str, cases: list[dict]) -> Group:
    return Group(
        grade_id,
        task,
        points,
        function,
        [Case(grade_id=grade_id, function=function, **case) for case in cases],
    )


def _build_groups() -> dict[str, Group]:
    mha, head, par = FUNCTIONS
    random = {"b": (1, 4), "t": (2, 16), "h": (2, 6), "s": (2, 12)}
    longest, context, f64 = TRAINING_LENGTH, GENERATION_CONTEXT, {"dtype": "float64"}
    inline, masked = {"pool": "inline"}, {"mask": True}
    groups = [
        _group(
            "test_task1_values",
            1,
            20,
            mha,
            [
                _case("small_float32", b=2, t=5, h=3, s=4),
                _case("random_float32", **random),
                _case("random_float64", **random, **f64),
                _case("sixteen_heads_float64", b=2, t=9, h=16, s=2, **f64),
                _case("training_length_batch_of_one", b=1, t=longest, h=2, s=4),
                _case("sliced_inputs", b=2, t=12, h=3, s=4, layout="sliced"),
                _case("inputs_require_grad", b=2, t=7, h=2, s=4, requires_grad=True),
            ],
        ),
        _group(
            "test_task1_mask",
            1,
            15,
            mha,
            [
                _case("masked_small_float32", b=2, t=5, h=3, s=4, **masked),
                _case("masked_random_float32", **random, **masked),
                _case("masked_random_float64", **random, **masked, **f64),
                _case("masked_generation_context", b=1, t=context, h=2, s=4, **masked),
                _case("masked_training_length", b=1, t=longest, h=2, s=2, **masked),
                _case("mask_given_as_one", b=2, t=6, h=2, s=4, mask_as="int", **masked),
                _case("masked_sliced_inputs", b=2, t=10, h=2, s=3, layout="sliced", **masked),
            ],
        ),
        _group(
            "test_task1_robust",
            1,
            10,
            mha,
            [
                _case("large_scores_float32", b=2, t=8, h=2, s=4, large_scores=True),
                _case(
                    "large_scores_masked_float64",
                    b=2,
                    t=8,
                    h=3,
                    s=5,
                    large_scores=True,
                    **masked,
                    **f64,
                ),
                _case("one_position_masked", b=3, t=1, h=2, s=4, **masked),
                _case("one_head_masked_float64", b=2, t=6, h=1, s=8, **masked, **f64),
                _case("head_size_one_masked", b=2, t=5, h=4, s=1, **masked),
                _case("all_sizes_one_float64", b=1, t=1, h=1, s=1, **f64),
                _case("inputs_unmodified", "unmodified", b=2, t=6, h=2, s=4, **masked),
            ],
        ),
        _group(
            "test_task1_gradients",
            1,
            15,
            mha,
            [
                _case("gradients_float64", "gradient", b=2, t=5, h=3, s=4, **f64),
                _case("gradients_masked_float64", "gradient", b=2, t=6, h=2, s=3, **masked, **f64),
                _case("gradients_masked_float32", "gradient", **random, **masked),
                _case(
                    "gradients_masked_training_length",
                    "gradient",
                    b=1,
                    t=longest,
                    h=2,
                    s=2,
                    **masked,
                ),
            ],
        ),
        _group(
            "test_task2_attention_function",
            2,
            10,
            head,
            [
                _case("head_float32", b=2, t=6, s=4),
                _case("head_masked_float64", b=(1, 3), t=(2, 12), s=(2, 8), **masked, **f64),
                _case("head_one_position_masked", b=2, t=1, s=3, **masked),
                _case("head_large_scores_masked", b=2, t=7, s=4, large_scores=True, **masked),
                _case("head_masked_training_length", b=1, t=longest, s=4, **masked),
                _case(
                    "head_sliced_mask_as_one",
                    b=2,
                    t=8,
                    s=4,
                    layout="sliced",
                    mask_as="int",
                    **masked,
                ),
            ],
        ),
        _group(
            "test_task2_parallel_values",
            2,
            15,
            par,
            [
                _case("parallel_float32", b=2, t=6, h=3, s=4, **inline),
                _case("parallel_masked_float64", **random, **masked, **f64, **inline),
                _case("parallel_one_head_one_token_masked", b=2, t=1, h=1, s=6, **masked, **inline),
                _case("parallel_sixteen_heads_masked", b=1, t=8, h=16, s=2, **masked, **inline),
                _case(
                    "parallel_masked_training_length", b=1, t=longest, h=2, s=2, **masked, **inline
                ),
                _case(
                    "parallel_sliced_mask_as_one",
                    b=2,
                    t=7,
                    h=3,
                    s=4,
                    layout="sliced",
                    mask_as="int",
                    **masked,
                    **inline,
                ),
            ],
        ),
        _group(
            "test_task2_pool_usage",
            2,
            15,
            par,
            [
                _case("one_item_per_head", "pool", b=2, t=6, h=4, s=3, **inline),
                _case("one_item_per_head_masked", "pool", b=1, t=5, h=2, s=4, **masked, **inline),
                _case(
                    "worker_processes", "worker_pool", b=2, t=6, h=3, s=4, pool="workers", **masked
                ),
            ],
        ),
    ]
    return {group.grade_id: group for group in groups}


GROUPS: dict[str, Group] = _build_groups()
CASES: dict[str, Case] = {case.name: case for group in GROUPS.values() for case in group.cases}


# -- inputs and expected outputs (plain data) ---------------------------------------------------


def _rng(case: Case, seed: int) -> np.random.Generator:
    # Each case gets its own stream, stable across Python runs (no hash randomisation).
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(case.name.encode())])


def case_inputs(case: Case, seed: int) -> dict[str, Any]:
    """The inputs of ``case`` for ``seed``, as plain data (see ``grader.learner.probe`` for the keys)."""
    rng = _rng(case, seed)
    b, t, heads, s = (
        int(rng.integers(lo, hi + 1))
        for lo, hi in (case.batch, case.length, case.heads, case.head_size)
    )
    q, k, v = (rng.standard_normal((b, t, heads * s)) for _ in range(3))
    if case.large_scores:
        # q·k/sqrt(s) then has standard deviation LARGE_SCORE.
        factor = math.sqrt(LARGE_SCORE)
        q, k = q * factor, k * factor
    dtype = np.dtype(case.dtype)
    inputs: dict[str, Any] = {
        "case": case.name,
        "function": case.function,
        "kind": case.kind,
        "queries": q.astype(dtype),
        "keys": k.astype(dtype),
        "values": v.astype(dtype),
        "heads": heads,
        "mask": bool(case.mask),
        "mask_as": case.mask_as,
        "layout": case.layout,
        "requires_grad": case.requires_grad,
        "pool": case.pool,
    }
    if case.kind == "gradient":
        inputs["upstream"] = rng.standard_normal((b, t, heads * s)).astype(dtype)
    if case.kind in POOL_KINDS:
        # A scale no one guesses: only an output built from the pool's results carries it.
        inputs["pool_scale"] = float(rng.uniform(1.5, 3.0))
    return inputs


def _float64(array: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(array, dtype=np.float64, copy=True))
    return tensor.requires_grad_(True) if requires_grad else tensor


@contextlib.contextmanager
def pristine_torch() -> Iterator[None]:
    """Temporarily undo monkeypatches of the torch functions the reference uses.

    As far as practical: module-level functions come back from torch's C tables;
    Python-level overrides on ``torch.Tensor`` that do not come from torch are hidden.
    """
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
    """The reference outputs for ``inputs``, from ``solutions.attention`` in float64."""
    wants_grad = case.kind == "gradient"
    q, k, v = (_float64(inputs[n], wants_grad) for n in ("queries", "keys", "values"))
    heads, mask = int(inputs["heads"]), bool(inputs["mask"])
    with pristine_torch():
        if case.function == "attention_function":
            out = reference.attention_function((q, k, v, mask))
        else:
            out = reference.multihead_attention(q, k, v, heads, mask)
        expected = {"out": out.detach().numpy().copy()}
        if wants_grad:
            (out * _float64(inputs["upstream"])).sum().backward()
            for name, tensor in (("queries", q), ("keys", k), ("values", v)):
                expected[f"grad_{name}"] = tensor.grad.numpy().copy()
    if case.kind == "unmodified":
        for name in ("queries", "keys", "values"):
            expected[f"{name}_after"] = np.array(inputs[name], copy=True)
    return expected


def describe_inputs(inputs: dict[str, Any]) -> str:
    """'b=2, t=5, heads=3, s=4, float32, causal mask' (sizes and form, never values)."""
    b, t, width = inputs["queries"].shape
    heads = int(inputs["heads"])
    sizes = (
        f"b={b}, t={t}, s={width}"
        if inputs["function"] == "attention_function"
        else (f"b={b}, t={t}, heads={heads}, s={width // heads}")
    )
    parts = [sizes, str(inputs["queries"].dtype)]
    if inputs["mask"]:
        parts.append("causal mask" + (" (mask=1)" if inputs.get("mask_as") == "int" else ""))
    else:
        parts.append("no mask")
    if inputs.get("layout") == "sliced":
        parts.append("inputs sliced from a wider tensor")
    if inputs.get("requires_grad"):
        parts.append("inputs require grad")
    return ", ".join(parts)
