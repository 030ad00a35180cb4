"""Fetch and prepare data ahead of time: ``python -m former.data [imdb|enwik8|shakespeare|all]``.

Finds or downloads each data set, fills the cache and says what was loaded and how fast:
run it once online, and later loads are fast and work offline.
"""

from __future__ import annotations

import argparse
import time

from former.data.enwik8 import load_enwik8
from former.data.imdb import load_imdb
from former.data.locate import cache_dir
from former.data.shakespeare import load_shakespeare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m former.data", description=__doc__)
    parser.add_argument(
        "which", nargs="?", choices=("imdb", "enwik8", "shakespeare", "all"), default="all"
    )
    parser.add_argument("--data", help="explicit path (default: look up, then download)")
    parser.add_argument("-f", "--final", action="store_true", help="IMDB test split as val")
    parser.add_argument("-V", "--vocab-size", type=int, default=50_000)
    parser.add_argument("-r", "--random-seed", type=int, default=0)
    parser.add_argument("--no-download", action="store_true", help="never use the network")
    args = parser.parse_args(argv)
    download = not args.no_download

    print(f"cache: {cache_dir()}")
    start = time.perf_counter()
    if args.which in ("imdb", "all"):
        settings = {"final": args.final, "vocab_size": args.vocab_size, "seed": args.random_seed}
        data = load_imdb(args.data, **settings, download=download)
        print(f"imdb: {data.source} (loaded in {time.perf_counter() - start:.2f} s)")
    start = time.perf_counter()
    if args.which in ("enwik8", "all"):
        splits = load_enwik8(args.data if args.which == "enwik8" else None, download=download)
        sizes = " / ".join(f"{len(part):,}" for part in splits)
        print(f"enwik8: {sizes} bytes (loaded in {time.perf_counter() - start:.2f} s)")
    if args.which in ("shakespeare", "all"):
        start = time.perf_counter()
        splits = load_shakespeare(
            args.data if args.which == "shakespeare" else None, download=not args.no_download
        )
        sizes = " / ".join(f"{len(part):,}" for part in splits)
        print(f"tiny Shakespeare: {sizes} bytes (loaded in {time.perf_counter() - start:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
