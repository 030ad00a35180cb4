"""nbgrader configuration of the Transformers From Scratch course (this folder is the course root).

Run nbgrader from this folder (``cd notebooks``), or use ``python -m grader release`` and
friends from the repository root.
"""

import os
from pathlib import Path

from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbgrader.utils import is_grade

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

COURSE_ROOT = Path(__file__).resolve().parent
# The repository that holds solutions/hidden_tests.py (None for a copy of the course elsewhere).
REPO_ROOT = next(
    (p for p in COURSE_ROOT.parents if (p / "solutions" / "hidden_tests.py").is_file()), None
)

c.CourseDirectory.course_id = "transformers-from-scratch"
# What running the notebook leaves next to it never becomes part of a release or a grade.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    "my_transformer_model.py",
    "lab_solutions.py",
    "transformers_from_scratch_solutions",
    "*.pt",
    "runs",
    "checkpoints",
]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Per cell. Graded runs use the quick training settings (NBGRADER_EXECUTION is set), where
# the longest cell takes well under a minute; a learner's Validate on a slow laptop gets
# the same generous margin.
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True


class ExecuteWithHiddenTests(Execute):
    """Execute with the repository on the kernel's PYTHONPATH while grading.

    The hidden test cells call ``solutions.hidden_tests``, which lives in the
    repository but is never installed. It is added only for the duration of an
    instructor's autograde run; learners' kernels never see it.
    """

    def preprocess(self, nb, resources=None, km=None):
        previous = os.environ.get("PYTHONPATH")
        if REPO_ROOT is not None:
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), previous]))
        try:
            return super().preprocess(nb, resources, km=km)
        finally:
            if previous is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = previous


class StderrIsNotFailure(NbGraderPreprocessor):
    """Relabel stderr output of graded cells as stdout, after execution.

    nbgrader scores a test cell 0 as soon as it printed anything on stderr, so a
    harmless warning from PyTorch would cost points. The text stays visible.
    """

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_grade(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    output["name"] = "stdout"
        return cell, resources


def _autograde_preprocessors():
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    return [
        ExecuteWithHiddenTests,
        StderrIsNotFailure,
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]


c.Autograde.autograde_preprocessors = _autograde_preprocessors()


class ErrorsWithoutTracebacks(NbGraderPreprocessor):
    """Keep only "ErrorName: message" of the errors raised in graded cells.

    An IPython traceback quotes the lines around the failing one, and in a test
    cell those are the hidden tests. The message itself carries the diagnosis.
    """

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_grade(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename')}: {output.get('evalue')}"]
        return cell, resources


def _feedback_preprocessors():
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import ClearHiddenTests, GetGrades

    # nbgrader's own feedback shows the autograded notebook as it ran, hidden tests
    # included; learners must never see them, so they are cut out first.
    return [ClearHiddenTests, ErrorsWithoutTracebacks, GetGrades, CSSHTMLHeaderPreprocessor]


c.GenerateFeedback.preprocessors = _feedback_preprocessors()
c.ClearHiddenTests.enforce_metadata = False
