"""Plain nbgrader on the course: generate_assignment, then autograde five submissions.

The solutions earn 100, the untouched release 0 on every graded cell, and three
wrong submissions (no scaling, mask ignored, a serial loop instead of the pool)
partial marks on exactly the cells their mistake breaks.
Each submission is one notebook run in quick mode.
"""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest
import trial_course
from conftest import REPO_ROOT, shared_file

from grader.course import course_dir as course_folder

ASSIGNMENT = course_folder.ASSIGNMENT
COURSE = REPO_ROOT / "notebooks"
TASK1 = ("test_task1_values", "test_task1_mask", "test_task1_robust", "test_task1_gradients")
TASK2 = ("test_task2_attention_function", "test_task2_parallel_values", "test_task2_pool_usage")
POINTS = dict(
    zip(TASK1 + TASK2, (20, 15, 10, 15, 10, 15, 15), strict=True),
)


def master_solutions() -> dict[str, str]:
    nb = nbformat.read(course_folder.master_path(COURSE), as_version=4)
    return {
        cell.metadata.nbgrader.grade_id: course_folder.remove_solution_markers(cell.source)
        for cell in nb.cells
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution")
    }


def replaced(source: str, old: str, new: str) -> str:
    assert old in source, f"{old!r} not in the solution; update this test's wrong submissions"
    return source.replace(old, new, 1)


def submissions() -> dict[str, dict[str, str]]:
    """student id -> the source each solution cell gets (missing: the release's stub)."""
    right = master_solutions()
    mha = right["multihead_attention"]
    return {
        "solutions": right,
        "untouched": {},
        "no_scale": {**right, "multihead_attention": replaced(mha, " / math.sqrt(s)", "")},
        "mask_ignored": {**right, "multihead_attention": replaced(mha, "if mask:", "if False:")},
        "serial_loop": {
            **right,
            "parallel_multihead_attention": replaced(
                right["parallel_multihead_attention"],
                "pool.map(attention_function, data_to_map)",
                "[attention_function(item) for item in data_to_map]",
            ),
        },
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    """Autograde every submission with plain nbgrader, two course copies side by side (one
    per core): scores per student and cell, and the course each student was graded in."""
    tmp = tmp_path_factory.mktemp("autograde")
    master = nbformat.read(course_folder.master_path(COURSE), as_version=4)
    template = trial_course.make_trial_course(tmp / "template", master, ASSIGNMENT)
    student_notebook = nbformat.read(course_folder.release_path(template), as_version=4)
    students = list(submissions())
    halves = {tmp / f"course{index}": students[index::2] for index in range(2)}
    for course_dir, half in halves.items():
        shutil.copytree(template, course_dir)
        for student in half:
            answers = trial_course.with_answers(student_notebook, submissions()[student])
            trial_course.submit(course_dir, ASSIGNMENT, student, answers)

    env = {
        "LAB_QUICK": "1",
        "LAB_IMDB": str(shared_file("imdb_sample.csv")),
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "FORMER_OFFLINE": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "OMP_NUM_THREADS": "1",
    }
    with ThreadPoolExecutor(len(halves)) as pool:
        graded = list(
            pool.map(lambda c: trial_course.plain_autograde(c, ASSIGNMENT, **env), halves)
        )
    scores = {
        student: {name: points for name, points in cells.items() if name in POINTS}
        for found in graded
        for student, cells in found.items()
    }
    print({s: sum(g.values()) for s, g in scores.items()}, file=sys.stderr)
    course_of = {student: course for course, half in halves.items() for student in half}
    return {"scores": scores, "course_of": course_of}


def failures(graded, student: str) -> dict[str, str]:
    """grade_id (or first line) -> the error a cell of the autograded notebook ended with."""
    path = (
        graded["course_of"][student] / "autograded" / student / ASSIGNMENT / course_folder.NOTEBOOK
    )
    found = {}
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                name = cell.metadata.get("nbgrader", {}).get("grade_id") or cell.source[:40]
                found[name] = f"{output.ename}: {output.evalue[:3000]}"
    return found


def scores_of(graded, student: str) -> dict[str, float]:
    return graded["scores"][student]


@pytest.mark.timeout(1200)
def test_solutions_earn_full_marks(graded):
    assert scores_of(graded, "solutions") == POINTS, failures(graded, "solutions")
    assert failures(graded, "solutions") == {}


def test_untouched_release_earns_zero(graded):
    assert scores_of(graded, "untouched") == dict.fromkeys(POINTS, 0)
    errors = failures(graded, "untouched")
    assert set(POINTS) <= set(errors)
    assert all(e.startswith("NotImplementedError") for e in errors.values()), errors


def test_no_scaling_loses_task1_only(graded):
    scores = scores_of(graded, "no_scale")
    assert scores["test_task1_values"] == 0
    assert all(scores[g] == POINTS[g] for g in TASK2), failures(graded, "no_scale")
    assert 0 < sum(scores.values()) < 100
    assert "not scaled" in failures(graded, "no_scale")["test_task1_values"]


def test_ignored_mask_loses_the_mask_test(graded):
    scores = scores_of(graded, "mask_ignored")
    assert scores["test_task1_mask"] == 0
    assert scores["test_task1_values"] == POINTS["test_task1_values"]
    assert all(scores[g] == POINTS[g] for g in TASK2), failures(graded, "mask_ignored")
    assert 0 < sum(scores.values()) < 100


def test_serial_loop_loses_the_pool_test(graded):
    scores = scores_of(graded, "serial_loop")
    assert scores["test_task2_pool_usage"] == 0
    assert scores["test_task2_parallel_values"] == POINTS["test_task2_parallel_values"]
    assert all(scores[g] == POINTS[g] for g in TASK1), failures(graded, "serial_loop")
    assert sum(scores.values()) == 85


def test_nbgrader_feedback_hides_the_hidden_tests(graded):
    course_dir = graded["course_of"]["no_scale"]
    result = course_folder.run_nbgrader(
        ["generate_feedback", ASSIGNMENT, "--student", "no_scale", "--force"], course_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pages = list((course_dir / "feedback" / "no_scale").rglob("*.html"))
    assert pages, "nbgrader wrote no feedback page"
    page = pages[0].read_text()
    assert "not scaled" in page  # the learner still reads the diagnosis
    for secret in course_folder.HIDDEN_TEST_TEXT:
        assert secret not in page
