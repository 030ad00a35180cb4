"""What the learner should know about the run of their notebook, beyond the tests."""

from __future__ import annotations

from grader.judge.channel import NotebookRun
from grader.judge.program import Program
from grader.sandbox.launch import Limits


def run_messages(program: Program, run: NotebookRun, limits: Limits) -> list[str]:
    """Cells that ended the kernel, ran too long or raised; test cells the notebook lacks;
    cells not run while grading, with the names they bind."""
    messages = []
    for number, why in run.ended_kernel.items():
        messages.append(
            f"cell {number} ended the notebook's kernel ({why}); the notebook ran again "
            "without it, so nothing it defines was there for the cells below it"
        )
    for number in run.interrupted:
        messages.append(
            f"cell {number} ran longer than {limits.cell_seconds:g} s and was interrupted "
            "(as Jupyter's interrupt button would): what it had not finished is missing below"
        )
    for number, error in sorted(run.cell_errors.items())[:5]:
        messages.append(run.cell_errors[0] if number == 0 else f"cell {number} raised {error}")
    for grade_id in program.missing_tests:
        messages.append(
            f"your notebook has no test cell {grade_id}: its hidden cases ran after your last cell"
        )
    if program.skipped:
        listed = "; ".join(
            f"cell {number}" + (f" (binds {', '.join(names[:8])})" if names else "")
            for number, names in program.skipped.items()
        )
        messages.append(f"not run while grading, as tagged in the lab: {listed}")
    return messages
