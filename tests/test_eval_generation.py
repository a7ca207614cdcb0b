"""Comparison arms and engines: the think/answer split, prompts (chat template and plain, verbatim), engine
choice, batched == one-at-a-time under greedy decoding on a tiny model, and the OpenAI-compatible engine
against a real HTTP server on loopback, with the answers.jsonl / summary.json it leads to."""

from __future__ import annotations

import json

import pytest

from medtune.config import CompareModel, ConfigError, GenerationConfig, load_compare_models
from medtune.errors import UserError
from medtune.evaluate.arms import Arm, prompt_token_ids, render_prompt, resolve_arms
from medtune.evaluate.compare import markdown_table, run_comparison
from medtune.evaluate.engines import EngineError, Engines, LocalEngine
from medtune.text import count_thinking_tokens
from medtune.generate.sampling import cut_at_stop, finished_generation
from medtune.data.questions import InputFileError, Question, load_questions
from tests.conftest import ROOT
from tests.eval_fixtures import ANSWER, FIRST_CHUNK_DELAY, THINKING, openai_server, tiny_run  # noqa: F401

GREEDY = GenerationConfig(max_new_tokens=6, do_sample=False)


def arm(**kw) -> Arm:
    values = dict(name="m", model="m", adapter=None, thinking=False, prompt_format="chat_template",
                  system_prompt=None, generation=GREEDY)
    return Arm(**{**values, **kw})


# -- the think/answer split --

def test_a_finished_generation_is_cut_at_the_stop_token_and_split(qwen3_tokenizer):
    ids = qwen3_tokenizer("<think>\n先看症状。\n</think>\n\n多喝水。", add_special_tokens=False)["input_ids"]
    end = qwen3_tokenizer.convert_tokens_to_ids("<|im_end|>")
    gen = finished_generation(ids + [end, 5, 6], {end}, qwen3_tokenizer, enable_thinking=True)
    assert (gen.thinking, gen.answer, gen.tokens, gen.finish_reason) == ("先看症状。", "多喝水。", len(ids), "stop")
    assert gen.thinking_tokens == ids.index(qwen3_tokenizer.convert_tokens_to_ids("</think>")) + 1
    # Cut off before </think>: all of it is thinking, the answer is empty.
    cut = finished_generation(ids[:4], {end}, qwen3_tokenizer, enable_thinking=True)
    assert (cut.answer, cut.thinking_tokens, cut.finish_reason) == ("", 4, "length")
    # Thinking off (Qwen3's empty think block is in the prompt): all of it is the answer.
    plain = finished_generation(qwen3_tokenizer(" 多喝水。 ")["input_ids"], {end}, qwen3_tokenizer, False)
    assert (plain.thinking, plain.answer, plain.thinking_tokens) == ("", "多喝水。", 0)


def test_thinking_tokens_counted_on_token_ids(qwen3_tokenizer):
    ids = qwen3_tokenizer("<think>\n先看症状。\n</think>\n\n多喝水。", add_special_tokens=False)["input_ids"]
    close = ids.index(qwen3_tokenizer.convert_tokens_to_ids("</think>"))

    def decode(part):
        return qwen3_tokenizer.decode(part, skip_special_tokens=True)

    assert count_thinking_tokens(ids, decode, True) == close + 1
    assert count_thinking_tokens(ids[:close], decode, True) == close  # never closed: all thinking
    # A tokenizer where '</think>' takes several tokens (one per character): still exact.
    chars = list("<think>ab</think>cd")
    assert count_thinking_tokens(chars, "".join, True) == len("<think>ab</think>")


def test_cut_at_stop():
    assert cut_at_stop([5, 6, 151645, 151643], {151645, 151643}) == ([5, 6], "stop")
    assert cut_at_stop([5, 6, 7], {151645}) == ([5, 6, 7], "length")


# -- prompts --

def test_chat_template_prompt_and_plain_format_verbatim(qwen3_tokenizer):
    q = "头痛怎么办？"
    for thinking in (False, True):
        expected = qwen3_tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                       add_generation_prompt=True, enable_thinking=thinking)
        assert render_prompt(qwen3_tokenizer, arm(thinking=thinking), q) == expected
    assert render_prompt(qwen3_tokenizer, arm(), q).endswith("<think>\n\n</think>\n\n")
    plain = arm(prompt_format="<human>:{question}\n<bot>:")
    assert render_prompt(qwen3_tokenizer, plain, q) == "<human>:头痛怎么办？\n<bot>:"
    assert prompt_token_ids(qwen3_tokenizer, plain, q) == qwen3_tokenizer("<human>:头痛怎么办？\n<bot>:")["input_ids"]
    with_system = arm(system_prompt="你是医生。")
    assert render_prompt(qwen3_tokenizer, with_system, q).startswith("<|im_start|>system\n你是医生。<|im_end|>")


# -- arms --

