"""Follow a training job from its name alone (a restarted notebook reattaches); stop it.

Metric lines are read from the job's CloudWatch logs with the regexes of its metric
definitions, so the curve drawn here is the job's own.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from former.sagemaker.account import aws_session
from former.sagemaker.errors import JobFailedError, SageMakerError, aws_errors

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
FINAL_STATES = ("Completed", "Failed", "Stopped")
# What model.py prints, e.g. "epoch=2 train_loss=0.41 val_acc=0.873" ("epoch=1.25" within one).
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = tuple(
    {"Name": name, "Regex": rf"\b{name}=" + _NUMBER} for name in ("epoch", "train_loss", "val_acc")
)


def parse_metrics(line: str) -> dict[str, float]:
    """The job's metrics in one log line: ``{"epoch": 2.0, "val_acc": 0.873, ...}`` or ``{}``."""
    found = {m["Name"]: re.search(m["Regex"], line) for m in METRIC_DEFINITIONS}
    return {name: float(match.group(1)) for name, match in found.items() if match}


def client(service: str, region: str | None, boto_session: Any) -> Any:
    return aws_session(region, boto_session).client(service)


class JobLogs:
    """The job's log lines (every host's stream), each returned once, in order per stream."""

    def __init__(self, logs: Any, job_name: str) -> None:
        self.logs, self.job_name, self.tokens = logs, job_name, {}

    def new_lines(self) -> Iterator[str]:
        for stream in self.streams():
            while True:
                token = self.tokens.get(stream)
                page = self.logs.get_log_events(
                    logGroupName=LOG_GROUP,
                    logStreamName=stream,
                    startFromHead=True,
                    **({"nextToken": token} if token else {}),
                )
                yield from (event["message"].rstrip("\n") for event in page["events"])
                self.tokens[stream] = page.get("nextForwardToken", token)
                if not page["events"] or self.tokens[stream] == token:
                    break

    def streams(self) -> list[str]:
        prefix = f"{self.job_name}/"
        try:
            pages = self.logs.get_paginator("describe_log_streams").paginate(
                logGroupName=LOG_GROUP, logStreamNamePrefix=prefix
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
    """Print each status change and metric line until the job ends; return its description.
    ``on_metrics`` gets each metric line's values (a live plot); a failed job raises
    :class:`JobFailedError` with its reason and last log lines."""
    with aws_errors(region):
        session = aws_session(region, boto_session)
        sagemaker, logs = session.client("sagemaker"), JobLogs(session.client("logs"), job_name)
        recent: deque[str] = deque(maxlen=10)
        shown = 0
        try:
            while True:
                job = sagemaker.describe_training_job(TrainingJobName=job_name)
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


def job_log_lines(
    job_name: str, *, region: str | None = None, boto_session: Any = None
) -> list[str]:
    """Everything the job logged so far (all hosts)."""
    with aws_errors(region):
        return list(JobLogs(client("logs", region, boto_session), job_name).new_lines())


def job_metrics(
    job_name: str, *, region: str | None = None, boto_session: Any = None
) -> list[dict[str, float]]:
    """Every metric line the job logged so far, as values: the job's training curve."""
    lines = job_log_lines(job_name, region=region, boto_session=boto_session)
    return [metrics for metrics in map(parse_metrics, lines) if metrics]


def job_status(
    job_name: str, *, region: str | None = None, boto_session: Any = None
) -> dict[str, Any]:
    """The job's description (``TrainingJobStatus``, ``SecondaryStatus``, times, artifacts)."""
    with aws_errors(region):
        sagemaker = client("sagemaker", region, boto_session)
        return sagemaker.describe_training_job(TrainingJobName=job_name)


def recent_jobs(
    name_contains: str = "former", *, region: str | None = None, boto_session: Any = None
) -> list[dict[str, Any]]:
    """The latest training jobs whose names contain ``name_contains``, newest first."""
    with aws_errors(region):
        found = client("sagemaker", region, boto_session).list_training_jobs(
            NameContains=name_contains, SortBy="CreationTime", SortOrder="Descending", MaxResults=10
        )
        return found["TrainingJobSummaries"]


def stop_job(job_name: str, *, region: str | None = None, boto_session: Any = None) -> None:
    """Ask SageMaker to stop the job (it uploads what the job saved, then ends as Stopped)."""
    with aws_errors(region):
        client("sagemaker", region, boto_session).stop_training_job(TrainingJobName=job_name)
