"""Reference metrics on characters: ROUGE-L, BLEU-4 and Distinct-1/2, for Chinese (and any) text.

Run as: medtune evaluate metrics --answers answers.jsonl --references refs.jsonl --output metrics.json

Text is split into characters, whitespace dropped (the same units as sacrebleu's `char` tokenizer). A
word tokenizer made for English would see a Chinese sentence as one word, or drop it, and score 0.
All values are in [0, 1].
- ROUGE-L: F1 of the longest common subsequence, per answer, averaged over answers.
- BLEU-4: corpus BLEU (clipped 1-4-gram precisions summed over all answers, geometric mean, brevity
  penalty on total lengths), no smoothing: 0 when some n-gram order has no match at all.
- Distinct-n: distinct n-grams / all n-grams over all answers of an arm (n-grams never cross answers).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from medtune.evaluate.inputs import InputFileError, load_answers
from medtune.rundir import write_json


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


def score_answers(answers: list[dict], references: dict[str, str]) -> dict[str, dict]:
    """Per arm: rouge_l, bleu_4, distinct_1, distinct_2 over the answers that have a reference, and n."""
    by_arm: dict[str, list[dict]] = {}
    for a in answers:
        by_arm.setdefault(a["arm"], []).append(a)
    out = {}
    for arm, rows in by_arm.items():
        scored = [r for r in rows if r["question_id"] in references]
        if not scored:
            raise InputFileError(f"no answer of arm '{arm}' has a reference: the answers' question_id values "
                                 f"({', '.join(sorted({r['question_id'] for r in rows})[:5])}, ...) match no "
                                 "reference id")
        cands = [r["answer"] for r in scored]
        refs = [references[r["question_id"]] for r in scored]
        out[arm] = {
            "rouge_l": sum(rouge_l(c, r) for c, r in zip(cands, refs)) / len(cands),
            "bleu_4": bleu_4(cands, refs),
            "distinct_1": distinct_n(cands, 1),
            "distinct_2": distinct_n(cands, 2),
            "n": len(scored),
            "unmatched": len(rows) - len(scored),
        }
    return out


def evaluate_metrics(answers_path: str | Path, references: dict[str, str], output: str | Path) -> dict:
    """Score an answers file against {question id: reference} and write the per-arm metrics to `output`."""
    result = score_answers(load_answers(answers_path), references)
    write_json(output, result)
    return result
