"""What a visible check prints under the learner's cell, and the report it returns: one
``✓``/``✗`` line per property, "not implemented yet" for a stub, and for any other error its
type, message and line of the learner's code (no traceback). The first ✗ names the mistake,
its hint and the line to look at; a later property that fails for the same mistake is not a
second ✗ but a ``·`` line saying it follows from the failure above.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grader.learner.calls import describe_exception, tripwires, where_in_learner_code
from grader.learner.diagnose import Diagnosis
from grader.learner.forbidden import explain as explain_forbidden
from grader.learner.mistakes import LOOK_AT_LAST, LOOK_FOR

PASS, FAIL, FOLLOWS = "✓", "✗", "·"
NOT_IMPLEMENTED = "not implemented yet — fill in the cell above"
MORE_WHEN_GRADED = (
    "More cases run when your notebook is graded (other shapes, float64, long sequences, "
    "gradients), so a pass here is not yet a promise of full marks."
)


@dataclass
class CheckResult:
    """One property: its name, whether it holds, and what to do when it does not."""

    name: str
    passed: bool
    detail: str = ""
    mistake: str | None = None


@dataclass
class CheckReport:
    """All properties checked for one function, each printed as it is recorded; ``passed``
    when every one holds."""

    function: str
    results: list[CheckResult] = field(default_factory=list)
    not_implemented: bool = False
    forbidden: list[str] = field(default_factory=list)
    source: Callable | None = None  # the learner's function, to point at a line of it
    figure: Any = None  # the learner's attention weights next to the expected, where they help

    def __post_init__(self) -> None:
        tripwires().take()  # what an earlier, interrupted check left behind
        print(f"Checking {self.function}:")

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

    def record(self, name: str, passed: bool, detail: str = "", mistake: str | None = None) -> bool:
        """Print one line: ✓, ✗ with its detail, or · when an earlier ✗ named the same mistake
        (this property then fails only because of it)."""
        follows = not passed and mistake is not None and mistake in self.mistakes
        self.results.append(CheckResult(name, passed, detail, mistake))
        if follows:
            print(f"  {FOLLOWS} {name}: follows from the failure above")
            return passed
        print(f"  {PASS if passed else FAIL} {name}")
        if not passed and detail:
            print(f"      ↳ {detail}")
        line = line_to_look_at(self.source, mistake) if not passed else ""
        if line:
            print(f"      ↳ look at {line}")
        return passed

    def note_forbidden(self, found: list[str]) -> None:
        """Forbidden operators a probe saw (reported once, by :meth:`finish`)."""
        self.forbidden.extend(f for f in found if f not in self.forbidden)

    def diagnosis(self, name: str, diagnosis: Diagnosis) -> bool:
        return self.record(name, diagnosis.correct, diagnosis.message, diagnosis.mistake)

    def check(
        self, name: str, produce: Callable[..., Diagnosis | tuple], *args: Any, **kw: Any
    ) -> bool:
        """Record ``produce(*args, **kw)``; a learner error in it becomes a ✗ line with the error."""
        try:
            outcome = produce(*args, **kw)
        except NotImplementedYet:
            return self.record(name, False, NOT_IMPLEMENTED, "not_implemented")
        except LearnerError as failure:
            return self.record(name, False, str(failure))
        if isinstance(outcome, Diagnosis):
            return self.diagnosis(name, outcome)
        return self.record(name, *outcome)

    def stub(self) -> CheckReport:
        """The function is still the stub: say so, and stop."""
        self.not_implemented = True
        print(f"  {FAIL} {NOT_IMPLEMENTED}")
        return self

    def finish(self) -> CheckReport:
        found = self.forbidden + [f for f in tripwires().take() if f not in self.forbidden]
        if found:
            self.record("uses no built-in attention", False, explain_forbidden(found), "forbidden")
        if self.passed:
            print(f"  all checks passed. {MORE_WHEN_GRADED}")
        else:
            print(f"  {sum(r.passed for r in self.results)}/{len(self.results)} checks passed.")
        return self


def line_to_look_at(fn: Callable | None, mistake: str | None) -> str:
    """'line 7 of multihead_attention: scores = q @ k.transpose(-2, -1)' where ``mistake``
    usually sits in ``fn`` ("" when unknown: no source, no catalogued mistake, no match).
    Line numbers count as the notebook shows them, within the cell."""
    patterns = LOOK_FOR.get(mistake or "")
    if fn is None or not patterns:
        return ""
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return ""
    body = [(start + i, text.strip()) for i, text in enumerate(lines) if i > 0]
    code = [(n, t) for n, t in body if t and not t.startswith(("#", '"""'))]
    for pattern in patterns:
        found = [(n, t) for n, t in code if re.search(pattern, t)]
        if found:
            number, text = found[-1] if mistake in LOOK_AT_LAST else found[0]
            return f"line {number} of {getattr(fn, '__name__', 'your function')}: {text}"
    return ""


class NotImplementedYet(Exception):
    """The learner's function raised NotImplementedError: the stub is not filled in yet."""


class LearnerError(Exception):
    """The learner's function raised something else; the message says what and where."""


def call_learner(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with the forbidden-operator tripwires armed; its errors become
    NotImplementedYet or LearnerError (type, message and line of the learner's code)."""
    try:
        with tripwires().armed():
            return fn(*args, **kwargs)
    except NotImplementedError as error:
        raise NotImplementedYet() from error
    except Exception as error:  # noqa: BLE001 - learner code may raise anything; show it plainly
        where = where_in_learner_code(error)
        raise LearnerError(
            f"raised {describe_exception(error)}" + (f" ({where})" if where else "")
        ) from None
