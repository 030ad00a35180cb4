"""Build nbgrader courses and submitted notebooks from the sample-submission corpus.

A corpus entry is ``<name>.ipynb`` in this folder, a notebook like the ones learners hand
in: its answer cells carry nbgrader metadata with their grade id (JupyterLab's Create
Assignment panel writes the same), other cells none. Graded cells it leaves out are taken
from ``correct_bmm.ipynb``, so an entry only holds what makes it special.

Other cells go before the graded ones, unless their metadata places them among the graded
cells, as a learner's notebook has them: ``{"corpus": {"after": "<grade id>"}}`` puts a cell
right after that graded cell (before its test cells), ``{"corpus": {"after_tests": "<grade
id>"}}`` after its test cells. Placed cells keep their order in the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat
import trial_course

from solutions.hidden_cases import GROUPS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ASSIGNMENT = "lab"
NOTEBOOK = "lab"
GRADED = ("multihead_attention", "attention_function", "parallel_multihead_attention")
# test cell -> points, and each task's test cells, as the hidden tests define them
TESTS = {grade_id: group.points for grade_id, group in GROUPS.items()}
TASK1_TESTS = [grade_id for grade_id, group in GROUPS.items() if group.task == 1]
TASK2_TESTS = [grade_id for grade_id, group in GROUPS.items() if group.task == 2]


@dataclass(frozen=True)
class Place:
    """Where an extra cell goes: after graded cell ``grade_id``, before or after its tests."""

    grade_id: str
    after_tests: bool = False


# (grade id, source) of a graded cell; (None, source) of a cell at the top; (Place, source)
# of a cell among the graded ones.
Cell = tuple[str | Place | None, str]


def entries() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.ipynb"))


def read_cells(name: str) -> list[Cell]:
    """The cells of a corpus entry (see :data:`Cell`), completed from correct_bmm."""
    cells = _read(HERE / f"{name}.ipynb")
    present = {key for key, _ in cells if isinstance(key, str)}
    if name != "correct_bmm":
        base = {g: s for g, s in _read(HERE / "correct_bmm.ipynb") if isinstance(g, str)}
        cells += [(g, base[g]) for g in GRADED if g not in present]
    return cells


def _read(path: Path) -> list[Cell]:
    notebook = nbformat.read(path, as_version=4)
    return [
        (_key(cell.metadata, path), cell.source + "\n")
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]


def _key(metadata: dict, path: Path) -> str | Place | None:
    """A code cell's grade id, its Place among the graded cells, or None (top)."""
    grade_id = metadata.get("nbgrader", {}).get("grade_id")
    if grade_id:
        return grade_id
    placement = metadata.get("corpus", {})
    for field, after_tests in (("after", False), ("after_tests", True)):
        if field in placement:
            if placement[field] not in GRADED:
                raise ValueError(
                    f"{path.name}: a cell is placed {field} {placement[field]!r}; "
                    f"place cells after one of {', '.join(GRADED)}"
                )
            return Place(placement[field], after_tests)
    return None


def _test_cell(grade_id: str, hidden: bool) -> nbformat.NotebookNode:
    body = (
        "### BEGIN HIDDEN TESTS\n"
        "from grader.judge.hidden_cells import run_group\n"
        f"run_group({grade_id!r}, globals())\n"
        "### END HIDDEN TESTS"
        if hidden
        else f"# hidden tests for {grade_id} run when your notebook is graded"
    )
    cell = nbformat.v4.new_code_cell(body)
    cell.metadata["nbgrader"] = trial_course.nbgrader_metadata(grade_id, points=TESTS[grade_id])
    return cell


def notebook(cells: list[Cell], *, master: bool = False) -> nbformat.NotebookNode:
    """A lab notebook: the given cells in lab order, each task followed by its test cells,
    placed cells where their :class:`Place` says."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    ungraded = [source for key, source in cells if key is None]
    graded = {key: source for key, source in cells if isinstance(key, str)}
    placed = [(key, source) for key, source in cells if isinstance(key, Place)]
    out = [nbformat.v4.new_code_cell("import math\nimport torch\nimport torch.nn.functional as F")]
    out += [nbformat.v4.new_code_cell(source) for source in ungraded]
    for grade_id in GRADED:
        cell = nbformat.v4.new_code_cell(graded[grade_id])
        cell.metadata["nbgrader"] = trial_course.nbgrader_metadata(grade_id, solution=True)
        out.append(cell)
        out += _placed(placed, grade_id, after_tests=False)
        tests = (
            TASK1_TESTS
            if grade_id == "multihead_attention"
            else (TASK2_TESTS if grade_id == "parallel_multihead_attention" else [])
        )
        out += [_test_cell(test, hidden=master) for test in tests]
        out += _placed(placed, grade_id, after_tests=True)
    nb.cells = out
    return nb


def _placed(placed: list[Cell], grade_id: str, *, after_tests: bool) -> list[nbformat.NotebookNode]:
    return [
        nbformat.v4.new_code_cell(source)
        for place, source in placed
        if place == Place(grade_id, after_tests)
    ]


def master_notebook() -> nbformat.NotebookNode:
    cells = []
    for grade_id, source in read_cells("correct_bmm"):
        if isinstance(grade_id, str):
            head, _, body = source.partition("\n") if source.startswith("%%") else ("", "", source)
            source = (
                (head + "\n" if head else "") + "### BEGIN SOLUTION\n" + body + "### END SOLUTION\n"
            )
        cells.append((grade_id, source))
    return notebook(cells, master=True)


def make_course(root: Path) -> Path:
    """A trial course with the corpus's master as the lab assignment (gradebook included)."""
    return trial_course.make_trial_course(root, master_notebook(), ASSIGNMENT)


def is_attack(name: str) -> bool:
    """Entries that attack the grader: only the sandbox defeats them, by design."""
    return name.startswith("attack_") or name == "forbidden_import_solutions"


def submit(course: Path, student: str, cells: list[Cell]) -> Path:
    return trial_course.submit(course, ASSIGNMENT, student, notebook(cells))
