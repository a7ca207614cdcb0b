"""Text normalisation for matching evaluation items against training data (contamination, align guards).

Two texts that differ only in Unicode width/compatibility forms, letter case, whitespace or punctuation
(full-width or ASCII) normalise to the same string, so "头痛怎么办？" matches "头痛 怎么办?".
"""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """NFKC, case-folded, with every whitespace and punctuation character removed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and not unicodedata.category(ch).startswith("P"))
