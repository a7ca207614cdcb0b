"""Multi-turn consultations (the CMB-Clin layout): each model answers a case's questions in turn, with its own
earlier answers as the history, scored per turn and per case against the reference answers.

Run as: medtune evaluate bench --format cmb-clin --model M [--adapter A] --data cases.json --output F.json

Layout (FreedomIntelligence/CMB, CMB-Clin): a JSON list (or JSONL) of cases {id, title, description,
QA_pairs: [{question, answer}]} (the README's example names the reference `solution`; both are read).

How a case is asked (CMB's own CMB-Clin prompt): the first user message is
"以下是一位病人的病例：\\n{description}\\n{question 1}", each later one is the next question alone. The
history before question k is the model's OWN answers to questions 1..k-1, never the references, as a
real consultation would go; thinking text is never kept in the history (Qwen3's rule for multi-turn
chat). Each arm uses its own chat template, system prompt, thinking setting and decoding; turn k of every
case is generated in one batch.

Scores, each with a 95% percentile bootstrap interval over cases (turns of one case are not independent):
- character ROUGE-L F1 (mean over answers) and corpus BLEU-4 against the reference answers
  (medtune.evaluate.metrics), overall, per turn and per case;
- with a judge endpoint, a 1-10 score of each answer against its reference (JUDGE_RUBRIC, written into the
  result); a reply without a score is a failure, counted and never guessed;
- the trend: each case's last turn minus its first (ROUGE-L, and the judge score), mean and interval:
  does quality fall as the consultation goes on?
Writes F.json (summary, per arm, per turn and per case) and F_answers.jsonl (every answer with the exact
messages it was given).
"""

from __future__ import annotations

import time
from pathlib import Path

from medtune.data.consultations import Case, load_cases
from medtune.evaluate.arms import Arm, chat_template_arms
from medtune.generate.judge import JudgeEndpoint, ask_judge, parse_verdict
from medtune.rundir import write_json, write_jsonl
from medtune.stats import bootstrap_interval
from medtune.text import bleu_from_stats, bleu_stats, rouge_l

FORMAT = "cmb-clin"  # `medtune evaluate bench --format cmb-clin` runs consultations

FIRST_TURN = "以下是一位病人的病例：\n{description}\n{question}"
RESAMPLES = 1000
JUDGE_SYSTEM = "你是一名严谨、公正的临床医学专家，负责按参考答案为AI助手在问诊中的回答打分。"
JUDGE_RUBRIC = """请根据参考答案，为AI助手对病例中一个问题的回答打分（1-10分）。

评分标准：
- 9-10分：与参考答案的要点一致，医学上准确、完整，没有错误或不安全的建议。
- 7-8分：覆盖了大部分要点，有小的遗漏，没有明显错误。
- 5-6分：覆盖了部分要点，有明显遗漏或不够准确的地方。
- 3-4分：只涉及少数要点，或有明显的医学错误。
- 1-2分：答非所问、空白，或有可能造成伤害的错误。
不要因为回答更长就给更高分；参考答案之外但正确、相关的内容不扣分。

[病例]
{description}

[问题]
{question}

[参考答案]
{reference}

[AI助手的回答]
{answer}

请先用一两句话说明理由，最后单独一行只输出分数，格式为 [[分数]]，例如 [[7]]。"""
EMPTY_ANSWER = "（空回答）"


# -- reading cases --


def conversation(case: Case, own_answers: list[str]) -> list[dict]:
    """The messages before question len(own_answers)+1: the case and questions, the model's own answers between."""
    messages = [{"role": "user", "content": FIRST_TURN.format(description=case.description,
                                                              question=case.questions[0])}]
    for k, answer in enumerate(own_answers, 1):
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": case.questions[k]}]
    return messages


# -- answering --

