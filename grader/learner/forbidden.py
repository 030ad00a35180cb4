"""What graded functions may not execute, and how the grader notices.

Learners implement attention themselves, so the built-ins that compute it in one call are
off limits inside graded functions. The rule is about what the function *executes*, never
about names in its source: a comment, a check elsewhere in the cell or a docstring that
mentions ``F.scaled_dot_product_attention`` costs nothing, while every route to the fused
kernels counts (``F.``, ``getattr`` strings, ``torch._C._nn``, ``torch.ops.aten``, with
torch-function overrides switched off).

:class:`Tripwires` watches one call of a learner function:
- below the Python layer, PyTorch's operator profiler lists every ATen operator the
  dispatcher runs, whatever Python route reached it;
- ``nn.MultiheadAttention`` and ``F.multi_head_attention_forward`` can compute attention out
  of ordinary operators (bmm, softmax), so their Python entry points are watched too;
- a call that switches the profiler off, or replaces it, is recorded as tampering.

The same tripwires run in the grading sandbox and in the hidden cells plain
``nbgrader autograde`` executes, so both graders apply one rule.
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
    """Records forbidden operators while armed (``with tripwires.armed(): fn(...)``).

    Calls go through unchanged; this only records. ``take()`` returns what was seen.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._watch_python_entry_points()

    def _watch_python_entry_points(self) -> None:
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
        session = _ProfilerSession.start()
        if session is None:
            self.seen.append(TAMPERING)  # a profiler the learner started is still running
        _ARMED.append(self)
        try:
            yield
        finally:
            _ARMED.remove(self)
            if session is not None:
                self.seen.extend(session.stop())

    def take(self) -> list[str]:
        """Forbidden uses recorded since the last call, once each, in order."""
        found = list(dict.fromkeys(self.seen))
        self.seen.clear()
        return found


_ARMED: list[Tripwires] = []


class _ProfilerSession:
    """One run of PyTorch's CPU operator profiler, started and stopped at the lowest level
    (the public context manager costs tens of milliseconds per run in post-processing)."""

    def __init__(self) -> None:
        settings = profiler.profile(
            use_cpu=True, experimental_config=_ExperimentalConfig(profile_all_threads=True)
        )
        self.config, self.activities = settings.config(), settings.kineto_activities

    @classmethod
    def start(cls) -> _ProfilerSession | None:
        """A running session, or None when another profiler is already running."""
        session = cls()
        try:
            with _profiler_chatter_hidden():
                torch.autograd._prepare_profiler(session.config, session.activities)
                torch.autograd._enable_profiler(session.config, session.activities)
        except RuntimeError:
            return None
        with profiler.record_function(_MARKER):
            pass
        return session

    def stop(self) -> list[str]:
        """What forbidden operators ran; TAMPERING when the session was stopped or replaced."""
        try:
            with _profiler_chatter_hidden():
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
def _profiler_chatter_hidden() -> Iterator[None]:
    """The profiler's C++ side prints a line on stderr at each start and stop; no setting
    turns it off, so file descriptor 2 points at /dev/null for those two calls."""
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
