"""Follow a training job from its name alone (a restarted notebook reattaches); stop it. Metric
lines are read from the job's CloudWatch logs with the job's own metric regexes."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from former.sagemaker.account import aws_client, aws_session
from former.sagemaker.errors import JobFailedError, SageMakerError, aws_errors

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
FINAL_STATES = ("Completed", "Failed", "Stopped")
POLL_SECONDS = 15
MAX_LOG_PAGES = 10_000  # per stream and poll: a bound, should a service never repeat its token
# What model.py prints, e.g. "epoch=2 step=780 train_loss=0.41 val_acc=0.873" ("epoch=1.25"
# within one); the step is the x-axis of the notebook's live plot.
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = tuple(
    {"Name": name, "Regex": rf"\b{name}=" + _NUMBER}
    for name in ("epoch", "step", "train_loss", "val_acc")
)


def parse_metrics(line: str) -> dict[str, float]:
    """The job's metrics in one log line: ``{"epoch": 2.0, "val_acc": 0.873, ...}`` or ``{}``."""
    found = {m["Name"]: re.search(m["Regex"], line) for m in METRIC_DEFINITIONS}
    return {name: float(match.group(1)) for name, match in found.items() if match}


def new_log_lines(logs: Any, job_name: str, tokens: dict[str, str]) -> Iterator[str]:
    """The job's log lines not read before, every host's stream in order; ``tokens`` holds
    where each stream was left."""
    try:
        pages = logs.get_paginator("describe_log_streams").paginate(
            logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/"
        )
        streams = sorted(s["logStreamName"] for page in pages for s in page["logStreams"])
    except logs.exceptions.ResourceNotFoundException:
        return  # no log group before the account's first job starts
    for stream in streams:
        # A page may be empty in the middle of a stream: only a page that hands back the token
        # it was asked with is the end (as CloudWatch documents GetLogEvents).
        for _ in range(MAX_LOG_PAGES):
            token = tokens.get(stream)
            where = {"logStreamName": stream, **({"nextToken": token} if token else {})}
            page = logs.get_log_events(logGroupName=LOG_GROUP, startFromHead=True, **where)
            yield from (event["message"].rstrip("\n") for event in page["events"])
            tokens[stream] = page.get("nextForwardToken", token)
            if tokens[stream] == token or tokens[stream] is None:
                break


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
    sleep: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Print each status change and metric line until the job ends; return its description.
    ``on_metrics`` gets each metric line's values (a live plot); a failed job raises
    :class:`JobFailedError` with its reason and last log lines."""
    with aws_errors(region):
        session = aws_session(region, boto_session)
        sagemaker, logs = session.client("sagemaker"), session.client("logs")
        recent: deque[str] = deque(maxlen=10)
        tokens: dict[str, str] = {}  # where each log stream was left
        shown = 0  # status transitions printed
        try:
            while True:
                job = sagemaker.describe_training_job(TrainingJobName=job_name)
                stamp = f"[{elapsed_seconds(job):5d} s]"
                for step in job.get("SecondaryStatusTransitions", [])[shown:]:
                    print(f"{stamp} {step['Status']}: {step.get('StatusMessage', '')}".rstrip(": "))
                    shown += 1
                for line in new_log_lines(logs, job_name, tokens):
                    recent.append(line)
                    if metrics := parse_metrics(line):
                        print(f"{stamp}   {line.strip()}")
                        if on_metrics:
                            on_metrics(metrics)
                if job["TrainingJobStatus"] in FINAL_STATES:
                    break
                (sleep or time.sleep)(POLL_SECONDS)
        except KeyboardInterrupt:
            raise SageMakerError(
                f"Stopped following {job_name}; the job goes on (and bills) until it ends: "
                f"follow('{job_name}') reattaches, stop_job('{job_name}') stops it."
            ) from None
    print(f"{job_name}: {summary(job)}")
    if job["TrainingJobStatus"] == "Failed":
        raise JobFailedError(job_name, job.get("FailureReason", "no reason given"), recent)
    return job


def job_log_lines(
    job_name: str, *, region: str | None = None, boto_session: Any = None
) -> list[str]:
    """Everything the job logged so far (all hosts)."""
    with aws_errors(region):
        return list(new_log_lines(aws_client("logs", region, boto_session), job_name, {}))


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
        sagemaker = aws_client("sagemaker", region, boto_session)
        return sagemaker.describe_training_job(TrainingJobName=job_name)


def recent_jobs(*, region: str | None = None, boto_session: Any = None) -> list[dict[str, Any]]:
    """The latest training jobs named former-*, newest first."""
    with aws_errors(region):
        found = aws_client("sagemaker", region, boto_session).list_training_jobs(
            NameContains="former", SortBy="CreationTime", SortOrder="Descending", MaxResults=10
        )
        return found["TrainingJobSummaries"]


def stop_job(job_name: str, *, region: str | None = None, boto_session: Any = None) -> None:
    """Ask SageMaker to stop the job (it uploads what the job saved, then ends as Stopped)."""
    with aws_errors(region):
        aws_client("sagemaker", region, boto_session).stop_training_job(TrainingJobName=job_name)
