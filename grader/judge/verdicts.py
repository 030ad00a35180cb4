"""What the judge decides about a submission: one result per test cell, and the whole."""

from __future__ import annotations

from dataclasses import dataclass, field

# Submission statuses, worst first: the first that applies names the submission.
STATUSES = (
    "tampered",
    "forbidden",
    "memory",
    "processes",
    "timeout",
    "crashed",
    "invalid",
    "missing",
    "ok",
)


@dataclass
class TestResult:
    """One nbgrader test cell (grade_id) of one submission."""

    grade_id: str
    task: int
    function: str
    points: float
    max_points: float
    status: str
    cases: list[dict] = field(default_factory=list)  # CaseResult fields

    @property
    def passed(self) -> bool:
        return self.points == self.max_points


@dataclass
class SubmissionResult:
    student: str
    assignment: str
    notebook: str
    status: str
    tests: list[TestResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed: int | None = None  # of the hidden inputs; instructor-side, never shown to learners

    @property
    def diagnoses(self) -> list[str]:
        keys = [case["diagnosis"] for test in self.tests for case in test.cases]
        return list(dict.fromkeys(key for key in keys if key))

    def score(self, task: int | None = None) -> float:
        return sum(t.points for t in self.tests if task is None or t.task == task)

    def max_score(self, task: int | None = None) -> float:
        return sum(t.max_points for t in self.tests if task is None or t.task == task)

    @classmethod
    def from_dict(cls, data: dict) -> SubmissionResult:
        tests = [TestResult(**test) for test in data.get("tests", [])]
        return cls(**{**data, "tests": tests})
