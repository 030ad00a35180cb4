"""Visible checks for the notebook, e.g. ``check_multihead_attention(multihead_attention);``.

Each runs the learner's function on small fixed examples and prints a ``✓``/``✗`` line per
property, judged by the grader's own rules (one tolerance, the forbidden operators, the names
the grader can recreate): a property they pass is never failed by the grader for the same
reason, though the grader runs more cases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from former.threads import torch_threads
from grader.learner.counting_pool import InstrumentedPool, function_origin
from grader.learner.diagnose import Diagnosis, diagnose_attention
from grader.learner.examples import (
    EXAMPLE,
    Run,
    agrees,
    example_inputs,
    importable,
    names_only_skipped_cells_bind,
    probe_property,
    visible_inputs,
)
from grader.learner.mistakes import MISTAKES_BY_KEY
from grader.learner.pool_mistakes import diagnose_pool_usage
from grader.learner.report import CheckReport, LearnerError, NotImplementedYet, call_learner
from grader.learner.weights_picture import picture_of_mistake


def _serial(fn: Callable) -> Run:
    """``fn(queries, keys, values, heads, mask)`` with the tripwires armed."""
    return lambda q, k, v, heads, mask: call_learner(fn, q, k, v, heads, mask)


def _small_example(report: CheckReport, run: Run, heads: int) -> Diagnosis | CheckReport:
    """Run on the small example (one head for ``heads=1``) and record its shape and values.

    Returns the diagnosis of the output, or the finished report when there is nothing more
    to check (a stub, a crash, a wrong shape).
    """
    b, t, _, s = EXAMPLE
    if heads == 1:
        where, sizes, layout = "one head", f"b={b}, t={t}, s={s}", "(b, t, s)"
    else:
        where, sizes = "a small example", f"b={b}, t={t}, heads={heads}, s={s}"
        layout = "(b, t, heads * s)"
    q, k, v = example_inputs(b, t, heads, s)
    try:
        out = run(q.clone(), k.clone(), v.clone(), heads, False)
    except NotImplementedYet:
        return report.stub()
    except LearnerError as failure:
        report.record(f"runs on {where} ({sizes})", False, str(failure))
        return report.finish()
    first = diagnose_attention(out, q, k, v, heads, False)
    shape = f"returns a tensor of shape {layout} = {tuple(q.shape)}"
    if not (isinstance(out, torch.Tensor) and tuple(out.shape) == tuple(q.shape)):
        report.record(shape, False, first.message, first.mistake)
        return report.finish()
    report.record(shape, True)
    report.diagnosis(f"matches the reference on {where} (no mask)", first)
    return first


def _picture(report: CheckReport, run: Run, heads: int) -> CheckReport:
    """Under the report, the learner's weights next to the expected ones when the first
    mistake named is one a picture explains (a mask or the softmax's axis)."""
    if report.mistakes and report.mistakes[0] in MISTAKES_BY_KEY:
        mistake = MISTAKES_BY_KEY[report.mistakes[0]]
        report.figure = picture_of_mistake(run, heads, mistake.key, mistake.title)
    return report


def _record_names(report: CheckReport, fn: Callable, name: str) -> None:
    needed = names_only_skipped_cells_bind(fn)
    if needed is not None:
        report.diagnosis("uses no name that only cells skipped while grading bind", needed)


# -- Task 1 ------------------------------------------------------------------------------------


def _prober(report: CheckReport, fn: Callable, function: str, **pool: Any) -> Callable[..., bool]:
    """``probe(name, kind, (b, t, heads, s), **example)``: record the verdict the grader's rules
    give for one property of ``fn`` on a small example (``visible_inputs``'s options)."""

    def probe(name: str, kind: str, sizes: tuple[int, ...], **example: Any) -> bool:
        example.setdefault("mask", False)
        inputs = visible_inputs(function, kind, *sizes, **example)
        return report.check(name, probe_property, report, fn, inputs, **pool)

    return probe


# What each check shows for Task 1: one line per test's property, as in the hidden tests.
_MASK_LINE = (
    "causal mask (mask=True): later positions change nothing, each position sees itself and "
    "earlier ones, position i gets what your function without the mask gives on positions 0..i"
)
_TASK1 = (
    ("float64 inputs", "forward", (2, 4, 2, 3), {"dtype": "float64"}),
    (
        "inputs as a model passes them (slices of one tensor, requiring grad)",
        "forward", (2, 6, 3, 4), {"layout": "sliced", "requires_grad": True},
    ),
    (_MASK_LINE, "causal", EXAMPLE, {"mask": True}),
    ("causal mask on long sequences (t = 512, the training length)", "causal", (1, 512, 2, 4),
     {"mask": True}),
    ("causal mask given as mask=1", "causal", (2, 6, 2, 4), {"mask": True, "mask_as": "int"}),
    ("stable on large scores (around ±1000): finite, within the range of the values", "bounded",
     (2, 6, 2, 4), {"mask": True, "large": True}),
    ("one position: the output is its value", "forward", (3, 1, 2, 4), {}),
    ("leaves its inputs unmodified", "unmodified", (2, 4, 2, 3), {"mask": True}),
    (
        "gradients reach queries, keys and values and agree with finite differences of your "
        "function (with mask)",
        "gradient", (2, 5, 2, 3), {"mask": True, "dtype": "float64"},
    ),
)  # fmt: skip


@torch_threads(1)
def check_multihead_attention(fn: Callable) -> CheckReport:
    """Check ``fn(queries, keys, values, heads, mask=False)``: inputs (b, t, heads * s).

    The lines follow the four tests: values (Test 1), the causal mask as a property of your
    own function (Test 2), robustness (Test 3), gradients (Test 4)."""
    report = CheckReport("multihead_attention", source=fn)
    first = _small_example(report, _serial(fn), EXAMPLE[2])
    if isinstance(first, CheckReport):
        return first
    scale_mistake = first.mistake is not None and "scale" in first.mistake
    if first.correct or scale_mistake:
        report.record(
            "scales the scores by 1/sqrt(s)", not scale_mistake, first.message, first.mistake
        )
    probe = _prober(report, fn, "multihead_attention")
    for name, kind, sizes, example in _TASK1:
        probe(name, kind, sizes, **example)
    _record_names(report, fn, "multihead_attention")
    return _picture(report.finish(), _serial(fn), EXAMPLE[2])


# -- Task 2 ------------------------------------------------------------------------------------

_TASK2_HEAD = (
    ("causal mask (mask=True)", "forward", (2, 5, 1, 4), {}),
    ("stable on large scores (around ±1000)", "forward", (2, 6, 1, 4), {"large": True}),
    ("works with one position", "forward", (3, 1, 1, 4), {}),
    ("float64 inputs (with mask)", "forward", (2, 4, 1, 3), {"dtype": "float64"}),
    ("long sequences (t = 512, the training length, with mask)", "forward", (1, 512, 1, 4), {}),
    ("a head sliced out of a wider tensor, mask=1 (as parallel_multihead_attention passes it)",
     "forward", (2, 6, 1, 4), {"layout": "sliced", "mask_as": "int"}),
    ("leaves its inputs unmodified", "unmodified", (2, 4, 1, 3), {}),
)  # fmt: skip
_TASK2_PARALLEL = (
    ("the output is built from the results pool.map returns", "pool", EXAMPLE, {"mask": False}),
    ("equals your attention_function applied head by head (mask=True)", "heads", EXAMPLE,
     {"mask": True}),
    ("works with one head and one position", "heads", (2, 1, 1, 6), {"mask": True}),
    ("long sequences (t = 512, with mask)", "heads", (1, 512, 2, 4), {"mask": True}),
    ("inputs sliced from one wider tensor, mask=1", "heads", (2, 6, 3, 4),
     {"mask": True, "layout": "sliced", "mask_as": "int"}),
)  # fmt: skip


@torch_threads(1)
def check_attention_function(fn: Callable) -> CheckReport:
    """Check ``fn((q, k, v, mask))`` for one head: q, k, v of shape (b, t, s)."""
    report = CheckReport("attention_function", source=fn)

    def run(q: Any, k: Any, v: Any, heads: int, mask: Any) -> Any:
        return call_learner(fn, (q, k, v, mask))  # heads is always 1

    first = _small_example(report, run, 1)
    if isinstance(first, CheckReport):
        return first
    probe = _prober(report, fn, "attention_function")
    for name, kind, sizes, example in _TASK2_HEAD:
        probe(name, kind, sizes, mask=True, **example)
    report.check(
        "importable by worker processes (defined in a module such as my_transformer_model)",
        lambda: importable(*function_origin(fn)[2:]),
    )
    return _picture(report.finish(), run, 1)


@torch_threads(1)
def check_parallel_multihead_attention(
    fn: Callable, pool: Any = None, reference: Callable | None = None
) -> CheckReport:
    """Check ``fn(queries, keys, values, heads, mask=False, pool=pool)``.

    pool: the learner's pool (each call is recorded through an InstrumentedPool wrapper);
    None runs the heads in this process. reference: the learner's serial
    ``multihead_attention``, to show both agree.
    """
    report = CheckReport("parallel_multihead_attention", source=fn)
    calls: list = []

    def run(q: Any, k: Any, v: Any, heads: int, mask: Any) -> Any:
        recorder = InstrumentedPool(pool=pool)
        out = call_learner(fn, q, k, v, heads, mask, pool=recorder)
        calls[:] = recorder.calls
        return out

    b, t, heads, s = EXAMPLE
    first = _small_example(report, run, heads)
    if isinstance(first, CheckReport):
        return first
    usage = diagnose_pool_usage(calls, heads, head_shape=(b, t, s), require_importable=False)
    report.diagnosis("one pool.map call with one (q, k, v, mask) item per head", usage)
    if calls:
        report.diagnosis(
            "the mapped function is importable by worker processes (spawn, forkserver)",
            importable(calls[0].importable, calls[0].why_not_importable),
        )

    for name, kind, sizes, example in _TASK2_PARALLEL:
        # A factor no one guesses: only an output built from the pool's results carries it.
        scale = 2.5 if kind == "pool" else 1.0

        def make_pool(mode: str, scale: float = scale) -> InstrumentedPool:
            return InstrumentedPool(pool=pool, result_scale=scale)

        probe = _prober(report, fn, "parallel_multihead_attention", make_pool=make_pool)
        probe(name, kind, sizes, pool="inline", **example)
    _record_names(report, fn, "parallel_multihead_attention")
    if reference is not None:
        named = report.mistakes[0] if report.mistakes else None
        report.check("agrees with your multihead_attention", agrees, run, _serial(reference), named)
    return report.finish()
