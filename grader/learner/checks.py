"""Visible checks for the notebook: one printed line per property, and a named mistake.

Each check runs the learner's function on small fixed examples, prints ``✓``/``✗``
per property and, for a wrong answer, which known mistake it looks like and a
hint. A stub that raises ``NotImplementedError`` gets "not implemented yet"; any
other error shows its type, message and the line of the learner's code, never
a traceback. Every check returns a :class:`CheckReport` (``report.passed``).

The checks judge by the grader's own rules (one tolerance, the forbidden operators, the
names the grader can recreate), so a property they pass is never failed by the grader
for the same reason; the grader runs more cases than they do.

Usage in a notebook cell::

    from grader.learner.checks import check_multihead_attention
    check_multihead_attention(multihead_attention);
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from former.threads import torch_threads
from grader.learner.diagnose import Diagnosis, diagnose_attention, diagnose_pool_usage
from grader.learner.mistakes import POOL_MISTAKES_BY_KEY
from grader.learner.pool import InstrumentedPool, function_origin
from grader.learner.probe import tripwires
from grader.learner.properties import (
    EXAMPLE,
    LARGE,
    agrees,
    attention_case,
    built_from_results,
    degenerate_sizes,
    example_inputs,
    gradients,
    head_case,
    model_like_inputs,
    names_the_grader_cannot_recreate,
    sliced_head,
    unmodified,
)
from grader.learner.report import (
    Checker,
    CheckReport,
    LearnerError,
    NotImplementedYet,
    call_learner,
    record_property,
)


def _single_threaded(check: Callable[..., CheckReport]) -> Callable[..., CheckReport]:
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> CheckReport:
        tripwires().take()  # what an earlier, interrupted check left behind
        with torch_threads(1):
            return check(*args, **kwargs)

    return run


def _record_names(checker: Checker, fn: Callable, name: str) -> None:
    names = names_the_grader_cannot_recreate(fn, name)
    if names:
        listed = ", ".join(f"`{n}`" for n in names)
        checker.record(
            "uses only notebook names the grader can recreate",
            False,
            f"{listed} {'is' if len(names) == 1 else 'are'} set by a magic, exec or "
            "globals(), which the grader does not re-run (it re-runs only the ordinary "
            "statements that bind the names your function uses): set "
            f"{'it' if len(names) == 1 else 'them'} with an ordinary statement in a cell "
            "above, or inside the function",
            "unbound_names",
        )


def _small_example(checker: Checker, run: Callable[..., Any]) -> Diagnosis | CheckReport:
    """Run on the small example and record its shape and values.

    Returns the diagnosis of the output, or the finished report when there is
    nothing more to check (a stub, a crash, a wrong shape).
    """
    b, t, heads, s = EXAMPLE
    q, k, v = example_inputs(b, t, heads, s)
    try:
        out = run(q.clone(), k.clone(), v.clone(), heads, False)
    except NotImplementedYet:
        return checker.not_implemented()
    except LearnerError as failure:
        checker.record("runs on a small example (b=2, t=5, heads=3, s=4)", False, str(failure))
        return checker.finish()
    shape_ok = isinstance(out, torch.Tensor) and tuple(out.shape) == (b, t, heads * s)
    first = diagnose_attention(out, q, k, v, heads, False)
    checker.record(
        f"returns a tensor of shape (b, t, heads * s) = {(b, t, heads * s)}",
        shape_ok,
        first.message if not shape_ok else "",
        first.mistake if not shape_ok else None,
    )
    if not shape_ok:
        return checker.finish()
    checker.diagnosis("matches the reference on a small example (no mask)", first)
    return first


# -- Task 1 ------------------------------------------------------------------------------------


@_single_threaded
def check_multihead_attention(fn: Callable) -> CheckReport:
    """Check ``fn(queries, keys, values, heads, mask=False)``: inputs (b, t, heads * s)."""
    checker = Checker("multihead_attention")
    b, t, heads, s = EXAMPLE
    first = _small_example(checker, lambda *args: call_learner(fn, *args))
    if isinstance(first, CheckReport):
        return first
    scale_mistake = first.mistake is not None and "scale" in first.mistake
    if first.correct or scale_mistake:
        checker.record(
            "scales the scores by 1/sqrt(s)", not scale_mistake, first.message, first.mistake
        )

    record_property(
        checker,
        "causal mask (mask=True): position i sees only j <= i",
        lambda: attention_case(fn, b, t, heads, s, True),
    )
    record_property(
        checker,
        "stable on large scores (around ±1000)",
        lambda: attention_case(fn, 2, 6, 2, 4, False, scale=LARGE),
    )
    record_property(
        checker,
        "works with one position, one head, head size 1",
        lambda: degenerate_sizes(fn, attention_case),
    )
    record_property(
        checker,
        "long sequences (t = 256, the training length, with mask)",
        lambda: attention_case(fn, 1, 256, 2, 4, True),
    )
    record_property(
        checker,
        "inputs as a model passes them (slices of one tensor, requiring grad, mask=1)",
        lambda: model_like_inputs(fn, 2, 6, 3, 4),
    )
    record_property(
        checker,
        "float64 inputs (with mask)",
        lambda: attention_case(fn, 2, 4, 2, 3, True, dtype=torch.float64),
    )
    record_property(
        checker,
        "gradients flow to queries, keys and values (with mask)",
        lambda: gradients(lambda q, k, v: call_learner(fn, q, k, v, 2, True), 2, 2, 5, 3),
    )
    record_property(
        checker,
        "leaves its inputs unmodified",
        lambda: unmodified(lambda q, k, v: call_learner(fn, q, k, v, 2, True), 2, 4, 6),
    )
    _record_names(checker, fn, "multihead_attention")
    return checker.finish()


# -- Task 2 ------------------------------------------------------------------------------------


def _importable(fn: Callable) -> tuple[bool, str]:
    _, _, importable, why = function_origin(fn)
    if importable:
        return True, ""
    mistake = POOL_MISTAKES_BY_KEY["worker_not_importable"]
    return False, f"{why}. Hint: {mistake.hint}"


@_single_threaded
def check_attention_function(fn: Callable) -> CheckReport:
    """Check ``fn((q, k, v, mask))`` for one head: q, k, v of shape (b, t, s)."""
    checker = Checker("attention_function")
    b, t, s = 2, 5, 4
    q, k, v = example_inputs(b, t, 1, s)
    try:
        out = call_learner(fn, (q.clone(), k.clone(), v.clone(), False))
    except NotImplementedYet:
        return checker.not_implemented()
    except LearnerError as failure:
        checker.record("runs on one head (b=2, t=5, s=4)", False, str(failure))
        return checker.finish()
    shape_ok = isinstance(out, torch.Tensor) and tuple(out.shape) == (b, t, s)
    first = diagnose_attention(out, q, k, v, 1, False)
    checker.record(
        f"returns a tensor of shape (b, t, s) = {(b, t, s)}",
        shape_ok,
        first.message if not shape_ok else "",
        first.mistake if not shape_ok else None,
    )
    if not shape_ok:
        return checker.finish()
    checker.diagnosis("matches the reference on one head (no mask)", first)
    record_property(checker, "causal mask (mask=True)", lambda: head_case(fn, b, t, 1, s, True))
    record_property(
        checker,
        "stable on large scores (around ±1000)",
        lambda: head_case(fn, 2, 6, 1, 4, True, scale=LARGE),
    )
    record_property(checker, "works with one position", lambda: head_case(fn, 3, 1, 1, 4, True))
    record_property(
        checker,
        "float64 inputs (with mask)",
        lambda: head_case(fn, 2, 4, 1, 3, True, dtype=torch.float64),
    )
    record_property(
        checker,
        "gradients flow to q, k and v (with mask)",
        lambda: gradients(lambda q, k, v: call_learner(fn, (q, k, v, True)), 1, 2, 5, 3),
    )
    record_property(
        checker,
        "long sequences (t = 256, the training length, with mask)",
        lambda: head_case(fn, 1, 256, 1, 4, True),
    )
    record_property(
        checker,
        "a head sliced out of a wider tensor, mask=1 (as parallel_multihead_attention passes it)",
        lambda: sliced_head(fn, 2, 6, 4),
    )
    record_property(
        checker,
        "leaves its inputs unmodified",
        lambda: unmodified(lambda q, k, v: call_learner(fn, (q, k, v, True)), 2, 4, 3),
    )
    passed, detail = _importable(fn)
    checker.record(
        "importable by worker processes (defined in a module such as my_transformer_model)",
        passed,
        detail,
        None if passed else "worker_not_importable",
    )
    return checker.finish()


@_single_threaded
def check_parallel_multihead_attention(
    fn: Callable, pool: Any = None, reference: Callable | None = None
) -> CheckReport:
    """Check ``fn(queries, keys, values, heads, mask=False, pool=pool)``.

    pool: the learner's pool (each call is recorded through an InstrumentedPool
    wrapper); None runs the heads in this process. reference: the learner's serial
    ``multihead_attention``, to show both agree.
    """
    checker = Checker("parallel_multihead_attention")
    calls: list = []

    def run(q: Any, k: Any, v: Any, heads: int, mask: Any, result_scale: float = 1.0) -> Any:
        recorder = InstrumentedPool(pool=pool, result_scale=result_scale)
        out = call_learner(fn, q, k, v, heads, mask, pool=recorder)
        calls[:] = recorder.calls
        return out

    b, t, heads, s = EXAMPLE
    first = _small_example(checker, run)
    if isinstance(first, CheckReport):
        return first

    usage = diagnose_pool_usage(calls, heads, head_shape=(b, t, s), require_importable=False)
    checker.diagnosis("one pool.map call with one (q, k, v, mask) item per head", usage)
    if calls:
        importable, why = calls[0].importable, calls[0].why_not_importable
        mistake = POOL_MISTAKES_BY_KEY["worker_not_importable"]
        checker.record(
            "the mapped function is importable by worker processes (spawn, forkserver)",
            importable,
            "" if importable else f"{why}. Hint: {mistake.hint}",
            None if importable else mistake.key,
        )

    def parallel_case(
        fn_: Callable, b: int, t: int, heads: int, s: int, mask: bool, **example: Any
    ) -> Diagnosis:
        q, k, v = example_inputs(b, t, heads, s, **example)
        return diagnose_attention(
            run(q.clone(), k.clone(), v.clone(), heads, mask), q, k, v, heads, mask
        )

    record_property(
        checker, "causal mask (mask=True)", lambda: parallel_case(fn, b, t, heads, s, True)
    )
    record_property(
        checker,
        "the output is built from the results pool.map returns",
        lambda: built_from_results(run, calls),
    )
    record_property(
        checker,
        "works with one head and one position",
        lambda: degenerate_sizes(fn, parallel_case),
    )
    record_property(
        checker,
        "long sequences (t = 256, with mask)",
        lambda: parallel_case(fn, 1, 256, 2, 4, True),
    )
    record_property(
        checker,
        "inputs sliced from one wider tensor, mask=1",
        lambda: model_like_inputs(run, 2, 6, 3, 4, requires_grad=False),
    )
    _record_names(checker, fn, "parallel_multihead_attention")
    if reference is not None:
        record_property(
            checker, "agrees with your multihead_attention", lambda: agrees(run, reference)
        )
    return checker.finish()
