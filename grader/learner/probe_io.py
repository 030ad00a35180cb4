"""What crosses the sandbox's boundary: a case's inputs, and the probe's outcome.

Both travel as plain arrays in an .npz (``to_arrays`` / ``from_arrays``): the judge writes
the inputs, the kernel writes the outcome, and the judge reads it back bounded, trusting
nothing but its form. The visible checks use the same types in the learner's kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

Array = np.ndarray
SELF_SHIFT = 10.0  # one position's key and value move this far along its own query
FD_STEP = 1e-3  # central differences in float64: truncation and float32 rounding both ~1e-5


@dataclass
class CaseInputs:
    """One case, as the probe calls the learner's function on it. queries, keys, values:
    (b, t, heads * s); (b, t, s) for attention_function. The per-kind fields are None
    unless ``kind`` needs them (``grader.learner.probe`` says what each call uses)."""

    function: str  # "multihead_attention" | "attention_function" | "parallel_multihead_attention"
    kind: str  # the property checked: see solutions.hidden_cases.KINDS
    queries: Array
    keys: Array
    values: Array
    heads: int
    mask: bool
    case: str = ""
    mask_as: str = "bool"  # "bool": mask passed as True/False; "int": as 1/0
    layout: str = "contiguous"  # or "sliced": slices of one wider tensor, as a model passes
    requires_grad: bool = False  # inputs are leaves that require grad, as in training
    pool: str = ""  # "", "inline" (in-process) or "workers" (found by module name)
    pool_scale: float = 1.0  # the pool multiplies results by it; never sent to the kernel
    # "causal": later keys/values replaced after ``cut``; a position moved towards a query
    cut: int | None = None
    future_keys: Array | None = None
    future_values: Array | None = None
    self_position: int | None = None
    past_position: int | None = None
    self_shift: float | None = None
    prefixes: Array | None = None  # int lengths of the unmasked prefixes compared
    # "bounded": the same case with moderate scores
    calm_queries: Array | None = None
    calm_keys: Array | None = None
    # "gradient": backward of (out * upstream).sum() against finite differences
    upstream: Array | None = None
    direction_queries: Array | None = None
    direction_keys: Array | None = None
    direction_values: Array | None = None
    fd_step: float | None = None

    def to_arrays(self) -> dict[str, Array]:
        """Every field but the pool's scale, which stays with the judge and the server."""
        return _arrays(self, skip={"pool_scale"})

    @classmethod
    def from_arrays(cls, arrays: dict[str, Array]) -> CaseInputs:
        names = {f.name for f in fields(cls)}
        return cls(**{n: v.item() if v.ndim == 0 else v for n, v in arrays.items() if n in names})

    def tensors(self) -> tuple[Array, Array, Array]:
        return self.queries, self.keys, self.values

    @property
    def head_count(self) -> int:
        """Heads in queries' width: 1 for attention_function, which sees one head."""
        return 1 if self.function == "attention_function" else int(self.heads)


