"""Loading IMDB movie reviews (Maas et al., 2011) for sentiment classification."""

from __future__ import annotations

from pathlib import Path

from former.data.cache import cache_file, load_cached, save_cached
from former.data.corpus import TokenizedCorpus, classification_data_from_payload
from former.data.download import DownloadError, download_file
from former.data.imdb_files import (
    CLASS_NAMES,
    OFFICIAL_ARCHIVE,
    ImdbSource,
    find_source_in,
    identify_source,
)
from former.data.locate import cache_dir, notice, offline_reason, search_folders
from former.data.splits import ClassificationData
from former.data.synthetic import load_synthetic

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_ARCHIVE = OFFICIAL_ARCHIVE
IMDB_SIZE = 84_125_825
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
SYNTHETIC = "synthetic"


def load_imdb(
    path: str | Path | None = None,
    *,
    final: bool = False,
    vocab_size: int = 50_000,
    seed: int = 0,
    download: bool = True,
    cache: bool = True,
) -> ClassificationData:
    """IMDB reviews, tokenized and encoded, ready for :func:`former.data.batches`.

    path: the official ``aclImdb_v1.tar.gz`` (read in place), an extracted
    ``aclImdb`` folder, a ``review,sentiment`` CSV, a folder holding one of
    them, or ``"synthetic"`` for the built-in generated corpus. With None, the
    data are looked for in ``$FORMER_DATA_DIR``, then in the per-user cache,
    then downloaded (``download=True`` and ``$FORMER_OFFLINE`` unset); when
    that fails too, a one-line notice on stderr says so and the generated
    corpus is used instead.

    final=False: validation is 20% of the training reviews, chosen by ``seed``;
    final=True: validation is the test split. The vocabulary (``<pad>`` = 0,
    ``<unk>`` = 1, then the ``vocab_size - 2`` most frequent tokens) counts the
    training split only. With ``cache=True`` the encoded data are kept in the
    per-user cache, so the second load takes a second or two.
    """
    if isinstance(path, str) and path.strip().lower() == SYNTHETIC:
        return load_synthetic(seed=seed, vocab_size=vocab_size)
    source = identify_source(Path(path)) if path is not None else locate_imdb(download)
    if source is None:
        return load_synthetic(seed=seed, vocab_size=vocab_size)
    return load_imdb_source(source, final=final, vocab_size=vocab_size, seed=seed, cache=cache)


def locate_imdb(allow_download: bool = True) -> ImdbSource | None:
    """IMDB from ``$FORMER_DATA_DIR`` or the cache, else downloaded; None (with a notice) offline."""
    for folder in search_folders():
        found = find_source_in(folder)
        if found is not None:
            return found
    reason = offline_reason(allow_download)
    if reason is None:
        try:
            return ImdbSource("tarball", download_imdb())
        except DownloadError as error:
            reason = str(error)
    notice(
        f"no IMDB data found and none downloaded ({reason}); using the built-in generated "
        f"corpus instead. For real IMDB, pass a path, set $FORMER_DATA_DIR, or put "
        f"{IMDB_ARCHIVE} in {cache_dir()}."
    )
    return None


def download_imdb(destination: Path | None = None) -> Path:
    """Download the official archive (checksum-verified) into the per-user cache."""
    destination = destination or cache_dir() / IMDB_ARCHIVE
    return download_file(IMDB_URL, destination, sha256=IMDB_SHA256, size=IMDB_SIZE)


def load_imdb_source(
    source: ImdbSource, *, final: bool, vocab_size: int, seed: int, cache: bool = True
) -> ClassificationData:
    """Encode a located IMDB data set, through the on-disk cache when ``cache`` is True."""
    settings = {"vocab_size": vocab_size, "seed": None if final else seed, "final": final}
    encoded_file = cache_file("imdb-encoded", {"source": source.identity(), **settings})
    payload = load_cached(encoded_file) if cache else None
    if payload is None:
        corpus = _tokenized_corpus(source, cache)
        payload = corpus.encode(vocab_size=vocab_size, seed=seed, final=final)
        if cache:
            save_cached(encoded_file, payload)
    data = classification_data_from_payload(
        payload, source=source.describe(), class_names=CLASS_NAMES
    )
    data.source = (
        f"{source.describe()}: {len(data.train):,} train / {len(data.val):,} "
        f"{'test' if final else 'validation'} reviews, vocabulary {len(data.vocab):,}"
    )
    return data


def _tokenized_corpus(source: ImdbSource, cache: bool) -> TokenizedCorpus:
    corpus_file = cache_file("imdb-corpus", {"source": source.identity()})
    payload = load_cached(corpus_file) if cache else None
    if payload is not None:
        return TokenizedCorpus.from_payload(payload)
    corpus = TokenizedCorpus.from_reviews(source.read(), description=source.path.name)
    if cache:
        save_cached(corpus_file, corpus.to_payload())
    return corpus
