"""LLM-as-judge: pairwise comparison of two arms' answers through any OpenAI-compatible endpoint.

Run as: medtune evaluate judge --answers RUN/eval/compare/answers.jsonl --arms A,B --base-url URL --judge-model NAME --output RUN/eval/judge

How a question is decided (documented in the summary's `method` too):
- The judge sees the question and both answers (thinking text stripped by medtune.generate's rule; an
  answer whose `<think>` never closes is an empty answer) with a Chinese medical rubric: correctness,
  safety, helpfulness, clarity.
- Every question is judged twice, A's answer first and then B's first. The reply must end with a verdict
  tag, [[1]], [[2]] or [[平局]]; the last tag in the reply counts. A reply without one is unparsable:
  counted, listed, never guessed.
- Outcome (the MT-Bench rule): A wins only if both orders prefer A, loses only if both prefer B; anything
  else (both tie, or the orders disagree, or one tie) is a tie. A question with an unparsable or failed
  judgement in either order has no outcome and is left out of n.
- win_rate = (wins + ties/2) / n, with a seeded percentile bootstrap 95% interval over questions.
- order_consistency: the share of questions whose two verdicts agree (both A, both B or both tie).
- length_controlled_win_rate: a logistic regression of the question's score (1, 1/2, 0) on the
  normalised length difference d = (len_a - len_b) / (len_a + len_b) (characters), read at d = 0: the win
  rate A would have against answers of its own length. A judge that only rewards length gets about 0.5.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from medtune.data.questions import iter_rows
from medtune.errors import UserError
from medtune.generate.judge import JudgeEndpoint, ask_judge, combine_orders, judge_messages, parse_verdict
from medtune.rundir import write_json, write_jsonl
from medtune.stats import bootstrap_interval
from medtune.text import answer_only

OUTCOME_RULE = ("A wins only if both orders prefer A, loses only if both prefer B, otherwise tie; a question with an "
                "unparsable or failed judgement in either order is left out")
LENGTH_CONTROL = ("logistic regression of the score (1/0.5/0) on (len_a-len_b)/(len_a+len_b) in characters, "
                  "ridge 0.1 on the slope and 0.01 on the intercept, read at zero length difference")


# -- the judge client --


# -- outcomes and statistics --


def length_difference(a: str, b: str) -> float:
    return (len(a) - len(b)) / (len(a) + len(b)) if a or b else 0.0


def length_controlled_win_rate(scores: list[float], length_diffs: list[float]) -> float | None:
    """Win probability at zero length difference from a ridge logistic fit (Newton's method, plain numpy)."""
    import numpy as np

    if not scores:
        return None
    y, x = np.asarray(scores, float), np.asarray(length_diffs, float)
    features = np.column_stack([np.ones_like(x), x])
    penalty = np.diag([0.01, 0.1])  # keeps the fit finite when the judge follows length (or A) perfectly
    w = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-features @ w))
        gradient = features.T @ (p - y) + penalty @ w
        hessian = features.T @ (features * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(1.0 / (1.0 + np.exp(-w[0])))


def _mean(values) -> float:
    return sum(values) / len(values)


def pair_summary(a: str, b: str, rows: list[dict], seed: int) -> dict:
    judged = [r for r in rows if r["outcome"] is not None]
    scores = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[r["outcome"]] for r in judged]
    diffs = [length_difference(r["answer_a"], r["answer_b"]) for r in judged]
    points = list(zip(scores, diffs))
    lc_ci = bootstrap_interval(points, lambda pts: length_controlled_win_rate([s for s, _ in pts],
                                                                              [d for _, d in pts]),
                               resamples=1000, seed=seed) if points else None
    return {
        "a": a, "b": b, "n": len(judged),
        "wins": sum(r["outcome"] == "win" for r in judged),
        "ties": sum(r["outcome"] == "tie" for r in judged),
        "losses": sum(r["outcome"] == "loss" for r in judged),
        "win_rate": _mean(scores) if scores else None,
        "win_rate_ci": list(bootstrap_interval(scores, _mean, seed=seed)) if scores else None,
        "order_consistency": _mean([r["orders_agree"] for r in judged]) if judged else None,
        "length_controlled_win_rate": length_controlled_win_rate(scores, diffs),
        "length_controlled_win_rate_ci": list(lc_ci) if lc_ci else None,
        "mean_chars_a": _mean([len(r["answer_a"]) for r in rows]) if rows else None,
        "mean_chars_b": _mean([len(r["answer_b"]) for r in rows]) if rows else None,
        "unparsable": sum(r["unparsable"] for r in rows),
        "failed": sum(r["failed"] for r in rows),
        "unjudged_question_ids": [r["question_id"] for r in rows if r["outcome"] is None],
    }


# -- the whole comparison --

