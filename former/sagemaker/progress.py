"""Follow a training job: its status, the metric lines it logs, its time and cost; stop it.

Everything here works from the job's name alone, so a notebook whose kernel
restarted reattaches with ``follow("former-classify-...")``. The metric lines
are read from the job's CloudWatch logs with the same regexes SageMaker uses
for the job's metric definitions, so the curve drawn here is the job's own.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from former.sagemaker.account import aws_session, resolve_region
from former.sagemaker.errors import JobFailedError, SageMakerError, aws_errors

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
FINAL_STATES = ("Completed", "Failed", "Stopped")
FAILURE_LOG_LINES = 10
# Regexes over the lines model.py prints, e.g. "epoch=2 train_loss=0.41 val_acc=0.873"
# (evaluations within an epoch print fractional epochs: "epoch=1.25 step=...").
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": "epoch", "Regex": r"\bepoch=" + _NUMBER},
    {"Name": "train_loss", "Regex": r"\btrain_loss=" + _NUMBER},
    {"Name": "val_acc", "Regex": r"\bval_acc=" + _NUMBER},
)


def parse_metrics(line: str) -> dict[str, float]:
    """The job's metrics in one log line: ``{"epoch": 2.0, "val_acc": 0.873, ...}`` or ``{}``."""
    found = {m["Name"]: re.search(m["Regex"], line) for m in METRIC_DEFINITIONS}
    return {name: float(match.group(1)) for name, match in found.items() if match}


def clients(region: str | None, boto_session: Any) -> tuple[str, Any]:
    region = resolve_region(region, boto_session)
    return region, aws_session(region, boto_session)


def describe_job(sagemaker: Any, job_name: str) -> dict[str, Any]:
    return sagemaker.describe_training_job(TrainingJobName=job_name)


class JobLogs:
    """The job's log lines (every host's stream), each returned once, in order per stream."""

    def __init__(self, logs: Any, job_name: str) -> None:
        self.logs, self.job_name = logs, job_name
        self.tokens: dict[str, str | None] = {}

    def new_lines(self) -> Iterator[str]:
        for stream in self._streams():
            token = self.tokens.get(stream)
            while True:
                page = self.logs.get_log_events(
                    logGroupName=LOG_GROUP,
                    logStreamName=stream,
                    startFromHead=True,
                    **({"nextToken": token} if token else {}),
                )
                yield from (event["message"].rstrip("\n") for event in page["events"])
                done = not page["events"] or page.get("nextForwardToken") == token
                token = page.get("nextForwardToken", token)
                if done:
                    break
            self.tokens[stream] = token

    def _streams(self) -> list[str]:
        try:
            pages = self.logs.get_paginator("describe_log_streams").paginate(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job_name}/"
            )
            return sorted(s["logStreamName"] for page in pages for s in page["logStreams"])
        except self.logs.exceptions.ResourceNotFoundException:
            return []  # no log group before the account's first job starts


def elapsed_seconds(job: dict[str, Any]) -> int:
    end = job.get("TrainingEndTime") or datetime.now(timezone.utc)
    return int((end - job["CreationTime"]).total_seconds())


def summary(job: dict[str, Any]) -> str:
    """``Completed after 412 s; billable 96 s of 310 s training, spot saved 69%``."""
    text = f"{job['TrainingJobStatus']} after {elapsed_seconds(job)} s"
    billable, training = job.get("BillableTimeInSeconds"), job.get("TrainingTimeInSeconds")
    if billable is not None:
        text += f"; billable {billable} s"
        if training:
            text += f" of {training} s training"
            if job.get("EnableManagedSpotTraining"):
                text += f", spot saved {100 * (1 - billable / training):.0f}%"
    return text


def follow(
    job_name: str,
    *,
    region: str | None = None,
    boto_session: Any = None,
    on_metrics: Callable[[dict[str, float]], None] | None = None,
    poll_seconds: float = 15,
    out: Callable[[str], None] = print,
    sleep: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Print the job's progress until it ends; return its final description.

    Each status change and each metric line as it arrives, with the seconds
    since the job was created; at the end, billable time and spot savings.
    ``on_metrics`` gets each metric line's values (e.g. a live plot). A
    failed job raises :class:`JobFailedError` with its reason and last lines.
    """
    with aws_errors(region):
        region, session = clients(region, boto_session)
        sagemaker = session.client("sagemaker")
        logs = JobLogs(session.client("logs"), job_name)
        recent: deque[str] = deque(maxlen=FAILURE_LOG_LINES)
        shown, job = 0, {}
        try:
            while True:
                job = describe_job(sagemaker, job_name)
                transitions = job.get("SecondaryStatusTransitions", [])
                for step in transitions[shown:]:
                    message = step.get("StatusMessage", "")
                    out(f"[{elapsed_seconds(job):5d} s] {step['Status']}: {message}".rstrip(": "))
                shown = len(transitions)
                for line in logs.new_lines():
                    recent.append(line)
                    metrics = parse_metrics(line)
                    if metrics:
                        out(f"[{elapsed_seconds(job):5d} s]   {line.strip()}")
                        if on_metrics:
                            on_metrics(metrics)
                if job["TrainingJobStatus"] in FINAL_STATES:
                    break
                (sleep or time.sleep)(poll_seconds)
        except KeyboardInterrupt:
            raise SageMakerError(
                f"Stopped following {job_name}; the job goes on (and bills) until it ends: "
                f"follow('{job_name}') reattaches, stop_job('{job_name}') stops it."
            ) from None
    out(f"{job_name}: {summary(job)}")
    if job["TrainingJobStatus"] == "Failed":
        raise JobFailedError(job_name, job.get("FailureReason", "no reason given"), recent)
    return job


def job_metrics(
    job_name: str, *, region: str | None = None, boto_session: Any = None
) -> list[dict[str, float]]:
    """Every metric line the job logged so far, as values: the job's training curve."""
    lines = job_log_lines(job_name, region=region, boto_session=boto_session)
    return [metrics for metrics in map(parse_metrics, lines) if metrics]


def job_log_lines(
    job_name: str, *, region: str | None = None, boto_session: Any = None
) -> list[str]:
    """Everything the job logged so far (all hosts)."""
    with aws_errors(region):
        _, session = clients(region, boto_session)
        return list(JobLogs(session.client("logs"), job_name).new_lines())


def job_status(
    job_name: str, *, region: str | None = None, boto_session: Any = None
) -> dict[str, Any]:
    """The job's description (``TrainingJobStatus``, ``SecondaryStatus``, times, artifacts)."""
    with aws_errors(region):
        _, session = clients(region, boto_session)
        return describe_job(session.client("sagemaker"), job_name)


def recent_jobs(
    name_contains: str = "former", *, region: str | None = None, boto_session: Any = None
) -> list[dict[str, Any]]:
    """The latest training jobs whose names contain ``name_contains``, newest first."""
    with aws_errors(region):
        _, session = clients(region, boto_session)
        found = session.client("sagemaker").list_training_jobs(
            NameContains=name_contains, SortBy="CreationTime", SortOrder="Descending", MaxResults=10
        )
        return found["TrainingJobSummaries"]


def stop_job(job_name: str, *, region: str | None = None, boto_session: Any = None) -> None:
    """Ask SageMaker to stop the job (it uploads what the job saved, then ends as Stopped)."""
    with aws_errors(region):
        _, session = clients(region, boto_session)
        session.client("sagemaker").stop_training_job(TrainingJobName=job_name)
