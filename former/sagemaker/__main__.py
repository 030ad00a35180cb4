"""``python -m former.sagemaker launch | status | logs | fetch | stop``: the round trip.

    python -m former.sagemaker launch --epochs 3 --follow      # upload IMDB once, submit, follow
    python -m former.sagemaker status [JOB]                    # one job, or the latest ones
    python -m former.sagemaker logs JOB [--follow]             # its log lines, or follow it
    python -m former.sagemaker fetch JOB [--text "..."]        # download, test locally, classify
    python -m former.sagemaker stop JOB

Options ``launch`` does not know itself (``--epochs 3``, ``--batch-size 32``)
become hyperparameters of ``model.py``. Errors are one line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from former.sagemaker import fetch, job, launch, progress
from former.sagemaker.errors import SageMakerError

EXAMPLE_REVIEW = "A wonderful film: the acting is superb and the story moving."


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m former.sagemaker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("launch", help="submit model.py as a training job")
    run.add_argument("--data", help="IMDB tarball or CSV (uploaded once), or an s3:// URI")
    run.add_argument("--role", help="execution role ARN (default: $SAGEMAKER_ROLE, SageMaker's)")
    run.add_argument("--instance-type", default=job.DEFAULT_INSTANCE_TYPE)
    run.add_argument("--instance-count", type=int, default=1)
    run.add_argument("--gpus-per-instance", type=int, help="for instance types not in the table")
    run.add_argument("--spot", action=argparse.BooleanOptionalAction, default=True)
    run.add_argument("--max-run", type=int, default=job.DEFAULT_MAX_RUN_SECONDS, help="seconds")
    run.add_argument("--max-wait", type=int, help="seconds, spot only (default: 2 x max run)")
    run.add_argument("--checkpoint-s3-uri", help="default: the SDK's, next to the job's output")
    run.add_argument("--output-s3-uri", help="where model.tar.gz goes")
    run.add_argument("--bucket", help="S3 bucket for code and data (default: the SDK's)")
    run.add_argument("--framework-version", default=job.DEFAULT_FRAMEWORK_VERSION)
    run.add_argument("--image-uri", help="training image; overrides --framework-version")
    run.add_argument("--learner-module", help="default: ./my_transformer_model.py")
    run.add_argument("--job-name", dest="base_job_name", default=job.DEFAULT_BASE_JOB_NAME)
    run.add_argument("--follow", action="store_true", help="follow the job until it ends")
    run.add_argument("--dry-run", action="store_true", help="print the request; send nothing")
    status = commands.add_parser("status", help="a job's state, or the latest jobs")
    status.add_argument("job", nargs="?")
    logs = commands.add_parser("logs", help="a job's log lines")
    logs.add_argument("job")
    logs.add_argument("--follow", action="store_true", help="follow the job until it ends")
    get = commands.add_parser("fetch", help="download the model, test it here, classify a text")
    get.add_argument("job")
    get.add_argument("--out", default="sagemaker-models", help="default: %(default)s")
    get.add_argument("--data", help="local IMDB data to test on (default: former's own lookup)")
    get.add_argument("--limit", type=int, help="test on this many reviews (default: all)")
    get.add_argument("--text", default=EXAMPLE_REVIEW, help="a review to classify")
    stop = commands.add_parser("stop", help="stop a running job")
    stop.add_argument("job")
    for command in (run, status, logs, get, stop):
        command.add_argument("--region", help="default: $AWS_REGION, $AWS_DEFAULT_REGION, profile")
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
    options = dict(vars(args))
    for name in ("command", "follow", "dry_run"):
        options.pop(name)
    result = launch.launch_training_job(
        hyperparameters=parse_hyperparameter_args(extra),
        dry_run=args.dry_run or None,
        max_run_seconds=options.pop("max_run"),
        max_wait_seconds=options.pop("max_wait"),
        **options,
    )
    how = "torchrun" if result.processes_per_instance > 1 else "python"
    if not result.submitted:
        print(result.to_json())
        print(
            f"Dry run: nothing was sent. model.py would run as {result.processes_per_instance} "
            f"process(es) per instance; code shipped: {', '.join(result.shipped_files)}",
            file=sys.stderr,
        )
        return
    print(f"Submitted training job {result.job_name} ({how}, {result.region})")
    print(f"  console: {result.console_url}")
    if args.follow:
        progress.follow(result.job_name, region=result.region)
    else:
        print(f"  follow:  python -m former.sagemaker logs {result.job_name} --follow")


def run_status(args: argparse.Namespace) -> None:
    if args.job is None:
        for job in progress.recent_jobs(region=args.region):
            print(f"{job['TrainingJobName']}  {job['TrainingJobStatus']}  {job['CreationTime']}")
        return
    job = progress.job_status(args.job, region=args.region)
    print(f"{args.job}: {job['TrainingJobStatus']} ({job.get('SecondaryStatus', '')})")
    print(f"  {progress.summary(job)}")
    if job.get("FailureReason"):
        print(f"  failure: {job['FailureReason']}")


def run_fetch(args: argparse.Namespace) -> None:
    from former.training import predict

    path = fetch.fetch_model(args.job, args.out, region=args.region)
    model, config, vocab = fetch.load_fetched_model(path)
    accuracy, n = fetch.accuracy_on_test_reviews(model, config, vocab, args.data, args.limit)
    print(f"model: {path}")
    print(f"test accuracy here: {accuracy:.3f} on {n:,} IMDB test reviews")
    label, probability = predict(model, vocab, [args.text], config.max_length)[0]
    names = getattr(model, "class_names", ()) or ("negative", "positive")
    print(f"{args.text!r}: {names[label]} ({probability:.2f})")


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    try:
        if extra and args.command != "launch":
            raise SageMakerError(f"Unexpected arguments {' '.join(extra)} for {args.command}.")
        if args.command == "launch":
            run_launch(args, extra)
        elif args.command == "status":
            run_status(args)
        elif args.command == "logs" and args.follow:
            progress.follow(args.job, region=args.region)
        elif args.command == "logs":
            print("\n".join(progress.job_log_lines(args.job, region=args.region)))
        elif args.command == "fetch":
            run_fetch(args)
        elif args.command == "stop":
            progress.stop_job(args.job, region=args.region)
            print(f"Asked SageMaker to stop {args.job}; `status {args.job}` shows when it has.")
    except SageMakerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
