"""Multi-turn consultations (CMB-Clin layout): cases load in the published shape, every question is answered
with the model's OWN earlier answers (never the references, never its thinking) in its own chat template,
scores per turn and per case match a hand computation, the judge's rubric score is parsed without
guessing, and the command line runs on a tiny model."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from medtune.config import GenerationConfig
from medtune.errors import UserError
from medtune.generate.sampling import Generation
from medtune.text import split_thinking
from medtune.evaluate.arms import Arm, render_prompt
from medtune.evaluate.consult import (FIRST_TURN, JUDGE_RUBRIC, answers_path, conversation, parse_score, run_consultation)
from medtune.data.consultations import load_cases
from tests.conftest import ROOT
from tests.eval_fixtures import ANSWER, openai_server  # noqa: F401

DEMO = ROOT / "data" / "bench" / "cmb_clin_demo.json"

# FreedomIntelligence/CMB, Data/CME-test-qa/CMB-test-qa.json and the README's "CMB-Clin Item": a JSON list
# (indent 4) of {"id": "0" (a string), "title", "description" (multi-line), "QA_pairs": [{"question", "answer"}]};
# the README's example names the reference "solution". The text here is written for this project.
CLIN_CASES = [
    {"id": "0", "title": "案例分析-胆囊结石",
     "description": "现病史\n（1）病史摘要\n     病人，女，45岁，进食油腻后右上腹痛2小时。\n\n体格检查\n墨菲征阳性。",
     "QA_pairs": [{"question": "简述诊断。", "answer": "甲乙丙丁"}, {"question": "简述治疗。", "answer": "戊己庚辛"}]},
    {"id": "1", "title": "案例分析-痛风", "description": "现病史\n病人，男，50岁，夜间第一跖趾关节红肿痛。",
     "QA_pairs": [{"question": "诊断是什么？", "solution": "急性痛风性关节炎"}]},
    {"id": "2", "title": "坏的病例", "description": "", "QA_pairs": [{"question": "？", "answer": "无"}]},
    {"id": "3", "title": "坏的问答", "description": "病人。", "QA_pairs": [{"question": "诊断？"}]},
]


@pytest.fixture
def clin_file(tmp_path):
    path = tmp_path / "CMB-Clin-qa.json"
    path.write_text(json.dumps(CLIN_CASES, ensure_ascii=False, indent=4), encoding="utf-8")
    return path


def arm(name="m", thinking=False, **kw) -> Arm:
    return Arm(name=name, model="fake", adapter=None, thinking=thinking, prompt_format="chat_template",
               system_prompt=None, generation=GenerationConfig(max_new_tokens=8, do_sample=False), **kw)


class RecordingEngine:
    """Answers from a table {(case description start, turn): text} and records every conversation it was given."""

    name = "fake"

    def __init__(self, replies):
        self.replies = replies
        self.seen: list[list[dict]] = []

    def for_arm(self, arm):
        return self

    def batched(self, arm, conversations):
        out = []
        for messages in conversations:
            self.seen.append(messages)
            turn = sum(m["role"] == "user" for m in messages)
            text = self.replies(messages[0]["content"], turn, arm)
            thinking, answer = split_thinking(text, arm.thinking)  # as every engine splits a reply
            out.append(Generation(text=text, thinking=thinking, answer=answer, tokens=len(text), thinking_tokens=0,
                                  finish_reason="stop"))
        return out, 0.0


def test_cases_load_in_the_published_layout_and_bad_ones_are_rejected_with_reasons(clin_file):
    cases, rejected = load_cases(clin_file)
    assert [(c.id, len(c.questions)) for c in cases] == [("0", 2), ("1", 1)]
    assert cases[1].references == ("急性痛风性关节炎",)  # the README's `solution` key
    lines = clin_file.read_text(encoding="utf-8").splitlines()
    starts = [n for n, text in enumerate(lines, 1) if text.startswith('        "id": ')]  # the line after "{"
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (starts[2] - 1, "description: missing or empty"), (starts[3] - 1, "QA_pairs[1].answer: missing or empty")]
    demo, demo_rejected = load_cases(DEMO)
    assert demo_rejected == [] and len(demo) == 5 and sum(len(c.questions) for c in demo) == 14


def test_a_hub_id_loads_the_clin_config_of_every_split_with_row_numbers(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config):  # offline: the hub's rows, in the layout the JSON file has
        calls.append((name, config))
        return {"test": [dict(case) for case in CLIN_CASES[:3]]}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cases, rejected = load_cases("FreedomIntelligence/CMB")
    assert calls == [("FreedomIntelligence/CMB", "clin")]
    assert [c.id for c in cases] == ["0", "1"] and cases[1].references == ("急性痛风性关节炎",)
    assert rejected == [{"file": "FreedomIntelligence/CMB", "line": 3, "reason": "description: missing or empty"}]
    with pytest.raises(UserError, match="not found"):
        load_cases("no/such/file.json")  # a path that looks like a file is never taken for a hub id


def test_each_turn_gets_the_models_own_answers_never_the_references_or_its_thinking(clin_file, tmp_path):
    def replies(first, turn, arm):
        return f"<think>私下推理{turn}</think>自己的回答{turn}" if arm.thinking else f"自己的回答{turn}"

    engine = RecordingEngine(replies)
    arms = [arm("m"), arm("m/think", thinking=True)]
    run_consultation(arms, clin_file, tmp_path / "clin.json", engine, log=lambda *_: None)
    second_turns = [m for m in engine.seen if len(m) == 3]
    assert len(second_turns) == 2  # one per arm: only case 0 has a second question
    for messages in second_turns:
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[0]["content"] == FIRST_TURN.format(description=CLIN_CASES[0]["description"],
                                                          question="简述诊断。")
        assert messages[1]["content"] == "自己的回答1"  # the model's own answer, not the reference "甲乙丙丁"
        assert messages[2]["content"] == "简述治疗。"
    assert not any("私下推理" in m["content"] or "<think>" in m["content"] for ms in engine.seen for m in ms)
    records = [json.loads(line) for line in answers_path(tmp_path / "clin.json").read_text().splitlines()]
    think = [r for r in records if r["arm"] == "m/think"]
    assert [r["thinking_text"] for r in think] == ["私下推理1", "私下推理2", "私下推理1"]
    assert [r["messages"] for r in records if r["arm"] == "m"] == [engine.seen[i] for i in (0, 2, 1)]


def test_per_turn_and_per_case_scores_match_a_hand_computation(clin_file, tmp_path):
    # Case 0: turn 1 answers the reference exactly (ROUGE-L 1, BLEU 1); turn 2 answers "戊己" for "戊己庚辛":
    # LCS 2, precision 1, recall 1/2, F1 2/3; BLEU 0 (no 3- or 4-gram). Case 1: no character in common.
    table = {("0", 1): "甲乙丙丁", ("0", 2): "戊己", ("1", 1): "不对"}

    def replies(first, turn, arm):
        return table[("0" if "胆囊" in first or "油腻" in first else "1", turn)]

    summary = run_consultation([arm()], clin_file, tmp_path / "clin.json", RecordingEngine(replies),
                               log=lambda *_: None)
    (a,) = summary["arms"]
    t1, t2 = a["per_turn"]
    assert (t1["turn"], t1["n"], t2["n"]) == (1, 2, 1)
    assert t1["rouge_l"] == pytest.approx((1 + 0) / 2) and t2["rouge_l"] == pytest.approx(2 / 3)
    # Turn 1 corpus BLEU over both cases: 1-gram matches 4 of 4+2, 2-grams 3 of 3+1, 3-grams 2 of 2, 4-grams 1 of 1;
    # lengths 6 vs 4+8=12 -> brevity exp(1 - 12/6).
    expected_t1 = math.exp(1 - 12 / 6) * math.exp((math.log(4 / 6) + math.log(3 / 4) + 0 + 0) / 4)
    assert t1["bleu_4"] == pytest.approx(expected_t1) and t2["bleu_4"] == 0.0
    case0 = next(c for c in a["cases"] if c["id"] == "0")
    assert case0["rouge_l"] == pytest.approx((1 + 2 / 3) / 2)
    # Case 0 over both turns: all n-gram precisions 1 (6/6, 4/4, 2/2, 1/1); lengths 6 vs 8.
    assert case0["bleu_4"] == pytest.approx(math.exp(1 - 8 / 6))
    assert a["overall"]["rouge_l"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert a["trend"]["cases"] == 1 and a["trend"]["rouge_l_change"] == pytest.approx(2 / 3 - 1)
    lo, hi = a["overall"]["rouge_l_ci"]
    assert 0 <= lo <= a["overall"]["rouge_l"] <= hi <= 1


def test_judge_scores_each_answer_with_the_rubric_and_counts_replies_without_a_score(clin_file, tmp_path,
                                                                                    monkeypatch):
    from medtune.generate import judge as judge_module

    prompts = []

    def complete(self, messages):
        prompts.append(messages[-1]["content"])
        answer = messages[-1]["content"].split("[AI助手的回答]\n", 1)[1]
        return {"好": "理由充分。\n[[8]]", "差": "[[3]] 修正为 [[2]]"}.get(answer.split("\n")[0], "无法评分")

    monkeypatch.setattr(judge_module.JudgeClient, "complete", complete)
    table = {1: "好", 2: "差"}
    summary = run_consultation([arm()], clin_file, tmp_path / "clin.json",
                               RecordingEngine(lambda first, turn, a: table[turn] if "油腻" in first else "别的"),
                               judge=judge_module.JudgeEndpoint("http://judge.invalid/v1", "j"), log=lambda *_: None)
    (a,) = summary["arms"]
    assert [t["judge_score"] for t in a["per_turn"]] == [8, 2]  # case 1's reply has no score: a failure
    assert a["overall"]["judge_failures"] == 1 and a["overall"]["judge_score"] == pytest.approx(5)
    assert a["trend"]["judge_score_change"] == pytest.approx(2 - 8)
    assert summary["judge"]["rubric"] == JUDGE_RUBRIC and summary["judge"]["scale"] == [1, 10]
    assert "[参考答案]\n甲乙丙丁" in prompts[0] and len(prompts) == 3


@pytest.mark.parametrize("reply,score", [("[[7]]", 7), ("先 [[3]] 后 [[9]]", 9), ("[[11]]", None), ("7分", None),
                                         ("<think>[[2]]</think>[[6]]", 6), ("[[ 10 ]]", 10), ("[[0]]", None)])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_a_conversation_renders_in_each_models_own_chat_template():
    """The same history in Qwen3's template and in a Llama-3-style one: every turn, the model's answers in between."""
    from transformers import AutoTokenizer

    from medtune.assets import find_qwen3_tokenizer

    tok = AutoTokenizer.from_pretrained(str(find_qwen3_tokenizer()))
    cases, _ = load_cases(DEMO)
    messages = conversation(cases[0], ["回答一"])
    qwen = render_prompt(tok, arm(), messages)
    assert qwen.endswith("还需要做哪些检查？<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "<|im_start|>assistant\n回答一<|im_end|>" in qwen
    llama = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
             "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
             "{% endif %}")
    tok.chat_template = llama
    rendered = render_prompt(tok, replace(arm(), system_prompt="你是医生。"), messages)
    assert rendered.startswith("<|start_header_id|>system<|end_header_id|>\n\n你是医生。<|eot_id|>")
    assert "<|start_header_id|>assistant<|end_header_id|>\n\n回答一<|eot_id|>" in rendered
    with pytest.raises(UserError, match="needs prompt_format: chat_template"):
        render_prompt(tok, replace(arm(), prompt_format="问：{question}\n答："), messages)


def test_cli_runs_on_a_tiny_model(tmp_path, capsys):
    from medtune.cli import main
    from medtune.modeling import build_tiny_qwen3

    model = build_tiny_qwen3(tmp_path / "tiny")
    out = tmp_path / "clin" / "demo.json"
    assert main(["evaluate", "bench", "--model", str(model), "--data", str(DEMO), "--format", "cmb-clin",
                 "--max-cases", "2", "--max-new-tokens", "4", "--output", str(out)]) == 0
    summary = json.loads(out.read_text())
    (a,) = summary["arms"]
    assert summary["cases"] == 2 and summary["questions"] == 6 and [t["n"] for t in a["per_turn"]] == [2, 2, 2]
    records = [json.loads(line) for line in answers_path(out).read_text().splitlines()]
    assert len(records) == 6 and all(r["answer_tokens"] <= 4 for r in records)
    # Turn 2 of case 0 carries the model's own turn-1 answer.
    first, second = (r for r in records if r["case_id"] == "0" and r["turn"] in (1, 2))
    assert second["messages"][1] == {"role": "assistant", "content": first["answer"]}
    assert "ROUGE-L by turn" in capsys.readouterr().out


def test_an_endpoint_gets_the_whole_conversation_with_its_own_answers_and_no_thinking(openai_server, clin_file,
                                                                                     tmp_path):
    """Through an OpenAI-compatible endpoint (the loopback server answers THINKING + ANSWER when thinking is on)."""
    from medtune.evaluate.engines import Engines

    long = GenerationConfig(max_new_tokens=64, do_sample=False)
    arms = [replace(arm("served"), base_url=openai_server.url, generation=long),
            replace(arm("served/think", thinking=True), base_url=openai_server.url, generation=long)]
    with Engines(arms, "auto", 2) as engines:
        run_consultation(arms, clin_file, tmp_path / "clin.json", engines, log=lambda *_: None)
    bodies = [body for path, body in openai_server.requests if path.endswith("/chat/completions")]
    second = [b for b in bodies if len(b["messages"]) == 3]
    assert [b["chat_template_kwargs"]["enable_thinking"] for b in second] == [False, True]
    for body in second:
        assert body["messages"][1] == {"role": "assistant", "content": ANSWER}  # its own answer, thinking removed
        assert body["messages"][2] == {"role": "user", "content": "简述治疗。"}