def answer_cases(arm: Arm, cases: list[Case], engine) -> list[dict]:
    """Every case's questions in turn; the answers of turn k (all cases in one batch) are the history of k+1."""
    answers: list[list[str]] = [[] for _ in cases]
    records: list[list[dict]] = [[] for _ in cases]
    for turn in range(max(len(c.questions) for c in cases)):
        active = [i for i, c in enumerate(cases) if turn < len(c.questions)]
        conversations = [conversation(cases[i], answers[i]) for i in active]
        generations, _ = engine.batched(arm, conversations)
        for i, messages, gen in zip(active, conversations, generations):
            answers[i].append(gen.answer)  # only the answer (the engine split it off): thinking never goes back
            case = cases[i]
            records[i].append({"arm": arm.name, "model": arm.model, "adapter": arm.adapter, "thinking": arm.thinking,
                            "case_id": case.id, "title": case.title, "turn": turn + 1,
                            "question": case.questions[turn], "reference": case.references[turn],
                            "answer": gen.answer, "thinking_text": gen.thinking, "messages": messages,
                            "answer_tokens": gen.tokens - gen.thinking_tokens,
                            "thinking_tokens": gen.thinking_tokens, "finish_reason": gen.finish_reason})
    return [r for case_records in records for r in case_records]  # case by case, turn by turn


# -- scoring --

SCORES = {str(n): str(n) for n in range(1, 11)}


def parse_score(reply: str) -> int | None:
    """The judge's 1-10 score: its last [[n]] tag (judge.parse_verdict's rule), None when it has none."""
    score = parse_verdict(reply, SCORES)
    return int(score) if score is not None else None


def judge_answers(records: list[dict], cases: dict[str, Case], judge: JudgeEndpoint, workers: int = 4) -> None:
    """Adds judge_score (1-10 or None) and judge_reply to every record, through an OpenAI-compatible judge."""
    prompts = [[{"role": "system", "content": JUDGE_SYSTEM},
                {"role": "user", "content": JUDGE_RUBRIC.format(
                    description=cases[r["case_id"]].description, question=r["question"], reference=r["reference"],
                    answer=r["answer"] or EMPTY_ANSWER)}] for r in records]
    for record, (reply, error) in zip(records, ask_judge(judge.client(), prompts, workers)):
        record["judge_reply"] = reply if reply is not None else f"ERROR: {error}"  # retries spent: a failure
        record["judge_score"] = parse_score(reply) if reply is not None else None


def score_records(records: list[dict]) -> None:
    for r in records:
        r["rouge_l"] = rouge_l(r["answer"], r["reference"])
        r["bleu_stats"] = bleu_stats(r["answer"], r["reference"])  # dropped before writing
        r["bleu_4"] = bleu_from_stats([r["bleu_stats"]])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rouge(records: list[dict]) -> float | None:
    return _mean([r["rouge_l"] for r in records])


def _bleu(records: list[dict]) -> float | None:
    return bleu_from_stats([r["bleu_stats"] for r in records]) if records else None


def _judge(records: list[dict]) -> float | None:
    return _mean([r["judge_score"] for r in records if r["judge_score"] is not None])


def _interval(groups: list[list[dict]], statistic) -> list[float] | None:
    """Percentile bootstrap 95% interval of `statistic` over groups of records (one group per case)."""
    if statistic([r for g in groups for r in g]) is None:
        return None
    return list(bootstrap_interval(groups, lambda sample: statistic([r for g in sample for r in g]),
                                   resamples=RESAMPLES))


def measures(groups: list[list[dict]], judged: bool, intervals: bool = True) -> dict:
    """ROUGE-L (mean), BLEU-4 (corpus) and the judge's mean score over the records of these cases, with intervals."""
    records = [r for g in groups for r in g]
    out = {"n": len(records), "rouge_l": _rouge(records), "bleu_4": _bleu(records)}
    if intervals:
        out.update(rouge_l_ci=_interval(groups, _rouge), bleu_4_ci=_interval(groups, _bleu),
                   length_capped=sum(r["finish_reason"] == "length" for r in records))
    if judged:
        out.update(judge_score=_judge(records), judge_failures=sum(r["judge_score"] is None for r in records))
        if intervals:
            out["judge_score_ci"] = _interval(groups, _judge)
    return out


def trend(by_case: list[list[dict]], judged: bool) -> dict:
    """Each case's last turn minus its first (cases with two turns or more): mean change and bootstrap interval."""
    pairs = [(g[0], g[-1]) for g in by_case if len(g) > 1]
    out = {"cases": len(pairs), "rule": "per case: last turn minus first turn; mean over cases, 95% bootstrap"}
    keys = ["rouge_l"] + (["judge_score"] if judged else [])
    for key in keys:
        diffs = [last[key] - first[key] for first, last in pairs if first[key] is not None and last[key] is not None]
        out[f"{key}_change"] = _mean(diffs)
        out[f"{key}_change_ci"] = list(bootstrap_interval(diffs, lambda d: sum(d) / len(d), resamples=RESAMPLES)) \
            if diffs else None
    return out


