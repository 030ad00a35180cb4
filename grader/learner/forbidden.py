"""What graded functions may not execute, and how the grader notices.

The built-ins that compute attention in one call are off limits inside graded functions. The
rule is about what a function *executes*, never about names in its source (a comment that
mentions ``F.scaled_dot_product_attention`` costs nothing), and every route to the fused
kernels counts. :class:`Tripwires` watches a call: PyTorch's operator profiler lists every ATen
operator the dispatcher runs, whatever the Python route; the Python entry points of
``nn.MultiheadAttention`` and ``F.multi_head_attention_forward`` (which can compute attention
from ordinary operators) are watched too; switching the profiler off counts as tampering. The
grading sandbox and the hidden cells under plain ``nbgrader autograde`` run the same tripwires.

Only executed ATen operators count: a ``record_function`` label reading "scaled_dot_product" is
a label, not an operator. The watch also asks for positive evidence of the work: a graded call
that did not run, itself, products of tensors and exponentials of the size attention needs (the
work went to a subprocess, numpy or a file) was not seen computing attention
(:data:`UNOBSERVED`). All of this runs in the process
that runs the submission: it catches every route a learner takes by accident or by ordinary
means, and deliberate rebinding of its parts (:func:`integrity_snapshot`); the README's threat
model says what it cannot exclude.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch._C._profiler import _ExperimentalConfig
from torch.autograd import profiler

# Substrings of ATen operator names that betray a one-call attention -> what learners wrote.
FORBIDDEN_OPERATORS = {
    "scaled_dot_product": "F.scaled_dot_product_attention",
    "_native_multi_head_attention": "nn.MultiheadAttention",
    "_transformer_encoder_layer_fwd": "nn.TransformerEncoderLayer",
}
TAMPERING = "switching off the grader's operator check"
UNOBSERVED = "computing where the grader cannot see it"
# Positive evidence of attention computed here: the operators that multiply and exponentiate
# (composites such as matmul, einsum and softmax run these underneath).
_PRODUCTS = ("bmm", "baddbmm", "mm", "addmm", "mv", "dot", "mul", "mul_")
_EXPONENTIALS = ("_softmax", "_log_softmax", "exp", "exp_", "sigmoid")
_MARKER = "grader-tripwires-armed"


def explain(found: list[str]) -> str:
    """What a learner reads when a graded function executed forbidden built-ins."""
    if list(found) == [UNOBSERVED]:
        return (
            "the grader did not see it compute attention: it ran too few products of tensors "
            "or exponentials in the grading process for the sizes given (the work went "
            "elsewhere: numpy, another process, a file); compute with torch operations in the "
            "function itself."
        )
    return (
        f"it executes {', '.join(found)}, which graded functions may not use; "
        "implement attention yourself (bmm, einsum or matmul, softmax)."
    )


class Tripwires:
    """Records, never blocks, forbidden operators run while armed (``with wires.armed():``);
    ``take()`` returns what was seen."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.work: tuple[int, int] | None = None  # set per armed block; see armed()

        # Entry points that compute attention from ordinary operators are watched in Python.
        def watched(original: Callable, what: str) -> Callable:
            if getattr(original, "_grader_watched", False):
                return original  # another Tripwires already wraps it; record through it

            @functools.wraps(original)
            def call(*args, **kwargs):
                for wires in _ARMED:
                    wires.seen.append(what)
                return original(*args, **kwargs)

            call._grader_watched = True
            return call

        mha = torch.nn.MultiheadAttention
        mha.forward = watched(mha.forward, "nn.MultiheadAttention")
        F.multi_head_attention_forward = watched(
            F.multi_head_attention_forward, "F.multi_head_attention_forward"
        )

    @contextmanager
    def armed(self, work: tuple[int, int] | None = None) -> Iterator[None]:
        """Watch the block: every ATen operator it runs, and the watched entry points.
        ``work``: (multiply-adds, exponentials) the block must run itself, else it records
        :data:`UNOBSERVED` (see :func:`attention_work`).

        Re-entrant: a block armed inside an armed block is watched by the outer one.
        """
        if self in _ARMED:
            yield
            return
        self.work = work
        started = _start_profiler()
        if not started:
            self.seen.append(TAMPERING)  # a profiler the learner started is still running
        _ARMED.append(self)
        try:
            yield
        finally:
            _ARMED.remove(self)
            if started:
                self.seen.extend(_stop_profiler(self.work))

    def take(self) -> list[str]:
        """Forbidden uses recorded since the last call, once each, in order."""
        found = list(dict.fromkeys(self.seen))
        self.seen.clear()
        return found


_ARMED: list[Tripwires] = []


def attention_work(b: int, t: int, heads: int, s: int) -> tuple[int, int]:
    """The least (multiply-adds, exponentials) any attention over (b, t, heads * s) runs: the
    scores of a causal mask's lower triangle, and their exponentials."""
    pairs = b * heads * t * (t + 1) // 2
    return pairs * s, pairs


