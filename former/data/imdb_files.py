"""Reading IMDB reviews from the files people actually have.

Three layouts are understood, and a folder that holds one of them (which is
what a SageMaker channel hands over):

- the official ``aclImdb_v1.tar.gz``, read in place as a stream (no extraction);
- an extracted ``aclImdb`` folder: ``{train,test}/{pos,neg}/<id>_<rating>.txt``;
- the two-column CSV ``review,sentiment`` with ``positive``/``negative`` labels.
  It has no test split of its own, so its last 20% of rows serve as one.

``train/unsup`` and everything else in the archive is ignored.
"""

from __future__ import annotations

import csv
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from former.data.cache import file_identity

CLASS_NAMES = ("negative", "positive")
SPLITS = ("train", "test")
POLARITIES = ("neg", "pos")  # folder names, in label order
CSV_HEADER = ["review", "sentiment"]
CSV_TEST_FRACTION = 0.2
TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
OFFICIAL_ARCHIVE = "aclImdb_v1.tar.gz"

_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/(\d+)_\d+\.txt$")


class ImdbFormatError(ValueError):
    """A path that should hold IMDB reviews does not, or holds them in an unknown layout."""


@dataclass
class Reviews:
    """Raw reviews in a fixed order (split, label, id), whatever the layout they came from."""

    texts: list[str]
    labels: list[int]
    is_test: list[bool]


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
    """The IMDB data set at ``path``: an archive, an aclImdb folder, a CSV, or a folder holding one."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"no IMDB data at {path}: the path does not exist. Pass the official "
            "aclImdb_v1.tar.gz, an extracted aclImdb folder, a review,sentiment CSV, "
            "a folder holding one of them, or 'synthetic'."
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
    if path.suffix.lower() == ".csv" or _csv_header(path) == CSV_HEADER:
        check_csv_header(path)
        return ImdbSource("csv", path)
    raise ImdbFormatError(
        f"{path} is neither a tar archive in the aclImdb layout nor a CSV with the header "
        "'review,sentiment'. Pass the official aclImdb_v1.tar.gz, an extracted aclImdb "
        "folder, or such a CSV."
    )


def find_source_in(folder: Path) -> ImdbSource | None:
    """The IMDB data set in ``folder`` (the folder itself, or one entry inside it), or None.

    Preference: an extracted aclImdb folder, then an archive (the official
    ``aclImdb_v1.tar.gz`` first), then a CSV. Two other candidates of the same
    kind are ambiguous, and raise.
    """
    if is_aclimdb_folder(folder):
        return ImdbSource("folder", folder)
    entries = sorted(folder.iterdir())
    candidates = [
        [ImdbSource("folder", e) for e in entries if e.is_dir() and is_aclimdb_folder(e)],
        [ImdbSource("tarball", e) for e in entries if _looks_like_imdb_tarball(e)],
        [ImdbSource("csv", e) for e in entries if _looks_like_imdb_csv(e)],
    ]
    for of_one_kind in candidates:
        official = [source for source in of_one_kind if source.path.name == OFFICIAL_ARCHIVE]
        if official:
            return official[0]
        if len(of_one_kind) > 1:
            names = ", ".join(source.path.name for source in of_one_kind)
            raise ImdbFormatError(
                f"{folder} holds more than one IMDB data set ({names}); pass the one you "
                "mean as an explicit path."
            )
        if of_one_kind:
            return of_one_kind[0]
    return None


def is_aclimdb_folder(folder: Path) -> bool:
    return all((folder / split / polarity).is_dir() for split in SPLITS for polarity in POLARITIES)


def _looks_like_imdb_tarball(path: Path) -> bool:
    if not (path.is_file() and path.name.lower().endswith(TARBALL_SUFFIXES)):
        return False
    if "imdb" in path.name.lower():
        return True
    try:
        with tarfile.open(path, "r|*") as archive:
            first = next(iter(archive), None)
        return first is not None and first.name.lstrip("./").startswith("aclImdb")
    except (tarfile.TarError, OSError):
        return False


def _looks_like_imdb_csv(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv" and _csv_header(path) == CSV_HEADER


def _csv_header(path: Path) -> list[str] | None:
    """The first CSV row, lower-cased and stripped, or None when the file is not text."""
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
    found: list[tuple[int, int, int, str]] = []  # (split, label, id, text)
    try:
        with (
            tqdm.wrapattr(
                open(path, "rb"),
                "read",
                total=path.stat().st_size,
                desc=f"reading {path.name}",
                mininterval=1.0,
            ) as file,
            tarfile.open(fileobj=file, mode="r|*") as archive,
        ):
            for member in archive:
                match = _MEMBER.search(member.name) if member.isfile() else None
                if match is None:
                    continue
                split, polarity, review_id = match.groups()
                data = archive.extractfile(member).read()
                found.append(
                    (
                        SPLITS.index(split),
                        POLARITIES.index(polarity),
                        int(review_id),
                        data.decode("utf-8", errors="replace"),
                    )
                )
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ImdbFormatError(
            f"{path} could not be read as a tar archive ({error}); it may be truncated. "
            "Download it again or pass another copy."
        ) from error
    _require_both_splits(found, path, "members like aclImdb/train/pos/0_9.txt")
    return _in_fixed_order(found)


def read_folder(folder: Path) -> Reviews:
    """Read the reviews of an extracted aclImdb folder."""
    found: list[tuple[int, int, int, str]] = []
    for split_index, split in enumerate(SPLITS):
        for label, polarity in enumerate(POLARITIES):
            for file in (folder / split / polarity).iterdir():
                match = _MEMBER.search(f"{split}/{polarity}/{file.name}")
                if match is not None:
                    text = file.read_bytes().decode("utf-8", errors="replace")
                    found.append((split_index, label, int(match.group(3)), text))
    _require_both_splits(found, folder, "files like train/pos/0_9.txt")
    return _in_fixed_order(found)


def read_csv(path: Path) -> Reviews:
    """Read a ``review,sentiment`` CSV; its last 20% of rows become the test split."""
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
    n_test = max(1, round(len(texts) * CSV_TEST_FRACTION))
    is_test = [index >= len(texts) - n_test for index in range(len(texts))]
    return Reviews(texts, labels, is_test)


def _require_both_splits(found: list[tuple[int, int, int, str]], path: Path, example: str) -> None:
    present = {SPLITS[split] for split, *_ in found}
    missing = [split for split in SPLITS if split not in present]
    if missing:
        raise ImdbFormatError(
            f"{path} holds no IMDB reviews for {' and '.join(missing)} (expected {example}). "
            "Pass the official aclImdb_v1.tar.gz, an extracted aclImdb folder or a "
            "review,sentiment CSV."
        )


def _in_fixed_order(found: list[tuple[int, int, int, str]]) -> Reviews:
    found.sort(key=lambda item: item[:3])
    return Reviews(
        texts=[text for *_, text in found],
        labels=[label for _, label, _, _ in found],
        is_test=[split == 1 for split, *_ in found],
    )
