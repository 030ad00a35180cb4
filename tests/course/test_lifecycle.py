"""A course run end to end through nbgrader's own exchange, with four learners.

The instructor creates the assignment with a due date and a roster and releases it; ada
submits on time, cy twice (the later one counts), ben after the due date under the course's
zero-penalty policy, dee never. The instructor collects, grades with ``python -m grader
autograde``, generates and releases feedback; each learner fetches their own. Plain ``nbgrader
autograde`` grades a copy of the collected course: both graders apply the late policy alike,
and ``nbgrader export`` and ``python -m grader report`` give the same totals.
The assignment is the sample-submission corpus's small "lab" (no training), so the whole
course takes about two minutes, most of it waiting for the due date.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trial_course
from conftest import REPO_ROOT

from grader.course import course_dir as course_folder
from grader.course.roster import rows as report_rows
from grader.sandbox import launch as sandbox
from solutions.hidden_cases import NOTEBOOK_SEED

sys.path.insert(0, str(REPO_ROOT / "tests" / "grader"))
from submissions import corpus  # noqa: E402

if sandbox.bwrap_executable() is None:
    pytest.skip("bubblewrap (bwrap) is not installed", allow_module_level=True)

ASSIGNMENT = corpus.ASSIGNMENT
ROSTER = ("ada", "ben", "cy", "dee")
# Long enough for the on-time submissions (a few nbgrader commands) on a busy machine.
DUE_IN_SECONDS = 60


class Course:
    """The instructor's course folder, the exchange and each learner's home, with a transcript
    of every command run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = corpus.make_course(root / "course")
        self.exchange = root / "exchange"
        self.exchange.mkdir()
        self.transcript: list[str] = []
        with (self.dir / "nbgrader_config.py").open("a") as config:
            config.write(
                f"c.Exchange.root = {str(self.exchange)!r}\n"
                'c.LateSubmissionPlugin.penalty_method = "zero"\n'
            )

    def instructor(self, *args: str, **env: str) -> str:
        return self._run(["nbgrader", *args], "instructor", self.dir, **env)

    def grader(self, *args: str) -> str:
        return self._run(["grader", *args], "instructor", self.dir)

    def home(self, learner: str) -> Path:
        """A learner's home, configured for the course as a hub's image would be; here all
        learners share one system account, so each home names its learner (on a hub nbgrader
        takes the account's name)."""
        home = self.root / "home" / learner
        if not home.exists():
            (home / ".jupyter").mkdir(parents=True)
            (home / ".jupyter" / "nbgrader_config.py").write_text(
                "c = get_config()\n"
                f"c.CourseDirectory.course_id = {trial_course.TRIAL_COURSE_ID!r}\n"
                f"c.Exchange.root = {str(self.exchange)!r}\n"
                f"c.CourseDirectory.student_id = {learner!r}\n"
            )
        return home

    def learner(self, learner: str, *args: str) -> str:
        home = self.home(learner)
        env = {"HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / ".jupyter")}
        return self._run(["nbgrader", *args], learner, home, **env)

    def _run(self, command: list[str], who: str, cwd: Path, **env: str) -> str:
        program = ["-m", "nbgrader"] if command[0] == "nbgrader" else ["-m", "grader"]
        done = subprocess.run(
            [sys.executable, *program, *command[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=course_folder.nbgrader_env(**env),
        )
        said = (done.stdout + done.stderr).strip()
        lines = [line for line in said.splitlines() if "[" in line or not line.startswith(" ")]
        self.transcript.append(f"$ ({who}) {' '.join(command)}\n" + "\n".join(lines[-8:]))
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{said[-3000:]}"
        return said

    def work(self, learner: str, entry: str) -> None:
        """The learner's answers, written into the notebook they fetched."""
        path = self.home(learner) / ASSIGNMENT / f"{corpus.NOTEBOOK}.ipynb"
        assert path.is_file(), f"{learner} has no fetched notebook"
        import nbformat

        nbformat.write(corpus.notebook(corpus.read_cells(entry)), path)


def utc(when: dt.datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S.%f} UTC"


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Course:
    course = Course(tmp_path_factory.mktemp("lifecycle"))
    due = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(
        seconds=DUE_IN_SECONDS
    )
    course.instructor("db", "assignment", "add", ASSIGNMENT, f"--duedate={utc(due)}")
    roster = course.root / "roster.csv"
    roster.write_text("id,first_name,last_name\n" + "".join(f"{s},{s},Learner\n" for s in ROSTER))
    course.instructor("db", "student", "import", str(roster))
    course.instructor("release_assignment", ASSIGNMENT)

    for learner in ("ada", "cy", "ben"):
        course.learner(learner, "fetch_assignment", ASSIGNMENT)
    course.work("ada", "correct_bmm")
    course.learner("ada", "submit", ASSIGNMENT)
    course.work("cy", "correct_einsum")
    course.learner("cy", "submit", ASSIGNMENT)
    time.sleep(1.1)  # nbgrader's exchange tells submissions apart by their second
    course.work("cy", "mistake_missing_scale")
    course.learner("cy", "submit", ASSIGNMENT)
    on_time = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert on_time < due, "the on-time submissions took longer than DUE_IN_SECONDS"
    time.sleep((due - on_time).total_seconds() + 1)
    course.work("ben", "correct_loop")
    course.learner("ben", "submit", ASSIGNMENT)

    course.instructor("collect", ASSIGNMENT)
    plain = course.root / "plain"
    shutil.copytree(course.dir, plain)  # the same collected class, for plain nbgrader
    course.grader(
        "autograde",
        *("--course-dir", str(course.dir), "--assignment", ASSIGNMENT),
        *("--seed", str(NOTEBOOK_SEED), "--quiet"),
    )
    course.instructor("generate_feedback", ASSIGNMENT)
    course.instructor("release_feedback", ASSIGNMENT)
    for learner in ROSTER:
        course.home(learner)
        course.learner(learner, "fetch_feedback", ASSIGNMENT)
    course.instructor("export", "--to", str(course.root / "export.csv"))
    course.grader(
        "report",
        *("--course-dir", str(course.dir), "--assignment", ASSIGNMENT),
        *("--csv", str(course.root / "report.csv")),
    )
    course.plain_scores = trial_course.plain_autograde(plain, ASSIGNMENT)
    course.plain_dir = plain
    print("\n\n".join(course.transcript))
    print((course.root / "report.csv").read_text())
    return course


def fetched_feedback(course: Course, learner: str) -> list[Path]:
    return sorted((course.home(learner) / ASSIGNMENT / "feedback").rglob("*.html"))


def report(course: Course) -> dict[str, dict]:
    with (course.root / "report.csv").open() as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


@pytest.mark.timeout(900)
def test_each_learner_fetches_only_their_own_feedback(course):
    pages = {learner: fetched_feedback(course, learner) for learner in ROSTER}
    assert pages["dee"] == []  # never submitted, nothing to fetch
    for learner in ("ada", "ben", "cy"):
        assert len(pages[learner]) == 1, pages[learner]
    text = {learner: pages[learner][0].read_text() for learner in ("ada", "ben", "cy")}
    # ben's page says the penalty; cy's shows the later (unscaled) submission's diagnosis
    assert "Late submission penalty" in text["ben"] or "late" in text["ben"].lower()
    assert "missing_scale" in text["cy"]
    assert "missing_scale" not in text["ada"] and "missing_scale" not in text["ben"]
    for page in text.values():
        assert course_folder.hidden_test_leaks(page) == []


def test_feedback_shows_each_diagnosis_once_per_test(course):
    verdict = json.loads(
        (course.dir / "grader_results" / ASSIGNMENT / "cy.json").read_text(encoding="utf-8")
    )
    failed = [t for t in verdict["tests"] if any(not c["passed"] for c in t["cases"])]
    assert failed and max(len(t["cases"]) for t in failed) > 1  # a mistake fails many cases
    page = fetched_feedback(course, "cy")[0].read_text()
    assert page.count("[missing_scale]") == sum(
        any(c.get("diagnosis") == "missing_scale" for c in t["cases"]) for t in failed
    )


def test_report_lists_the_roster_with_lateness_penalties_and_missing(course):
    rows = report(course)
    assert sorted(rows) == sorted(ROSTER)
    assert rows["dee"]["status"] == "missing" and rows["dee"]["total"] == "0"
    assert rows["dee"]["submitted_at"] == "" and rows["dee"]["max_total"] == "100"
    assert rows["ada"]["total"] == "100" and rows["ada"]["seconds_late"] == "0"
    assert rows["ada"]["late_penalty"] == "0" and rows["ada"]["submitted_at"].endswith("UTC")
    assert float(rows["ben"]["seconds_late"]) > 0
    assert rows["ben"]["late_penalty"] == "100" and rows["ben"]["total"] == "0"
    assert rows["cy"]["status"] == "ok" and "missing_scale" in rows["cy"]["diagnoses"]
    assert 0 < float(rows["cy"]["total"]) < 100


def test_nbgrader_export_and_the_report_give_the_same_totals(course):
    with (course.root / "export.csv").open() as handle:
        exported = {row["student_id"]: row for row in csv.DictReader(handle)}
    rows = report(course)
    assert sorted(exported) == sorted(rows)
    for learner, row in rows.items():
        assert float(exported[learner]["score"]) == float(row["total"]), learner
        assert float(exported[learner]["late_submission_penalty"]) == float(row["late_penalty"])


def test_plain_nbgrader_and_the_sandbox_agree_on_late_work_too(course):
    sandboxed = {row["student_id"]: row for row in report_rows(course.dir, ASSIGNMENT)}
    plain = {row["student_id"]: row for row in report_rows(course.plain_dir, ASSIGNMENT)}
    columns = ("task1_score", "task2_score", "total", "seconds_late", "late_penalty")
    for learner in ROSTER:
        assert {c: plain[learner][c] for c in columns} == {
            c: sandboxed[learner][c] for c in columns
        }, learner
    assert plain["ben"]["late_penalty"] == 100  # the policy applied, not just agreed on
