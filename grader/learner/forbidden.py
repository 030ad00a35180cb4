"""What graded functions may not execute, and how the grader notices.

The built-ins that compute attention in one call are off limits inside graded functions. The
rule is about what a function *executes*, never about names in its source (a comment that
mentions ``F.scaled_dot_product_attention`` costs nothing), and every route to the fused
kernels counts. :class:`Tripwires` watches a call: PyTorch's operator profiler lists every ATen
operator the dispatcher runs, whatever the Python route; the Python entry points of
``nn.MultiheadAttention`` and ``F.multi_head_attention_forward`` (which can compute attention
from ordinary operators) are watched too; switching the profiler off counts as tampering. The
grading sandbox and the hidden cells under plain ``nbgrader autograde`` run the same tripwires.
"""

from __future__ import annotations

import functools
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
_MARKER = "grader-tripwires-armed"


def explain(found: list[str]) -> str:
    """What a learner reads when a graded function executed forbidden built-ins."""
    return (
        f"it executes {', '.join(found)}, which graded functions may not use; "
        "implement attention yourself (bmm, einsum or matmul, softmax)."
    )


class Tripwires:
    """Records, never blocks, forbidden operators run while armed (``with wires.armed():``);
    ``take()`` returns what was seen."""

    def __init__(self) -> None:
        self.seen: list[str] = []

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
    def armed(self) -> Iterator[None]:
        """Watch the block: every ATen operator it runs, and the watched entry points.

        Re-entrant: a block armed inside an armed block is watched by the outer one.
        """
        if self in _ARMED:
            yield
            return
        started = _start_profiler()
        if not started:
            self.seen.append(TAMPERING)  # a profiler the learner started is still running
        _ARMED.append(self)
        try:
            yield
        finally:
            _ARMED.remove(self)
            if started:
                self.seen.extend(_stop_profiler())

    def take(self) -> list[str]:
        """Forbidden uses recorded since the last call, once each, in order."""
        found = list(dict.fromkeys(self.seen))
        self.seen.clear()
        return found


_ARMED: list[Tripwires] = []


def _start_profiler() -> bool:
    """Start PyTorch's CPU operator profiler at the lowest level (the public context manager
    costs tens of milliseconds per run in post-processing); False when one already runs."""
    settings = profiler.profile(
        use_cpu=True, experimental_config=_ExperimentalConfig(profile_all_threads=True)
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


def _stop_profiler() -> list[str]:
    """What forbidden operators ran; TAMPERING when the profiler was stopped or replaced."""
    try:
        with stderr_silenced():
            result = torch.autograd._disable_profiler()
        names = [event.name() for event in result.events()]
    except RuntimeError:
        return [TAMPERING]
    if _MARKER not in names:
        return [TAMPERING]
    return [
        what
        for name in dict.fromkeys(names)
        for mark, what in FORBIDDEN_OPERATORS.items()
        if mark in name
    ]


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