def judge_pairwise(questions: list[str], answers: dict[str, list[str]], judge: JudgeEndpoint, output_dir: Path,
                   pairs: list[tuple[str, str]] | None = None, seed: int = 0, question_ids: list[str] | None = None,
                   workers: int = 4, timeout: float = 120.0, retries: int = 4, max_tokens: int = 2048) -> dict:
    """Judge every pair of arms on every question in both orders; write summary.json and judgements.jsonl."""
    pairs = _checked_pairs(questions, answers, pairs)
    question_ids = question_ids or [str(i) for i in range(len(questions))]
    clean = {arm: [answer_only(x) for x in arm_answers] for arm, arm_answers in answers.items()}
    jobs = [(a, b, i, order) for a, b in pairs for i in range(len(questions)) for order in ("a_first", "b_first")]
    messages = [judge_messages(questions[i], *((clean[a][i], clean[b][i]) if order == "a_first"
                                               else (clean[b][i], clean[a][i]))) for a, b, i, order in jobs]
    client = judge.client(timeout=timeout, max_retries=retries, max_tokens=max_tokens, seed=seed)
    replies = dict(zip(jobs, ask_judge(client, messages, workers)))
    rows = [judgement_row(a, b, question_ids[i], questions[i], clean[a][i], clean[b][i],
                          replies[(a, b, i, "a_first")], replies[(a, b, i, "b_first")])
            for a, b in pairs for i in range(len(questions))]
    summary = {"judge_model": judge.model, "base_url": judge.base_url, "seed": seed, "questions": len(questions),
               "method": {"orders": "every question judged with A first and with B first",
                          "verdict": "last [[1]]/[[2]]/[[平局]] tag in the reply; none = unparsable",
                          "outcome": OUTCOME_RULE, "win_rate": "(wins + ties/2) / n, bootstrap 95% interval",
                          "length_control": LENGTH_CONTROL},
               "pairs": [pair_summary(a, b, [r for r in rows if (r["a"], r["b"]) == (a, b)], seed) for a, b in pairs]}
    write_jsonl(Path(output_dir) / "judgements.jsonl", rows)
    write_json(Path(output_dir) / "summary.json", summary)
    return summary


def _checked_pairs(questions: list[str], answers: dict[str, list[str]], pairs) -> list[tuple[str, str]]:
    for arm, arm_answers in answers.items():
        if len(arm_answers) != len(questions):
            raise UserError(f"arm '{arm}' has {len(arm_answers)} answers for {len(questions)} questions")
    pairs = list(combinations(answers, 2)) if pairs is None else [tuple(p) for p in pairs]
    for a, b in pairs:
        for arm in (a, b):
            if arm not in answers:
                raise UserError(f"arm '{arm}' has no answers (arms: {', '.join(answers)})")
    return pairs


def judgement_row(a: str, b: str, question_id: str, question: str, answer_a: str, answer_b: str,
                  a_first: tuple[str | None, str | None], b_first: tuple[str | None, str | None]) -> dict:
    """One question of one pair: both orders' replies and verdicts, and the outcome for A."""
    (reply_a, error_a), (reply_b, error_b) = a_first, b_first
    verdict_a = parse_verdict(reply_a) if reply_a is not None else None
    verdict_b = parse_verdict(reply_b) if reply_b is not None else None
    outcome, agree = combine_orders(verdict_a, verdict_b)
    return {"a": a, "b": b, "question_id": question_id, "question": question,
            "answer_a": answer_a, "answer_b": answer_b,
            "verdict_a_first": verdict_a, "verdict_b_first": verdict_b,
            "outcome": outcome, "orders_agree": agree,
            "unparsable": (reply_a is not None and verdict_a is None) + (reply_b is not None and verdict_b is None),
            "failed": (error_a is not None) + (error_b is not None),
            "reply_a_first": reply_a, "reply_b_first": reply_b,
            "error": "; ".join(e for e in (error_a, error_b) if e) or None}


# -- reading the comparison's answers --

def read_answers(path: Path, arms: list[str]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(question ids, questions, {arm: answers}) from compare/answers.jsonl, for the questions every arm answered."""
    by_arm: dict[str, dict[str, str]] = {arm: {} for arm in arms}
    questions: dict[str, str] = {}
    if not Path(path).is_file():
        raise UserError(f"answers file not found: {path} (written by the compare step: eval/compare/answers.jsonl)")
    for n, record in iter_rows(path):
        for key in ("arm", "question_id", "question", "answer"):
            if key not in record:
                raise UserError(f"{path}:{n}: missing field '{key}'")
        if record["arm"] in by_arm:
            qid = str(record["question_id"])
            by_arm[record["arm"]][qid] = record["answer"] or ""
            questions.setdefault(qid, record["question"])
    for arm, got in by_arm.items():
        if not got:
            raise UserError(f"{path}: no answers for arm '{arm}'")
    ids = [q for q in questions if all(q in got for got in by_arm.values())]
    missing = [q for q in questions if q not in ids]
    if missing:
        raise UserError(f"{path}: question(s) {', '.join(missing[:5])} are not answered by every arm in --arms")
    return ids, [questions[q] for q in ids], {arm: [got[q] for q in ids] for arm, got in by_arm.items()}
