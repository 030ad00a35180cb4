"""Train ``model.py`` as an Amazon SageMaker job and bring the model back (SageMaker SDK v3).

    job = launch_training_job(hyperparameters={"epochs": 3})   # uploads IMDB once, submits
    follow(job.job_name, on_metrics=plot)                      # status, metric lines, cost
    path = fetch_model(job.job_name)                           # model.tar.gz -> model.pt

Every call takes the job's name, so a restarted notebook reattaches with ``follow(name)``; AWS
failures raise :class:`SageMakerError`, one line that says what to do. Nothing imports the SDK
(the ``[sagemaker]`` extra) before a job is launched.
"""

from former.sagemaker.errors import SDK_REQUIREMENT, JobFailedError, SageMakerError, sdk_missing
from former.sagemaker.fetch import accuracy_on_test_reviews, fetch_model, load_fetched_model
from former.sagemaker.job import (
    ENTRY_SCRIPT_SOURCE,
    JobSettings,
    gpus_per_instance,
    normalise_hyperparameters,
    stage_source,
)
from former.sagemaker.launch import LaunchResult, install_sdk, launch_training_job, sdk_installed
from former.sagemaker.progress import (
    METRIC_DEFINITIONS,
    follow,
    job_log_lines,
    job_metrics,
    job_status,
    recent_jobs,
    stop_job,
)

__all__ = [
    "ENTRY_SCRIPT_SOURCE",
    "METRIC_DEFINITIONS",
    "SDK_REQUIREMENT",
    "JobFailedError",
    "JobSettings",
    "LaunchResult",
    "SageMakerError",
    "accuracy_on_test_reviews",
    "fetch_model",
    "follow",
    "gpus_per_instance",
    "install_sdk",
    "job_log_lines",
    "job_metrics",
    "job_status",
    "launch_training_job",
    "load_fetched_model",
    "normalise_hyperparameters",
    "recent_jobs",
    "sdk_installed",
    "sdk_missing",
    "stage_source",
    "stop_job",
]
