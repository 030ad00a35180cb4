"""Where the grader keeps each submission's full verdict, for reports and regrades.

``<course>/grader_results/<assignment>/<student>.json`` (status, scores, seed, every case's
message and diagnosis) and ``seed.json``, the seed the assignment is graded with, reused by
every later run. Instructor-side only: it sits outside the folders nbgrader releases.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from grader.judge.verdicts import SubmissionResult


def results_dir(course_dir: Path, assignment: str) -> Path:
    return Path(course_dir) / "grader_results" / assignment


def _write_json(path: Path, data: dict, indent: int | None = None) -> Path:
    """Write ``data`` to ``path`` whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    os.replace(temporary, path)
    return path


def save_result(course_dir: Path, result: SubmissionResult) -> Path:
    path = results_dir(course_dir, result.assignment) / f"{result.student}.json"
    return _write_json(path, asdict(result), indent=1)


def load_results(course_dir: Path, assignment: str) -> dict[str, SubmissionResult]:
    """student id -> result, for every submission graded so far."""
    results = {}
    for path in sorted(results_dir(course_dir, assignment).glob("*.json")):
        if path.name != "seed.json":
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
    _write_json(results_dir(course_dir, assignment) / "seed.json", {"seed": int(seed)})
