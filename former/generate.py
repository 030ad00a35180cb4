"""Train a causal transformer on bytes (enwik8, tiny Shakespeare, any text) and sample from it.

python -m former.generate --data shakespeare --prompt "ROMEO:" --temperature 0.8
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from former.cli import UsageError, add_run_flags, as_usage_error, report_usage_errors, start_run
from former.data import load_enwik8, load_shakespeare, load_text
from former.data.text import SHAKESPEARE
from former.generator import GENERATOR_FORMAT, GeneratorConfig, build_generator, fit_generator
from former.runs import RunMismatchError, save_model_file

PROG = "python -m former.generate"
DATA_HELP = (
    f"enwik8 (raw, .gz or .zip), any text file, or {SHAKESPEARE!r} for tiny Shakespeare "
    "(enwik8 and tiny Shakespeare: $FORMER_DATA_DIR, the per-user cache, then download)"
)


def build_parser() -> argparse.ArgumentParser:
    description = "Train a byte-level transformer on enwik8, tiny Shakespeare or any text; sample."
    parser = argparse.ArgumentParser(prog=PROG, description=description)
    sampling = add_run_flags(parser, GeneratorConfig, DATA_HELP)["sampling"]
    sampling.add_argument(
        "--prompt", help="the text every sample continues (default: a random validation window)"
    )
    return parser


def run_training(args: argparse.Namespace) -> int:
    if args.prompt == "":
        raise UsageError("--prompt must hold at least one character.")
    config, device, options = start_run(GeneratorConfig, args)
    with as_usage_error(FileNotFoundError, ValueError):
        if args.data == SHAKESPEARE:
            train, val, test = load_shakespeare()
        elif args.data is None or Path(args.data).is_dir():
            train, val, test = load_enwik8(args.data)
        else:
            train, val, test = load_text(args.data)
    if min(len(train), len(val)) <= config.context:
        raise UsageError(
            f"the data are too short for windows of {config.context} bytes "
            f"({len(train):,} train / {len(val):,} validation bytes); pass a larger file or a "
            "smaller --context."
        )
    log = options["log"]
    log(f"data: {len(train):,} train / {len(val):,} validation / {len(test):,} test bytes")
    model = build_generator(config)
    log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, device={device}")
    with as_usage_error(RunMismatchError):
        held_out = test if config.final else val
        fit_generator(model, train, held_out, config, device=device, prompt=args.prompt, **options)
        if args.out is not None:
            log(f"saved model to {save_model_file(args.out, model, config, GENERATOR_FORMAT)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return report_usage_errors(PROG, lambda: run_training(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
