"""model.py, the SageMaker entry point, run as a job would run it: a subprocess in an /opt/ml tree.

The ``SM_*`` variables point into a temporary folder laid out like a training
container's ``/opt/ml``; checkpoint and failure paths are overridden the same way.
The code folder holds what the launcher ships (``stage_source``): the entry point
``model.py``, the ``former`` package and, where a test writes one, the learner's module.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, shared_file

from former import container
from former.sagemaker.job import ENTRY_SCRIPT_SOURCE, stage_source
from former.sagemaker.progress import METRIC_DEFINITIONS

SMALL_MODEL = [
    "--batch-size", "32",
    "--embedding", "32",
    "--heads", "2",
    "--depth", "1",
    "--max-length", "64",
    "--vocab-size", "2000",
    "--lr", "0.001",
    "--lr-warmup", "10",
]  # fmt: skip
# The launcher's metric regexes: what SageMaker will scrape from these very lines.
METRIC_PATTERNS = {m["Name"]: m["Regex"] for m in METRIC_DEFINITIONS}


class OptMl:
    """A fake /opt/ml tree and the environment a training container would set up."""

    def __init__(self, root: Path, data: Path | None) -> None:
        self.root = root
        self.model_dir = root / "opt/ml/model"
        self.output_data = root / "opt/ml/output/data"
        self.failure = root / "opt/ml/output/failure"
        self.checkpoints = root / "opt/ml/checkpoints"
        self.channel = root / "opt/ml/input/data/training"
        self.code = root / "opt/ml/input/data/code"
        for folder in (self.model_dir, self.output_data, self.checkpoints):
            folder.mkdir(parents=True, exist_ok=True)
        stage_source(self.code, learner_module=None)
        if data is not None:
            self.channel.mkdir(parents=True)
            (self.channel / data.name).symlink_to(data)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SM_", "FORMER_"))
            and key not in ("WORLD_SIZE", "RANK", "PYTHONPATH")
        }
        env.update(
            SM_MODEL_DIR=str(self.model_dir),
            SM_OUTPUT_DATA_DIR=str(self.output_data),
            SM_OUTPUT_FAILURE=str(self.failure),
            SM_CHANNELS=json.dumps(["training"] if self.channel.exists() else []),
            XDG_CACHE_HOME=str(self.root / "cache"),  # the loader's cache, not the user's
            FORMER_OFFLINE="1",  # nothing in a test may download
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        if self.channel.exists():
            env["SM_CHANNEL_TRAINING"] = str(self.channel)
        env.update(extra)
        return env

    def command(
        self, *args: str, launcher: list[str] | None = None, script: str = "model.py"
    ) -> list[str]:
        return [
            *(launcher or [sys.executable]),
            str(self.code / script),
            *args,
            "--checkpoint-dir",
            str(self.checkpoints),
            "--failure-file",
            str(self.failure),
        ]

    def run(
        self,
        *args: str,
        launcher: list[str] | None = None,
        script: str = "model.py",
        timeout: int = 240,
        **env: str,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*args, launcher=launcher, script=script),
            cwd=self.code,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.code,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def imdb_sample() -> Path:
    return shared_file("imdb_sample.csv")


def metric_lines(stdout: str) -> list[dict[str, str]]:
    found = []
    for line in stdout.splitlines():
        values = {name: re.search(p, line) for name, p in METRIC_PATTERNS.items()}
        if all(values.values()):
            found.append({name: match.group(1) for name, match in values.items()})
    return found


def test_trains_writes_the_model_and_resumes_after_an_interruption(
    tmp_path: Path, imdb_sample: Path
) -> None:
    from former.classifier import load_model

    job = OptMl(tmp_path, imdb_sample)
    args = [*SMALL_MODEL, "--epochs", "2", "--attention", "sdpa", "--checkpoint-every", "5"]

    # A spot interruption: the process dies (SIGKILL) once a checkpoint is on disk.
    interrupted = job.start(*args)
    saved_step = wait_for_checkpoint(job.checkpoints, interrupted)
    interrupted.kill()
    interrupted.communicate(timeout=60)
    saved_step = latest_checkpoint_step(job.checkpoints)  # a later one may have landed
    assert not any(job.model_dir.iterdir()) or interrupted.returncode == 0

    # SageMaker restarts the job with the same hyperparameters and checkpoint folder.
    resumed = job.run(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert re.search(rf"resuming from step {saved_step}\b", output), output[-3000:]
    lines = metric_lines(resumed.stdout)
    assert lines and float(lines[-1]["epoch"]) == 2.0
    final = json.loads((job.output_data / "metrics.json").read_text())
    assert final["step"] > saved_step and final["epoch"] == 2
    assert 0.0 <= final["val_acc"] <= 1.0

    saved = [p for p in job.model_dir.iterdir() if p.is_file()]
    assert len(saved) == 1, saved
    model, config, vocab = load_model(saved[0])
    assert (config.emb, config.heads, config.depth, config.epochs) == (32, 2, 1, 2)
    assert len(vocab) == 2000
    assert not job.failure.exists()


def wait_for_checkpoint(folder: Path, process: subprocess.Popen, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(folder.glob("checkpoint-*.pt")):
            return latest_checkpoint_step(folder)
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"model.py ended before writing a checkpoint:\n{stderr[-3000:]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail("no checkpoint appeared")


def latest_checkpoint_step(folder: Path) -> int:
    import torch

    latest = sorted(folder.glob("checkpoint-*.pt"))[-1]
    return int(torch.load(latest, map_location="cpu", weights_only=True)["step"])


# Runs the job as model.py does, then records what this rank trained.
RANK_PROBE = """\
import hashlib, json, os, sys
from pathlib import Path

