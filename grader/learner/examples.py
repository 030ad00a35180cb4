"""The examples the visible checks run, and the probe judged as the grader judges it.

A comparison takes ``run(q, k, v, heads, mask)``, the learner's function called through the
contract of its task, and returns a :class:`~grader.learner.diagnose.Diagnosis` (or ``(passed,
detail)``) judged by the grader's own rules: the one tolerance, the mistake catalogue, the pool
log, the names the grader can recreate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from grader.learner.diagnose import Diagnosis, compare, diagnose_attention, tolerance
from grader.learner.pool_mistakes import POOL_MISTAKES_BY_KEY
from grader.learner.probe import probe_case
from grader.learner.probe_io import CaseInputs, draw_inputs
from grader.learner.properties import head_by_head_verdict, property_verdict
from grader.learner.report import LearnerError, NotImplementedYet
from grader.learner.skipped import skipped_names_used

# The small visible example: (b, t, heads, s).
EXAMPLE = (2, 5, 3, 4)
LARGE_SCORE = 1000.0  # scores of a "large" example are around ±LARGE_SCORE
Run = Callable[..., Any]


def example_inputs(
    b: int, t: int, heads: int, s: int, *, dtype: torch.dtype = torch.float32, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * b + 100 * t + 10 * heads + s)
    q, k, v = (
        torch.randn(b, t, heads * s, generator=generator, dtype=torch.float64) for _ in range(3)
    )
    return (q * scale).to(dtype), (k * scale).to(dtype), v.to(dtype)


def importable(ok: bool, why: str) -> Diagnosis:
    """The verdict on whether worker processes can import the mapped function."""
    mistake = POOL_MISTAKES_BY_KEY["worker_not_importable"]
    return Diagnosis(ok, None if ok else mistake.key, "" if ok else f"{why}. Hint: {mistake.hint}")


def names_only_skipped_cells_bind(fn: Callable) -> Diagnosis | None:
    """A failure naming the globals ``fn`` reads that, in the lab, only cells the grader does
    not run bind (``grader.learner.skipped``); None when there are none."""
    names = skipped_names_used(fn)
    if not names:
        return None
    one = len(names) == 1
    return Diagnosis(
        False,
        "skipped_names",
        f"{', '.join(f'`{n}`' for n in names)} {'is' if one else 'are'} bound in the lab only "
        "by cells that are not run while grading (training, plots, SageMaker, the optional "
        f"task), so your function would fail there: bind {'it' if one else 'them'} in a cell "
        "of your own above the function, or inside it (if you already do, ignore this)",
    )


def agrees(
    run: Run, reference: Run, mistake_above: str | None = None
) -> tuple[bool, str, str | None]:
    """Whether ``run`` and ``reference`` agree on a masked example; a difference is put down to
    ``mistake_above``, the mistake an earlier line named, when there is one."""
    q, k, v = example_inputs(2, 7, 4, 3)
    parallel = run(q.clone(), k.clone(), v.clone(), 4, True)
    serial = reference(q.clone(), k.clone(), v.clone(), 4, True)
    if not isinstance(serial, torch.Tensor) or not isinstance(parallel, torch.Tensor):
        return False, "both functions must return tensors", None
    result = compare(
        parallel.detach().double().numpy(), serial.detach().double().numpy(), tolerance()
    )
    if result.ok:
        return True, "", None
    return (
        False,
        f"they differ by up to {result.max_error:.3g}; check each against the reference above",
        mistake_above,
    )


# -- the visible checks' probes: the judge's calls and verdicts on small examples -------------


def visible_inputs(
    function: str,
    kind: str,
    b: int,
    t: int,
    heads: int,
    s: int,
    *,
    mask: bool,
    large: bool = False,
    **options: Any,
) -> CaseInputs:
    """A small example in the probe's input format, drawn from a seed made of its sizes;
    options: :class:`CaseInputs` fields (dtype as a name)."""
    rng = np.random.default_rng([b, t, heads, s, int(mask), int(large)])
    scores = LARGE_SCORE if large else 0.0
    sizes = (b, t, heads, s)
    return draw_inputs(rng, function, kind, sizes, mask=mask, large_scores=scores, **options)


def probe_property(
    report: Any,
    fn: Callable,
    inputs: CaseInputs,
    *,
    make_pool: Callable[[str], Any] | None = None,
) -> Diagnosis:
    """Run the probe on ``inputs`` and judge it as the grader does ("forward": against the
    reference, with the mistake catalogue); forbidden operators go to ``report``."""
    outcome = probe_case(inputs, fn, make_pool=make_pool)
    if outcome.forbidden:
        report.note_forbidden(outcome.forbidden)
    if outcome.error.startswith("NotImplementedError"):
        raise NotImplementedYet()
    if outcome.error:
        details = "; ".join(x for x in (outcome.error_where, outcome.error_call) if x)
        raise LearnerError(f"raised {outcome.error}" + (f" ({details})" if details else ""))
    if inputs.kind == "heads" and outcome.raised_like_own:
        return head_by_head_verdict(inputs, outcome)
    if np.shape(outcome.out) != inputs.queries.shape or inputs.kind == "forward":
        return diagnose_attention(outcome.out, *inputs.tensors(), inputs.heads, inputs.mask)
    return property_verdict(inputs, outcome)
