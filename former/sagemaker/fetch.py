"""Bring a finished job's model home: download ``model.tar.gz``, load it, test it locally.

path = fetch_model("former-classify-2025-...")   # sagemaker-models/<job>/model.pt
model, config, vocab = load_fetched_model(path)
accuracy, n = accuracy_on_test_reviews(model, config, vocab)   # IMDB test reviews, here
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from former.sagemaker.account import split_s3_uri
from former.sagemaker.errors import SageMakerError, aws_errors
from former.sagemaker.progress import clients, describe_job

MODEL_FILE = "model.pt"


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
    with aws_errors(region):
        _, session = clients(region, boto_session)
        job = describe_job(session.client("sagemaker"), job_name)
        artifact = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if job["TrainingJobStatus"] != "Completed" or not artifact:
            raise SageMakerError(
                f"Training job {job_name} is {job['TrainingJobStatus']} "
                f"({job.get('SecondaryStatus', '')}), so it has no model to fetch yet: "
                f"follow('{job_name}') waits for it."
            )
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / "model.tar.gz"
        bucket, key = split_s3_uri(artifact)
        session.client("s3").download_file(bucket, key, str(archive))
    unpack(archive, folder)
    if not (folder / MODEL_FILE).is_file():
        raise SageMakerError(f"{artifact} holds no {MODEL_FILE}: was it written by model.py?")
    return folder / MODEL_FILE


def unpack(archive: Path, folder: Path) -> None:
    """Extract regular files only, and only inside ``folder``."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and ".." not in Path(m.name).parts]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(folder, members=members, **safe)


def load_fetched_model(path: Path) -> tuple[nn.Module, Any, Any]:
    """:func:`former.training.load_model`, with PyTorch's attention if the job's cannot be imported.

    A job trained with ``my_transformer_model`` needs that file here too; from
    another folder the model still loads with ``sdpa``, which computes the same
    function as a correct ``multihead_attention``.
    """
    from former.training import load_model

    try:
        return load_model(path)
    except ImportError as error:
        print(f"{error}; loading the model with attention='sdpa' (PyTorch's own) instead.")
        return load_model(path, attention="sdpa")


def encoded_test_reviews(vocab: Any, data: str | Path | None = None, limit: int | None = None):
    """The IMDB test reviews of the local data, encoded with the model's own vocabulary.

    ``limit`` keeps that many, spread evenly over the split (it is ordered by label).
    """
    from former.data import TextSplit
    from former.data.imdb import identify_source, locate_imdb

    source = identify_source(Path(data)) if data else locate_imdb()
    if source is None:
        raise SageMakerError(
            "No local IMDB data to test the model on: pass data='aclImdb_v1.tar.gz' (--data) "
            "or set FORMER_DATA_DIR."
        )
    reviews = source.read()
    rows = [i for i, is_test in enumerate(reviews.is_test) if is_test]
    if limit and limit < len(rows):
        rows = [rows[i * len(rows) // limit] for i in range(limit)]
    sequences = [
        torch.tensor(vocab.encode_text(reviews.texts[i]) or [vocab.unk_index]) for i in rows
    ]
    return TextSplit(sequences, torch.tensor([reviews.labels[i] for i in rows]))


def accuracy_on_test_reviews(
    model: nn.Module,
    config: Any,
    vocab: Any,
    data: str | Path | None = None,
    limit: int | None = None,
) -> tuple[float, int]:
    """(accuracy, number of reviews) of a fetched model on the local IMDB test split."""
    from former.training import evaluate, pick_device

    device = pick_device()
    split = encoded_test_reviews(vocab, data, limit)
    return evaluate(model.to(device), split, 64, config.max_length, device), len(split)
