"""A fake AWS account for the SageMaker tests: moto, plus the few things moto does not do.

moto creates training jobs already Completed, with no logs and no model; it has
no StopTrainingJob. :class:`JobTimeline` walks a job through SageMaker's states
in moto's own records, writes the container's output to the job's CloudWatch
stream and its model to the S3 path the job reports, as SageMaker would.
"""

from __future__ import annotations

import io
import os
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
ACCOUNT = "123456789012"
REGION = "us-east-1"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
LEARNER_SOURCE = (
    "import torch\n\n\n"
    "def multihead_attention(queries, keys, values, heads, mask=False):\n"
    "    b, t, e = queries.shape\n"
    "    q, k, v = (x.view(b, t, heads, e // heads).transpose(1, 2) for x in (queries, keys, values))\n"
    "    scores = q @ k.transpose(-2, -1) / (e // heads) ** 0.5\n"
    "    if mask:\n"
    "        causal = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)\n"
    "        scores = scores.masked_fill(causal, float('-inf'))\n"
    "    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e)\n"
)


def write_reviews(path: Path, n: int = 20) -> Path:
    rows = ["review,sentiment"] + [
        f'"a {"good" if i % 2 else "bad"} film number {i}",{"positive" if i % 2 else "negative"}'
        for i in range(n)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook folder: the learner's module, a small CSV, no AWS configuration at all."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_transformer_model.py").write_text(LEARNER_SOURCE)
    write_reviews(tmp_path / "reviews.csv")
    for name in list(os.environ):
        if name.startswith(("AWS_", "SAGEMAKER_ROLE", "FORMER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FORMER_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def no_telemetry(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record (and suppress) the SDK's telemetry requests; they go over HTTP, not botocore."""
    from sagemaker.core.telemetry import telemetry_logging

    sent: list = []
    monkeypatch.setattr(
        telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a)
    )
    return sent


@pytest.fixture
def aws(workdir: Path, monkeypatch: pytest.MonkeyPatch, no_telemetry: list):
    """Fake credentials and a mocked AWS account; the session a caller passes."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    with moto.mock_aws():
        yield boto3.Session(region_name=REGION)


def run_notebook_sagemaker_cell(namespace: dict, job_name: str = "") -> None:
    """Run the master notebook's SageMaker cell in ``namespace``, as the notebook's kernel would;
    ``job_name``: written into the cell's ``JOB_NAME = ""`` line, as a learner reattaching does."""
    import json

    from grader.course.course_dir import master_path

    cells = json.loads(master_path().read_text())["cells"]
    source = "".join(next(c for c in cells if c.get("id") == "sagemaker-code")["source"])
    assert 'JOB_NAME = ""' in source
    source = source.replace('JOB_NAME = ""', f"JOB_NAME = {job_name!r}", 1)
    exec(compile(source, "sagemaker-code", "exec"), namespace)


def channel(request: dict, name: str) -> str:
    found = next(c for c in request["InputDataConfig"] if c["ChannelName"] == name)
    return found["DataSource"]["S3DataSource"]["S3Uri"]


def download_prefix(session, uri: str, folder: Path) -> list[str]:
    """Copy every object under the S3 prefix ``uri`` into ``folder``, as SageMaker fills a channel."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3, names = session.client("s3"), []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :].lstrip("/") or Path(item["Key"]).name
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(folder / relative))
            names.append(relative)
    return names


def fake_job(name: str):
    """moto's own record of a training job."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]


def put_log_lines(session, stream: str, lines: list[str]) -> None:
    logs = session.client("logs")
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    try:
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
    if events:
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)


class JobTimeline:
    """SageMaker's states for one moto job, one step per poll (pass ``advance`` as ``sleep``).

    The log lines arrive in two parts (up to the first evaluation during Training,
    the rest during Uploading), the model during Uploading; elapsed times are those
    of a short real job.
    """

    STEPS = (  # (seconds since creation, status, secondary status, message)
        (5, "InProgress", "Starting", "Preparing the instances for training"),
        (95, "InProgress", "Downloading", "Downloading the training image"),
        (130, "InProgress", "Training", "Training image download completed. Training in progress."),
        (410, "InProgress", "Uploading", "Uploading generated training model"),
        (425, "Completed", "Completed", "Training job completed"),
    )

    def __init__(
        self, session, job_name: str, log_lines: list[str], model_dir: Path | None,
        failure: str | None = None, billable: int = 96,
    ) -> None:  # fmt: skip
        self.session, self.job_name, self.model_dir = session, job_name, model_dir
        self.log_lines, self.failure, self.billable = log_lines, failure, billable
        self.stream = f"{job_name}/algo-1-1700000000"
        self.created = datetime.now(timezone.utc).replace(tzinfo=None)
        self.job = fake_job(job_name)
        self.job.secondary_status_transitions = []
        self.job.training_end_time = None
        self.artifact = self.job.model_artifacts["S3ModelArtifacts"]
        del self.job.model_artifacts  # no model until the job uploads one
        self.step = -1
        self.advance(0)

    def advance(self, _seconds: float = 0) -> None:
        self.step += 1
        offset, status, secondary, message = self.STEPS[min(self.step, len(self.STEPS) - 1)]
        if self.failure and secondary in ("Uploading", "Completed"):
            status, secondary, message = "Failed", "Failed", self.failure
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        self.job.creation_time = now - timedelta(seconds=offset)
        self.job.training_job_status, self.job.secondary_status = status, secondary
        self.job.secondary_status_transitions.append(
            {"Status": secondary, "StartTime": now, "StatusMessage": message}
        )
        first_metric = next((i for i, ln in enumerate(self.log_lines) if "val_acc=" in ln), 0)
        half = first_metric + 1  # the first evaluation arrives while training
        if secondary == "Training":
            put_log_lines(self.session, self.stream, self.log_lines[:half])
        if secondary in ("Uploading", "Failed"):
            put_log_lines(self.session, self.stream, self.log_lines[half:])
        if secondary == "Uploading" and self.model_dir is not None:
            self._upload_model()
        if status in ("Completed", "Failed"):
            self.job.training_end_time = now
            self.job.training_time_in_seconds = offset - 95
            self.job.billable_time_in_seconds = self.billable
            if status == "Failed":
                self.job.failure_reason = self.failure
            else:
                self.job.model_artifacts = {"S3ModelArtifacts": self.artifact}

    def _upload_model(self) -> None:
        """What SageMaker does with /opt/ml/model: one model.tar.gz at the job's output path."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            for path in sorted(self.model_dir.iterdir()):
                tar.add(path, arcname=path.name)
        bucket, _, key = self.artifact.removeprefix("s3://").partition("/")
        self.session.client("s3").put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
