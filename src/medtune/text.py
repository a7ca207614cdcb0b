"""Text utilities every layer shares: normalisation for matching, character-level metrics for Chinese
(ROUGE-L, BLEU-4, Distinct-n), and the one thinking rule that splits a Qwen3-style reply into its
`<think>` part and its answer. Pure Python, no torch.

Normalisation: two texts that differ only in Unicode width/compatibility forms, letter case, whitespace or
punctuation (full-width or ASCII) normalise to the same string, so "头痛怎么办？" matches "头痛 怎么办?".
"""

from __future__ import annotations

import functools
import math
import sys
import unicodedata
from collections import Counter
from typing import Callable


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
# (tests/test_text.py compares with the definition on every code point and every combining mark).
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


# ---- character-level reference metrics (Chinese has no word boundaries)

def chars(text: str) -> list[str]:
    return [ch for ch in text if not ch.isspace()]


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, bit-parallel (Hyyro 2004): O(len(a) * len(b) / word size)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, ch in enumerate(a):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for ch in b:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l(candidate: str, reference: str) -> float:
    c, r = chars(candidate), chars(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def bleu_stats(candidate: str, reference: str) -> tuple[int, ...]:
    """One answer's share of corpus BLEU: clipped matches and totals for n = 1..4, candidate and reference length.

    Corpus BLEU over answers is `bleu_from_stats` of their summed stats, so a bootstrap over answers only
    re-adds these numbers instead of re-counting n-grams.
    """
    c, r = chars(candidate), chars(reference)
    matches, totals = [], []
    for n in range(1, 5):
        c_counts, r_counts = Counter(ngrams(c, n)), Counter(ngrams(r, n))
        matches.append(sum(min(k, r_counts[g]) for g, k in c_counts.items()))
        totals.append(max(len(c) - n + 1, 0))
    return (*matches, *totals, len(c), len(r))


def bleu_from_stats(stats: list[tuple[int, ...]]) -> float:
    """Corpus BLEU-4 from per-answer `bleu_stats`: no smoothing, brevity penalty on the total lengths."""
    summed = [sum(column) for column in zip(*stats)] if stats else [0] * 10
    matches, totals, cand_len, ref_len = summed[:4], summed[4:8], summed[8], summed[9]
    if cand_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
    brevity = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return brevity * math.exp(log_precision)


def bleu_4(candidates: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 on characters, one reference per candidate."""
    return bleu_from_stats([bleu_stats(c, r) for c, r in zip(candidates, references, strict=True)])


def distinct_n(texts: list[str], n: int) -> float:
    grams = [g for t in texts for g in ngrams(chars(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


# ---- thinking split

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINKING_RULE = (
    "The thinking part of a reply is the text before its first '</think>' when thinking is on, or when the reply "
    "opens with '<think>' (after whitespace) even though thinking is off; the '<think>' tag itself is dropped. A "
    "thinking part that never closes takes the whole reply, and the answer is empty. Everything after that first "
    "'</think>' is the answer, a later '</think>' included; a reply with thinking off that does not open with "
    "'<think>' is all answer. Whitespace around each part is dropped.")


class ThinkSplitter:
    """Splits generated text, fed piece by piece, into (thinking, answer) deltas by THINKING_RULE.

    Tags split across pieces, and whitespace that may end a part, are held back until the next piece
    shows what they are; `flush()` hands on the rest at the end of generation.
    """

    def __init__(self, enable_thinking: bool):
        self.in_think = enable_thinking
        self.at_start = True          # nothing but whitespace seen yet: an opening tag may still come
        self.part_started = False     # the current part has produced visible text
        self.pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        thinking, answer = [], []
        self.pending += text
        if self.at_start and not self._read_start():
            return "", ""
        if self.in_think and (i := self.pending.find(THINK_CLOSE)) != -1:
            self._emit(self.pending[:i].rstrip(), thinking)
            self.pending = self.pending[i + len(THINK_CLOSE):]
            self.in_think, self.part_started = False, False
        held = self._held()
        self._emit(self.pending[:len(self.pending) - held], thinking if self.in_think else answer)
        self.pending = self.pending[len(self.pending) - held:]
        return "".join(thinking), "".join(answer)

    def flush(self) -> tuple[str, str]:
        """The held-back rest, at the end of generation (an unfinished tag is text)."""
        rest, self.pending = self.pending.rstrip(), ""
        out: list[str] = []
        self._emit(rest, out)
        return ("".join(out), "") if self.in_think else ("", "".join(out))

    def _read_start(self) -> bool:
        """Decide whether the reply opens with <think>; False while the text so far cannot tell."""
        stripped = self.pending.lstrip()
        if not stripped or (THINK_OPEN.startswith(stripped) and stripped != THINK_OPEN):
            return False
        if stripped.startswith(THINK_OPEN):
            self.in_think, self.pending = True, stripped[len(THINK_OPEN):]
        self.at_start = False
        return True

    def _held(self) -> int:
        """How much of the end of `pending` waits: a possible start of '</think>' and the whitespace before it."""
        tag = 0
        if self.in_think:
            tag = next((n for n in range(min(len(THINK_CLOSE) - 1, len(self.pending)), 0, -1)
                        if self.pending.endswith(THINK_CLOSE[:n])), 0)
        body = self.pending[:len(self.pending) - tag]
        return len(self.pending) - len(body.rstrip())

    def _emit(self, text: str, out: list[str]) -> None:
        if not self.part_started:
            text = text.lstrip()
            self.part_started = bool(text)
        if text:
            out.append(text)


def split_thinking(text: str, enable_thinking: bool) -> tuple[str, str]:
    """(thinking, answer) of a whole generated text, by THINKING_RULE."""
    splitter = ThinkSplitter(enable_thinking)
    t1, a1 = splitter.feed(text)
    t2, a2 = splitter.flush()
    return t1 + t2, a1 + a2


def answer_only(text: str) -> str:
    """The answer of a text whose thinking setting is unknown (a judge's reply, a stored answer)."""
    return split_thinking(text, enable_thinking=False)[1]


def count_thinking_tokens(ids: list[int], decode: Callable[[list[int]], str], enable_thinking: bool) -> int:
    """How many of `ids` are thinking by THINKING_RULE: up to and including the token that completes the first
    '</think>'; all of them when it never closes; none when the reply has no thinking part.

    Binary search over decoded prefixes: exact for any tokenizer, whether '</think>' is one token or several.
    """
    text = decode(ids)
    if not (enable_thinking or text.lstrip().startswith(THINK_OPEN)):
        return 0
    if THINK_CLOSE not in text:
        return len(ids)
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if THINK_CLOSE in decode(ids[:mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo
