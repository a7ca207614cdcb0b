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


# Spaces and punctuation common in Chinese and English text, deleted before NFKC: NFKC costs ~400x more
# on text that is not already NFKC-normal, and full-width punctuation is what makes Chinese text not
# normal. Each is a starter whose NFKC form is punctuation or space that composes with nothing, so
# deleting it first gives the same result whenever what is left is NFKC-normal, which is checked
# (tests/test_textnorm.py compares with the definition on every code point and every combining mark).
_COMMON = " \n\t，。？！：；、（）“”‘’《》【】…—,.?!:;()\"'-/"


def normalize_text(text: str) -> str:
    """NFKC, case-folded, with every whitespace and punctuation character removed."""
    quick = text
    for ch in _COMMON:
        if ch in quick:
            quick = quick.replace(ch, "")
    folded = (quick if unicodedata.is_normalized("NFKC", quick) else unicodedata.normalize("NFKC", text)).casefold()
    # All letters and digits (the usual case once the common punctuation is gone): nothing left to delete.
    return folded if folded.isalnum() else folded.translate(_deleted())
