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

    from grader.checks import check_multihead_attention
    check_multihead_attention(multihead_attention);
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from former.attention import sdpa_attention
from former.threads import torch_threads
from grader.diagnose import Diagnosis, compare, diagnose_attention, diagnose_pool_usage, tolerance
from grader.forbidden import explain as explain_forbidden
from grader.instrumented_pool import InstrumentedPool, function_origin
from grader.mistakes import POOL_MISTAKES_BY_KEY
from grader.probe import describe_exception, tripwires, where_in_learner_code
from grader.replay import Cell, parse_statements, plan_replay

PASS, FAIL = "✓", "✗"
NOT_IMPLEMENTED = "not implemented yet — fill in the cell above"
MORE_WHEN_GRADED = (
    "More cases run when your notebook is graded (other shapes, float64, long sequences, "
    "gradients), so a pass here is not yet a promise of full marks."
)

# The small visible example: (b, t, heads, s).
EXAMPLE = (2, 5, 3, 4)


@dataclass
class CheckResult:
    """One property: its name, whether it holds, and what to do when it does not."""

    name: str
    passed: bool
    detail: str = ""
    mistake: str | None = None


@dataclass
class CheckReport:
    """All properties checked for one function; ``passed`` when every one holds."""

    function: str
    results: list[CheckResult] = field(default_factory=list)
    not_implemented: bool = False

    @property
    def passed(self) -> bool:
        return (
            not self.not_implemented and bool(self.results) and all(r.passed for r in self.results)
        )

    @property
    def mistakes(self) -> list[str]:
        """Keys of the known mistakes recognised, in the order found."""
        return list(dict.fromkeys(r.mistake for r in self.results if r.mistake))

    def __repr__(self) -> str:
        if self.not_implemented:
            return f"<CheckReport {self.function}: not implemented yet>"
        ok = sum(r.passed for r in self.results)
        return f"<CheckReport {self.function}: {ok}/{len(self.results)} checks passed>"


class _NotImplemented(Exception):
    """The learner's function raised NotImplementedError: the stub is not filled in yet."""


class _Failed(Exception):
    """The learner's function raised something else; the message says what and where."""


class _Checker:
    """Prints lines as properties are checked and collects them into a report."""

    def __init__(self, function: str) -> None:
        self.report = CheckReport(function)
        self._explained: set[str] = set()
        print(f"Checking {function}:")

    def record(self, name: str, passed: bool, detail: str = "", mistake: str | None = None) -> bool:
        self.report.results.append(CheckResult(name, passed, detail, mistake))
        print(f"  {PASS if passed else FAIL} {name}")
        if not passed and detail:
            if mistake and mistake in self._explained:
                print("      ↳ the same mistake as above")
            else:
                print(f"      ↳ {detail}")
        if mistake:
            self._explained.add(mistake)
        return passed

    def diagnosis(self, name: str, diagnosis: Diagnosis) -> bool:
        return self.record(name, diagnosis.correct, diagnosis.message, diagnosis.mistake)

    def not_implemented(self) -> CheckReport:
        self.report.not_implemented = True
        print(f"  {FAIL} {NOT_IMPLEMENTED}")
        return self.report

    def finish(self) -> CheckReport:
        found = tripwires().take()
        if found:
            self.record("uses no built-in attention", False, explain_forbidden(found), "forbidden")
        ok = sum(r.passed for r in self.report.results)
        total = len(self.report.results)
        if self.report.passed:
            print(f"  all checks passed. {MORE_WHEN_GRADED}")
        else:
            print(f"  {ok}/{total} checks passed.")
        return self.report


def _call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    try:
        with tripwires().armed():
            return fn(*args, **kwargs)
    except NotImplementedError as error:
        raise _NotImplemented() from error
    except Exception as error:  # noqa: BLE001 - learner code may raise anything; show it plainly
        where = where_in_learner_code(error)
        raise _Failed(
            f"raised {describe_exception(error)}" + (f" ({where})" if where else "")
        ) from None


def _example(
    b: int, t: int, heads: int, s: int, *, dtype: torch.dtype = torch.float32, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * b + 100 * t + 10 * heads + s)
    q, k, v = (
        torch.randn(b, t, heads * s, generator=generator, dtype=torch.float64) for _ in range(3)
    )
    return (q * scale).to(dtype), (k * scale).to(dtype), v.to(dtype)


LARGE = math.sqrt(1000.0)  # q and k scaled so that scores are around ±1000


def _run_property(
    checker: _Checker, name: str, produce: Callable[[], Diagnosis | tuple[bool, str]]
) -> bool:
    """Record one property; a learner error in it becomes a ✗ line with the error."""
    try:
        outcome = produce()
    except _NotImplemented:
        return checker.record(name, False, NOT_IMPLEMENTED, "not_implemented")
    except _Failed as failure:
        return checker.record(name, False, str(failure))
    if isinstance(outcome, Diagnosis):
        return checker.diagnosis(name, outcome)
    passed, detail = outcome
    return checker.record(name, passed, detail)


