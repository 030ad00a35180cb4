"""The sample-submission corpus graded as a class, through the real sandbox and plain nbgrader.

Every entry of ``tests/grader/submissions/`` is submitted to one nbgrader course and graded by
``python -m grader autograde`` with every hidden case, on the seed the notebook's hidden
cells use. Plain ``nbgrader autograde`` then grades every entry that is not an attack, and
the two graders must agree on every test cell. Attacks that probe the sandbox's walls
answer correctly only when the wall held, so full marks for them prove the wall. Every other
attack must lose the points of what it fakes: tampering with the grader's objects or with the
files it reads back is reported as "tampered", an answer computed where the grader cannot see
it as "forbidden", and a decoy of the pool's results loses the pool-usage test.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import trial_course

from grader.course import course_dir as course_folder
from grader.course.autograde import autograde, grade_one, in_slots
from grader.course.records import Records
from grader.course.roster import main as report_main
from grader.sandbox import launch as sandbox
from grader.sandbox.launch import Limits
from solutions.hidden_cases import NOTEBOOK_SEED

sys.path.insert(0, str(Path(__file__).resolve().parent))
from submissions import corpus  # noqa: E402

if sandbox.bwrap_executable() is None:
    if os.environ.get("CI"):
        pytest.fail("bubblewrap (bwrap) is required in CI", pytrace=False)
    pytest.skip("bubblewrap (bwrap) is not installed", allow_module_level=True)

LIMITS = Limits(memory_mb=1536, wall_seconds=20, cpu_seconds=60, cell_seconds=10)
FULL, ZERO, SOME = "full", "zero", "some"  # some: more than zero, less than full
OK_100 = {"task1": FULL, "task2": FULL, "status": "ok", "diagnosis": None}
TASK1_WRONG = {"task1": ZERO, "task2": FULL, "status": "ok"}
TASK1_FORBIDDEN = {**TASK1_WRONG, "status": "forbidden", "diagnosis": "forbidden"}
DECOY = {"task1": FULL, "task2": SOME, "diagnosis": "pool_results_unused"}
ONE_ITEM = {"task1": FULL, "task2": SOME, "diagnosis": "one_item_for_all_heads"}
# deliberate tampering with the grader's objects or the files it reads back: reported as such
TAMPERED = {"task1": ZERO, "status": "tampered"}
# Computed out of the grader's sight, or not computed at all: nothing seen, nothing earned.
UNOBSERVED = {"task1": ZERO, "task2": FULL, "status": "ok", "diagnosis": "unobserved"}

EXPECTED = {
    # right answers, in many idioms: float32 constants and softmax, helper cells and
    # modules, notebook variables, a mention of the fused kernel, Task 2 assembled any way
    **{
        name: OK_100
        for name in (
            "correct_bmm",
            "correct_einsum",
            "correct_loop",
            "correct_float64",
            "correct_noisy",  # warnings and stderr cost nothing
            "correct_float32_scale",
            "correct_float32_softmax",
            "correct_helper_cell",
            "correct_helper_module",
            "correct_notebook_device",
            "correct_global_mask_table",
            "correct_mentions_fused",
            "correct_parallel_stack",
            "correct_parallel_unpacked",
            "attack_hunt_files",  # found no hidden tests, solutions, gradebook, neighbours
            "attack_network_env",  # no network, no grader environment
            "attack_tamper",  # could write nothing outside its own folder
        )
    },
    # graded state is what a top-to-bottom run gives at each test cell, whatever made it
    "correct_magic_time": OK_100,  # %%time on the graded cells of Task 1 and Task 2
    "correct_magic_capture": OK_100,  # %%capture (with a name, and --no-stderr) on graded cells
    "correct_line_magics": OK_100,  # %env, !echo, `x = !ls`, %timeit; a constant bound by %time
    "correct_settings_dict_in_steps": OK_100,  # a settings dict filled by item and update()
    "correct_list_appended": OK_100,  # lists of steps grown by append and +=
    "correct_tensor_in_place": OK_100,  # a mask table made by triu_, a scale table by slice writes
    "correct_attributes_set": OK_100,  # a namespace's attributes, a class attribute, setattr
    "correct_cache_filled_by_call": OK_100,  # a module-level cache that a call fills
    "correct_save_multihead_attention": OK_100,  # uses what save_multihead_attention() appends
    "correct_writefile_append": OK_100,  # helpers added to the module by %%writefile -a
    "correct_module_open_write": OK_100,  # the module written by open(...).write in the cell
    "correct_module_rewritten_and_reloaded": OK_100,  # write_text a draft, import, rewrite, reload
    "correct_names_bound_before_tests": OK_100,  # helpers bound between a function and its tests
    "correct_rebound_after_tests": OK_100,  # names (the function too) rebound after the tests ran
    "correct_profiler_labels": OK_100,  # record_function("scaled_dot_product ...") labels only
    "correct_parallel_chunksize": OK_100,  # pool.map(..., chunksize=1)
    "correct_parallel_map_async": OK_100,  # pool.map_async(...).get()
    "correct_parallel_imap": OK_100,  # list(pool.imap(...))
    "mistake_missing_scale": {"task1": "<full", "task2": FULL, "diagnosis": "missing_scale"},
    "mistake_softmax_axis": {"task1": "<full", "task2": FULL, "diagnosis": "softmax_wrong_axis"},
    "mistake_mask_missing": {"task1": SOME, "task2": FULL, "diagnosis": "mask_missing"},
    "mistake_heads_not_transposed": {"task1": "<full", "diagnosis": "heads_not_transposed"},
    "mistake_keys_values_swapped": {"task1": "<full", "diagnosis": "keys_values_swapped"},
    "mistake_unstable_softmax": {"task1": SOME, "diagnosis": "unstable_softmax"},
    # fixed-size causal tables: right on short sequences, wrong on what the lab runs
    "mistake_fixed_mask_64": {"task1": SOME, "task2": FULL, "diagnosis": "raised"},
    "mistake_fixed_mask_128": {"task1": SOME, "task2": FULL, "diagnosis": "raised"},
    "mistake_fixed_mask_head_200": {"task1": FULL, "task2": SOME, "diagnosis": "raised"},
    "mistake_pool_not_used": {"task1": FULL, "task2": SOME, "diagnosis": "pool_not_used"},
    "mistake_one_pool_item": {"task1": FULL, "task2": SOME, "diagnosis": "one_item_for_all_heads"},
    "mistake_worker_in_notebook": {
        "task1": FULL,
        "task2": SOME,
        "diagnosis": "worker_not_importable",
    },
    # the pool is called, but the output is computed another way
    "mistake_decoy_pool_len": DECOY,
    "mistake_decoy_pool_discarded": DECOY,
    "mistake_decoy_pool_recomputed": DECOY,
    "mistake_decoy_map_async_discarded": DECOY,  # map_async, wait(), results never read
    "mistake_decoy_chunksize_recomputed": DECOY,  # map(chunksize=1), then a serial loop
    "mistake_decoy_async_get_recomputed": DECOY,  # map_async().get() checked, then recomputed
    "mistake_decoy_imap_discarded": DECOY,  # imap consumed and dropped
    "mistake_one_item_head_loop": ONE_ITEM,  # all heads as one item to a loop in the module
    # fused attention, by any route
    "forbidden_sdpa": TASK1_FORBIDDEN,
    "forbidden_sdpa_overrides_off": TASK1_FORBIDDEN,
    "forbidden_sdpa_operator_registry": TASK1_FORBIDDEN,
    "forbidden_mha": TASK1_FORBIDDEN,
    "forbidden_mha_identity": TASK1_FORBIDDEN,
    "forbidden_import_solutions": TASK1_FORBIDDEN,
    # getattr and torch._C._nn in both tasks: both lose everything
    "forbidden_sdpa_hidden": {
        "task1": ZERO,
        "task2": ZERO,
        "status": "forbidden",
        "diagnosis": "forbidden",
    },
    # attacks on the grader itself
    "attack_allclose": UNOBSERVED,  # returns without computing
    "attack_fake_output": UNOBSERVED,  # returns without computing
    "attack_swallowed_exceptions": UNOBSERVED,  # returns without computing
    "attack_exit": {**TASK1_WRONG, "status": "crashed", "diagnosis": "crashed"},
    "attack_kill_grader": {**TASK1_WRONG, "status": "crashed", "diagnosis": "crashed"},
    "attack_infinite_loop": {**TASK1_WRONG, "status": "timeout", "diagnosis": "timeout"},
    "attack_memory_hog": {**TASK1_WRONG, "status": "memory", "diagnosis": "memory"},
    "attack_memory_hog_bytes": {**TASK1_WRONG, "status": "memory", "diagnosis": "memory"},
    "attack_fork_bomb": {**TASK1_WRONG, "status": "processes", "diagnosis": "processes"},
    # rebinding the grader's tripwires, then F.scaled_dot_product_attention
    "attack_tripwires_found_by_gc": TAMPERED,  # Tripwires instances found by gc, blinded
    "attack_tripwire_module_rebound": TAMPERED,  # class methods, module functions, its table
    "attack_profiler_functions_rebound": TAMPERED,  # torch.autograd._disable_profiler filters
    "attack_profiler_switched_off": TAMPERED,  # profiler stopped, enabling it made a no-op
    # the pool's secret factor read and applied to a decoy: Task 2's pool test loses its points
    "attack_pool_scale_attribute": DECOY,  # read from the pool object's attributes
    "attack_pool_scale_input_file": DECOY,  # read from the inputs file in the working folder
    # the answer computed where no tripwire looks: it earns nothing
    # a spawn Pool of its own runs sdpa (its worker, started in a test, ends with the test)
    "attack_elsewhere_process_pool": {**UNOBSERVED, "status": ("ok", "timeout")},
    "attack_elsewhere_subprocess": UNOBSERVED,  # a Python subprocess runs sdpa
    "attack_elsewhere_subprocess_decoy_work": UNOBSERVED,  # ... with a small bmm and softmax here
    "attack_elsewhere_thread": TASK1_FORBIDDEN,  # a thread of its own runs sdpa
    "attack_elsewhere_numpy": UNOBSERVED,  # attention in numpy
    # the files the grader reads back, rewritten from a thread while it runs
    # results forged where the grader reads them: overwritten by the grader's own, or refused
    "attack_results_bomb": UNOBSERVED,  # 1 MB archives that inflate to 1 GiB, forged records
    "attack_results_odd_shapes": UNOBSERVED,  # 32-dim, empty, complex arrays; flooded records
    "attack_results_forged": UNOBSERVED,  # sdpa answers to the inputs file, "no forbidden"
    # torch and numpy comparisons, finiteness and gradcheck patched to say yes: wrong answer
    "attack_patched_torch_checks": TASK1_WRONG,
}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _sandbox_processes() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid >= sandbox.FIRST_SANDBOX_UID:
                pids.append(int(entry))
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def template_course(tmp_path_factory) -> Path:
    return corpus.make_course(tmp_path_factory.mktemp("template") / "course")


@pytest.fixture(scope="module")
def graded_class(template_course, tmp_path_factory):
    course = tmp_path_factory.mktemp("class") / "course"
    shutil.copytree(template_course, course)
    assert set(EXPECTED) == set(corpus.entries())
    for name in corpus.entries():
        corpus.submit(course, name, corpus.read_cells(name))
    submitted_before = _digest(course / "submitted")
    source_before = _digest(course / "source")
    os.environ["GRADER_SECRET"] = "s3cr3t-the-sandbox-must-not-see"
    try:
        results = autograde(
            course, corpus.ASSIGNMENT, jobs=2, limits=LIMITS, seed=NOTEBOOK_SEED, progress=False
        )
    finally:
        del os.environ["GRADER_SECRET"]
    return course, {r.student: r for r in results}, submitted_before, source_before


def _check(result, expected: dict) -> None:
    for task in (1, 2):
        wanted = expected.get(f"task{task}")
        score, maximum = result.score(task), result.max_score(task)
        detail = f"task {task}: {score}/{maximum} {result.messages} {result.diagnoses}"
        if wanted == FULL:
            assert score == maximum, detail
        elif wanted == ZERO:
            assert score == 0, detail
        elif wanted == SOME:
            assert 0 < score < maximum, detail
        elif wanted == "<full":
            assert score < maximum, detail
    status = expected.get("status", "ok")
    statuses = status if isinstance(status, tuple) else (status,)
    assert result.status in statuses, (result.status, result.messages)
    if expected.get("diagnosis"):
        assert expected["diagnosis"] in result.diagnoses, result.diagnoses
    elif "diagnosis" in expected:
        assert result.diagnoses == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_entry_gets_the_expected_verdict(graded_class, name: str) -> None:
    _, results, _, _ = graded_class
    _check(results[name], EXPECTED[name])


def test_right_answers_get_no_messages_and_training_is_not_rerun(graded_class) -> None:
    _, results, _, _ = graded_class
    for name, expected in EXPECTED.items():
        if expected is OK_100 and not corpus.is_attack(name):
            assert results[name].messages == [], (name, results[name].messages)


def test_every_submission_is_recorded_in_the_gradebook(graded_class) -> None:
    from nbgrader.api import Gradebook

    course, results, _, _ = graded_class
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for name, result in results.items():
            submission = gradebook.find_submission(corpus.ASSIGNMENT, name)
            assert submission.score == result.score(), name
            assert submission.max_score == 100
    assert len(results) == len(corpus.entries())


def test_submissions_and_course_are_untouched(graded_class) -> None:
    course, _, submitted_before, source_before = graded_class
    assert _digest(course / "submitted") == submitted_before
    assert _digest(course / "source") == source_before
    assert _sandbox_processes() == []  # nothing a submission started outlives its grading


def test_feedback_says_what_failed_without_hidden_tests_or_seed(graded_class) -> None:
    course, results, _, _ = graded_class
    page = (course / "feedback" / "mistake_mask_missing" / "lab" / "lab.html").read_text()
    assert "mask_missing" in page and "test_task1_mask" in page
    for name in results:
        text = (course / "feedback" / name / "lab" / "lab.html").read_text()
        assert "run_group" not in text and "BEGIN HIDDEN" not in text
        assert str(NOTEBOOK_SEED) not in text
    autograded = (course / "autograded" / "mistake_mask_missing" / "lab" / "lab.ipynb").read_text()
    assert "hidden tests, run by the grader" in autograded and "run_group" not in autograded
    assert "HiddenTestFailure" in autograded  # the failed test cell carries the verdict


def test_every_result_records_its_seed(graded_class) -> None:
    course, results, _, _ = graded_class
    assert Records(course, corpus.ASSIGNMENT).seed() == NOTEBOOK_SEED
    assert {result.seed for result in Records(course, corpus.ASSIGNMENT).results().values()} == {
        NOTEBOOK_SEED
    }


def _verdicts(course: Path, student: str) -> tuple[dict, str]:
    result = json.loads((course / "grader_results" / "lab" / f"{student}.json").read_text())
    result.pop("seconds")
    return result, (course / "feedback" / student / "lab" / "lab.html").read_text()


def test_a_regrade_from_the_command_line_reproduces_scores_and_feedback(graded_class) -> None:
    """No --seed: the seed recorded by the class's grading is reused, so nothing changes."""
    course, _, _, _ = graded_class
    students = ["mistake_fixed_mask_128", "mistake_decoy_pool_len", "correct_notebook_device"]
    before = {student: _verdicts(course, student) for student in students}
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # an environment that was never activated
    command = [sys.executable, "-m", "grader", "autograde", "--course-dir", str(course)]
    command += ["--assignment", "lab", "--jobs", "2", "--quiet", "--cell-seconds", "10"]
    for student in students:
        command += ["--student", student]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"seed {NOTEBOOK_SEED}" in done.stdout
    for student in students:
        assert _verdicts(course, student) == before[student], student


def test_report_has_one_row_per_student(graded_class, tmp_path) -> None:
    course, results, _, _ = graded_class
    path = tmp_path / "grades.csv"
    argv = ["report", "--course-dir", str(course), "--assignment", "lab", "--csv", str(path)]
    assert report_main(argv) == 0
    with path.open() as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert list(next(iter(rows.values()))) == [
        "student_id",
        "task1_score",
        "task1_max",
        "task2_score",
        "task2_max",
        "total",
        "max_total",
        "status",
        "diagnoses",
        "submitted_at",
        "seconds_late",
        "late_penalty",
    ]
    assert set(rows) == set(results)
    assert rows["correct_bmm"]["total"] == "100" and rows["correct_bmm"]["status"] == "ok"
    assert rows["attack_fork_bomb"]["status"] == "processes"
    assert rows["attack_fork_bomb"]["task2_score"] == "40"
    assert "mask_missing" in rows["mistake_mask_missing"]["diagnoses"].split(";")


def test_nbgrader_tools_read_the_grades(graded_class) -> None:
    course, _, _, _ = graded_class
    root = f"--CourseDirectory.root={course}"
    repo = {"PYTHONPATH": str(corpus.REPO)}  # hidden cells import solutions/
    exported = course_folder.run_nbgrader(
        ["export", root, "--to", str(course / "grades.csv")], course, **repo
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    rows = list(csv.DictReader((course / "grades.csv").open()))
    scores = {row["student_id"]: float(row["score"]) for row in rows}
    assert scores["correct_bmm"] == 100 and scores["attack_allclose"] == 40
    feedback = course_folder.run_nbgrader(
        ["generate_feedback", "lab", "--student", "mistake_mask_missing", "--force", root],
        course,
        **repo,
    )
    assert feedback.returncode == 0, feedback.stderr[-2000:]
    page = (course / "feedback" / "mistake_mask_missing" / "lab" / "lab.html").read_text()
    assert "run_group" not in page  # hidden tests stripped, as always


# -- plain nbgrader on the same class ------------------------------------------------------


def _plain_nbgrader(course: Path, students: list[str]) -> dict[str, dict[str, float]]:
    """Grade ``students`` with plain ``nbgrader autograde``: points per student and cell."""
    for student in students:
        corpus.submit(course, student, corpus.read_cells(student))
    env = {"PYTHONPATH": str(corpus.REPO), "OMP_NUM_THREADS": "1"}
    return trial_course.plain_autograde(course, corpus.ASSIGNMENT, **env)


@pytest.fixture(scope="module")
def plain_scores(template_course, tmp_path_factory) -> dict[str, dict[str, float]]:
    students = [name for name in corpus.entries() if not corpus.is_attack(name)]
    halves = [students[0::2], students[1::2]]  # two courses graded side by side
    courses = []
    for index in range(2):
        course = tmp_path_factory.mktemp(f"plain{index}") / "course"
        shutil.copytree(template_course, course)
        courses.append(course)
    with ThreadPoolExecutor(2) as pool:
        graded = list(pool.map(_plain_nbgrader, courses, halves))
    return {**graded[0], **graded[1]}


@pytest.mark.timeout(1800)
def test_plain_nbgrader_and_the_sandbox_agree_on_every_submission_but_attacks(
    graded_class, plain_scores
) -> None:
    _, results, _, _ = graded_class
    differences = {}
    for student, plain in plain_scores.items():
        sandboxed = {test.grade_id: test.points for test in results[student].tests}
        if {k: plain.get(k) for k in sandboxed} != sandboxed:
            differences[student] = {"sandbox": sandboxed, "nbgrader": plain}
    assert not differences, json.dumps(differences, indent=1)
    assert len(plain_scores) >= 30


def test_a_class_of_200_is_recorded_with_one_gradebook_writer(template_course, tmp_path) -> None:
    """Parallel jobs, one writer: every one of 200 submissions ends up in the gradebook.

    Every tenth submission is graded for real (each costs a sandbox start, measured in ``make
    bench-grade``); the others hand in no notebook or one that is not a notebook, which the
    grader records without a sandbox. What is under test is the class-wide machinery: job
    slots, the single gradebook writer, feedback and verdict files.
    """
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    shutil.copytree(template_course, course)
    students = [f"student{i:03d}" for i in range(200)]
    for index, student in enumerate(students):
        folder = corpus.submit(course, student, corpus.read_cells("correct_bmm"))
        if index % 2:
            (folder / "lab.ipynb").unlink()
        elif index % 10:
            (folder / "lab.ipynb").write_text("not a notebook")
    results = autograde(course, corpus.ASSIGNMENT, jobs=4, limits=LIMITS, progress=False)
    assert [r.student for r in results] == students
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {s.student.id: s.score for s in gradebook.find_assignment("lab").submissions}
    assert len(scores) == 200
    for index, result in enumerate(results):
        assert scores[result.student] == (0 if index % 10 else 100)
        assert result.status == ("missing" if index % 2 else "invalid" if index % 10 else "ok")
    assert len(list((course / "feedback").glob("*/lab/lab.html"))) == 200
    assert len(Records(course, corpus.ASSIGNMENT).results()) == 200


def test_jobs_hold_their_own_slots_and_a_grader_failure_costs_one_submission(tmp_path) -> None:
    """Each job holds one of ``--jobs`` slots (a sandbox's user id comes from it) that no other
    job holds meanwhile; a grader failing on one submission gives it an "error" result with
    every test failed, and grading goes on."""
    import threading
    import time

    from grader.judge.grade import make_plan

    held, seen, lock = set(), set(), threading.Lock()

    def job(item: int, slot: int) -> int:
        with lock:
            assert slot not in held
            held.add(slot)
            seen.add(slot)
        time.sleep(0.005)
        with lock:
            held.discard(slot)
        return item

    assert sorted(in_slots(job, list(range(200)), 4)) == list(range(200))
    assert seen == {0, 1, 2, 3}

    notebook = tmp_path / "lab.ipynb"
    nbformat.write(corpus.notebook(corpus.read_cells("correct_bmm")), notebook)
    unusable = tmp_path / "scratch"
    unusable.write_text("a file where the grader's scratch folder should be")
    plan = make_plan(NOTEBOOK_SEED)
    result = grade_one(notebook, "ada", corpus.ASSIGNMENT, plan, LIMITS, str(unusable), 0)
    assert result.status == "error" and result.score() == 0
    assert len(result.tests) == len(plan.groups)
    assert result.messages[0].startswith("grader error:")
