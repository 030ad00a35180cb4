"""Turning review text into word tokens.

The rules are the ones a reader would apply by hand: lower-case everything,
drop the ``<br />`` line breaks IMDB reviews are full of, keep words (with
their apostrophes: ``don't``, ``it's``) whole, and split punctuation off as
tokens of its own, so that ``good.`` and ``good`` are the same word. Runs of
``.``, ``!``, ``?`` and ``-`` stay together (``...``, ``!!!``), because they
carry tone.
"""

from __future__ import annotations

import re

# Bumped whenever tokenize() changes, so cached encodings are rebuilt.
TOKENIZER_VERSION = 1

_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TOKEN = re.compile(r"\w+(?:'\w+)*|\.+|!+|\?+|-+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case word and punctuation tokens.

    >>> tokenize("Not GOOD.<br /><br />Didn't like it!!!")
    ['not', 'good', '.', "didn't", 'like', 'it', '!!!']
    """
    return _TOKEN.findall(_LINE_BREAK.sub(" ", text.lower()))
