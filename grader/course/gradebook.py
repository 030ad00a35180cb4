"""Record grades where nbgrader keeps them, so that its own tools keep working afterwards.

Each graded submission's test-cell scores go in nbgrader's gradebook (the rows ``nbgrader
autograde`` writes, read by ``nbgrader export``, the formgrader and ``generate_feedback``), and
the course's late policy is applied by nbgrader's own preprocessor. One process writes:
:class:`GradebookWriter` lives in ``python -m grader autograde``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from grader.course.course_dir import course_config, open_gradebook, remove_hidden_tests
from grader.judge.verdicts import SubmissionResult

# What a learner's autograded notebook shows where the master's hidden tests were.
HIDDEN_NOTE = "# (hidden tests, run by the grader)"


class GradebookError(RuntimeError):
    """The gradebook cannot take the grades (missing, or the assignment is not in it)."""


class GradebookWriter:
    """The single writer of one assignment's grades in a course's gradebook."""

    def __init__(self, course_dir: Path, assignment: str) -> None:
        from nbgrader.api import MissingEntry

        self.course_dir, self.assignment = Path(course_dir), assignment
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
        nbgrader puts back in a submission's test cell when it grades."""
        from nbgrader.api import MissingEntry

        sources = {}
        for cell in self.notebooks.get(notebook, {}):
            try:
                master = self.gradebook.find_source_cell(cell, notebook, self.assignment)
            except MissingEntry:
                continue
            sources[cell] = remove_hidden_tests(master.source, HIDDEN_NOTE)
        return sources

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
        return self._late_penalty(result)

    def _late_penalty(self, result: SubmissionResult) -> float | None:
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
