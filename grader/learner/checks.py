"""Visible checks for the notebook, e.g. ``check_multihead_attention(multihead_attention);``.

Each runs the learner's function on small fixed examples and prints a ``✓``/``✗`` line per
property, judged by the grader's own rules (one tolerance, the forbidden operators, the names
the grader can recreate): a property they pass is never failed by the grader for the same
reason, though the grader runs more cases.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from former.threads import torch_threads
from grader.learner.diagnose import Diagnosis, diagnose_attention, diagnose_pool_usage
from grader.learner.pool import InstrumentedPool, function_origin
from grader.learner.properties import (
    EXAMPLE,
    LARGE,
    Run,
    agrees,
    attention_case,
    built_from_results,
    degenerate_sizes,
    example_inputs,
    gradients,
    importable,
    sliced_inputs,
    unmodified,
    unrecreatable_names,
)
from grader.learner.report import CheckReport, LearnerError, NotImplementedYet, call_learner


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


def _record_names(report: CheckReport, fn: Callable, name: str) -> None:
    unbound = unrecreatable_names(fn, name)
    if unbound is not None:
        report.diagnosis("uses only notebook names the grader can recreate", unbound)


# -- Task 1 ------------------------------------------------------------------------------------


@torch_threads(1)
def check_multihead_attention(fn: Callable) -> CheckReport:
    """Check ``fn(queries, keys, values, heads, mask=False)``: inputs (b, t, heads * s)."""
    report = CheckReport("multihead_attention")
    run = _serial(fn)
    b, t, heads, s = EXAMPLE
    first = _small_example(report, run, heads)
    if isinstance(first, CheckReport):
        return first
    scale_mistake = first.mistake is not None and "scale" in first.mistake
    if first.correct or scale_mistake:
        report.record(
            "scales the scores by 1/sqrt(s)", not scale_mistake, first.message, first.mistake
        )
    record = report.check
    case = functools.partial(attention_case, run)
    sliced = functools.partial(sliced_inputs, run)
    record("causal mask (mask=True): position i sees only j <= i", case, b, t, heads, s, True)
    record("stable on large scores (around ±1000)", case, 2, 6, 2, 4, False, scale=LARGE)
    record("works with one position, one head, head size 1", degenerate_sizes, run)
    record("long sequences (t = 256, the training length, with mask)", case, 1, 256, 2, 4, True)
    record(
        "inputs as a model passes them (slices of one tensor, requiring grad, mask=1)", sliced, 3
    )
    record("float64 inputs (with mask)", case, 2, 4, 2, 3, True, dtype=torch.float64)
    record("gradients flow to queries, keys and values (with mask)", gradients, run, 2, 5, 2, 3)
    record("leaves its inputs unmodified", unmodified, run, 2, 4, 2, 3)
    _record_names(report, fn, "multihead_attention")
    return report.finish()


# -- Task 2 ------------------------------------------------------------------------------------


@torch_threads(1)
def check_attention_function(fn: Callable) -> CheckReport:
    """Check ``fn((q, k, v, mask))`` for one head: q, k, v of shape (b, t, s)."""
    report = CheckReport("attention_function")

    def run(q: Any, k: Any, v: Any, heads: int, mask: Any) -> Any:
        return call_learner(fn, (q, k, v, mask))  # heads is always 1

    first = _small_example(report, run, 1)
    if isinstance(first, CheckReport):
        return first
    b, t, _, s = EXAMPLE
    record = report.check
    case = functools.partial(attention_case, run)
    sliced = functools.partial(sliced_inputs, run)
    record("causal mask (mask=True)", case, b, t, 1, s, True)
    record("stable on large scores (around ±1000)", case, 2, 6, 1, 4, True, scale=LARGE)
    record("works with one position", case, 3, 1, 1, 4, True)
    record("float64 inputs (with mask)", case, 2, 4, 1, 3, True, dtype=torch.float64)
    record("gradients flow to q, k and v (with mask)", gradients, run, 2, 5, 1, 3)
    record("long sequences (t = 256, the training length, with mask)", case, 1, 256, 1, 4, True)
    record(
        "a head sliced out of a wider tensor, mask=1 (as parallel_multihead_attention passes it)",
        sliced,
        1,
        requires_grad=False,
    )
    record("leaves its inputs unmodified", unmodified, run, 2, 4, 1, 3)
    record(
        "importable by worker processes (defined in a module such as my_transformer_model)",
        lambda: importable(*function_origin(fn)[2:]),
    )
    return report.finish()


@torch_threads(1)
def check_parallel_multihead_attention(
    fn: Callable, pool: Any = None, reference: Callable | None = None
) -> CheckReport:
    """Check ``fn(queries, keys, values, heads, mask=False, pool=pool)``.

    pool: the learner's pool (each call is recorded through an InstrumentedPool wrapper);
    None runs the heads in this process. reference: the learner's serial
    ``multihead_attention``, to show both agree.
    """
    report = CheckReport("parallel_multihead_attention")
    calls: list = []

    def run(q: Any, k: Any, v: Any, heads: int, mask: Any, result_scale: float = 1.0) -> Any:
        recorder = InstrumentedPool(pool=pool, result_scale=result_scale)
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
    record = report.check
    case = functools.partial(attention_case, run)
    sliced = functools.partial(sliced_inputs, run)
    record("causal mask (mask=True)", case, b, t, heads, s, True)
    record("the output is built from the results pool.map returns", built_from_results, run, calls)
    record("works with one head and one position", degenerate_sizes, run)
    record("long sequences (t = 256, with mask)", case, 1, 256, 2, 4, True)
    record("inputs sliced from one wider tensor, mask=1", sliced, 3, requires_grad=False)
    _record_names(report, fn, "parallel_multihead_attention")
    if reference is not None:
        record("agrees with your multihead_attention", agrees, run, _serial(reference))
    return report.finish()
