"""``python -m former.sagemaker launch | status | logs | fetch | stop``: the round trip.

    python -m former.sagemaker launch --epochs 3 --follow      # upload IMDB once, submit, follow
    python -m former.sagemaker status [JOB]                    # one job, or the latest ones
    python -m former.sagemaker logs JOB [--follow]             # its log lines, or follow it
    python -m former.sagemaker fetch JOB [--text "..."]        # download, test locally, classify
    python -m former.sagemaker stop JOB

Options ``launch`` does not know itself (``--epochs 3``, ``--batch-size 32``) become
hyperparameters of ``model.py``. Errors are one line and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from former.sagemaker.errors import SageMakerError
from former.sagemaker.fetch import accuracy_on_test_reviews, fetch_model, load_fetched_model
from former.sagemaker.job import JobSettings
from former.sagemaker.launch import launch_training_job
from former.sagemaker.progress import (
    follow,
    job_log_lines,
    job_status,
    recent_jobs,
    stop_job,
    summary,
)

EXAMPLE_REVIEW = "A wonderful film: the acting is superb and the story moving."
REGION_HELP = "default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's"
# launch's options, one per JobSettings field (flag: the field's name, or as FLAG_NAMES says).
LAUNCH_OPTIONS = {
    "data": "IMDB tarball or CSV (uploaded once), or an s3:// URI",
    "role": "execution role ARN (default: $SAGEMAKER_ROLE, SageMaker's)",
    "region": REGION_HELP,
    "instance_type": "default: %(default)s",
    "instance_count": "default: %(default)s",
    "gpus_per_instance": "for instance types not in the table",
    "spot": "managed spot training (default: %(default)s)",
    "max_run_seconds": "seconds (default: %(default)s)",
    "max_wait_seconds": "seconds, spot only (default: 2 x max run)",
    "checkpoint_s3_uri": "default: the SDK's, next to the job's output",
    "output_s3_uri": "where model.tar.gz goes",
    "bucket": "S3 bucket for code and data (default: the SDK's)",
    "framework_version": "default: %(default)s",
    "image_uri": "training image; overrides --framework-version",
    "learner_module": "default: ./my_transformer_model.py",
    "base_job_name": "default: %(default)s",
}
FLAG_NAMES = {
    "max_run_seconds": "max-run",
    "max_wait_seconds": "max-wait",
    "base_job_name": "job-name",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m former.sagemaker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True)
    sub: dict[str, argparse.ArgumentParser] = {}
    for name, text, run in (
        ("launch", "submit model.py as a training job", run_launch),
        ("status", "a job's state, or the latest jobs", run_status),
        ("logs", "a job's log lines", run_logs),
        ("fetch", "download the model, test it here, classify a text", run_fetch),
        ("stop", "stop a running job", run_stop),
    ):
        sub[name] = commands.add_parser(name, help=text)
        sub[name].set_defaults(run=run)
    for name in ("status", "logs", "fetch", "stop"):
        sub[name].add_argument("job", nargs="?" if name == "status" else None)
        sub[name].add_argument("--region", help=REGION_HELP)
    for name in ("launch", "logs"):
        sub[name].add_argument("--follow", action="store_true", help="follow the job to its end")
    defaults, fields = JobSettings(), {f.name: f for f in dataclasses.fields(JobSettings)}
    for name, text in LAUNCH_OPTIONS.items():
        kind = fields[name].type
        how = {"type": int if kind.startswith("int") else str}
        if kind == "bool":
            how = {"action": argparse.BooleanOptionalAction}
        flag = "--" + FLAG_NAMES.get(name, name.replace("_", "-"))
        sub["launch"].add_argument(
            flag, dest=name, default=getattr(defaults, name), help=text, **how
        )
    sub["launch"].add_argument("--dry-run", action="store_true", help="print it; send nothing")
    sub["fetch"].add_argument("--out", default="sagemaker-models", help="default: %(default)s")
    sub["fetch"].add_argument("--data", help="local IMDB data to test on (default: former's)")
    sub["fetch"].add_argument("--limit", type=int, help="test on this many reviews (default: all)")
    sub["fetch"].add_argument("--text", default=EXAMPLE_REVIEW, help="a review to classify")
    return top


def parse_hyperparameter_args(extra: Sequence[str]) -> dict[str, str]:
    """``["--epochs", "3", "--attention=sdpa"]`` -> ``{"epochs": "3", "attention": "sdpa"}``."""
    hyperparameters: dict[str, str] = {}
    items = list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or item == "--":
            raise SageMakerError(
                f"Unexpected argument {item!r}: hyperparameters for model.py go as --key value."
            )
        key, equals, value = item[2:].partition("=")
        if not equals:
            if not items or items[0].startswith("--"):
                raise SageMakerError(f"Hyperparameter --{key} needs a value, e.g. --{key} 3.")
            value = items.pop(0)
        hyperparameters[key] = value
    return hyperparameters


def run_launch(args: argparse.Namespace, extra: list[str]) -> None:
    settings = {name: getattr(args, name) for name in LAUNCH_OPTIONS}
    hyperparameters = parse_hyperparameter_args(extra)
    job = launch_training_job(
        hyperparameters=hyperparameters, dry_run=args.dry_run or None, **settings
    )
    if not job.submitted:
        print(json.dumps(job.request, indent=2, sort_keys=True, default=str))
        print(
            f"Dry run: nothing was sent. model.py would run as {job.processes_per_instance} "
            f"process(es) per instance; code shipped: {', '.join(job.shipped_files)}",
            file=sys.stderr,
        )
        return
    how = "torchrun" if job.processes_per_instance > 1 else "python"
    console = f"https://{job.region}.console.aws.amazon.com/sagemaker/home?region={job.region}"
    print(f"Submitted training job {job.job_name} ({how}, {job.region})")
    print(f"  console: {console}#/jobs/{job.job_name}")
    if args.follow:
        follow(job.job_name, region=job.region)
    else:
        print(f"  follow:  python -m former.sagemaker logs {job.job_name} --follow")


def run_status(args: argparse.Namespace, extra: list[str]) -> None:
    if args.job is None:
        for job in recent_jobs(region=args.region):
            print(f"{job['TrainingJobName']}  {job['TrainingJobStatus']}  {job['CreationTime']}")
        return
    job = job_status(args.job, region=args.region)
    print(f"{args.job}: {job['TrainingJobStatus']} ({job.get('SecondaryStatus', '')})")
    print(f"  {summary(job)}")
    if job.get("FailureReason"):
        print(f"  failure: {job['FailureReason']}")


def run_logs(args: argparse.Namespace, extra: list[str]) -> None:
    if args.follow:
        follow(args.job, region=args.region)
    else:
        print("\n".join(job_log_lines(args.job, region=args.region)))


def run_fetch(args: argparse.Namespace, extra: list[str]) -> None:
    from former.training import predict

    path = fetch_model(args.job, args.out, region=args.region)
    model, config, vocab = load_fetched_model(path)
    accuracy, n = accuracy_on_test_reviews(model, config, vocab, args.data, args.limit)
    print(f"model: {path}")
    print(f"test accuracy here: {accuracy:.3f} on {n:,} IMDB test reviews")
    label, probability = predict(model, vocab, [args.text], config.max_length)[0]
    names = getattr(model, "class_names", ()) or ("negative", "positive")
    print(f"{args.text!r}: {names[label]} ({probability:.2f})")


def run_stop(args: argparse.Namespace, extra: list[str]) -> None:
    stop_job(args.job, region=args.region)
    print(f"Asked SageMaker to stop {args.job}; `status {args.job}` shows when it has.")


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    try:
        if extra and args.command != "launch":
            raise SageMakerError(f"Unexpected arguments {' '.join(extra)} for {args.command}.")
        args.run(args, extra)
    except SageMakerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
