"""A run directory for the review tests, its eval/ files written by the evaluate stage's own record builders:
compare answers by `evaluate.compare.answer_record`, consultation answers by `evaluate.consult.answer_cases`
(with a stand-in engine whose replies are fixed), and LLM-judge rows by `evaluate.judge.judgement_row`.

Two arms, `base` and `sft`; question k's answers are `base answer k` / `sft answer k`, except that the base
model's answer to q02 holds a script tag (model text is untrusted). The judge prefers `sft` on every question,
except q01 (it always picks the answer shown first: position bias) and q05 (a tie).
"""

from __future__ import annotations

import json
from pathlib import Path

from medtune.config import GenerationConfig, config_from_dict, save_config
from medtune.data.consultations import Case
from medtune.data.questions import Question
from medtune.evaluate.arms import Arm
from medtune.evaluate.compare import answer_record
from medtune.evaluate.consult import answer_cases
from medtune.evaluate.judge import judgement_row
from medtune.generate.sampling import Generation

ARMS = [Arm(name, "Qwen/Qwen3-8B", adapter, False, "chat_template", None, GenerationConfig())
        for name, adapter in (("base", None), ("sft", "run"))]
SCRIPT = '<script>document.title="pwned"</script><b>bold</b>'


def answer_text(arm: str, k: int) -> str:
    return f"{arm} answer {k}" + (SCRIPT if (arm, k) == ("base", 2) else "")


def gen(text: str) -> Generation:
    return Generation(text=text, thinking="", answer=text, tokens=len(text), thinking_tokens=0, finish_reason="stop",
                      latency_seconds=0.1, ttft_seconds=0.01)


class FixedEngine:
    """Answers turn t of a case as '<arm> consult <case> turn <t>' (what answer_cases needs: batched())."""

    def batched(self, arm: Arm, conversations: list[list[dict]]):
        gens = []
        for messages in conversations:
            turn = sum(m["role"] == "user" for m in messages)
            case = messages[0]["content"].split("病例：\n", 1)[1].split("\n", 1)[0]
            gens.append(gen(f"{arm.name} consult {case} turn {turn}"))
        return gens, 0.0


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def judge_reply(verdict: str) -> str:
    return f"两个回答比较如下。[[{verdict}]]"


def review_run(dest: Path, questions: int = 5, consultation: bool = False) -> Path:
    e = dest / "eval"
    qs = [Question(f"q{k:02d}", f"问题 {k}：头痛怎么办？") for k in range(1, questions + 1)]
    write_rows(e / "compare" / "answers.jsonl",
               [answer_record(arm, q, gen(answer_text(arm.name, k))) for k, q in enumerate(qs, 1) for arm in ARMS])
    rows = []
    for k, q in enumerate(qs, 1):
        if k == 1:  # always the first shown
            a_first, b_first = "1", "1"
        elif k == 5:
            a_first, b_first = "tie", "tie"
        else:  # sft (b) wins in both orders
            a_first, b_first = "2", "1"
        rows.append(judgement_row("base", "sft", q.id, q.question, answer_text("base", k), answer_text("sft", k),
                                  (judge_reply(a_first), None), (judge_reply(b_first), None)))
    write_rows(e / "judge" / "judgements.jsonl", rows)
    if consultation:
        case = Case("c1", "头痛", "c1", ("哪里痛？", "痛了多久？"), ("参考一", "参考二"))
        write_rows(e / "consultations" / "clin_answers.jsonl",
                   [r for arm in ARMS for r in answer_cases(arm, [case], FixedEngine())])
    # What every real run directory holds (the report refuses a directory without them): the resolved
    # config and the evaluate stage's manifest.
    save_config(config_from_dict({"output_dir": str(dest)}), dest / "config.yaml")
    (e / "manifest.json").write_text(json.dumps({"parts": {}}) + "\n", encoding="utf-8")
    return dest
