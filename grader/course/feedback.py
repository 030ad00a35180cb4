"""Per-learner feedback: which tests passed and, for each failure, what is wrong.

It shows test names, points, case names with their sizes and the diagnosis, never the hidden
test code or the hidden inputs' values.
"""

from __future__ import annotations

import html
from pathlib import Path

from grader.judge.verdicts import SubmissionResult

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


def render(result: SubmissionResult) -> str:
    """The feedback page of one submission, as HTML."""
    e = html.escape
    total, maximum = result.score(), result.max_score()
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Feedback: {e(result.assignment)} ({e(result.student)})</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{e(result.assignment)}: {total:g} / {maximum:g}</h1>",
        f"<p>Student <code>{e(result.student)}</code>, notebook <code>{e(result.notebook)}</code>."
        f" Status: <strong>{e(result.status)}</strong> ({e(STATUS_WORDS.get(result.status, ''))}).</p>",
    ]
    if result.messages:
        parts.append("<div class='note'><ul>")
        parts += [f"<li>{e(message)}</li>" for message in result.messages]
        parts.append("</ul></div>")
    parts.append("<table><tr><th>test</th><th>points</th><th>cases</th></tr>")
    for test in result.tests:
        verdict = "pass" if test.passed else "fail"
        rows = []
        for case in test.cases:
            mark = "&#10003;" if case["passed"] else "&#10007;"
            text = e(case["name"]) if case["passed"] else e(case["message"])
            hint = f" <em>[{e(case['diagnosis'])}]</em>" if case.get("diagnosis") else ""
            rows.append(
                f"<li class='{'pass' if case['passed'] else 'fail'}'>{mark} {text}{hint}</li>"
            )
        parts.append(
            f"<tr><td class='{verdict}'>{e(test.grade_id)} (task {test.task})</td>"
            f"<td>{test.points:g} / {test.max_points:g}</td><td><ul>{''.join(rows)}</ul></td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_feedback(course_dir: Path, result: SubmissionResult) -> Path:
    """``feedback/<student>/<assignment>/<notebook>.html``, where nbgrader keeps feedback."""
    path = Path(course_dir) / "feedback" / result.student / result.assignment
    path = path / f"{result.notebook}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result), encoding="utf-8")
    return path
