"""What a learner gets back: which tests passed and, for each failure, what is wrong.

Two files, where nbgrader keeps them: the autograded notebook (the submission with the master's
visible test cells put back and the verdict as each test cell's output, which ``nbgrader
generate_feedback`` renders as it is) and the feedback page. Both show test names, points,
case names with their sizes and the diagnosis, never the hidden test code or inputs' values.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

from grader.judge.program import grading_metadata
from grader.judge.verdicts import SubmissionResult, TestResult

STATUS_WORDS = {
    "ok": "graded",
    "forbidden": "uses a built-in that graded functions may not use",
    "memory": "stopped for using too much memory",
    "processes": "stopped for starting too many processes",
    "timeout": "stopped for running too long",
    "crashed": "the process running your code ended early",
    "invalid": "the notebook could not be read",
    "missing": "no notebook was submitted",
    "error": "the grader failed on this submission (your instructor has been told)",
}

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .4rem .6rem; text-align: left; vertical-align: top; }
.pass { color: #17692c; } .fail { color: #a01616; } .note { background: #fff6d6; padding: .6rem; }
code { background: #f3f3f3; padding: 0 .2rem; }
"""


def failure_lines(test: TestResult) -> list[str]:
    """One line per distinct diagnosis of a test's failed cases: the first such case's message
    and how many other cases failed the same way (a mistake breaks most cases alike, and
    the learner reads it once)."""
    groups: dict[str, list[dict]] = {}
    for case in test.cases:
        if not case["passed"]:
            groups.setdefault(case.get("diagnosis") or case["message"], []).append(case)
    lines = []
    for diagnosis, cases in groups.items():
        line = cases[0]["message"]
        if cases[0].get("diagnosis"):
            line += f" [{diagnosis}]"
        if len(cases) > 1:
            others = ", ".join(case["name"] for case in cases[1:])
            line += f" (the same in {len(cases) - 1} more: {others})"
        lines.append(line)
    return lines


def render(result: SubmissionResult, late_penalty: float | None = None) -> str:
    """The feedback page of one submission, as HTML."""
    e = html.escape
    total, maximum = result.score() - (late_penalty or 0.0), result.max_score()
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Feedback: {e(result.assignment)} ({e(result.student)})</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{e(result.assignment)}: {total:g} / {maximum:g}</h1>",
        f"<p>Student <code>{e(result.student)}</code>, notebook <code>{e(result.notebook)}</code>."
        f" Status: <strong>{e(result.status)}</strong> ({e(STATUS_WORDS.get(result.status, ''))}).</p>",
    ]
    if late_penalty:
        parts.append(
            f"<p class='note'>Submitted after the due date: late penalty {late_penalty:g} "
            f"(score before the penalty {result.score():g}).</p>"
        )
    if result.messages:
        parts.append("<div class='note'><ul>")
        parts += [f"<li>{e(message)}</li>" for message in result.messages]
        parts.append("</ul></div>")
    parts.append("<table><tr><th>test</th><th>points</th><th>cases</th></tr>")
    for test in result.tests:
        verdict = "pass" if test.passed else "fail"
        rows = [f"<li class='fail'>&#10007; {e(line)}</li>" for line in failure_lines(test)]
        passed = [case["name"] for case in test.cases if case["passed"]]
        if passed:
            rows.append(f"<li class='pass'>&#10003; {e(', '.join(passed))}</li>")
        parts.append(
            f"<tr><td class='{verdict}'>{e(test.grade_id)} (task {test.task})</td>"
            f"<td>{test.points:g} / {test.max_points:g}</td><td><ul>{''.join(rows)}</ul></td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_feedback(
    course_dir: Path,
    result: SubmissionResult,
    submitted: Path,
    visible_tests: dict[str, str],
    late_penalty: float | None = None,
) -> Path:
    """Write the autograded notebook (when the submission is a readable notebook) and the
    feedback page, each with the submission's exchange files beside it; return the page."""
    autograded = _write_autograded(course_dir, result, submitted, visible_tests)
    feedback = Path(course_dir) / "feedback" / result.student / result.assignment
    for folder in filter(None, (autograded, feedback)):
        _copy_exchange_files(submitted, folder)
    path = feedback / f"{result.notebook}.html"
    path.write_text(render(result, late_penalty), encoding="utf-8")
    return path


def _copy_exchange_files(submitted: Path, destination: Path) -> None:
    """What ``nbgrader submit`` put beside the notebook (when it was handed in, the secret only
    the submitter's fetch_feedback knows): ``generate_feedback`` and ``release_feedback`` want
    them beside the autograded notebook and the feedback."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("timestamp.txt", "submission_secret.txt"):
        if (submitted / name).is_file():
            shutil.copyfile(submitted / name, destination / name)


def _write_autograded(
    course_dir: Path, result: SubmissionResult, submitted: Path, visible_tests: dict[str, str]
) -> Path | None:
    """The submission with the master's visible test cells back, verdicts as their outputs."""
    try:
        notebook = json.loads((submitted / f"{result.notebook}.ipynb").read_text("utf-8"))
        cells = notebook["cells"]
    except (OSError, ValueError, KeyError):
        return None
    tests = {test.grade_id: test for test in result.tests}
    for cell in cells:
        meta = grading_metadata(cell)
        grade_id = meta.get("grade_id")
        if not grade_id or meta.get("solution") or not meta.get("grade"):
            continue
        if grade_id in visible_tests:
            cell["source"] = visible_tests[grade_id]
        if cell.get("cell_type") == "code" and grade_id in tests:
            cell["outputs"] = _verdict_outputs(tests[grade_id])
    folder = Path(course_dir) / "autograded" / result.student / result.assignment
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{result.notebook}.ipynb").write_text(json.dumps(notebook, indent=1), "utf-8")
    return folder


def _verdict_outputs(test: TestResult) -> list[dict]:
    """A test cell's outputs: a summary, and an error when it failed (nbgrader scores 0)."""
    passed = sum(case["passed"] for case in test.cases)
    summary = f"{test.grade_id}: {passed}/{len(test.cases)} cases passed\n"
    outputs = [{"output_type": "stream", "name": "stdout", "text": summary}]
    if not test.passed:
        failures = "\n".join(f"- {line}" for line in failure_lines(test))
        outputs.append(
            {
                "output_type": "error",
                "ename": "HiddenTestFailure",
                "evalue": failures,
                "traceback": [f"HiddenTestFailure: {failures}"],
            }
        )
    return outputs
