"""Visible checks for the notebook: one printed line per property, and a named mistake."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class CheckReport:
    function: str
    results: list[CheckResult] = field(default_factory=list)
    not_implemented: bool = False

    @property
    def passed(self) -> bool:
        return not self.not_implemented and all(r.passed for r in self.results)


def check_multihead_attention(fn) -> CheckReport:
    raise NotImplementedError


def check_attention_function(fn) -> CheckReport:
    raise NotImplementedError


def check_parallel_multihead_attention(fn, pool=None, reference=None) -> CheckReport:
    raise NotImplementedError
