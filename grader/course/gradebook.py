"""Record grades where nbgrader keeps them, so that its own tools keep working afterwards.

For each graded submission: the test cells' scores in nbgrader's gradebook (the rows
``nbgrader autograde`` writes, so ``nbgrader export``, the formgrader and ``nbgrader
generate_feedback`` read them as usual), and the autograded notebook: the submission with the
master's test cells put back, their hidden region cut out (``generate_feedback`` renders this
notebook for learners as it is), and the grader's verdict as each test cell's output. One
process writes: :class:`GradebookWriter` lives in ``python -m grader autograde``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from grader.course.feedback import failure_lines
from grader.course.nbgrader import course_config, open_gradebook, remove_hidden_tests
from grader.judge.program import grading_metadata
from grader.judge.verdicts import SubmissionResult, TestResult

# What a learner's autograded notebook shows where the master's hidden tests were.
HIDDEN_NOTE = "# (hidden tests, run by the grader)"
# What ``nbgrader submit`` puts beside a notebook and its exchange needs again to release the
# feedback: when it was handed in, and the secret only the submitter's fetch_feedback knows.
EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")


def copy_exchange_files(submitted: Path, destination: Path) -> None:
    """Copy the submission's exchange files (those it has) into ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in EXCHANGE_FILES:
        if (submitted / name).is_file():
            shutil.copyfile(submitted / name, destination / name)


class GradebookError(RuntimeError):
    """The gradebook cannot take the grades (missing, or the assignment is not in it)."""


class GradebookWriter:
    """The single writer of one assignment's grades in a course's gradebook."""

    def __init__(self, course_dir: Path, assignment: str) -> None:
        from nbgrader.api import MissingEntry

        self.course_dir = Path(course_dir)
        self.assignment = assignment
        database = self.course_dir.resolve() / "gradebook.db"
        generate = f"`nbgrader generate_assignment {assignment}` in {self.course_dir} first"
        if not database.exists():
            raise GradebookError(
                f"no gradebook at {database}: run {generate} (it records the assignment's cells)"
            )
        self.database_url = f"sqlite:///{database}"
        self.gradebook = open_gradebook(self.course_dir)
        try:
            record = self.gradebook.find_assignment(assignment)
        except MissingEntry as error:
            self.gradebook.close()
            raise GradebookError(
                f"assignment {assignment!r} is not in the gradebook: run {generate}"
            ) from error
        self.config = course_config(self.course_dir)
        self.notebooks = {
            notebook.name: {cell.name: cell.max_score for cell in notebook.grade_cells}
            for notebook in record.notebooks
        }
        self._visible: dict[str, dict[str, str]] = {}  # notebook -> visible_tests()

    def __enter__(self) -> GradebookWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.gradebook.close()

    def graded_notebook(self, grade_ids: set[str]) -> str:
        """The assignment's notebook whose grade cells include the grader's tests."""
        for name, cells in self.notebooks.items():
            if grade_ids & set(cells):
                return name
        raise GradebookError(
            f"no notebook of {self.assignment!r} has the test cells {sorted(grade_ids)}; "
            "was the assignment generated from the lab's master notebook?"
        )

    def visible_tests(self, notebook: str) -> dict[str, str]:
        """Each test cell's grade id -> the master's source without its hidden tests: what
        nbgrader puts back in a submission's test cell when it grades. Read once per notebook."""
        from nbgrader.api import MissingEntry

        if notebook not in self._visible:
            sources = {}
            for cell in self.notebooks.get(notebook, {}):
                try:
                    master = self.gradebook.find_source_cell(cell, notebook, self.assignment)
                except MissingEntry:
                    continue
                sources[cell] = remove_hidden_tests(master.source, HIDDEN_NOTE)
            self._visible[notebook] = sources
        return self._visible[notebook]

    def record(self, result: SubmissionResult, submitted: Path) -> float | None:
        """Write one submission's scores (creating the student and submission as needed) and
        its late penalty; return the penalty (None when on time or the policy forgives)."""
        from nbgrader.utils import parse_utc
        from sqlalchemy.exc import SAWarning

        stamp = submitted / "timestamp.txt"
        text = stamp.read_text().strip() if stamp.is_file() else ""
        try:
            when = {"timestamp": parse_utc(text)} if text else {}
        except ValueError:
            when = {}
        gradebook = self.gradebook
        with warnings.catch_warnings():
            # nbgrader's own submission bookkeeping trips SQLAlchemy's autoflush warnings.
            warnings.simplefilter("ignore", SAWarning)
            gradebook.update_or_create_student(result.student)
            gradebook.update_or_create_submission(self.assignment, result.student, **when)
            points = {test.grade_id: test.points for test in result.tests}
            for cell in self.notebooks.get(result.notebook, {}):
                grade = gradebook.find_grade(cell, result.notebook, self.assignment, result.student)
                if cell in points:
                    grade.auto_score = points[cell]
                    grade.needs_manual_grade = grade.manual_score is not None
            gradebook.db.commit()
        return self.assign_late_penalty(result)

    def assign_late_penalty(self, result: SubmissionResult) -> float | None:
        """The course's late policy, applied by nbgrader's own preprocessor (so plain nbgrader
        and this grader agree): the ``AssignLatePenalties.plugin_class`` the course config
        names, a ``LateSubmissionPlugin`` or a subclass, with its ``penalty_method``."""
        import nbformat
        from nbgrader.preprocessors import AssignLatePenalties

        resources = {
            "nbgrader": {
                "notebook": result.notebook,
                "assignment": self.assignment,
                "student": result.student,
                "db_url": self.database_url,
            }
        }
        AssignLatePenalties(config=self.config).preprocess(nbformat.v4.new_notebook(), resources)
        self.gradebook.db.expire_all()  # the preprocessor wrote through its own connection
        notebook = self.gradebook.find_submission_notebook(
            result.notebook, self.assignment, result.student
        )
        return notebook.late_submission_penalty

    def write_autograded(self, result: SubmissionResult, submitted: Path) -> Path | None:
        """The autograded notebook (master test cells back, verdicts as their outputs)."""
        try:
            notebook = json.loads((submitted / f"{result.notebook}.ipynb").read_text("utf-8"))
            cells = notebook["cells"]
        except (OSError, ValueError, KeyError):
            return None
        tests = {test.grade_id: test for test in result.tests}
        visible = self.visible_tests(result.notebook)
        for cell in cells:
            meta = grading_metadata(cell)
            grade_id = meta.get("grade_id")
            if not grade_id or meta.get("solution") or not meta.get("grade"):
                continue
            if grade_id in visible:
                cell["source"] = visible[grade_id]
            if cell.get("cell_type") == "code" and grade_id in tests:
                cell["outputs"] = _verdict_outputs(tests[grade_id])
        destination = self.course_dir / "autograded" / result.student / self.assignment
        destination.mkdir(parents=True, exist_ok=True)
        path = destination / f"{result.notebook}.ipynb"
        path.write_text(json.dumps(notebook, indent=1), encoding="utf-8")
        copy_exchange_files(submitted, destination)  # generate_feedback passes them on
        return path


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