def test_arms_from_models(tmp_path):
    models = [CompareModel(name="qwen3", model="Qwen/Qwen3-8B", thinking=[False, True]),
              CompareModel(name="ziya", model="z/ziya", prompt_format="<human>:{question}\n<bot>:",
                           generation=GenerationConfig(temperature=0.9))]
    arms = resolve_arms(models, GenerationConfig(max_new_tokens=100))
    assert [a.name for a in arms] == ["qwen3", "qwen3/think", "ziya"]
    assert (arms[0].generation.temperature, arms[0].generation.top_p, arms[0].generation.max_new_tokens) == (0.7, 0.8,
                                                                                                               100)
    think = arms[1].generation  # Qwen3's thinking sampling, the rest of the arm's settings kept
    assert (think.temperature, think.top_p, think.top_k, think.max_new_tokens) == (0.6, 0.95, 20, 100)
    assert arms[2].generation.temperature == 0.9 and arms[2].generation.max_new_tokens == 512
    with pytest.raises(UserError, match="run:base"):
        resolve_arms([CompareModel(name="x")], GenerationConfig())
    with pytest.raises(UserError, match="no LoRA adapter in"):
        resolve_arms([CompareModel(name="x", model="m", adapter=str(tmp_path))], GenerationConfig())
    with pytest.raises(ValueError, match="prompt_format must be chat_template or contain"):
        CompareModel(name="x", prompt_format="<human>:")
    with pytest.raises(ValueError, match="thinking and system_prompt need"):
        CompareModel(name="x", prompt_format="{question}", thinking=[True])


