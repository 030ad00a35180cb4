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


class Records:
    """One assignment's ``grader_results/<assignment>/`` folder."""

    def __init__(self, course_dir: Path, assignment: str) -> None:
        self.folder = Path(course_dir) / "grader_results" / assignment

    def seed(self) -> int | None:
        """The seed this assignment was graded with, if it was graded before."""
        path = self.folder / "seed.json"
        try:
            return int(json.loads(path.read_text(encoding="utf-8"))["seed"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RuntimeError(
                f"{path} is damaged ({error}); restore it, or pass --seed with the seed the "
                "class was graded with (every result in that folder records it)"
            ) from None

    def record_seed(self, seed: int) -> None:
        self._write_json("seed.json", {"seed": int(seed)})

    def save(self, result: SubmissionResult) -> Path:
        return self._write_json(f"{result.student}.json", asdict(result), indent=1)

    def results(self) -> dict[str, SubmissionResult]:
        """student id -> result, for every submission graded so far."""
        results = {}
        for path in sorted(self.folder.glob("*.json")):
            if path.name != "seed.json":
                result = SubmissionResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
                results[result.student] = result
        return results

    def _write_json(self, name: str, data: dict, indent: int | None = None) -> Path:
        """Write ``data`` to ``name`` whole or not at all."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path, temporary = self.folder / name, self.folder / f"{name}.tmp"
        temporary.write_text(json.dumps(data, indent=indent), encoding="utf-8")
        os.replace(temporary, path)
        return path
