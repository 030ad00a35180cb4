"""Fetch and prepare data ahead of time: ``python -m former.data [imdb|enwik8|shakespeare|all]``.

Finds or downloads each data set, fills the cache and says what was loaded and how fast:
run it once online, and later loads are fast and work offline.
"""

from __future__ import annotations

import argparse
import time

from former.data.imdb import load_imdb
from former.data.locate import cache_dir
from former.data.text import load_enwik8, load_shakespeare

NAMES = {"imdb": "imdb", "enwik8": "enwik8", "shakespeare": "tiny Shakespeare"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m former.data", description=__doc__)
    parser.add_argument("which", nargs="?", choices=(*NAMES, "all"), default="all")
    parser.add_argument("--data", help="explicit path (default: look up, then download)")
    parser.add_argument("-f", "--final", action="store_true", help="IMDB test split as val")
    parser.add_argument("-V", "--vocab-size", type=int, default=50_000)
    parser.add_argument("-r", "--random-seed", type=int, default=0)
    parser.add_argument("--no-download", action="store_true", help="never use the network")
    args = parser.parse_args(argv)
    download = not args.no_download

    settings = {"final": args.final, "vocab_size": args.vocab_size, "seed": args.random_seed}
    loaders = {
        "imdb": lambda path: load_imdb(path, **settings, download=download).source,
        "enwik8": lambda path: sizes(load_enwik8(path, download=download)),
        "shakespeare": lambda path: sizes(load_shakespeare(path, download=download)),
    }
    print(f"cache: {cache_dir()}")
    for which, load in loaders.items():
        if args.which in (which, "all"):
            start = time.perf_counter()
            # --data names the one data set asked for; with "all", IMDB's
            loaded = load(args.data if which in (args.which, "imdb") else None)
            print(f"{NAMES[which]}: {loaded} (loaded in {time.perf_counter() - start:.2f} s)")
    return 0


def sizes(splits: tuple) -> str:
    return " / ".join(f"{len(part):,}" for part in splits) + " bytes"


if __name__ == "__main__":
    raise SystemExit(main())