def arm_summary(arm: Arm, records: list[dict], judged: bool) -> dict:
    by_case: dict[str, list[dict]] = {}
    for r in records:
        by_case.setdefault(r["case_id"], []).append(r)
    groups = list(by_case.values())
    turns = max(r["turn"] for r in records)
    per_turn = []
    for turn in range(1, turns + 1):
        at_turn = [[r for r in g if r["turn"] == turn] for g in groups]
        per_turn.append({"turn": turn, **measures([g for g in at_turn if g], judged)})
    cases = []
    for case_id, g in by_case.items():
        m = measures([g], judged, intervals=False)
        cases.append({"id": case_id, "title": g[0]["title"], "turns": len(g), "rouge_l": m["rouge_l"],
                      "bleu_4": m["bleu_4"], **({"judge_score": m["judge_score"]} if judged else {}),
                      "per_turn": [{k: r[k] for k in ("turn", "rouge_l", "bleu_4")
                                    + (("judge_score",) if judged else ())} for r in g]})
    return {"arm": arm.name, "model": arm.model, "adapter": arm.adapter, "thinking": arm.thinking,
            "overall": measures(groups, judged), "per_turn": per_turn, "trend": trend(groups, judged),
            "cases": cases}


def answers_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + "_answers.jsonl")


def run_consultation(arms: list[Arm], path: str | Path, output: str | Path, engines,
                     judge: JudgeEndpoint | None = None, name: str | None = None, max_cases: int | None = None,
                     log=print) -> dict:
    """Every chat-template arm through every case; writes `output` (summary) and its _answers.jsonl; returns the summary."""
    started = time.perf_counter()
    cases, rejected = load_cases(path, max_cases)
    arms = chat_template_arms(arms, "consultation", log)
    records, summaries = [], []
    for arm in arms:
        log(f"consultation: {arm.name}: {len(cases)} case(s), {sum(len(c.questions) for c in cases)} question(s)")
        arm_records = answer_cases(arm, cases, engines.for_arm(arm))
        score_records(arm_records)
        if judge:
            judge_answers(arm_records, {c.id: c for c in cases}, judge)
        summaries.append(arm_summary(arm, arm_records, judge is not None))
        records += [{k: v for k, v in r.items() if k != "bleu_stats"} for r in arm_records]
    summary = {
        "benchmark": name or Path(path).stem, "format": FORMAT, "data": str(Path(path).resolve()),
        "cases": len(cases), "questions": sum(len(c.questions) for c in cases), "rejected": rejected,
        "method": {"prompt": "first turn: " + FIRST_TURN.replace("\n", "\\n") + "; later turns: the question alone",
                   "history": "the arm's own earlier answers (thinking text removed), never the references",
                   "metrics": "character ROUGE-L F1 (mean over answers) and corpus BLEU-4 (no smoothing)",
                   "intervals": f"95% percentile bootstrap over cases, {RESAMPLES} resamples, seed 0"},
        "judge": {"model": judge.model, "base_url": judge.base_url, "scale": [1, 10], "system": JUDGE_SYSTEM,
                  "rubric": JUDGE_RUBRIC} if judge else None,
        "arms": summaries, "seconds": round(time.perf_counter() - started, 3),
    }
    write_jsonl(answers_path(output), records)
    write_json(output, summary)
    return summary


def format_summary(summary: dict) -> str:
    def f(v):
        return "  n/a" if v is None else f"{v:.3f}"

    lines = [f"{summary['benchmark']}: {summary['cases']} case(s), {summary['questions']} question(s)"]
    for a in summary["arms"]:
        o = a["overall"]
        judge = f"  judge {f(o['judge_score'])}" if "judge_score" in o else ""
        curve = " -> ".join(f(t["rouge_l"]).strip() for t in a["per_turn"])
        lines.append(f"{a['arm']:<28} ROUGE-L {f(o['rouge_l'])}  BLEU-4 {f(o['bleu_4'])}{judge}  "
                     f"ROUGE-L by turn: {curve}")
    if summary["rejected"]:
        lines.append(f"{len(summary['rejected'])} case(s) rejected (listed under 'rejected')")
    return "\n".join(lines)
