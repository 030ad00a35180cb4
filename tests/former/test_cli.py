"""The training command lines: they run, print metric lines, save and predict, and refuse bad input."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, shared_file

from former import classify, generate
from former.generator import GENERATOR_FORMAT, GeneratorConfig, build_generator
from former.runs import read_model_file

METRIC_LINE = re.compile(r"^epoch=[0-9.]+ step=\d+ train_loss=[0-9.e-]+ val_acc=[0-9.]+ ", re.M)
TINY_CLASSIFIER = ["-E", "16", "-H", "2", "-d", "1", "-M", "64", "--threads", "1"]


def run_module(module: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, "FORMER_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=environment,
    )


def test_classify_cli_trains_on_the_generated_corpus():
    result = run_module(
        "former.classify",
        "--data",
        "synthetic",
        "-e",
        "1",
        "--evals-per-epoch",
        "2",
        *TINY_CLASSIFIER,
    )
    assert result.returncode == 0, result.stderr
    assert len(METRIC_LINE.findall(result.stdout)) == 2, result.stdout
    assert "Traceback" not in result.stderr


def test_classify_cli_trains_on_a_slice_of_the_real_csv(tmp_path):
    with open(shared_file("imdb_sample.csv"), newline="", encoding="utf-8") as source:
        rows = list(csv.reader(source))[:301]
    sample = tmp_path / "imdb_300.csv"
    with open(sample, "w", newline="", encoding="utf-8") as target:
        csv.writer(target).writerows(rows)
    result = run_module(
        "former.classify", "--data", str(sample), "-e", "1", "-V", "2000", *TINY_CLASSIFIER
    )
    assert result.returncode == 0, result.stderr
    assert "IMDB CSV" in result.stdout
    assert METRIC_LINE.search(result.stdout), result.stdout


def test_generate_cli_trains_on_tiny_shakespeare():
    result = run_module(
        "former.generate",
        "--data",
        str(shared_file("tinyshakespeare.txt")),
        "-N",
        "6",
        "--test-every",
        "3",
        "-C",
        "32",
        "-E",
        "32",
        "-H",
        "2",
        "-d",
        "1",
        "--test-batches",
        "2",
        "--sample-length",
        "16",
        "--prompt",
        "ROMEO:",
        "--temperature",
        "0.8",
        "--threads",
        "1",
    )
    assert result.returncode == 0, result.stderr
    metric_lines = re.findall(
        r"^step=(\d+) train_loss=[0-9.]+ val_bpb=([0-9.]+) ", result.stdout, re.M
    )
    assert [step for step, _ in metric_lines] == ["3", "6"], result.stdout
    assert all(0 < float(bpb) < 10 for _, bpb in metric_lines)
    assert result.stdout.count("sample: [ROMEO:]") == 2


def test_generate_without_the_mask_trains_a_model_that_sees_the_future(tmp_path, capsys):
    """As the notebook's command line does it: a learner's function, called with mask=False."""
    out = tmp_path / "leaky"
    tiny = ["-N", "2", "--test-every", "2", "-C", "16", "-E", "16", "-H", "2", "-d", "1"]
    arguments = [*tiny, "--test-batches", "1", "--sample-length", "4", "--threads", "1"]
    arguments += ["--attention", "solutions.attention:multihead_attention"]
    data = ["--data", str(shared_file("tinyshakespeare.txt")), "--out", str(out)]
    assert generate.main([*data, *arguments, "--no-mask"]) == 0
    assert "sample: [" in capsys.readouterr().out
    saved = read_model_file(out, GENERATOR_FORMAT)
    config = GeneratorConfig.from_dict(saved["config"])
    assert config.mask is False
    model = build_generator(config)
    model.load_state_dict(saved["state_dict"])
    model.eval()
    inputs = torch.arange(16)[None]
    changed_last = inputs.clone()
    changed_last[0, -1] = 100
    assert not torch.equal(model(inputs)[0, 0], model(changed_last)[0, 0])
    expect_usage_error(
        generate.main, [*data, *arguments, "--resume"], capsys, "mask: False -> True"
    )


def test_generate_finds_tiny_shakespeare_by_name_and_samples_at_the_temperature_given(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FORMER_DATA_DIR", str(shared_file("tinyshakespeare.txt").parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tiny = ["-N", "1", "--test-every", "1", "-C", "16", "-E", "16", "-H", "2", "-d", "1"]
    arguments = [*tiny, "--test-batches", "1", "--sample-length", "64", "--threads", "1"]
    samples = {}
    for temperature in ("0.05", "50"):
        command = ["--data", "shakespeare", *arguments, "--prompt", "ROMEO:"]
        assert generate.main([*command, "--temperature", temperature]) == 0
        out = capsys.readouterr().out
        assert "data: 1,003,854 train / 55,769 validation / 55,771 test bytes" in out
        samples[temperature] = out.split("sample: [ROMEO:]")[1].split("\n")[0]
    # near 0 the likeliest byte nearly always wins; at 50 every byte is about as likely
    assert len(set(samples["50"])) > 2 * len(set(samples["0.05"])), samples


def test_train_save_resume_and_predict(tmp_path, capsys):
    out = tmp_path / "run"
    arguments = [
        "--data",
        "synthetic",
        "-e",
        "1",
        "--out",
        str(out),
        "--no-progress",
        *TINY_CLASSIFIER,
    ]
    assert classify.main(arguments) == 0
    assert (out / "model.pt").exists() and (out / "config.json").exists()
    capsys.readouterr()

    # the finished run may be resumed (nothing left to train: it reports where it stands)
    assert classify.main([*arguments, "--resume"]) == 0
    assert "resuming from step" in capsys.readouterr().out

    assert (
        classify.main(
            ["predict", "--model", str(out), "the plot was not good .", "the cast was great ."]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert re.match(r'label=(negative|positive) probability=(0\.[5-9]\d\d|1\.000) text="', line)


def test_bigrams_and_seeds_train_save_and_predict_together(tmp_path, capsys):
    """--bigrams K and --seeds N: each member saved with its bigrams, predict averages them."""
    out = tmp_path / "ensemble"
    arguments = ["--data", "synthetic", "-e", "1", "--no-progress", *TINY_CLASSIFIER]
    assert classify.main([*arguments, "--bigrams", "100", "--seeds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bigrams=100, seed=1" in printed and "bigrams=100, seed=2" in printed
    assert re.search(r"^seeds=2 ensemble_val_acc=[0-9.]+$", printed, re.M), printed
    members = [out / "seed-1", out / "seed-2"]
    assert all((member / "model.pt").exists() for member in members)
    texts = ["the plot was not good .", "the cast was great ."]
    models = ["--model", str(members[0]), "--model", str(members[1])]
    assert classify.main(["predict", *models, *texts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("label=") for line in lines)


def expect_usage_error(main, arguments, capsys, *fragments: str) -> str:
    assert main(arguments) == 2
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (["--attention", "nonsense"], ["Unknown attention 'nonsense'", "module:function"]),
        (["--attention", "no_such_module:f"], ["Cannot import module 'no_such_module'"]),
        (["--data", "/no/such/reviews.csv"], ["/no/such/reviews.csv", "does not exist"]),
        (["-E", "64", "-H", "5"], ["heads (5) must divide the embedding size (64)", "-H 4"]),
        (["-e", "0"], ["epochs must be at least 1"]),
        (["--device", "tpu"], ["unknown device 'tpu'"]),
        (["--resume"], ["--resume needs --out"]),
        (["--bigrams", "-1"], ["bigrams must be 0 (none) or more"]),
        (["--seeds", "0"], ["--seeds must be at least 1"]),
    ],
)
def test_classify_bad_input_is_one_line_and_exit_2(arguments, fragments, capsys):
    expect_usage_error(classify.main, ["--data", "synthetic", *arguments], capsys, *fragments)


def test_classify_never_mixes_runs_in_one_folder(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--data", "synthetic", "-e", "1", "--out", str(out), "--no-progress", *TINY_CLASSIFIER]
    assert classify.main(base) == 0
    capsys.readouterr()
    expect_usage_error(classify.main, base, capsys, "already holds a training run", "--resume")
    expect_usage_error(
        classify.main, [*base, "--resume", "-d", "2"], capsys, "different settings", "depth: 1 -> 2"
    )


def test_predict_bad_model_path(tmp_path, capsys):
    expect_usage_error(
        classify.main,
        ["predict", "--model", str(tmp_path / "none"), "hi"],
        capsys,
        "no saved model",
    )


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (["--data", "/no/such/file.txt"], ["/no/such/file.txt"]),
        (["--attention", "bogus"], ["Unknown attention 'bogus'"]),
        (["-E", "30", "-H", "4"], ["heads (4) must divide the embedding size (30)"]),
        (["--prompt", ""], ["--prompt must hold at least one character"]),
        (["--temperature", "0"], ["temperature must be positive"]),
    ],
)
def test_generate_bad_input_is_one_line_and_exit_2(arguments, fragments, capsys):
    expect_usage_error(generate.main, arguments, capsys, *fragments)


def test_help_names_the_attention_default():
    help_text = classify.build_parser().format_help()
    assert "sdpa" in help_text and "module:function" in help_text
    for flag in [
        "--num-epochs",
        "--batch-size",
        "--learn-rate",
        "--embedding",
        "--heads",
        "--depth",
        "--max",
        "--vocab-size",
        "--max-pool",
        "--mean-pool",
        "--lr-warmup",
        "--gradient-clipping",
        "--random-seed",
        "--final",
        "--data",
        "--device",
        "--out",
        "--resume",
    ]:
        assert flag in help_text, flag
    assert Path(classify.__file__).name == "classify.py"
    help_text = generate.build_parser().format_help()
    for flag in ["--prompt", "--temperature", "--no-mask", "--context", "--num-batches", "--out"]:
        assert flag in help_text, flag
