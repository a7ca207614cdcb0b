"""Text normalisation for matching evaluation items against training data (contamination, align guards).

Two texts that differ only in Unicode width/compatibility forms, letter case, whitespace or punctuation
(full-width or ASCII) normalise to the same string, so "头痛怎么办？" matches "头痛 怎么办?".
"""

from __future__ import annotations

import functools
import sys
import unicodedata


@functools.cache
def _deleted() -> dict[int, None]:
    # Every whitespace and punctuation code point, deleted in one C-level str.translate: the contamination
    # check normalises every training dialogue, and a per-character Python loop made that the slowest step.
    return dict.fromkeys(cp for cp in range(sys.maxunicode + 1)
                         if chr(cp).isspace() or unicodedata.category(chr(cp)).startswith("P"))


def normalize_text(text: str) -> str:
    """NFKC, case-folded, with every whitespace and punctuation character removed."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_deleted())