def _start_profiler() -> bool:
    """Start PyTorch's CPU operator profiler at the lowest level (the public context manager
    costs tens of milliseconds per run in post-processing); False when one already runs."""
    settings = profiler.profile(
        use_cpu=True,
        record_shapes=True,
        experimental_config=_ExperimentalConfig(profile_all_threads=True),
    )
    config, activities = settings.config(), settings.kineto_activities
    try:
        with stderr_silenced():  # the profiler's C++ side prints a line at each start and stop
            torch.autograd._prepare_profiler(config, activities)
            torch.autograd._enable_profiler(config, activities)
    except RuntimeError:
        return False
    with profiler.record_function(_MARKER):
        pass
    return True


def _stop_profiler(work: tuple[int, int] | None = None) -> list[str]:
    """What forbidden operators ran, and UNOBSERVED when less ``work`` ran than asked;
    TAMPERING when the profiler was stopped or replaced."""
    try:
        with stderr_silenced():
            result = torch.autograd._disable_profiler()
        events = [
            (event.name(), event)
            for event in result.events()
            # Executed ATen operators only: user labels (record_function) name nothing that ran.
            if not event.is_user_annotation()
        ]
    except RuntimeError:
        return [TAMPERING]
    names = {name for name, _ in events}
    if _MARKER not in {event.name() for event in result.events()}:
        return [TAMPERING]
    found = [
        what
        for name in sorted(names)
        if name.startswith("aten::")
        for mark, what in FORBIDDEN_OPERATORS.items()
        if mark in name
    ]
    if work is not None and not found and not _enough_work(events, work):
        found.append(UNOBSERVED)
    return found


def _enough_work(events: list, work: tuple[int, int]) -> bool:
    products = exponentials = 0
    for name, event in events:
        operator = name[len("aten::") :] if name.startswith("aten::") else ""
        shapes = [list(shape) for shape in event.shapes()]
        if operator in _PRODUCTS:
            products += _multiply_adds(operator, shapes)
        elif operator in _EXPONENTIALS and shapes:
            exponentials += math.prod(shapes[0])
    return products >= work[0] and exponentials >= work[1]


def _multiply_adds(operator: str, shapes: list[list[int]]) -> int:
    """Multiply-adds an operator ran, from its inputs' shapes."""
    matrices = shapes[1:3] if operator in ("baddbmm", "addmm") else shapes[:2]
    if len(matrices) < 2 or not all(matrices):
        return max((math.prod(shape) for shape in shapes if shape), default=0)  # elementwise
    first, second = matrices
    if operator in ("bmm", "baddbmm") and len(first) == 3 and len(second) == 3:
        return first[0] * first[1] * first[2] * second[2]
    if operator in ("mm", "addmm") and len(first) == 2 and len(second) == 2:
        return first[0] * first[1] * second[1]
    if operator == "mv" and len(first) == 2:
        return first[0] * first[1]
    return max(math.prod(first), math.prod(second))  # dot, mul: elementwise


@contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points at /dev/null in the block: C++ code writes there directly."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def integrity_snapshot(modules: list) -> dict[str, tuple[object, object]]:
    """What the grader's own code is before any submission code runs: for every function and
    method of ``modules`` (and the torch entry points the watch calls), the object and its code.
    :func:`tampered` compares a later state with it."""
    snapshot: dict[str, tuple[object, object]] = {}

    def record(label: str, value: object) -> None:
        snapshot[label] = (value, getattr(value, "__code__", None))

    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == module.__name__:
                for attribute, member in vars(value).items():
                    if callable(member) or isinstance(member, (staticmethod, classmethod)):
                        record(f"{module.__name__}.{name}.{attribute}", member)
            elif callable(value):
                record(f"{module.__name__}.{name}", value)
    for name in ("_prepare_profiler", "_enable_profiler", "_disable_profiler"):
        record(f"torch.autograd.{name}", getattr(torch.autograd, name))
    record("torch.autograd.profiler.record_function", profiler.record_function)
    return snapshot


def tampered(snapshot: dict[str, tuple[object, object]], instances: tuple = ()) -> list[str]:
    """The names in ``snapshot`` rebound, deleted or given other code since it was taken, and
    the methods of ``instances`` (the grader's live objects) shadowed on the instance."""
    changed = [
        f"{type(instance).__name__}.{name} (on its instance)"
        for instance in instances
        for name in vars(instance)
        if callable(getattr(type(instance), name, None))
    ]
    for label, (value, code) in snapshot.items():
        owner_path, _, name = label.rpartition(".")
        current = _resolve(owner_path, name)
        if current is not value or getattr(current, "__code__", None) is not code:
            changed.append(label)
    return changed


def _resolve(owner_path: str, name: str) -> object:
    """The attribute ``name`` of the module or class that ``owner_path`` names, or None."""
    parts = owner_path.split(".")
    for split in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        owner: object = module
        for part in parts[split:]:
            owner = getattr(owner, part, None)
        where = vars(owner) if isinstance(owner, type) else getattr(owner, "__dict__", {})
        return where.get(name)
    return None