def _attention_case(
    fn: Callable, b: int, t: int, heads: int, s: int, mask: bool, **example: Any
) -> Diagnosis:
    q, k, v = _example(b, t, heads, s, **example)
    out = _call(fn, q.clone(), k.clone(), v.clone(), heads, mask)
    return diagnose_attention(out, q, k, v, heads, mask)


def _degenerate_sizes(fn: Callable, call: Callable) -> Diagnosis:
    for b, t, heads, s, mask in (
        (1, 1, 1, 1, False),
        (3, 1, 2, 4, True),
        (2, 6, 1, 8, True),
        (2, 5, 4, 1, True),
    ):
        diagnosis = call(fn, b, t, heads, s, mask)
        if not diagnosis.correct:
            sizes = f"b={b}, t={t}, heads={heads}, s={s}, mask={mask}"
            return Diagnosis(False, diagnosis.mistake, f"With {sizes}: {diagnosis.message}")
    return Diagnosis(True, None, "")


def _gradients(
    call: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any],
    heads: int,
    b: int,
    t: int,
    s: int,
) -> Diagnosis:
    """Do gradients of (out * upstream).sum() reach q, k and v, and equal the reference's?"""
    q, k, v = _example(b, t, heads, s, dtype=torch.float64)
    mine = [x.clone().requires_grad_(True) for x in (q, k, v)]
    out = call(*mine)
    forward = diagnose_attention(
        out.detach() if isinstance(out, torch.Tensor) else out, q, k, v, heads, True
    )
    if not forward.correct:
        return Diagnosis(
            False, forward.mistake, f"The output is wrong, so are its gradients. {forward.message}"
        )
    if not out.requires_grad:
        return Diagnosis(
            False,
            "no_gradient",
            (
                "The output does not track gradients: avoid .detach(), .data, .numpy(), "
                "torch.no_grad() and building the result in a fresh tensor."
            ),
        )
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    try:
        (out.to(torch.float64) * upstream).sum().backward()
    except Exception as error:  # noqa: BLE001 - e.g. in-place ops autograd cannot undo
        return Diagnosis(False, "no_gradient", f"backward() failed: {describe_exception(error)}")
    theirs = [x.clone().requires_grad_(True) for x in (q, k, v)]
    (sdpa_attention(*theirs, heads, True) * upstream).sum().backward()
    for name, got, want in zip(("queries", "keys", "values"), mine, theirs, strict=True):
        if got.grad is None:
            return Diagnosis(
                False, "no_gradient", f"{name} gets no gradient: the output does not depend on it."
            )
        result = compare(got.grad.numpy(), want.grad.numpy(), tolerance())
        if not result.ok:
            return Diagnosis(
                False,
                "wrong_gradient",
                (
                    f"The output is right but the gradient of {name} is not (largest error "
                    f"{result.max_error:.3g}); avoid in-place writes into tensors autograd still needs."
                ),
            )
    return Diagnosis(True, None, "")


def _unmodified(
    call: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any], b: int, t: int, width: int
) -> tuple[bool, str]:
    q, k, v = (
        torch.randn(b, t, width, generator=torch.Generator().manual_seed(i)) for i in range(3)
    )
    copies = [x.clone() for x in (q, k, v)]
    call(q, k, v)
    for name, before, after in zip(("queries", "keys", "values"), copies, (q, k, v), strict=True):
        if not torch.equal(before, after):
            return False, f"your function changed `{name}` in place; work on new tensors instead"
    return True, ""


def _single_threaded(check: Callable[..., CheckReport]) -> Callable[..., CheckReport]:
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> CheckReport:
        tripwires().take()  # what an earlier, interrupted check left behind
        with torch_threads(1):
            return check(*args, **kwargs)

    return run


def names_the_grader_cannot_recreate(fn: Callable, name: str) -> list[str]:
    """Notebook variables ``fn`` uses that the grader's replay (``grader.replay``) of the
    cells run so far would leave unbound; [] outside a notebook or for module functions."""
    namespace = getattr(fn, "__globals__", None) or {}
    history = namespace.get("In")
    if getattr(fn, "__module__", None) != "__main__" or not isinstance(history, list):
        return []
    cells = [Cell(i, parse_statements(code, i)) for i, code in enumerate(history) if code]
    unbound = plan_replay({name}, cells).unbound
    return sorted(n for n in unbound if n in namespace and n != name)


def _record_names(checker: _Checker, fn: Callable, name: str) -> None:
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


