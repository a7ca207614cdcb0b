"""Does a training dialogue contain an evaluation item? Exact match and character n-gram coverage.

Used by the contamination check (medtune.data.contamination) and by prepare's `data.exclude`.

Both tests compare `normalize_text` forms (NFKC, case-folded, whitespace and punctuation removed), so
full-width punctuation, inserted spaces and letter case never hide a copy.

- exact: the item's normalised text occurs whole inside one normalised message of the dialogue (an item
  shorter than N characters must equal a whole message: "头痛" inside a message proves nothing).
- overlap: at least THRESHOLD of the item's characters lie in character N-grams that also occur in the
  dialogue (the share of the item "covered" by shared N-grams).

A multiple-choice item is its stem followed by its options ("川芎可用于 A. 活血 B. 行气 ..."): the N-grams
are cut from that whole text, but coverage counts only the stem's characters. So a stem shorter than N
("川芎可用于", 5 characters) is found when the dialogue holds it followed by its options (the N-grams that
start in the stem run on into them), a long stem is found alone as before, and options alone never flag an
item (stock option lists, "A. 高血压 B. 糖尿病 ...", are shared by unrelated questions; they cover no stem
character). Exact: the whole item (stem and options), or a stem of at least N characters, inside one
message, or the stem equal to a whole message. An item without options is its stem alone.

Why N = 8 characters and THRESHOLD = 0.8 of the characters:
- GPT-3 (Brown et al. 2020, appendix C) flags an item sharing one N-gram of words with training data, N the
  5th-percentile item length clamped to 8..13 words; GPT-4 (OpenAI 2023, appendix C) checks three random
  50-character substrings after removing spaces and symbols; PaLM (Chowdhery et al. 2022, section 8) calls
  an item contaminated when 70% of its 8-grams occur in the training data; Llama 2 (Touvron et al. 2023,
  appendix A.6) marks the tokens inside matched n-grams and calls a sample "dirty" when more than 80% of
  its tokens are marked. Chinese has no spaces to count words by, so we count characters (one character
  is about one morpheme); many everyday questions are only 15-25 characters, so a 13-word or 50-character
  window would never fire on them, while 8 characters (GPT-3's minimum, PaLM's n) is longer than common
  medical phrases ("高血压患者", "怎么办呢") that unrelated questions share.
- Coverage (Llama 2's rule) instead of one shared n-gram (GPT-3's) or the share of n-grams (PaLM's): one
  changed character removes up to 8 n-grams, which halves the n-gram share of a 20-character question,
  but uncovers only that one character, so near-copies stay flagged and a shared stock phrase alone
  (8 of 20 characters = 40%) does not flag an item.

Streaming: the index holds only the evaluation items' n-grams (hundreds of items, ~10^4 n-grams); each
training dialogue is normalised, cut into its n-grams once and intersected with that set, so the cost is
linear in the training text and memory does not grow with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtune.text import normalize_text

N = 8
THRESHOLD = 0.8


@dataclass(frozen=True)
class EvalItem:
    """One evaluation input to look for in training data."""

    id: str
    line: int
    """1-based line (or record number) in its file."""
    text: str
    """The text that is checked: the question stem, the everyday question, the prompt."""
    options: str = ""
    """A multiple-choice item's options as they follow its stem ("A. 活血 B. 行气"); only context for the stem."""


@dataclass(frozen=True)
class Match:
    item: int
    """Index into the index's items."""
    coverage: float
    """Share of the item's stem characters covered by N-grams (of stem and options) found in the dialogue."""
    exact: bool


class OverlapIndex:
    """The n-grams of a list of evaluation items, for testing training dialogues one at a time."""

    def __init__(self, items: list[EvalItem], n: int = N, threshold: float = THRESHOLD):
        self.items, self.n, self.threshold = items, n, threshold
        self.stem = [normalize_text(it.text) for it in items]
        self.norm = [s + normalize_text(it.options) for s, it in zip(self.stem, items)]  # stem, then options
        self.whole: dict[str, list[int]] = {}  # normalised stem or whole item -> items with exactly that text
        self.grams: dict[str, list[tuple[int, int]]] = {}  # n-gram -> [(item, bit mask of its characters)]
        for i, t in enumerate(self.norm):
            for key in {self.stem[i], t} - {""}:
                self.whole.setdefault(key, []).append(i)
            for p in range(len(t) - n + 1):
                self.grams.setdefault(t[p:p + n], []).append((i, ((1 << n) - 1) << p))
        self.gram_set = frozenset(self.grams)

    def too_short(self, i: int) -> bool:
        """Items (stem and options) shorter than n characters get only the exact (whole-message) test."""
        return len(self.norm[i]) < self.n

    def _exact(self, i: int, norms: list[str]) -> bool:
        stem, whole = self.stem[i], self.norm[i]
        return any(whole in t or (len(stem) >= self.n and stem in t) for t in norms)

    def match(self, messages: list[str]) -> list[Match]:
        """Every item that one dialogue (its messages' texts) contains exactly or covers >= threshold."""
        norms = [normalize_text(m) for m in messages]
        n, covered = self.n, {}
        for t in norms:
            if len(t) < n:
                continue
            # set & frozenset iterates the smaller side in C: the dialogue's n-grams are looked up once.
            for g in {t[p:p + n] for p in range(len(t) - n + 1)} & self.gram_set:
                for i, mask in self.grams[g]:
                    covered[i] = covered.get(i, 0) | mask
        found = {}
        for t in norms:
            for i in self.whole.get(t, ()):
                found[i] = Match(i, 1.0, True)
        for i, mask in covered.items():
            if i in found or not self.stem[i]:
                continue
            stem_mask = (1 << len(self.stem[i])) - 1  # the stem's characters come first in norm[i]
            coverage = (mask & stem_mask).bit_count() / len(self.stem[i])
            if coverage >= self.threshold:
                found[i] = Match(i, coverage, coverage == 1.0 and self._exact(i, norms))
        return list(found.values())
