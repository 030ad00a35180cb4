"""``python -m former.sagemaker launch | status | logs | fetch | stop``: the round trip.
Options ``launch`` does not know (``--epochs 3``) become hyperparameters of ``model.py``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from former.sagemaker import fetch, job, launch, progress
from former.sagemaker.errors import SageMakerError
from former.settings import CLI, add_flags, read_flags

EXAMPLE_REVIEW = "A wonderful film: the acting is superb and the story moving."


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m former.sagemaker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True)
    start = commands.add_parser("launch", help=run_launch.__doc__)
    add_flags(start, job.JobSettings, CLI)
    start.add_argument("--dry-run", action="store_true", default=False, help="send nothing")
    start.set_defaults(run=run_launch)
    sub = {}
    for run in (run_status, run_logs, run_fetch, run_stop):
        name = run.__name__.removeprefix("run_")
        sub[name] = commands.add_parser(name, help=run.__doc__)
        sub[name].set_defaults(run=run)
        sub[name].add_argument("job", nargs="?" if name == "status" else None)
        sub[name].add_argument("--region", help=job.REGION_HELP)
    for command in (start, sub["logs"]):
        command.add_argument("--follow", action="store_true", default=False, help="to its end")
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
            why = "hyperparameters for model.py go as --key value"
            raise SageMakerError(f"Unexpected argument {item!r}: {why}.")
        key, equals, value = item[2:].partition("=")
        if not equals:
            if not items or items[0].startswith("--"):
                raise SageMakerError(f"Hyperparameter --{key} needs a value, e.g. --{key} 3.")
            value = items.pop(0)
        hyperparameters[key] = value
    return hyperparameters


def run_launch(args: argparse.Namespace) -> None:
    """Submit model.py as a training job."""
    settings = vars(read_flags(job.JobSettings, args))
    result = launch.launch_training_job(dry_run=args.dry_run or None, **settings)
    name, region, processes = result.job_name, result.region, result.processes_per_instance
    if not result.submitted:
        print(json.dumps(result.request, indent=2, sort_keys=True, default=str))
        print(
            f"Dry run: nothing was sent. model.py would run as {processes} process(es) per "
            f"instance; code shipped: {', '.join(result.shipped_files)}",
            file=sys.stderr,
        )
        return
    console = f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
    print(f"Submitted training job {name} ({'torchrun' if processes > 1 else 'python'}, {region})")
    print(f"  console: {console}#/jobs/{name}")
    if args.follow:
        progress.follow(name, region=region)
    else:
        print(f"  follow:  python -m former.sagemaker logs {name} --follow")


def run_status(args: argparse.Namespace) -> None:
    """A job's state, or the latest jobs."""
    if args.job is None:
        for row in progress.recent_jobs(region=args.region):
            print(f"{row['TrainingJobName']}  {row['TrainingJobStatus']}  {row['CreationTime']}")
        return
    state = progress.job_status(args.job, region=args.region)
    print(f"{args.job}: {state['TrainingJobStatus']} ({state.get('SecondaryStatus', '')})")
    print(f"  {progress.summary(state)}")
    if state.get("FailureReason"):
        print(f"  failure: {state['FailureReason']}")


def run_logs(args: argparse.Namespace) -> None:
    """A job's log lines."""
    if args.follow:
        progress.follow(args.job, region=args.region)
    else:
        print("\n".join(progress.job_log_lines(args.job, region=args.region)))


def run_fetch(args: argparse.Namespace) -> None:
    """Download the model, test it here, classify a text."""
    from former.classifier import predict

    path = fetch.fetch_model(args.job, args.out, region=args.region)
    model, config, vocab = fetch.load_fetched_model(path)
    accuracy, n = fetch.accuracy_on_test_reviews(model, config, vocab, args.data, args.limit)
    print(f"model: {path}")
    print(f"test accuracy here: {accuracy:.3f} on {n:,} IMDB test reviews")
    label, probability = predict(model, vocab, [args.text], config.max_length)[0]
    names = getattr(model, "class_names", ()) or ("negative", "positive")
    print(f"{args.text!r}: {names[label]} ({probability:.2f})")


def run_stop(args: argparse.Namespace) -> None:
    """Stop a running job."""
    progress.stop_job(args.job, region=args.region)
    print(f"Asked SageMaker to stop {args.job}; `status {args.job}` shows when it has.")


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    try:
        if extra and args.command != "launch":
            raise SageMakerError(f"Unexpected arguments {' '.join(extra)} for {args.command}.")
        args.hyperparameters = parse_hyperparameter_args(extra)
        args.run(args)
    except SageMakerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
