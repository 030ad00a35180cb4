"""IMDB reviews (Maas et al., 2011) from the files people have: the official
``aclImdb_v1.tar.gz`` (read in place), an extracted ``aclImdb`` folder, the CSV
``review,sentiment`` (its last 20% of rows the test split), or a folder holding one."""

from __future__ import annotations

import csv
import re
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from former.data.corpus import Reviews, TokenizedCorpus, classification_data_from_payload
from former.data.locate import cache_dir, cached, download_file, file_identity, find_or_download
from former.data.synthetic import load_synthetic
from former.data.tokens import ClassificationData

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"
IMDB_SIZE = 84_125_825
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
CLASS_NAMES = ("negative", "positive")
SPLITS, POLARITIES = ("train", "test"), ("neg", "pos")  # folder names, in label order
CSV_HEADER = ["review", "sentiment"]
LAYOUTS = "Pass the official aclImdb_v1.tar.gz, an extracted aclImdb folder, a review,sentiment CSV"
FALLBACK = "the built-in generated corpus"
_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/(\d+)_\d+\.txt$")


class ImdbFormatError(ValueError):
    """A path that should hold IMDB reviews does not, or holds them in an unknown layout."""


def load_imdb(
    path: str | Path | None = None,
    *,
    final: bool = False,
    vocab_size: int = 50_000,
    seed: int = 0,
    download: bool = True,
    cache: bool = True,
) -> ClassificationData:
    """IMDB reviews, tokenized and encoded, ready for :func:`former.data.batches`. path: any
    layout above, or ``"synthetic"``; None: looked up, else downloaded, else the generated
    corpus. final: validation is the test split, not 20% of the training reviews (by ``seed``).
    The vocabulary counts the training split only. cache: through the per-user cache."""
    if isinstance(path, str) and path.strip().lower() == "synthetic":
        return load_synthetic(seed=seed, vocab_size=vocab_size)
    source = identify_source(Path(path)) if path is not None else locate_imdb(download)
    if source is None:
        return load_synthetic(seed=seed, vocab_size=vocab_size)
    # Two cache entries: the tokens (the slow part, for any settings), then these settings'.
    identity = {"source": source.identity()}

    def tokenized() -> dict[str, Any]:
        return TokenizedCorpus.from_reviews(source.read(), source.path.name).to_payload()

    def encoded() -> dict[str, Any]:
        corpus = TokenizedCorpus.from_payload(cached("imdb-corpus", identity, tokenized, cache))
        return corpus.encode(vocab_size=vocab_size, seed=seed, final=final)

    settings = {"vocab_size": vocab_size, "seed": None if final else seed, "final": final}
    payload = cached("imdb-encoded", {**identity, **settings}, encoded, cache)
    data = classification_data_from_payload(
        payload, source=source.describe(), class_names=CLASS_NAMES
    )
    data.source += (
        f": {len(data.train):,} train / {len(data.val):,} "
        f"{'test' if final else 'validation'} reviews, vocabulary {len(data.vocab):,}"
    )
    return data


def locate_imdb(allow_download: bool = True) -> ImdbSource | None:
    """IMDB from ``$FORMER_DATA_DIR`` or the cache, else downloaded; offline None, with a notice."""
    return find_or_download(
        "IMDB data", find_source_in, download_imdb, allow_download, IMDB_ARCHIVE, FALLBACK
    )


def download_imdb() -> ImdbSource:
    """The official archive, downloaded (checksum-verified) into the per-user cache."""
    path = cache_dir() / IMDB_ARCHIVE
    return ImdbSource("tarball", download_file(IMDB_URL, path, sha256=IMDB_SHA256, size=IMDB_SIZE))


@dataclass(frozen=True)
class ImdbSource:
    """A located IMDB data set: ``kind`` is "tarball", "folder" or "csv"."""

    kind: str
    path: Path

    def describe(self) -> str:
        names = {"tarball": "aclImdb archive", "folder": "aclImdb folder", "csv": "IMDB CSV"}
        return f"IMDB ({names[self.kind]} {self.path})"

    def identity(self) -> dict[str, Any]:
        """What the cache key needs: the file, or for a folder its four review folders."""
        if self.kind != "folder":
            return {"kind": self.kind, **file_identity(self.path)}
        folders = [self.path / s / p for s in SPLITS for p in POLARITIES]
        return {"kind": self.kind, "folders": [file_identity(f) for f in folders]}

    def read(self) -> Reviews:
        readers = {"tarball": read_tarball, "folder": read_folder, "csv": read_csv}
        return readers[self.kind](self.path)


def identify_source(path: Path) -> ImdbSource:
    """The IMDB data set at ``path``: an archive, aclImdb folder or CSV, or a folder holding one."""
    path = path.expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"no IMDB data at {path}: the path does not exist. {LAYOUTS}, a folder holding "
            "one of them, or 'synthetic'."
        )
    if path.is_dir():
        found = find_source_in(path)
        if found is None:
            raise ImdbFormatError(
                f"{path} is a folder, but neither an aclImdb folder (train/ and test/ with "
                "pos/ and neg/ inside) nor a folder holding aclImdb_v1.tar.gz, an aclImdb "
                "folder or a review,sentiment CSV."
            )
        return found
    if tarfile.is_tarfile(path):
        return ImdbSource("tarball", path)
    if path.suffix.lower() == ".csv" or is_imdb_csv(path):
        check_csv_header(path)
        return ImdbSource("csv", path)
    raise ImdbFormatError(
        f"{path} is neither a tar archive in the aclImdb layout nor a CSV with the header "
        f"'review,sentiment'. {LAYOUTS}."
    )


