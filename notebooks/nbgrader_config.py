"""nbgrader configuration of the Transformers From Scratch course (this folder is the course root).

Run nbgrader from this folder (``cd notebooks``), or ``python -m grader release`` and friends
from the repository root. The folder is self-contained: copied anywhere (a hub's instructor
home, a grading machine), it grades wherever the project is installed.
"""

import os
import sys

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearHiddenTests,
    Execute,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    NbGraderPreprocessor,
    SaveAutoGrades,
)
from nbgrader.utils import is_grade

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

# nbgrader runs ``alembic`` and ``jupyter`` by name: the environment's scripts first on PATH, so
# `.venv/bin/nbgrader ...` works without activating the environment.
_scripts = os.path.dirname(sys.executable)
if _scripts not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join(filter(None, [_scripts, os.environ.get("PATH")]))

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

# Per cell. Graded runs use the quick training settings (NBGRADER_EXECUTION is set), where the
# longest cell takes well under a minute; a learner's Validate on a slow laptop gets the margin.
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True


class StderrIsNotFailure(NbGraderPreprocessor):
    """Relabel graded cells' stderr as stdout, after execution: nbgrader scores a test cell 0
    once it printed on stderr, so a harmless PyTorch warning would cost points."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_grade(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    output["name"] = "stdout"
        return cell, resources


class ErrorsWithoutTracebacks(NbGraderPreprocessor):
    """Keep only "ErrorName: message" of graded cells' errors: an IPython traceback quotes the
    lines around the failing one, in a test cell the hidden tests."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_grade(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename')}: {output.get('evalue')}"]
        return cell, resources


c.Autograde.autograde_preprocessors = [
    Execute,
    StderrIsNotFailure,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
# nbgrader's own feedback shows the autograded notebook as it ran; the hidden tests go first.
c.GenerateFeedback.preprocessors = [
    ClearHiddenTests,
    ErrorsWithoutTracebacks,
    GetGrades,
    CSSHTMLHeaderPreprocessor,
]
c.ClearHiddenTests.enforce_metadata = False