from former import container

args, unknown = container.parse_args(sys.argv[1:])
model, metrics = container.run_job(args, unknown)
digest = hashlib.sha256()
for name, tensor in model.state_dict().items():
    digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
record = {"params_sha256": digest.hexdigest(), "metrics": metrics}
Path(os.environ["RANK_RECORDS"], f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
"""


def test_torchrun_two_cpu_ranks_stay_identical_and_only_rank_0_writes(
    tmp_path: Path, imdb_sample: Path
) -> None:
    job = OptMl(tmp_path, imdb_sample)
    (job.code / "rank_probe.py").write_text(RANK_PROBE)
    records = tmp_path / "ranks"
    records.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = job.run(
        *SMALL_MODEL,
        "--epochs",
        "1",
        "--attention",
        "sdpa",
        launcher=torchrun,
        script="rank_probe.py",
        RANK_RECORDS=str(records),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = {int(p.stem[4:]): json.loads(p.read_text()) for p in records.glob("rank*.json")}
    assert set(ranks) == {0, 1}
    assert ranks[0]["params_sha256"] == ranks[1]["params_sha256"]
    assert ranks[0]["metrics"]["epoch"] == 1 and ranks[1]["metrics"] == {}  # rank 0 evaluates
    assert [p.name for p in job.model_dir.iterdir()] == ["model.pt"]
    assert "training on 2 process(es)" in result.stdout
    lines = metric_lines(result.stdout)
    assert lines and len(lines) == len({json.dumps(m) for m in lines}), "metrics logged twice"
    assert not job.failure.exists()


def test_the_documented_model_py_is_the_shipped_entry_point() -> None:
    """The top-level model.py and the one the launcher writes run the same statements."""

    def statements(source: str) -> list[str]:
        body = ast.parse(source).body
        return [ast.dump(node) for node in body if not isinstance(node, ast.Expr)]

    assert statements((REPO_ROOT / "model.py").read_text()) == statements(ENTRY_SCRIPT_SOURCE)


LEARNER_STUB = (
    "def multihead_attention(queries, keys, values, heads, mask=False):\n"
    "    raise NotImplementedError('Task 1')\n"
)
LEARNER_BROKEN = "import torch\ndef multihead_attention(queries, keys, values, heads, mask=False)\n"


# Two cases run as real subprocesses (exit status, stderr); the rest call main() in-process,
# which is the same code path without another interpreter and torch import.
@pytest.mark.parametrize(
    ("case", "args", "expected", "subprocess_run"),
    [
        ("missing channel", ["--attention", "sdpa"], "no 'training' channel", True),
        ("no learner module", [], "Cannot import module 'my_transformer_model'", True),
        ("channel folder gone", ["--attention", "sdpa"], "does not exist", False),
        ("empty channel", ["--attention", "sdpa"], "cannot read training data", False),
        ("unknown attention", ["--attention", "flash"], "Unknown attention 'flash'", False),
        ("learner stub", [], "not implemented yet", False),
        ("learner syntax error", [], "SyntaxError", False),
        ("bad hyperparameter", ["--epochs", "many", "--attention", "sdpa"], "--epochs", False),
    ],
)
def test_bad_input_fails_with_one_actionable_line_and_a_failure_file(
    tmp_path: Path,
    imdb_sample: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    case: str,
    args: list[str],
    expected: str,
    subprocess_run: bool,
) -> None:
    job = OptMl(tmp_path, None if case == "missing channel" else imdb_sample)
    env = {}
    if case == "empty channel":
        (job.channel / imdb_sample.name).unlink()
    if case == "channel folder gone":
        env["SM_CHANNEL_TRAINING"] = str(tmp_path / "opt/ml/input/data/nothing-here")
    if case == "learner stub":
        (job.code / "my_transformer_model.py").write_text(LEARNER_STUB)
    if case == "learner syntax error":
        (job.code / "my_transformer_model.py").write_text(LEARNER_BROKEN)
    if subprocess_run:
        result = job.run(*args, timeout=120, **env)
        status, stderr = result.returncode, result.stderr
    else:
        status, stderr = run_in_process(job, args, env, monkeypatch, capsys)
    assert status != 0
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("model.py: error: ") and expected in last, stderr[-2000:]
    reason = job.failure.read_text()
    assert reason.strip() == last.removeprefix("model.py: error: ")
    assert len(reason.strip().splitlines()) == 1
    assert not any(job.model_dir.iterdir())


def run_in_process(
    job: OptMl,
    args: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> tuple[int, str]:
    monkeypatch.setattr(os, "environ", job.env(**env))
    monkeypatch.chdir(job.code)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_transformer_model", raising=False)
    status = container.main(
        [*args, "--checkpoint-dir", str(job.checkpoints), "--failure-file", str(job.failure)]
    )
    sys.modules.pop("my_transformer_model", None)  # a later test imports its own learner module
    return status, capsys.readouterr().err


def test_hyperparameters_parse_as_sagemaker_passes_them() -> None:
    args, unknown = container.parse_args(
        ["--batch_size", "16", "--max-pool", "False", "--final", "TRUE", "--download", "true",
         "--mp_parameters", "{}"]
    )  # fmt: skip
    assert (args.batch_size, args.max_pool, args.final, args.download) == (16, False, True, True)
    assert unknown == ["--mp_parameters", "{}"]
    with pytest.raises(container.JobInputError, match="true or false"):
        container.parse_args(["--wide", "maybe"])
