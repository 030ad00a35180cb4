"""The hidden test cases of the lab, defined once: sizes, dtypes, masks, forms and points.

The cases cover what the lab itself runs: the classifier's training length and the
generator's context, inputs sliced from a wider tensor and requiring grad (as a model passes
them), a mask given as any truthy value, and, for Task 2, an output that must be assembled
from the pool's results. The judge (``grader.judge``) draws their inputs and decides their
verdicts. Instructor-only: plain data, importing nothing from the grader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Inputs of the notebook's hidden cells; the sandboxed grader records the seed it used.
NOTEBOOK_SEED = 2020

POOL_KINDS = ("pool", "worker_pool")
# What each kind of case checks (grader.learner.probe says which calls it makes).
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
# The longest sequences the lab runs: the classifier trains on 512 tokens, the character
# generator on windows of 128 (a test keeps these in step with former's defaults).
TRAINING_LENGTH = 512
GENERATION_CONTEXT = 128

Range = tuple[int, int]


@dataclass(frozen=True)
class Case:
    """One hidden test case; sizes are inclusive ranges, drawn from the seed. kind and the
    other fields are the probe's inputs of the same names (``grader.learner.probe_io``)."""

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


_MHA, _HEAD, _PAR = "multihead_attention", "attention_function", "parallel_multihead_attention"
_DRAWN = ((1, 4), (2, 16), (2, 6), (2, 12))  # b, t, heads, s: random shapes
_F64, _MASKED = {"dtype": "float64"}, {"mask": True}
_CAUSAL, _LARGE = {"mask": True, "kind": "causal"}, {"large_scores": True, "kind": "bounded"}
_SLICED, _AS_INT, _INLINE = {"layout": "sliced"}, {"mask_as": "int"}, {"pool": "inline"}
_GRAD, _HEADS = {"kind": "gradient"}, {"kind": "heads", "pool": "inline"}
# (grade id, task, points, function) -> its cases
_TABLE = {
    ("test_task1_values", 1, 20, _MHA): [
        _case("small_float32", 2, 5, 3, 4),
        _case("random_float32", *_DRAWN),
        _case("random_float64", *_DRAWN, **_F64),
        _case("sixteen_heads_float64", 2, 9, 16, 2, **_F64),
        _case("one_head_float64", 2, 6, 1, 8, **_F64),
        _case("head_size_one", 2, 5, 4, 1),
        _case("training_length_batch_of_one", 1, TRAINING_LENGTH, 2, 4),
        _case("sliced_inputs", 2, 12, 3, 4, **_SLICED),
        _case("inputs_require_grad", 2, 7, 2, 4, requires_grad=True),
    ],
    # Causality as a property of the learner's own function, whatever its values.
    ("test_task1_mask", 1, 15, _MHA): [
        _case("masked_small_float32", 2, 5, 3, 4, **_CAUSAL),
        _case("masked_random_float32", *_DRAWN, **_CAUSAL),
        _case("masked_random_float64", *_DRAWN, **_CAUSAL, **_F64),
        _case("masked_one_position", 3, 1, 2, 4, **_CAUSAL),
        _case("masked_one_head_float64", 2, 6, 1, 8, **_CAUSAL, **_F64),
        _case("masked_head_size_one", 2, 5, 4, 1, **_CAUSAL),
        _case("masked_generation_context", 1, GENERATION_CONTEXT, 2, 4, **_CAUSAL),
        _case("masked_training_length", 1, TRAINING_LENGTH, 2, 2, **_CAUSAL),
        _case("mask_given_as_one", 2, 6, 2, 4, **_AS_INT, **_CAUSAL),
        _case("masked_sliced_inputs", 2, 10, 2, 3, **_SLICED, **_CAUSAL),
    ],
    # Finite, bounded output on huge scores; one position gives its own value (whatever
    # the scale); inputs left as they were.
    ("test_task1_robust", 1, 10, _MHA): [
        _case("large_scores_float32", 2, 8, 2, 4, **_LARGE),
        _case("large_scores_masked_float64", 2, 8, 3, 5, **_LARGE, **_MASKED, **_F64),
        _case("one_position", 3, 1, 2, 4),
        _case("all_sizes_one_float64", 1, 1, 1, 1, **_F64),
        _case("inputs_unmodified", 2, 6, 2, 4, kind="unmodified", **_MASKED),
    ],
    # The learner's backward against finite differences of its own forward.
    ("test_task1_gradients", 1, 15, _MHA): [
        _case("gradients_float64", 2, 5, 3, 4, **_GRAD, **_F64),
        _case("gradients_masked_float64", 2, 6, 2, 3, **_GRAD, **_MASKED, **_F64),
        _case("gradients_masked_float32", *_DRAWN, **_GRAD, **_MASKED),
        _case("gradients_masked_training_length", 1, TRAINING_LENGTH, 2, 2, **_GRAD, **_MASKED),
    ],
    ("test_task2_attention_function", 2, 10, _HEAD): [
        _case("head_float32", 2, 6, 1, 4),
        _case("head_masked_float64", (1, 3), (2, 12), 1, (2, 8), **_MASKED, **_F64),
        _case("head_one_position_masked", 2, 1, 1, 3, **_MASKED),
        _case("head_large_scores_masked", 2, 7, 1, 4, **_LARGE, **_MASKED),
        _case("head_masked_training_length", 1, TRAINING_LENGTH, 1, 4, **_MASKED),
        _case("head_sliced_mask_as_one", 2, 8, 1, 4, **_SLICED, **_AS_INT, **_MASKED),
    ],
    ("test_task2_parallel_values", 2, 15, _PAR): [
        _case("parallel_float32", 2, 6, 3, 4, **_HEADS),
        _case("parallel_masked_float64", *_DRAWN, **_MASKED, **_F64, **_HEADS),
        _case("parallel_one_head_one_token_masked", 2, 1, 1, 6, **_MASKED, **_HEADS),
        _case("parallel_sixteen_heads_masked", 1, 8, 16, 2, **_MASKED, **_HEADS),
        _case("parallel_masked_training_length", 1, TRAINING_LENGTH, 2, 2, **_MASKED, **_HEADS),
        _case("parallel_sliced_mask_as_one", 2, 7, 3, 4, **_SLICED, **_AS_INT, **_MASKED, **_HEADS),
    ],
    ("test_task2_pool_usage", 2, 15, _PAR): [
        _case("one_item_per_head", 2, 6, 4, 3, kind="pool", **_INLINE),
        _case("one_item_per_head_masked", 1, 5, 2, 4, kind="pool", **_MASKED, **_INLINE),
        _case("worker_processes", 2, 6, 3, 4, kind="worker_pool", pool="workers", **_MASKED),
    ],
}


GROUPS: dict[str, Group] = {
    grade_id: Group(
        grade_id, task, points, function,
        [Case(**case, grade_id=grade_id, function=function) for case in cases],
    )
    for (grade_id, task, points, function), cases in _TABLE.items()
}  # fmt: skip
CASES: dict[str, Case] = {case.name: case for group in GROUPS.values() for case in group.cases}