def test_arms_file(tmp_path):
    path = tmp_path / "arms.yaml"
    path.write_text("- {name: a, model: m1, thinking: [false, true]}\n- {name: b, model: m2, generation: "
                    "{do_sample: false}}\n", encoding="utf-8")
    models = load_compare_models(path)
    assert [m.name for m in models] == ["a", "b"] and models[1].generation.do_sample is False
    path.write_text("- {name: a, model: m1, temprature: 0.5}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"arms.yaml: unknown key 'arms\[0\].temprature'"):
        load_compare_models(path)


def test_engine_choice_names_the_setting(monkeypatch):
    import importlib.util

    import torch

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    local = arm(model="m")
    assert Engines([local], "auto").for_arm(local).name == "transformers"
    with pytest.raises(EngineError, match="evaluate.engine vllm needs the vllm package and a CUDA GPU"):
        Engines([local], "vllm").for_arm(local)


def test_question_files(tmp_path):
    qs = load_questions(ROOT / "data" / "questions" / "zh_everyday.jsonl")
    assert len(qs) == 38 and qs[0].id == "q01" and all(q.reference for q in qs)
    csv = tmp_path / "q.csv"
    csv.write_text("question,reference\n头痛怎么办？,休息\n\n发烧怎么办？,\n", encoding="utf-8")
    assert [(q.id, q.question, q.reference) for q in load_questions(csv)] == [
        ("line2", "头痛怎么办？", "休息"), ("line4", "发烧怎么办？", None)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a"}\n{"id": "x", "quest": "b"}\n', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"bad.jsonl:2: missing or empty field 'question'"):
        load_questions(bad)


# -- the transformers engine on a tiny model --

def test_batched_equals_one_at_a_time_under_greedy(tiny_run):
    questions = [q.question for q in load_questions(ROOT / "data" / "questions" / "zh_everyday.jsonl", 3)]
    engine = LocalEngine("transformers", [str(tiny_run)], batch_size=2)  # a left-padded batch of two, then one alone
    base = str(tiny_run / "base_model")
    for a in (arm(name="tuned", model=base, adapter=str(tiny_run)), arm(name="base", model=base)):
        single = engine.single_stream(a, questions)
        batched, seconds = engine.batched(a, questions)
        assert [g.text for g in batched] == [g.text for g in single]
        assert [g.tokens for g in batched] == [g.tokens for g in single]
        assert seconds > 0
        for g in single:
            assert 0 < g.ttft_seconds <= g.latency_seconds
            assert g.finish_reason in ("stop", "length") and g.thinking_tokens == 0
            assert g.tokens == GREEDY.max_new_tokens or g.finish_reason == "stop"
        if a.adapter:
            tuned = [g.text for g in single]
    assert tuned != [g.text for g in single], "the adapter must change the answers"


# -- the OpenAI-compatible engine against a real loopback server --

def test_openai_engine_streams_thinking_and_timing(openai_server):
    gen = GenerationConfig(max_new_tokens=200, temperature=0.6, top_p=0.95, top_k=20, seed=3)
    think = arm(model="served", thinking=True, generation=gen, base_url=openai_server.url)
    engines = Engines([think], batch_size=2)
    (g,) = engines.for_arm(think).single_stream(think, ["胸口痛怎么办？"])
    assert (g.thinking, g.answer) == ("先想一想", ANSWER)
    assert g.tokens == len(THINKING + ANSWER)  # the server's usage
    assert g.thinking_tokens == len("<think>先想一想</think>")  # streamed chunks up to </think>
    assert g.finish_reason == "stop"
    assert FIRST_CHUNK_DELAY <= g.ttft_seconds <= g.latency_seconds
    path, body = openai_server.requests[-1]
    assert path == "/v1/chat/completions"
    assert body["model"] == "served" and body["messages"] == [{"role": "user", "content": "胸口痛怎么办？"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"], body["seed"]) == (200, 0.6, 0.95,
                                                                                                      20, 3)
    assert body["chat_template_kwargs"] == {"enable_thinking": True} and body["stream"] is True

    capped = arm(model="served", thinking=True, generation=GenerationConfig(max_new_tokens=5),
                 base_url=openai_server.url)
    (g,) = engines.for_arm(capped).single_stream(capped, ["胸口痛怎么办？"])
    assert g.finish_reason == "length" and g.tokens == 5 and g.thinking_tokens == 5
    assert (g.thinking, g.answer) == ("<thin", "")  # cut inside the opening tag: all thinking


def test_openai_plain_format_is_sent_verbatim(openai_server):
    plain = arm(model="ziya", prompt_format="<human>:{question}\n<bot>:", base_url=openai_server.url,
                generation=GenerationConfig(max_new_tokens=50, do_sample=False))
    (g,) = Engines([plain]).for_arm(plain).single_stream(plain, ["头痛怎么办？"])
    path, body = openai_server.requests[-1]
    assert path == "/v1/completions" and body["prompt"] == "<human>:头痛怎么办？\n<bot>:"
    assert body["temperature"] == 0.0 and "top_k" not in body  # greedy
    assert g.text == ANSWER and g.thinking_tokens == 0


def test_comparison_files_and_table_follow_from_answers(openai_server, tmp_path):
    models = [CompareModel(name="served", model="qwen", thinking=[False, True], base_url=openai_server.url)]
    arms = resolve_arms(models, GenerationConfig(max_new_tokens=12, do_sample=False))
    questions = [Question("a", "头痛怎么办？"), Question("b", "发烧怎么办？"), Question("c", "胸痛怎么办？")]
    engines = Engines(arms, batch_size=2)
    summary = run_comparison(arms, questions, tmp_path / "cmp", engines, log=lambda *_: None)
    rows = [json.loads(x) for x in (tmp_path / "cmp" / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 and set(rows[0]) == {
        "arm", "model", "adapter", "thinking", "question_id", "question", "answer", "thinking_text", "answer_tokens",
        "thinking_tokens", "latency_seconds", "ttft_seconds", "finish_reason"}
    assert rows[0]["answer"] == ANSWER and rows[0]["finish_reason"] == "stop"
    # Thinking arm with 12 tokens: the thinking never closes, so the answer is empty and it is capped.
    assert rows[3]["arm"] == "served/think" and rows[3]["answer"] == "" and rows[3]["finish_reason"] == "length"
    assert json.loads((tmp_path / "cmp" / "summary.json").read_text()) == summary
    assert summary["engine"] == "openai"
    for s in summary["arms"]:
        assert set(s) >= {"arm", "model", "adapter", "thinking", "prompt_format", "generation", "questions",
                          "total_seconds", "mean_seconds", "total_tokens", "mean_tokens", "tokens_per_second",
                          "answer_tokens", "thinking_tokens", "length_capped", "length_capped_share",
                          "mean_ttft_seconds", "batched_tokens_per_second"}
        mine = [r for r in rows if r["arm"] == s["arm"]]
        total = sum(r["latency_seconds"] for r in mine)
        tokens = sum(r["answer_tokens"] + r["thinking_tokens"] for r in mine)
        assert s["questions"] == 3 and s["total_seconds"] == pytest.approx(total)
        assert s["mean_seconds"] == pytest.approx(total / 3)
        assert s["total_tokens"] == tokens and s["mean_tokens"] == pytest.approx(tokens / 3)
        assert s["tokens_per_second"] == pytest.approx(tokens / total)
        assert s["thinking_tokens"] == sum(r["thinking_tokens"] for r in mine)
        assert s["length_capped"] == sum(r["finish_reason"] == "length" for r in mine)
        assert s["mean_ttft_seconds"] == pytest.approx(sum(r["ttft_seconds"] for r in mine) / 3)
        assert s["batched_tokens_per_second"] > 0
    no_think, think = summary["arms"]
    assert (no_think["thinking_tokens"], no_think["length_capped_share"]) == (0, 0.0)
    assert (think["answer_tokens"], think["thinking_tokens"], think["length_capped_share"]) == (0, 36, 1.0)
    table = (tmp_path / "cmp" / "table.md").read_text(encoding="utf-8")
    assert table == markdown_table(summary["arms"])
    assert table.splitlines()[0] == "| | served | served/think |"
    assert f"| total tokens | {no_think['total_tokens']} | 36 |" in table