def _model_like_inputs(
    fn: Callable, b: int, t: int, heads: int, s: int, *, requires_grad: bool = True
) -> Diagnosis:
    """Inputs as a model hands them over: slices of one wider tensor (requiring grad, as
    in training), and the mask given as 1 rather than True."""
    q, k, v = _example(b, t, heads, s)
    wide = torch.cat([q, k, v], dim=-1).requires_grad_(requires_grad)
    width = heads * s
    sliced = [wide[..., i * width : (i + 1) * width] for i in range(3)]
    out = _call(fn, *sliced, heads, 1)
    return diagnose_attention(
        out.detach() if isinstance(out, torch.Tensor) else out, q, k, v, heads, True
    )


def _small_example(checker: _Checker, run: Callable[..., Any]) -> Diagnosis | CheckReport:
    """Run on the small example and record its shape and values.

    Returns the diagnosis of the output, or the finished report when there is
    nothing more to check (a stub, a crash, a wrong shape).
    """
    b, t, heads, s = EXAMPLE
    q, k, v = _example(b, t, heads, s)
    try:
        out = run(q.clone(), k.clone(), v.clone(), heads, False)
    except _NotImplemented:
        return checker.not_implemented()
    except _Failed as failure:
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
    checker = _Checker("multihead_attention")
    b, t, heads, s = EXAMPLE
    first = _small_example(checker, lambda *args: _call(fn, *args))
    if isinstance(first, CheckReport):
        return first
    scale_mistake = first.mistake is not None and "scale" in first.mistake
    if first.correct or scale_mistake:
        checker.record(
            "scales the scores by 1/sqrt(s)", not scale_mistake, first.message, first.mistake
        )

    _run_property(
        checker,
        "causal mask (mask=True): position i sees only j <= i",
        lambda: _attention_case(fn, b, t, heads, s, True),
    )
    _run_property(
        checker,
        "stable on large scores (around ±1000)",
        lambda: _attention_case(fn, 2, 6, 2, 4, False, scale=LARGE),
    )
    _run_property(
        checker,
        "works with one position, one head, head size 1",
        lambda: _degenerate_sizes(fn, _attention_case),
    )
    _run_property(
        checker,
        "long sequences (t = 256, the training length, with mask)",
        lambda: _attention_case(fn, 1, 256, 2, 4, True),
    )
    _run_property(
        checker,
        "inputs as a model passes them (slices of one tensor, requiring grad, mask=1)",
        lambda: _model_like_inputs(fn, 2, 6, 3, 4),
    )
    _run_property(
        checker,
        "float64 inputs (with mask)",
        lambda: _attention_case(fn, 2, 4, 2, 3, True, dtype=torch.float64),
    )
    _run_property(
        checker,
        "gradients flow to queries, keys and values (with mask)",
        lambda: _gradients(lambda q, k, v: _call(fn, q, k, v, 2, True), 2, 2, 5, 3),
    )
    _run_property(
        checker,
        "leaves its inputs unmodified",
        lambda: _unmodified(lambda q, k, v: _call(fn, q, k, v, 2, True), 2, 4, 6),
    )
    _record_names(checker, fn, "multihead_attention")
    return checker.finish()


# -- Task 2 ------------------------------------------------------------------------------------


def _head_case(
    fn: Callable, b: int, t: int, heads: int, s: int, mask: bool, **example: Any
) -> Diagnosis:
    """attention_function on one head: its inputs are (b, t, s), i.e. the heads=1 layout."""
    del heads
    q, k, v = _example(b, t, 1, s, **example)
    out = _call(fn, (q.clone(), k.clone(), v.clone(), mask))
    return diagnose_attention(out, q, k, v, 1, mask)


def _sliced_head(fn: Callable, b: int, t: int, s: int) -> Diagnosis:
    q, k, v = _example(b, t, 1, s)
    wide = torch.cat([q, k, v], dim=-1)
    out = _call(fn, (wide[..., :s], wide[..., s : 2 * s], wide[..., 2 * s :], 1))
    return diagnose_attention(out, q, k, v, 1, True)


def _importable(fn: Callable) -> tuple[bool, str]:
    _, _, importable, why = function_origin(fn)
    if importable:
        return True, ""
    mistake = POOL_MISTAKES_BY_KEY["worker_not_importable"]
    return False, f"{why}. Hint: {mistake.hint}"


