"""Data for former: IMDB reviews for classification, bytes for generation, and batching.

    data = load_imdb()                      # or load_imdb("path/to/aclImdb_v1.tar.gz")
    for batch in batches(data.train, batch_size=64, max_length=256, seed=epoch):
        logits = model(batch.tokens, batch.padding_mask)

    train, val, test = load_enwik8()        # uint8 tensors, bytes as tokens
    train, val, test = load_shakespeare()   # the same, from tiny Shakespeare
    inputs, targets = random_windows(train, batch_size=32, length=256)

Without a path, data are looked for in $FORMER_DATA_DIR, then the per-user
cache (~/.cache/former), then downloaded; offline, a generated corpus stands
in, with a notice. See :mod:`former.data.locate`.
"""

from former.data.batching import Batch, batches, random_windows
from former.data.download import ChecksumError, DownloadError
from former.data.enwik8 import load_enwik8, load_text
from former.data.imdb import load_imdb
from former.data.imdb_files import ImdbFormatError
from former.data.shakespeare import load_shakespeare
from former.data.splits import ClassificationData, TextSplit
from former.data.synthetic import load_synthetic
from former.data.tokenizer import tokenize
from former.data.vocabulary import Vocabulary

__all__ = [
    "Batch",
    "ChecksumError",
    "ClassificationData",
    "DownloadError",
    "ImdbFormatError",
    "TextSplit",
    "Vocabulary",
    "batches",
    "load_enwik8",
    "load_imdb",
    "load_shakespeare",
    "load_synthetic",
    "load_text",
    "random_windows",
    "tokenize",
]
