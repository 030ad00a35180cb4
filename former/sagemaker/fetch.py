"""Bring a finished job's model home: download ``model.tar.gz``, load it, test it locally."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from former.runs import MODEL_FILE
from former.sagemaker.account import aws_client, local_imdb, split_s3_uri
from former.sagemaker.errors import SageMakerError, aws_errors
from former.sagemaker.progress import job_status


def fetch_model(
    job_name: str,
    destination: str | Path = "sagemaker-models",
    *,
    region: str | None = None,
    boto_session: Any = None,
) -> Path:
    """Download and unpack the job's ``model.tar.gz`` into ``destination/<job>/``: its model.pt."""
    folder = Path(destination) / job_name
    if (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE  # fetched before: the artifact of a finished job never changes
    job = job_status(job_name, region=region, boto_session=boto_session)
    artifact = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    # A stopped job uploads what it had saved: a model if it was stopped after training.
    if job["TrainingJobStatus"] not in ("Completed", "Stopped") or not artifact:
        raise SageMakerError(no_model(job_name, job))
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "model.tar.gz"
    with aws_errors(region):
        aws_client("s3", region, boto_session).download_file(*split_s3_uri(artifact), str(archive))
    with tarfile.open(archive) as tar:  # regular files only, and only inside the folder
        members = [m for m in tar.getmembers() if m.isfile() and ".." not in Path(m.name).parts]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(folder, members=members, **safe)
    if not (folder / MODEL_FILE).is_file():
        raise SageMakerError(
            f"{artifact} holds no {MODEL_FILE}: the job ({job['TrainingJobStatus']}) ended before "
            "model.py saved its model, or did not run model.py; launch it again."
        )
    return folder / MODEL_FILE


def no_model(job_name: str, job: dict[str, Any]) -> str:
    """Why a job has no model to fetch, and what to do: wait for it, or launch again."""
    status = job["TrainingJobStatus"]
    where = f"{status} ({job.get('SecondaryStatus', '')})"
    if status in ("InProgress", "Stopping"):
        return f"Training job {job_name} is {where}, so it has no model to fetch yet: " + (
            f"follow('{job_name}') waits for it."
        )
    reason = job.get("FailureReason")
    return (
        f"Training job {job_name} is {where} and has no model"
        + (f" ({reason})" if reason else "")
        + ": it will not get one, so fix what stopped it and launch it again."
    )


def load_fetched_model(path: Path) -> tuple[nn.Module, Any, Any]:
    """:func:`former.classifier.load_model`, with ``sdpa`` (what a correct ``multihead_attention``
    computes) where the learner's module cannot be imported."""
    from former.classifier import load_model

    try:
        return load_model(path)
    except ImportError as error:
        print(f"{error}; loading the model with attention='sdpa' (PyTorch's own) instead.")
        return load_model(path, attention="sdpa")


def accuracy_on_test_reviews(
    model: nn.Module,
    config: Any,
    vocab: Any,
    data: str | Path | None = None,
    limit: int | None = None,
) -> tuple[float, int]:
    """(accuracy, number of reviews) on the local IMDB test split, or on ``limit`` reviews spread
    evenly over it (it is ordered by label)."""
    from former.classifier import evaluate, pick_device
    from former.data import TextSplit

    reviews = local_imdb(data, "test the model on").read()
    rows = [i for i, is_test in enumerate(reviews.is_test) if is_test]
    if limit and limit < len(rows):
        rows = [rows[i * len(rows) // limit] for i in range(limit)]
    texts = [torch.tensor(vocab.encode_text(reviews.texts[i]) or [vocab.unk_index]) for i in rows]
    split = TextSplit(texts, torch.tensor([reviews.labels[i] for i in rows]))
    device = pick_device()
    return evaluate(model.to(device), split, 64, config.max_length, device), len(split)