@dataclass
class Outcome:
    """What the probe read back from the learner's function: float64 arrays (None where the
    case's kind makes no such call), texts ("" for none), the pool's log and the forbidden
    operators the calls executed."""

    out: Any = None  # f(q, k, v, mask): an array, or whatever came back through the archive
    error: str = ""  # "Type: message" when a call raised
    error_where: str = ""  # the learner's line
    error_call: str = ""  # which call raised
    out_future: Array | None = None  # causal: later keys and values changed
    out_self: Array | None = None  # causal: self_position's key and value moved
    out_past: Array | None = None  # causal: position 0's, towards past_position's query
    prefix_rows: Array | None = None  # causal: (n, b, width) row L-1 of unmasked prefixes
    out_calm: Array | None = None  # bounded: on calm_queries and calm_keys
    grad_queries: Array | None = None  # gradient: of (out * upstream).sum()
    grad_keys: Array | None = None
    grad_values: Array | None = None
    grad_error: str = ""  # gradient: why there is none
    fd_outputs: Array | None = None  # gradient: (3, 2, b, t, width), inputs moved -/+ fd_step
    queries_after: Array | None = None  # unmodified: the inputs after the call
    keys_after: Array | None = None
    values_after: Array | None = None
    own_out: Array | None = None  # heads: the learner's attention_function head by head
    own_error: str = ""  # heads: why there is no own_out
    raised_like_own: str = ""  # heads: raised what attention_function raises on the heads
    pool_log: list[dict[str, Any]] | None = None
    forbidden: list[str] = field(default_factory=list)

    def to_arrays(self) -> dict[str, Array]:
        """The outputs as arrays (texts as bounded numpy strings): an .npz without pickle."""
        return _arrays(self, skip={"pool_log", "forbidden"})

    @classmethod
    def from_arrays(cls, arrays: dict[str, Array]) -> Outcome:
        """From an archive the kernel wrote: unknown names are ignored; a text field holds
        the text of a one-element array, else nothing."""
        texts = {f.name for f in fields(cls) if f.default == ""}
        names = {f.name for f in fields(cls)} - {"pool_log", "forbidden"}
        given: dict[str, Any] = {}
        for name, value in arrays.items():
            if name in texts:
                given[name] = str(value.item()) if value.size == 1 else ""
            elif name in names:
                given[name] = value
        return cls(**given)

    def after(self, name: str) -> Array | None:
        return getattr(self, f"{name}_after")


def _arrays(data: Any, skip: set[str]) -> dict[str, Array]:
    arrays = {}
    for item in fields(data):
        value = getattr(data, item.name)
        if item.name in skip or value is None or (isinstance(value, str) and not value):
            continue
        array = np.array(value[:2000]) if isinstance(value, str) else np.asarray(value)
        if array.dtype != object:
            arrays[item.name] = array
    return arrays


def draw_inputs(
    rng: np.random.Generator,
    function: str,
    kind: str,
    sizes: tuple[int, int, int, int],
    *,
    mask: bool,
    dtype: str = "float32",
    large_scores: float = 0.0,
    **options: Any,
) -> CaseInputs:
    """q, k, v of ``sizes`` (b, t, heads, s) drawn from ``rng``, and what ``kind`` needs.
    large_scores: scores q·k/sqrt(s) then have this standard deviation; the case keeps calm
    ones (around ±1) too. options: the other fields of :class:`CaseInputs`."""
    b, t, heads, s = sizes
    q, k, v = (rng.standard_normal((b, t, heads * s)) for _ in range(3))
    calm = {}
    if large_scores:
        calm = {"calm_queries": q.astype(dtype), "calm_keys": k.astype(dtype)}
        q, k = q * math.sqrt(large_scores), k * math.sqrt(large_scores)
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    inputs = CaseInputs(function, kind, q, k, v, heads, bool(mask), **calm, **options)
    _draw_property_inputs(inputs, rng)
    return inputs


def _draw_property_inputs(inputs: CaseInputs, rng: np.random.Generator) -> None:
    b, t, width = inputs.queries.shape
    dtype = inputs.queries.dtype
    if inputs.kind == "causal":
        inputs.cut = int(rng.integers(0, max(t - 1, 1)))  # positions after it get replaced
        inputs.future_keys = rng.standard_normal((b, t, width)).astype(dtype)
        inputs.future_values = rng.standard_normal((b, t, width)).astype(dtype)
        inputs.self_position = int(rng.integers(0, min(t, 4)))  # early: its weight is not tiny
        inputs.self_shift = SELF_SHIFT
        inputs.past_position = int(rng.integers(1, t)) if t > 1 else 0  # sees position 0
        lengths = {1, int(rng.integers(1, t + 1)), t}
        inputs.prefixes = np.array(sorted(lengths), dtype=np.int64)
    elif inputs.kind == "gradient":
        inputs.upstream = rng.standard_normal((b, t, width)).astype(dtype)
        inputs.direction_queries = rng.standard_normal((b, t, width))
        inputs.direction_keys = rng.standard_normal((b, t, width))
        inputs.direction_values = rng.standard_normal((b, t, width))
        inputs.fd_step = FD_STEP