def find_source_in(folder: Path) -> ImdbSource | None:
    """The IMDB data set in ``folder`` (itself, or one entry inside it), or None: an aclImdb
    folder first, then an archive (the official one first), then a CSV; two of a kind raise."""
    if is_aclimdb_folder(folder):
        return ImdbSource("folder", folder)
    entries = sorted(folder.iterdir())
    candidates = [
        [ImdbSource("folder", e) for e in entries if e.is_dir() and is_aclimdb_folder(e)],
        [ImdbSource("tarball", e) for e in entries if _looks_like_imdb_tarball(e)],
        [ImdbSource("csv", e) for e in entries if e.suffix.lower() == ".csv" and is_imdb_csv(e)],
    ]
    for of_one_kind in candidates:
        official = [source for source in of_one_kind if source.path.name == IMDB_ARCHIVE]
        if official or len(of_one_kind) == 1:
            return (official or of_one_kind)[0]
        if of_one_kind:
            names = ", ".join(source.path.name for source in of_one_kind)
            raise ImdbFormatError(
                f"{folder} holds more than one IMDB data set ({names}); pass the one you "
                "mean as an explicit path."
            )
    return None


def is_aclimdb_folder(folder: Path) -> bool:
    return all((folder / split / polarity).is_dir() for split in SPLITS for polarity in POLARITIES)


def _looks_like_imdb_tarball(path: Path) -> bool:
    if not (path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar"))):
        return False
    if "imdb" in path.name.lower():
        return True
    try:
        with tarfile.open(path, "r|*") as archive:
            first = next(iter(archive), None)
        return first is not None and first.name.lstrip("./").startswith("aclImdb")
    except (tarfile.TarError, OSError):
        return False


def is_imdb_csv(path: Path) -> bool:
    return _csv_header(path) == CSV_HEADER


def _csv_header(path: Path) -> list[str] | None:
    """The first CSV row, lower-cased and stripped; None when the file is not text."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            row = next(csv.reader([file.readline()]), [])
    except (UnicodeDecodeError, OSError, csv.Error):
        return None
    return [cell.strip().lower() for cell in row]


def check_csv_header(path: Path) -> None:
    header = _csv_header(path)
    if header != CSV_HEADER:
        shown = "unreadable (not UTF-8 text)" if header is None else repr(",".join(header))
        raise ImdbFormatError(
            f"{path}: the CSV header is {shown}, expected 'review,sentiment' (one review and "
            "its label, positive or negative, per row)."
        )


def read_tarball(path: Path) -> Reviews:
    """Stream the reviews out of an aclImdb archive without extracting it."""
    progress = {"total": path.stat().st_size, "desc": f"reading {path.name}", "mininterval": 1.0}
    try:
        with (
            tqdm.wrapattr(open(path, "rb"), "read", **progress) as file,
            tarfile.open(fileobj=file, mode="r|*") as archive,
        ):
            members = ((m.name, archive.extractfile(m).read) for m in archive if m.isfile())
            return _reviews(members, path, "members like aclImdb/train/pos/0_9.txt")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ImdbFormatError(
            f"{path} could not be read as a tar archive ({error}); it may be truncated. "
            "Download it again or pass another copy."
        ) from error


def read_folder(folder: Path) -> Reviews:
    folders = [folder / split / polarity for split in SPLITS for polarity in POLARITIES]
    files = (
        (f"{d.parent.name}/{d.name}/{f.name}", f.read_bytes) for d in folders for f in d.iterdir()
    )
    return _reviews(files, folder, "files like train/pos/0_9.txt")


def read_csv(path: Path) -> Reviews:
    """A ``review,sentiment`` CSV's reviews, its last 20% of rows the test split."""
    check_csv_header(path)
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8-sig") as file:
        rows = csv.reader(file)
        next(rows)
        for line_number, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise ImdbFormatError(
                    f"{path}, row {line_number}: expected 2 columns (review,sentiment), got "
                    f"{len(row)}. Quote reviews that contain commas."
                )
            sentiment = row[1].strip().lower()
            if sentiment not in CLASS_NAMES:
                raise ImdbFormatError(
                    f"{path}, row {line_number}: sentiment {row[1]!r} is neither 'positive' "
                    "nor 'negative'."
                )
            texts.append(row[0])
            labels.append(CLASS_NAMES.index(sentiment))
    if len(texts) < 2:
        raise ImdbFormatError(f"{path} holds {len(texts)} reviews; at least 2 are needed.")
    n_test = max(1, round(len(texts) * 0.2))
    return Reviews(texts, labels, [index >= len(texts) - n_test for index in range(len(texts))])


def _reviews(files: Iterable[tuple[str, Callable[[], bytes]]], path: Path, example: str) -> Reviews:
    """The reviews among (name, read) ``files``, in (split, label, id) order."""
    found = []
    for name, read in files:
        if match := _MEMBER.search(name):
            split, polarity, review_id = match.groups()
            text = read().decode("utf-8", errors="replace")
            found.append((SPLITS.index(split), POLARITIES.index(polarity), int(review_id), text))
    present = {split for split, *_ in found}
    missing = [split for index, split in enumerate(SPLITS) if index not in present]
    if missing:
        raise ImdbFormatError(
            f"{path} holds no IMDB reviews for {' and '.join(missing)} (expected {example}). "
            f"{LAYOUTS}."
        )
    found.sort(key=lambda item: item[:3])
    return Reviews(
        texts=[text for *_, text in found],
        labels=[label for _, label, _, _ in found],
        is_test=[split == 1 for split, *_ in found],
    )
