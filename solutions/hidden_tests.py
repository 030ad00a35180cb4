"""Hidden test cases of the lab, defined once.

Two users:
- the master notebook's hidden test cells, which plain ``nbgrader autograde`` runs
  in the learner's kernel::

      from solutions.hidden_tests import run_group
      run_group("test_task1_values", globals())

- the grader's trusted judge, which never runs learner code: it generates
  ``case_inputs(case, seed)`` with a secret seed, lets a sandboxed process run
  ``grader.probe.probe_case`` on them, and calls ``judge_case`` on the plain-data
  outputs that come back.

Every case compares the learner's function with ``solutions.attention`` in
float64, with a tolerance relative to the output's scale that fits the case's
dtype; a failure carries a plain-words diagnosis from ``grader.diagnose``.
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

from grader.diagnose import compare, diagnose_attention, diagnose_pool_usage, locate, tolerance
from grader.probe import one_torch_thread, probe_case, quiet
from solutions import attention as reference

# Inputs of the notebook's hidden cells. The grader's judge uses its own secret seed.
NOTEBOOK_SEED = 2020

FUNCTIONS = ("multihead_attention", "attention_function", "parallel_multihead_attention")
KINDS = ("forward", "gradient", "unmodified", "pool", "spawn_pool")

# Scores q·k/sqrt(s) of a "large scores" case are around ±LARGE_SCORE: exp() overflows.
LARGE_SCORE = 1000.0

Range = tuple[int, int]


@dataclass(frozen=True)
class Case:
    """One hidden test case. Sizes are inclusive ranges, drawn from the seed."""

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
    pool: str = ""  # "", "inline" or "spawn" (see grader.probe)


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
    grade_id: str,
    function: str,
    kind: str = "forward",
    *,
    b: int | Range,
    t: int | Range,
    h: int | Range = 1,
    s: int | Range,
    **options: Any,
) -> Case:
    return Case(
        name, grade_id, function, kind, _sizes(b), _sizes(t), _sizes(h), _sizes(s), **options
    )


def _build_groups() -> dict[str, Group]:
    mha, head, par = FUNCTIONS
    random_shape = {"b": (1, 4), "t": (2, 16), "h": (2, 6), "s": (2, 12)}
    groups = [
        Group(
            "test_task1_values",
            1,
            20,
            mha,
            [
                _case("small_float32", "test_task1_values", mha, b=2, t=5, h=3, s=4),
                _case("random_float32", "test_task1_values", mha, **random_shape),
                _case("random_float64", "test_task1_values", mha, dtype="float64", **random_shape),
                _case(
                    "many_heads_float64",
                    "test_task1_values",
                    mha,
                    b=3,
                    t=7,
                    h=8,
                    s=3,
                    dtype="float64",
                ),
                _case("long_float32", "test_task1_values", mha, b=1, t=48, h=4, s=16),
            ],
        ),
        Group(
            "test_task1_mask",
            1,
            15,
            mha,
            [
                _case(
                    "masked_small_float32", "test_task1_mask", mha, b=2, t=5, h=3, s=4, mask=True
                ),
                _case("masked_random_float32", "test_task1_mask", mha, mask=True, **random_shape),
                _case(
                    "masked_random_float64",
                    "test_task1_mask",
                    mha,
                    mask=True,
                    dtype="float64",
                    **random_shape,
                ),
                _case(
                    "masked_long_float32", "test_task1_mask", mha, b=2, t=40, h=2, s=8, mask=True
                ),
            ],
        ),
        Group(
            "test_task1_robust",
            1,
            10,
            mha,
            [
                _case(
                    "large_scores_float32",
                    "test_task1_robust",
                    mha,
                    b=2,
                    t=8,
                    h=2,
                    s=4,
                    large_scores=True,
                ),
                _case(
                    "large_scores_masked_float64",
                    "test_task1_robust",
                    mha,
                    b=2,
                    t=8,
                    h=3,
                    s=5,
                    mask=True,
                    large_scores=True,
                    dtype="float64",
                ),
                _case(
                    "one_position_masked", "test_task1_robust", mha, b=3, t=1, h=2, s=4, mask=True
                ),
                _case(
                    "one_head_masked_float64",
                    "test_task1_robust",
                    mha,
                    b=2,
                    t=6,
                    h=1,
                    s=8,
                    mask=True,
                    dtype="float64",
                ),
                _case(
                    "head_size_one_masked", "test_task1_robust", mha, b=2, t=5, h=4, s=1, mask=True
                ),
                _case(
                    "all_sizes_one_float64",
                    "test_task1_robust",
                    mha,
                    b=1,
                    t=1,
                    h=1,
                    s=1,
                    dtype="float64",
                ),
                _case(
                    "inputs_unmodified",
                    "test_task1_robust",
                    mha,
                    "unmodified",
                    b=2,
                    t=6,
                    h=2,
                    s=4,
                    mask=True,
                ),
            ],
        ),
        Group(
            "test_task1_gradients",
            1,
            15,
            mha,
            [
                _case(
                    "gradients_float64",
                    "test_task1_gradients",
                    mha,
                    "gradient",
                    b=2,
                    t=5,
                    h=3,
                    s=4,
                    dtype="float64",
                ),
                _case(
                    "gradients_masked_float64",
                    "test_task1_gradients",
                    mha,
                    "gradient",
                    b=2,
                    t=6,
                    h=2,
                    s=3,
                    mask=True,
                    dtype="float64",
                ),
                _case(
                    "gradients_masked_float32",
                    "test_task1_gradients",
                    mha,
                    "gradient",
                    mask=True,
                    **random_shape,
                ),
            ],
        ),
        Group(
            "test_task2_attention_function",
            2,
            10,
            head,
            [
                _case("head_float32", "test_task2_attention_function", head, b=2, t=6, s=4),
                _case(
                    "head_masked_float64",
                    "test_task2_attention_function",
                    head,
                    b=(1, 3),
                    t=(2, 12),
                    s=(2, 8),
                    mask=True,
                    dtype="float64",
                ),
                _case(
                    "head_one_position_masked",
                    "test_task2_attention_function",
                    head,
                    b=2,
                    t=1,
                    s=3,
                    mask=True,
                ),
                _case(
                    "head_large_scores_masked",
                    "test_task2_attention_function",
                    head,
                    b=2,
                    t=7,
                    s=4,
                    mask=True,
                    large_scores=True,
                ),
            ],
        ),
        Group(
            "test_task2_parallel_values",
            2,
            15,
            par,
            [
                _case(
                    "parallel_float32",
                    "test_task2_parallel_values",
                    par,
                    b=2,
                    t=6,
                    h=3,
                    s=4,
                    pool="inline",
                ),
                _case(
                    "parallel_masked_float64",
                    "test_task2_parallel_values",
                    par,
                    mask=True,
                    dtype="float64",
                    pool="inline",
                    **random_shape,
                ),
                _case(
                    "parallel_one_head_masked",
                    "test_task2_parallel_values",
                    par,
                    b=2,
                    t=5,
                    h=1,
                    s=6,
                    mask=True,
                    pool="inline",
                ),
            ],
        ),
        Group(
            "test_task2_pool_usage",
            2,
            15,
            par,
            [
                _case(
                    "one_item_per_head",
                    "test_task2_pool_usage",
                    par,
                    "pool",
                    b=2,
                    t=6,
                    h=4,
                    s=3,
                    pool="inline",
                ),
                _case(
                    "one_item_per_head_masked",
                    "test_task2_pool_usage",
                    par,
                    "pool",
                    b=1,
                    t=5,
                    h=2,
                    s=4,
                    mask=True,
                    pool="inline",
                ),
                _case(
                    "spawn_pool",
                    "test_task2_pool_usage",
                    par,
                    "spawn_pool",
                    b=2,
                    t=6,
                    h=3,
                    s=4,
                    mask=True,
                    pool="spawn",
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
    """The inputs of ``case`` for ``seed``, as plain data (see ``grader.probe`` for the keys)."""
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
        "pool": case.pool,
    }
    if case.kind == "gradient":
        inputs["upstream"] = rng.standard_normal((b, t, heads * s)).astype(dtype)
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
    """'b=2, t=5, heads=3, s=4, float32, causal mask' (sizes only, never values)."""
    b, t, width = inputs["queries"].shape
    heads = int(inputs["heads"])
    sizes = (
        f"b={b}, t={t}, s={width}"
        if inputs["function"] == "attention_function"
        else (f"b={b}, t={t}, heads={heads}, s={width // heads}")
    )
    mask = "causal mask" if inputs["mask"] else "no mask"
    return f"{sizes}, {inputs['queries'].dtype}, {mask}"


def _gradient_tolerance(dtype: str) -> float:
    return 1e-7 if dtype == "float64" else 1e-3


def judge_case(
    case: Case,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    pool_log: list | None = None,
    *,
    expected: dict[str, np.ndarray] | None = None,
) -> CaseResult:
    """Verdict on the raw outputs the probe read back from the learner's function.

    outputs: as produced by ``grader.probe.probe_case`` (``out``, gradients, ``*_after``,
    or ``error``/``error_where``); pool_log: ``InstrumentedPool.log()`` for pool cases;
    expected: reference outputs computed earlier (run_group computes them before any
    learner code runs); computed here when not given.
    """
    if expected is None:
        expected = expected_outputs(case, inputs)
    label = f"{case.name} ({describe_inputs(inputs)})"

    def fail(message: str, diagnosis: str | None) -> CaseResult:
        return CaseResult(case.name, False, f"{label}: {message}", diagnosis)

    heads = int(inputs["heads"])
    q, k, v = inputs["queries"], inputs["keys"], inputs["values"]
    error = _text(outputs, "error")
    if error:
        where = _text(outputs, "error_where")
        where = f" ({where})" if where else ""
        if str(error).startswith("NotImplementedError"):
            return fail("not implemented yet: fill in the function's cell.", "not_implemented")
        if case.kind == "spawn_pool" and ("Pickl" in str(error) or "pickle" in str(error)):
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
        diagnosis = diagnose_attention(out, q, k, v, heads, bool(inputs["mask"]))
        return fail(diagnosis.message, diagnosis.mistake)
    tol = tolerance(case.dtype, case.large_scores)
    if not compare(out, expected["out"], tol).ok:
        diagnosis = diagnose_attention(out, q, k, v, heads, bool(inputs["mask"]))
        return fail(f"wrong output. {diagnosis.message}", diagnosis.mistake)

    if case.kind == "gradient":
        if _text(outputs, "grad_error"):
            return fail(f"the output is right but {_text(outputs, 'grad_error')}.", "no_gradient")
        for name in ("queries", "keys", "values"):
            got = outputs.get(f"grad_{name}")
            if got is None:
                return fail(f"no gradient came back for {name}.", "no_gradient")
            result = compare(
                np.asarray(got), expected[f"grad_{name}"], _gradient_tolerance(case.dtype)
            )
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

    if case.kind in {"pool", "spawn_pool"}:
        b, t, width = q.shape
        diagnosis = diagnose_pool_usage(
            pool_log or [],
            heads,
            head_shape=(b, t, width // heads),
            require_importable=case.kind == "spawn_pool",
        )
        if not diagnosis.correct:
            return fail(f"the values are right, but {diagnosis.message}", diagnosis.mistake)

    return CaseResult(case.name, True, f"{label}: passed", None)


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
    with one_torch_thread():
        for case in group.cases:
            inputs = case_inputs(case, seed)
            prepared.append((case, inputs, expected_outputs(case, inputs)))

    results = []
    for case, inputs, expected in prepared:
        probe = probe_case(inputs, fn)
        with quiet(), _pristine_torch(), one_torch_thread():
            results.append(
                judge_case(case, inputs, probe.outputs, probe.pool_log, expected=expected)
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
