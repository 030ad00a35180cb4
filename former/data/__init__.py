"""Data for former: IMDB reviews for classification, bytes for generation, and batching;
found, downloaded or generated as :mod:`former.data.locate` says."""

from former.data.batching import Batch, batches, random_windows
from former.data.imdb import ImdbFormatError, load_imdb
from former.data.locate import ChecksumError, DownloadError
from former.data.synthetic import load_synthetic
from former.data.text import load_enwik8, load_shakespeare, load_text
from former.data.tokens import ClassificationData, TextSplit, Vocabulary, frequent_bigrams, tokenize

__all__ = [
    "Batch",
    "ChecksumError",
    "ClassificationData",
    "DownloadError",
    "ImdbFormatError",
    "TextSplit",
    "Vocabulary",
    "batches",
    "frequent_bigrams",
    "load_enwik8",
    "load_imdb",
    "load_shakespeare",
    "load_synthetic",
    "load_text",
    "random_windows",
    "tokenize",
]