@_single_threaded
def check_attention_function(fn: Callable) -> CheckReport:
    """Check ``fn((q, k, v, mask))`` for one head: q, k, v of shape (b, t, s)."""
    checker = _Checker("attention_function")
    b, t, s = 2, 5, 4
    q, k, v = _example(b, t, 1, s)
    try:
        out = _call(fn, (q.clone(), k.clone(), v.clone(), False))
    except _NotImplemented:
        return checker.not_implemented()
    except _Failed as failure:
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
    _run_property(checker, "causal mask (mask=True)", lambda: _head_case(fn, b, t, 1, s, True))
    _run_property(
        checker,
        "stable on large scores (around ±1000)",
        lambda: _head_case(fn, 2, 6, 1, 4, True, scale=LARGE),
    )
    _run_property(checker, "works with one position", lambda: _head_case(fn, 3, 1, 1, 4, True))
    _run_property(
        checker,
        "float64 inputs (with mask)",
        lambda: _head_case(fn, 2, 4, 1, 3, True, dtype=torch.float64),
    )
    _run_property(
        checker,
        "gradients flow to q, k and v (with mask)",
        lambda: _gradients(lambda q, k, v: _call(fn, (q, k, v, True)), 1, 2, 5, 3),
    )
    _run_property(
        checker,
        "long sequences (t = 256, the training length, with mask)",
        lambda: _head_case(fn, 1, 256, 1, 4, True),
    )
    _run_property(
        checker,
        "a head sliced out of a wider tensor, mask=1 (as parallel_multihead_attention passes it)",
        lambda: _sliced_head(fn, 2, 6, 4),
    )
    _run_property(
        checker,
        "leaves its inputs unmodified",
        lambda: _unmodified(lambda q, k, v: _call(fn, (q, k, v, True)), 2, 4, 3),
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
    checker = _Checker("parallel_multihead_attention")
    calls: list = []

    def run(q: Any, k: Any, v: Any, heads: int, mask: Any, result_scale: float = 1.0) -> Any:
        recorder = InstrumentedPool(pool=pool, result_scale=result_scale)
        out = _call(fn, q, k, v, heads, mask, pool=recorder)
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
        q, k, v = _example(b, t, heads, s, **example)
        return diagnose_attention(
            run(q.clone(), k.clone(), v.clone(), heads, mask), q, k, v, heads, mask
        )

    _run_property(
        checker, "causal mask (mask=True)", lambda: parallel_case(fn, b, t, heads, s, True)
    )
    _run_property(
        checker,
        "the output is built from the results pool.map returns",
        lambda: _built_from_results(run, calls),
    )
    _run_property(
        checker,
        "works with one head and one position",
        lambda: _degenerate_sizes(fn, parallel_case),
    )
    _run_property(
        checker,
        "long sequences (t = 256, with mask)",
        lambda: parallel_case(fn, 1, 256, 2, 4, True),
    )
    _run_property(
        checker,
        "inputs sliced from one wider tensor, mask=1",
        lambda: _model_like_inputs(run, 2, 6, 3, 4, requires_grad=False),
    )
    _record_names(checker, fn, "parallel_multihead_attention")
    if reference is not None:
        _run_property(
            checker, "agrees with your multihead_attention", lambda: _agrees(run, reference)
        )
    return checker.finish()


def _built_from_results(run: Callable, calls: list) -> Diagnosis:
    """With a pool that scales every result by 2.5, a function that assembles its output
    from the results returns 2.5 times the answer; one that computes the heads some other
    way returns the answer itself. A misuse of the pool, if any, is the better explanation."""
    b, t, heads, s = EXAMPLE
    q, k, v = _example(b, t, heads, s)
    out = run(q.clone(), k.clone(), v.clone(), heads, False, result_scale=2.5)
    usage = diagnose_pool_usage(calls, heads, head_shape=(b, t, s), require_importable=False)
    if not usage.correct:
        return usage
    if not isinstance(out, torch.Tensor):
        return diagnose_attention(out, q, k, v, heads, False)
    got = out.detach().double()
    scaled = diagnose_attention(got / 2.5, q, k, v, heads, False)
    if scaled.correct:
        return Diagnosis(True, None, "")
    if diagnose_attention(got, q, k, v, heads, False).correct:
        mistake = POOL_MISTAKES_BY_KEY["pool_results_unused"]
        return Diagnosis(False, mistake.key, f"It looks like {mistake.title}. Hint: {mistake.hint}")
    return scaled


def _agrees(run: Callable, reference: Callable) -> tuple[bool, str]:
    q, k, v = _example(2, 7, 4, 3)
    parallel = run(q.clone(), k.clone(), v.clone(), 4, True)
    serial = _call(reference, q.clone(), k.clone(), v.clone(), 4, True)
    if not isinstance(serial, torch.Tensor) or not isinstance(parallel, torch.Tensor):
        return False, "both functions must return tensors"
    result = compare(
        parallel.detach().double().numpy(), serial.detach().double().numpy(), tolerance()
    )
    if result.ok:
        return True, ""
    return (
        False,
        f"they differ by up to {result.max_error:.3g}; check each against the reference above",
    )
