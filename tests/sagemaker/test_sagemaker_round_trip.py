"""The whole SageMaker round trip, offline: launch, the job itself, follow, fetch, test locally.

The two halves meet in the fake account: what the launcher uploaded (code and
data channels, hyperparameters) runs as a container would run it, in an
``/opt/ml`` tree with the ``SM_*`` environment; its output becomes the job's
log stream and its model directory the job's ``model.tar.gz``, which the fetch
step downloads and tests here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from aws_fakes import (  # noqa: F401
    ROLE,
    JobTimeline,
    aws,
    channel,
    download_prefix,
    no_telemetry,
    run_notebook_sagemaker_cell,
    workdir,
)
from conftest import shared_file
from test_model_entry import SMALL_MODEL, OptMl

pytest.importorskip("sagemaker.train")

from former import sagemaker  # noqa: E402
from former.sagemaker.__main__ import main  # noqa: E402
from former.sagemaker.progress import parse_metrics  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:sagemaker.train.configs has been moved:DeprecationWarning"
)


def run_as_container(
    session, request: dict, root: Path, *extra: str
) -> subprocess.CompletedProcess:
    """Fill an /opt/ml tree from the job's S3 channels and run model.py as the SDK's driver does.

    ``extra`` arguments follow the job's hyperparameters (and so override them).
    """
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    job = OptMl(root, data=None)
    shutil.rmtree(job.code)
    shipped = download_prefix(session, channel(request, "code"), job.code)
    assert "model.py" in shipped and "my_transformer_model.py" in shipped
    job.channel.mkdir(parents=True)
    download_prefix(session, channel(request, "training"), job.channel)
    return job.run(*hyperparameters_to_cli_args(request["HyperParameters"]), *extra, timeout=300)


def test_launch_follow_fetch_and_test_the_model_locally(
    aws, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    imdb = shared_file("imdb_sample.csv")
    monkeypatch.syspath_prepend(str(workdir))  # the learner's module, as in the notebook's folder
    hyperparameters = dict(zip(SMALL_MODEL[::2], SMALL_MODEL[1::2], strict=True))
    hyperparameters.update({"--epochs": "1", "--final": "true", "--evals-per-epoch": "2"})
    launched = sagemaker.launch_training_job(
        imdb, role=ROLE, hyperparameters=hyperparameters, dry_run=False, boto_session=aws
    )
    assert launched.submitted

    ran = run_as_container(aws, launched.request, workdir / "container")
    assert ran.returncode == 0, ran.stderr[-3000:]
    model_dir = workdir / "container/opt/ml/model"
    timeline = JobTimeline(aws, launched.job_name, ran.stdout.splitlines(), model_dir)

    curve: list[dict] = []
    job = sagemaker.follow(
        launched.job_name, boto_session=aws, on_metrics=curve.append, sleep=timeline.advance
    )
    out = capsys.readouterr().out
    print(out)
    assert job["TrainingJobStatus"] == "Completed"
    for status in ("Starting", "Downloading", "Training", "Uploading", "Completed"):
        assert f"] {status}: " in out
    assert "val_acc=" in out and "train_loss=" in out
    assert "Completed after 425 s; billable 96 s of 330 s training, spot saved 71%" in out
    assert len(curve) == 2 and curve[-1]["epoch"] == 1  # two evaluations, as asked
    assert sagemaker.job_metrics(launched.job_name, boto_session=aws) == curve

    path = sagemaker.fetch_model(launched.job_name, workdir / "models", boto_session=aws)
    model, config, vocab = sagemaker.load_fetched_model(path)
    assert config.attention == "my_transformer_model:multihead_attention"
    accuracy, reviews = sagemaker.accuracy_on_test_reviews(model, config, vocab, imdb)
    # --final: the job's last evaluation was on these same test reviews, with this model.
    assert reviews == 500
    assert accuracy == pytest.approx(curve[-1]["val_acc"], abs=1e-3)


def test_the_command_line_reattaches_by_name_fetches_and_classifies(
    aws, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """After a restart only the job's name is left: status, logs, fetch all work from it."""
    from former.classifier import ClassifierConfig, build_classifier, save_model

    imdb = shared_file("imdb_sample.csv")
    launched = sagemaker.launch_training_job(
        imdb, role=ROLE, hyperparameters={"attention": "sdpa"}, dry_run=False, boto_session=aws
    )
    config = ClassifierConfig(emb=16, heads=2, vocab_size=50, max_length=32)
    from former.data import Vocabulary

    vocab = Vocabulary.build([["a", "good", "bad", "film"]], 50)
    model_dir = workdir / "model"
    save_model(model_dir, build_classifier(config, len(vocab), 2), config, vocab)
    timeline = JobTimeline(
        aws, launched.job_name, ["epoch=1 train_loss=0.5 val_acc=0.6"], model_dir
    )
    for _ in timeline.STEPS:
        timeline.advance()
    capsys.readouterr()
    name = launched.job_name

    assert main(["status"]) == 0
    assert f"{name}  Completed" in capsys.readouterr().out
    assert main(["status", name]) == 0
    assert "Completed (Completed)" in capsys.readouterr().out
    assert main(["logs", name]) == 0
    assert capsys.readouterr().out.strip() == "epoch=1 train_loss=0.5 val_acc=0.6"
    assert main(["fetch", name, "--out", "models", "--data", str(imdb), "--limit", "50"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy here: " in out and "on 50 IMDB test reviews" in out
    assert "'A wonderful film: the acting is superb and the story moving.': " in out
    assert (workdir / "models" / name / "model.pt").is_file()


def test_a_job_still_running_has_nothing_to_fetch_and_can_be_stopped(
    aws, workdir: Path, capsys
) -> None:
    """moto has no StopTrainingJob: that one call is stubbed with botocore's Stubber."""
    from botocore.stub import Stubber

    launched = sagemaker.launch_training_job(
        workdir / "reviews.csv", role=ROLE, hyperparameters={"attention": "sdpa"},
        dry_run=False, boto_session=aws,
    )  # fmt: skip
    JobTimeline(aws, launched.job_name, [], None)
    with pytest.raises(sagemaker.SageMakerError, match="is InProgress .* no model to fetch yet"):
        sagemaker.fetch_model(launched.job_name, workdir / "models", boto_session=aws)

    client = aws.client("sagemaker")
    stubber = Stubber(client)
    stubber.add_response("stop_training_job", {}, {"TrainingJobName": launched.job_name})
    with stubber:
        original = aws.client
        aws.client = lambda service, **kw: client if service == "sagemaker" else original(service)
        try:
            sagemaker.stop_job(launched.job_name, boto_session=aws)
        finally:
            aws.client = original
    stubber.assert_no_pending_responses()


def test_the_cli_follows_a_job_to_its_end(aws, workdir: Path, monkeypatch, capsys) -> None:
    launched = sagemaker.launch_training_job(
        workdir / "reviews.csv", role=ROLE, hyperparameters={"attention": "sdpa"},
        dry_run=False, boto_session=aws,
    )  # fmt: skip
    timeline = JobTimeline(aws, launched.job_name, ["epoch=1 train_loss=0.5 val_acc=0.6"], None)
    monkeypatch.setattr("time.sleep", timeline.advance)
    assert main(["logs", launched.job_name, "--follow"]) == 0
    out = capsys.readouterr().out
    assert "epoch=1 train_loss=0.5 val_acc=0.6" in out and "Completed after 425 s" in out


def test_the_notebook_cell_runs_the_round_trip_and_reattaches(
    aws, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The master notebook's SageMaker cell, as a learner with AWS credentials runs it: the job's
    metric lines, read from its logs through the real metric definitions, drive the cell's own
    live plot; then, as after a kernel restart, the cell with JOB_NAME set reattaches."""
    imdb = shared_file("imdb_sample.csv")
    for name, value in {"LAB_IMDB": str(imdb), "SAGEMAKER_ROLE": ROLE, "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(workdir))
    launch = sagemaker.launch_training_job
    job_lines: list[str] = []

    def launch_and_run_the_job(*args, **kwargs):
        """The service's half starts once the job exists: the container runs, moto's job moves."""
        launched = launch(*args, **kwargs)
        # A smaller model than the cell asks for keeps the container's run short.
        ran = run_as_container(aws, launched.request, workdir / "container", *SMALL_MODEL)
        assert ran.returncode == 0, ran.stderr[-3000:]
        job_lines.extend(ran.stdout.splitlines())
        timeline = JobTimeline(
            aws, launched.job_name, job_lines, workdir / "container/opt/ml/model"
        )
        monkeypatch.setattr("time.sleep", timeline.advance)
        return launched

    monkeypatch.setattr(sagemaker, "launch_training_job", launch_and_run_the_job)
    base = {"os": os, "GRADING": False, "QUICK": True, "MODULE": Path("my_transformer_model.py")}
    launched_cell = dict(base)
    run_notebook_sagemaker_cell(launched_cell)
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out)
    assert "submitted former-classify-" in out and "After a kernel restart, set JOB_NAME" in out
    assert "] Training: " in out and "val_acc=" in out and "spot saved" in out
    accuracy = float(re.search(r"accuracy ([0-9.]+) on 500 IMDB test reviews", out).group(1))
    assert 0.5 < accuracy <= 1
    assert "'A wonderful film: the acting is superb and the story moving.': " in out
    assert "SageMaker: " not in out and "Traceback" not in out
    metric_lines = [line for line in job_lines if "val_acc=" in line]
    assert len(metric_lines) >= 2
    assert_plot_shows(launched_cell["job_plot"], metric_lines)

    name = re.search(r"set JOB_NAME = '([^']+)'", out).group(1)
    reattached_cell = dict(base)
    run_notebook_sagemaker_cell(reattached_cell, job_name=name)
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out)
    assert "submitted" not in out and "Completed after" in out
    again = float(re.search(r"accuracy ([0-9.]+) on 500 IMDB test reviews", out).group(1))
    assert again == accuracy
    assert "SageMaker: " not in out and "Traceback" not in out
    assert_plot_shows(reattached_cell["job_plot"], metric_lines)


def assert_plot_shows(plot, metric_lines: list[str]) -> None:
    """The plot's two panels hold one point per metric line: its step, loss and accuracy."""
    expected = [parse_metrics(line) for line in metric_lines]
    (loss_line,) = plot.ax_loss.get_lines()
    (acc_line,) = plot.ax_metric.get_lines()
    assert list(loss_line.get_xdata()) == [m["step"] for m in expected]
    assert list(loss_line.get_ydata()) == [m["train_loss"] for m in expected]
    assert list(acc_line.get_ydata()) == [m["val_acc"] for m in expected]
    assert plot.ax_loss.get_xlabel() == "step"


def test_the_live_plot_draws_a_job_whose_metric_lines_carry_no_step(monkeypatch) -> None:
    """Jobs launched with the older metric definitions log lines without a step: the plot's
    x-axis is then the epoch."""
    from former.live_plot import LivePlot

    monkeypatch.setenv("MPLBACKEND", "Agg")
    plot = LivePlot()
    for line in ("epoch=0.5 train_loss=0.69 val_acc=0.55", "epoch=1 train_loss=0.5 val_acc=0.6"):
        plot(parse_metrics(line))
    (loss_line,) = plot.ax_loss.get_lines()
    assert list(loss_line.get_xdata()) == [0.5, 1.0]
    assert list(plot.ax_metric.get_lines()[0].get_ydata()) == [0.55, 0.6]
    assert plot.ax_loss.get_xlabel() == "epoch"
