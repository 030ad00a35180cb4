"""The examples the visible checks run and the properties they compute from them.

A property takes ``run(q, k, v, heads, mask)``, the learner's function called through the
contract of its task, and returns a :class:`~grader.learner.diagnose.Diagnosis` (or ``(passed,
detail)``) judged by the grader's own rules: the one tolerance, the mistake catalogue, the pool
log, the names the grader can recreate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from former.attention import sdpa_attention
from grader.learner.diagnose import (
    Diagnosis,
    compare,
    diagnose_attention,
    diagnose_pool_usage,
    named_mistake,
    tolerance,
)
from grader.learner.mistakes import POOL_MISTAKES_BY_KEY
from grader.learner.probe import describe_exception
from grader.learner.replay import Cell, parse_statements, plan_replay

# The small visible example: (b, t, heads, s).
EXAMPLE = (2, 5, 3, 4)
LARGE = math.sqrt(1000.0)  # q and k scaled so that scores are around ±1000
# (b, t, heads, s, mask): one position, one head, head size 1.
DEGENERATE = ((1, 1, 1, 1, False), (3, 1, 2, 4, True), (2, 6, 1, 8, True), (2, 5, 4, 1, True))
Run = Callable[..., Any]


def example_inputs(
    b: int, t: int, heads: int, s: int, *, dtype: torch.dtype = torch.float32, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * b + 100 * t + 10 * heads + s)
    q, k, v = (
        torch.randn(b, t, heads * s, generator=generator, dtype=torch.float64) for _ in range(3)
    )
    return (q * scale).to(dtype), (k * scale).to(dtype), v.to(dtype)


def attention_case(
    run: Run, b: int, t: int, heads: int, s: int, mask: bool, **example: Any
) -> Diagnosis:
    q, k, v = example_inputs(b, t, heads, s, **example)
    return diagnose_attention(
        run(q.clone(), k.clone(), v.clone(), heads, mask), q, k, v, heads, mask
    )


def degenerate_sizes(run: Run) -> Diagnosis:
    for b, t, heads, s, mask in DEGENERATE:
        diagnosis = attention_case(run, b, t, heads, s, mask)
        if not diagnosis.correct:
            sizes = f"b={b}, t={t}, heads={heads}, s={s}, mask={mask}"
            return Diagnosis(False, diagnosis.mistake, f"With {sizes}: {diagnosis.message}")
    return Diagnosis(True, None, "")


def gradients(run: Run, b: int, t: int, heads: int, s: int) -> Diagnosis:
    """Do gradients of (out * upstream).sum() reach q, k and v, and equal the reference's?"""
    q, k, v = example_inputs(b, t, heads, s, dtype=torch.float64)
    mine = [x.clone().requires_grad_(True) for x in (q, k, v)]
    out = run(*mine, heads, True)
    forward = diagnose_attention(out, q, k, v, heads, True)
    if not forward.correct:
        return Diagnosis(
            False, forward.mistake, f"The output is wrong, so are its gradients. {forward.message}"
        )
    if not out.requires_grad:
        return Diagnosis(
            False,
            "no_gradient",
            "The output does not track gradients: avoid .detach(), .data, .numpy(), "
            "torch.no_grad() and building the result in a fresh tensor.",
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
                f"The output is right but the gradient of {name} is not (largest error "
                f"{result.max_error:.3g}); avoid in-place writes into tensors autograd still needs.",
            )
    return Diagnosis(True, None, "")


def unmodified(run: Run, b: int, t: int, heads: int, s: int) -> tuple[bool, str]:
    q, k, v = (
        torch.randn(b, t, heads * s, generator=torch.Generator().manual_seed(i)) for i in range(3)
    )
    copies = [x.clone() for x in (q, k, v)]
    run(q, k, v, heads, True)
    for name, before, after in zip(("queries", "keys", "values"), copies, (q, k, v), strict=True):
        if not torch.equal(before, after):
            return False, f"your function changed `{name}` in place; work on new tensors instead"
    return True, ""


def sliced_inputs(run: Run, heads: int, *, requires_grad: bool = True) -> Diagnosis:
    """Inputs (b=2, t=6, s=4) as a model hands them over: slices of one wider tensor
    (requiring grad, as in training), and the mask given as 1 rather than True."""
    s = 4
    q, k, v = example_inputs(2, 6, heads, s)
    wide = torch.cat([q, k, v], dim=-1).requires_grad_(requires_grad)
    width = heads * s
    out = run(*(wide[..., i * width : (i + 1) * width] for i in range(3)), heads, 1)
    return diagnose_attention(out, q, k, v, heads, True)


def importable(ok: bool, why: str) -> Diagnosis:
    """The verdict on whether worker processes can import the mapped function."""
    mistake = POOL_MISTAKES_BY_KEY["worker_not_importable"]
    return Diagnosis(ok, None if ok else mistake.key, "" if ok else f"{why}. Hint: {mistake.hint}")


def unrecreatable_names(fn: Callable, name: str) -> Diagnosis | None:
    """A failure naming the notebook variables ``fn`` uses that the grader's replay
    (``grader.learner.replay``) of the cells run so far would leave unbound; None when there
    are none, outside a notebook, or for module functions."""
    namespace = getattr(fn, "__globals__", None) or {}
    history = namespace.get("In")
    if getattr(fn, "__module__", None) != "__main__" or not isinstance(history, list):
        return None
    cells = [Cell(i, parse_statements(code, i)) for i, code in enumerate(history) if code]
    unbound = plan_replay({name}, cells).unbound
    names = sorted(n for n in unbound if n in namespace and n != name)
    if not names:
        return None
    one = len(names) == 1
    return Diagnosis(
        False,
        "unbound_names",
        f"{', '.join(f'`{n}`' for n in names)} {'is' if one else 'are'} set by a magic, exec or "
        "globals(), which the grader does not re-run (it re-runs only the ordinary statements "
        f"that bind the names your function uses): set {'it' if one else 'them'} with an "
        "ordinary statement in a cell above, or inside the function",
    )


def built_from_results(run: Run, calls: list) -> Diagnosis:
    """With a pool that scales every result by 2.5, a function that assembles its output
    from the results returns 2.5 times the answer; one that computes the heads some other
    way returns the answer itself. A misuse of the pool, if any, is the better explanation."""
    b, t, heads, s = EXAMPLE
    q, k, v = example_inputs(b, t, heads, s)
    out = run(q.clone(), k.clone(), v.clone(), heads, False, result_scale=2.5)
    usage = diagnose_pool_usage(calls, heads, head_shape=(b, t, s), require_importable=False)
    if not usage.correct:
        return usage
    if not isinstance(out, torch.Tensor):
        return diagnose_attention(out, q, k, v, heads, False)
    got = out.detach().double()
    scaled = diagnose_attention(got / 2.5, q, k, v, heads, False)
    if not scaled.correct and diagnose_attention(got, q, k, v, heads, False).correct:
        return named_mistake(POOL_MISTAKES_BY_KEY["pool_results_unused"])
    return scaled


def agrees(run: Run, reference: Run) -> tuple[bool, str]:
    q, k, v = example_inputs(2, 7, 4, 3)
    parallel = run(q.clone(), k.clone(), v.clone(), 4, True)
    serial = reference(q.clone(), k.clone(), v.clone(), 4, True)
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
