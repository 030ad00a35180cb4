"""Where the grader keeps each submission's full verdict (for reports and re-runs).

``<course>/grader_results/<assignment>/<student>.json``: status, scores, seed, every case's
message and diagnosis; ``seed.json`` beside them: the seed the assignment is graded with,
reused by every later run (a regrade of one student draws the same hidden inputs).
Instructor-side only: it sits outside the folders nbgrader releases.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from grader.judge.verdicts import SubmissionResult


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
        if path.name == "seed.json":
            continue
        result = SubmissionResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        results[result.student] = result
    return results


def recorded_seed(course_dir: Path, assignment: str) -> int | None:
    """The seed this assignment was graded with, if it was graded before."""
    path = results_dir(course_dir, assignment) / "seed.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["seed"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RuntimeError(
            f"{path} is damaged ({error}); restore it, or pass --seed with the seed the "
            "class was graded with (every result in that folder records it)"
        ) from None


def record_seed(course_dir: Path, assignment: str, seed: int) -> None:
    folder = results_dir(course_dir, assignment)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / "seed.json.tmp"
    temporary.write_text(json.dumps({"seed": int(seed)}), encoding="utf-8")
    os.replace(temporary, folder / "seed.json")
