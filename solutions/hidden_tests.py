"""Hidden test cases of the lab, defined once.

Two users:
- the master notebook's hidden test cells, which plain ``nbgrader autograde`` runs
  in the learner's kernel::

      from solutions.hidden_tests import run_group
      run_group("test_task1_values", globals())

- the grader's trusted judge, which never runs learner code: it generates
  ``case_inputs(case, seed)`` with the grading run's seed, lets a sandboxed process run
  ``grader.learner.probe.probe_case`` on them, and calls ``judge_case`` on the plain-data
  outputs that come back.

Every case compares the learner's function with ``solutions.attention`` in float64 under
the grader's one tolerance policy (``grader.learner.diagnose.tolerance``); a failure carries a
plain-words diagnosis from ``grader.learner.diagnose``. The cases cover what the lab itself runs:
sequences as long as the classifier's training length and the generator's context,
inputs sliced from a wider tensor and requiring grad (as a model passes them), a mask
given as any truthy value, and, for Task 2, an output assembled from the pool's results.
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

from former.threads import torch_threads
from grader.learner.diagnose import (
    compare,
    diagnose_attention,
    diagnose_pool_usage,
    has_large_scores,
    locate,
    tolerance,
)
from grader.learner.forbidden import explain as explain_forbidden
from grader.learner.mistakes import POOL_MISTAKES_BY_KEY
from grader.learner.probe import probe_case, quiet
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


@dataclass(frozen=True)
class CaseResult:
    """diagnosis: the key of the recognised mistake or problem (e.g. "missing_scale",
    "not_implemented", "raised"), None when passed or unrecognised; message: plain words."""

    name: str
    passed: bool
    message: str
    diagnosis: str | None = None


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
def _pristine_torch() -> Iterator[None]:
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
    with _pristine_torch():
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


# -- judging --------------------------------------------------------------------------------------


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


def judge_case(
    case: Case,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    pool_log: list | None = None,
    *,
    forbidden: list[str] | tuple[str, ...] = (),
    expected: dict[str, np.ndarray] | None = None,
) -> CaseResult:
    """Verdict on the raw outputs the probe read back from the learner's function.

    outputs: as produced by ``grader.learner.probe.probe_case`` (``out``, gradients, ``*_after``,
    or ``error``/``error_where``); pool_log: ``InstrumentedPool.log()`` for pool cases;
    forbidden: the forbidden operators the call executed; expected: reference outputs
    computed earlier (run_group computes them before any learner code runs).
    """
    if expected is None:
        expected = expected_outputs(case, inputs)
    label = f"{case.name} ({describe_inputs(inputs)})"

    def fail(message: str, diagnosis: str | None) -> CaseResult:
        return CaseResult(case.name, False, f"{label}: {message}", diagnosis)

    if forbidden:
        return fail(explain_forbidden(forbidden), "forbidden")
    heads = int(inputs["heads"])
    q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
    mask = bool(inputs["mask"])
    error = _text(outputs, "error")
    if error:
        where = _text(outputs, "error_where")
        where = f" ({where})" if where else ""
        if str(error).startswith("NotImplementedError"):
            return fail("not implemented yet: fill in the function's cell.", "not_implemented")
        if case.kind == "worker_pool" and ("Pickl" in str(error) or "pickle" in str(error)):
            diagnosis = diagnose_pool_usage(pool_log or [], heads)
            if diagnosis.mistake == "worker_not_importable":
                return fail(diagnosis.message, diagnosis.mistake)
        return fail(f"your function raised {error}{where}.", "raised")

    out = outputs.get("out")
    if out is None:
        return fail("no output came back.", "no_output")
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return fail("the output is not an array of numbers.", "not_a_tensor")
    if tuple(out.shape) != tuple(expected["out"].shape):
        diagnosis = diagnose_attention(out, q, k, v, heads, mask)
        return fail(diagnosis.message, diagnosis.mistake)
    tol = tolerance(has_large_scores(q, k, heads))
    scale = float(inputs.get("pool_scale", 1.0)) if case.kind in POOL_KINDS else 1.0
    if not compare(out, expected["out"] * scale, tol).ok:
        if scale != 1.0 and compare(out, expected["out"], tol).ok:
            message, mistake = _pool_problem(pool_log, heads, q.shape, case.kind)
            return fail(message, mistake or "pool_results_unused")
        diagnosis = diagnose_attention(out / scale, q, k, v, heads, mask)
        return fail(f"wrong output. {diagnosis.message}", diagnosis.mistake)

    if case.kind == "gradient":
        if _text(outputs, "grad_error"):
            return fail(f"the output is right but {_text(outputs, 'grad_error')}.", "no_gradient")
        for name in ("queries", "keys", "values"):
            got = outputs.get(f"grad_{name}")
            if got is None:
                return fail(f"no gradient came back for {name}.", "no_gradient")
            result = compare(np.asarray(got), expected[f"grad_{name}"], tol)
            if not result.ok:
                where = locate(result.index, heads, q.shape[-1])
                return fail(
                    f"the output is right but the gradient of {name} is not: largest error "
                    f"{result.max_error:.3g} (scale {result.scale:.3g}) at {where}. Avoid "
                    "in-place writes into tensors autograd still needs, .data and .detach().",
                    "wrong_gradient",
                )

    if case.kind == "unmodified":
        for name in ("queries", "keys", "values"):
            after = outputs.get(f"{name}_after")
            if after is None or not _identical(np.asarray(after), expected[f"{name}_after"]):
                return fail(
                    f"your function changed its `{name}` argument in place (e.g. `{name} /= ...`, "
                    "`masked_fill_`, or writing into a view); work on new tensors instead.",
                    "inputs_modified",
                )

    if case.kind in POOL_KINDS:
        message, mistake = _pool_problem(pool_log, heads, q.shape, case.kind)
        if mistake:  # a misuse the output does not show (an unimportable worker, say)
            return fail(message, mistake)

    return CaseResult(case.name, True, f"{label}: passed", None)


def _pool_problem(pool_log: list | None, heads: int, shape: tuple, kind: str) -> tuple[str, str]:
    """(message, mistake) about how a pool case used its pool; ("", "") when it looks right.

    An output that lacks the pool's scale gets the first misuse found here as its
    explanation, or, when the calls look right, "pool_results_unused".
    """
    b, t, width = shape
    diagnosis = diagnose_pool_usage(
        pool_log or [],
        heads,
        head_shape=(b, t, width // heads),
        require_importable=kind == "worker_pool",
    )
    if not diagnosis.correct:
        return f"the values are right, but {diagnosis.message}", diagnosis.mistake or ""
    unused = POOL_MISTAKES_BY_KEY["pool_results_unused"]
    return f"the values are right, but it looks like {unused.title}. Hint: {unused.hint}", ""


def _text(outputs: dict[str, Any], key: str) -> str:
    """A text output, whether a str or (after an .npz round trip) a 0-d numpy string array."""
    value = outputs.get(key)
    if value is None:
        return ""
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else ""
    return str(value)


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    same = (a == b) | ((a != a) & (b != b))  # NaN equals NaN here: bit-for-bit unchanged
    return bool(same.all())


# -- in the notebook's kernel ----------------------------------------------------------------------


class HiddenTestFailure(AssertionError):
    """A hidden test cell failed; the message lists each failed case and its diagnosis."""


def run_group(grade_id: str, namespace: dict[str, Any], *, seed: int = NOTEBOOK_SEED) -> None:
    """Run every case of ``grade_id`` on the learner's function found in ``namespace``.

    Reference outputs are computed before any learner code runs; verdicts use only
    numpy array arithmetic; warnings and stderr from the learner's code are swallowed.
    Raises :class:`HiddenTestFailure` (an AssertionError) naming what went wrong.
    """
    __tracebackhide__ = True  # noqa: F841 - read by IPython and pytest
    if grade_id not in GROUPS:
        raise KeyError(f"unknown test cell {grade_id!r}; known: {', '.join(GROUPS)}")
    group = GROUPS[grade_id]
    fn = namespace.get(group.function)
    if not callable(fn):
        raise HiddenTestFailure(
            f"{group.function} is not defined (or not a function): run the cell that defines it."
        )
    prepared = []
    with torch_threads(1):
        for case in group.cases:
            inputs = case_inputs(case, seed)
            prepared.append((case, inputs, expected_outputs(case, inputs)))

    results = []
    for case, inputs, expected in prepared:
        probe = probe_case(inputs, fn)
        with quiet(), _pristine_torch(), torch_threads(1):
            results.append(
                judge_case(
                    case,
                    inputs,
                    probe.outputs,
                    probe.pool_log,
                    forbidden=probe.forbidden,
                    expected=expected,
                )
            )
    failed = [r for r in results if not r.passed]
    print(f"{grade_id}: {len(results) - len(failed)}/{len(results)} cases passed")
    if failed:
        raise HiddenTestFailure(summarize_failures(results)) from None


def summarize_failures(results: list[CaseResult]) -> str:
    """'2 of 5 cases failed:' then one line per distinct problem, naming the cases it hit."""
    failed = [r for r in results if not r.passed]
    problems: dict[str, list[str]] = {}
    for result in failed:
        label, _, body = result.message.partition(": ")
        problems.setdefault(body, []).append(label)
    lines = [f"{len(failed)} of {len(results)} cases failed:"]
    for body, labels in problems.items():
        lines.append(f"- {'; '.join(labels)}: {body}")
    return "\n".join(lines)
