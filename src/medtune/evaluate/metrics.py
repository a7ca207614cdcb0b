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

from pathlib import Path

from medtune.data.questions import InputFileError, load_answers
from medtune.rundir import write_json
from medtune.text import bleu_4, distinct_n, rouge_l


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
