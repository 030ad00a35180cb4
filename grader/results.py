"""Where the grader keeps each submission's full verdict (for reports and re-runs).

``<course>/grader_results/<assignment>/<student>.json``: status, scores, every case's
message and diagnosis. Instructor-side only: it sits outside the folders nbgrader releases.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from grader.judge import SubmissionResult


def results_dir(course_dir: Path, assignment: str) -> Path:
    return Path(course_dir) / "grader_results" / assignment


def save_result(course_dir: Path, result: SubmissionResult) -> Path:
    folder = results_dir(course_dir, result.assignment)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.student}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
    os.replace(temporary, path)
    return path


def load_results(course_dir: Path, assignment: str) -> dict[str, SubmissionResult]:
    """student id -> result, for every submission graded so far."""
    results = {}
    for path in sorted(results_dir(course_dir, assignment).glob("*.json")):
        result = SubmissionResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        results[result.student] = result
    return results
