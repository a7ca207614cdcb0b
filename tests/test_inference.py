"""medtune.generate: model sources, the thinking split, sampling defaults, and the transformers generator
(streamed, batched, cancelled)."""

from __future__ import annotations

import json
import threading

import pytest

from medtune.errors import UserError
from medtune.text import THINKING_RULE, ThinkSplitter, count_thinking_tokens, split_thinking
from medtune.generate.sampling import chat_prompt_ids, sampling_for
from medtune.generate.source import resolve_model_source

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# -- thinking split --

THINKING_CASES = [
    # (enable_thinking, generated text, expected thinking, expected answer)
    (True, "<think>\n先想一想。\n</think>\n\n多喝水，注意休息。", "先想一想。", "多喝水，注意休息。"),
    (True, "reasoning without an opening tag</think>\n\nthe answer", "reasoning without an opening tag", "the answer"),
    (True, "<think>\ncut off while thinking", "cut off while thinking", ""),       # no closing tag: all thinking
    (True, "no tags at all", "no tags at all", ""),
    (True, "<think>a</think>b</think>c", "a", "b</think>c"),                        # the FIRST </think> closes
    (True, " \n <think> \n 想 \n </think> \n 答 \n ", "想", "答"),                   # whitespace around each part
    (True, "<think>\n\n</think>\n\n答", "", "答"),                                    # an empty block
    (False, "多喝水，注意休息。", "", "多喝水，注意休息。"),                            # no block
    (False, "  <think>\nunasked thinking\n</think>\n\nanswer", "unasked thinking", "answer"),  # off, but emitted
    (False, "<think>\n\n</think>\n\n多喝水。", "", "多喝水。"),                       # the empty no-think block
    (False, "<think>unasked and never closed", "unasked and never closed", ""),
    (False, "an answer that mentions </think> as text", "", "an answer that mentions </think> as text"),
    (False, "答案 <think>x</think> 后文", "", "答案 <think>x</think> 后文"),          # a block not at the start
    (False, "<thi", "", "<thi"),                                                     # a partial tag that never completes
    (True, "想到一半 </thi", "想到一半 </thi", ""),                                    # ... inside the thinking part
    (True, "", "", ""),
]


@pytest.mark.parametrize("thinking, text, want_thinking, want_answer", THINKING_CASES)
def test_split_thinking_whole_text(thinking, text, want_thinking, want_answer):
    assert split_thinking(text, thinking) == (want_thinking, want_answer)


@pytest.mark.parametrize("thinking, text, want_thinking, want_answer", THINKING_CASES)
def test_split_thinking_agrees_with_a_regex_reading_of_the_rule(thinking, text, want_thinking, want_answer):
    # A second implementation of THINKING_RULE, written from its wording with one regular expression.
    import re

    assert "first '</think>'" in THINKING_RULE
    m = re.fullmatch(r"\s*(?:(<think>)|)(.*?)(</think>(.*))?", text, re.S)
    opened, head, closed, tail = m.group(1), m.group(2), m.group(3), m.group(4)
    if not (thinking or opened):
        expected = ("", text.strip())
    elif closed is None:
        expected = (head.strip(), "")
    else:
        expected = (head.strip(), tail.strip())
    assert split_thinking(text, thinking) == expected == (want_thinking, want_answer)


def test_thinking_tokens_follow_the_same_rule():
    chars = list("<think>ab</think>cd")
    assert count_thinking_tokens(chars, "".join, True) == len("<think>ab</think>")
    assert count_thinking_tokens(chars, "".join, False) == len("<think>ab</think>")  # emitted unasked: still thinking
    assert count_thinking_tokens(list("ab</think>cd"), "".join, False) == 0             # off, no opening tag: answer
    assert count_thinking_tokens(list("ab</think>cd"), "".join, True) == len("ab</think>")
    assert count_thinking_tokens(list("<think>ab"), "".join, False) == len("<think>ab")  # never closed: all


@pytest.mark.parametrize("thinking, text, want_thinking, want_answer", THINKING_CASES)
def test_split_thinking_streamed_one_character_at_a_time(thinking, text, want_thinking, want_answer):
    # Tags arrive split across pieces; the streamed parts must add up to the whole-text split.
    splitter = ThinkSplitter(thinking)
    got_thinking, got_answer = "", ""
    for ch in text:
        t, a = splitter.feed(ch)
        got_thinking += t
        got_answer += a
    t, a = splitter.flush()
    assert (got_thinking + t, got_answer + a) == (want_thinking, want_answer)
    assert "<think>" not in got_thinking + t and "</think>" not in got_thinking + t


def test_sampling_defaults_are_qwen3s_and_request_values_override():
    plain, thinking = sampling_for(False, 64), sampling_for(True, 64)
    assert (plain.temperature, plain.top_p, plain.top_k) == (0.7, 0.8, 20)
    assert (thinking.temperature, thinking.top_p, thinking.top_k) == (0.6, 0.95, 20)
    custom = sampling_for(False, 8, temperature=0.0, top_p=0.5, top_k=0, seed=3)
    assert (custom.max_tokens, custom.temperature, custom.top_p, custom.top_k, custom.seed) == (8, 0.0, 0.5, 0, 3)


# -- where the model is --

def test_resolve_run_directory_and_model_directory(lora_run):
    source = resolve_model_source(lora_run)
    assert source.adapter == lora_run
    assert source.base == str(lora_run / "base_model")
    assert source.model_id == "tiny-run"
    plain = resolve_model_source(lora_run / "base_model")
    assert (plain.base, plain.adapter, plain.model_id) == (str(lora_run / "base_model"), None, "base_model")
    hub = resolve_model_source("Qwen/Qwen3-8B")
    assert (hub.base, hub.adapter, hub.model_id) == ("Qwen/Qwen3-8B", None, "Qwen/Qwen3-8B")


def test_resolve_relative_base_is_taken_from_the_run_directory(tmp_path, lora_run):
    run = tmp_path / "moved"
    run.mkdir()
    (run / "base_model").mkdir()
    (run / "base_model" / "config.json").write_text("{}")
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base_model"}))
    assert resolve_model_source(run).base == str(run / "base_model")


@pytest.mark.parametrize("content, message", [
    ('{\n  "r": 4,\n  "base_model_name_or_path": \n}', "line 4: invalid JSON"),
    ('{"r": 4}', "field 'base_model_name_or_path' is missing"),
    ('{"base_model_name_or_path": "/nowhere/base"}', "names /nowhere/base, which does not exist"),
])
def test_resolve_bad_adapter_config_names_file_line_and_field(tmp_path, content, message):
    (tmp_path / "adapter_config.json").write_text(content)
    with pytest.raises(UserError) as e:
        resolve_model_source(tmp_path)
    assert str(tmp_path / "adapter_config.json") in str(e.value) and message in str(e.value)


def test_resolve_rejects_paths_that_are_not_models(tmp_path):
    with pytest.raises(UserError, match="neither a run directory"):
        resolve_model_source(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        resolve_model_source(tmp_path / "missing")


# -- the engine --

def test_prompt_is_the_tokenizers_own_non_thinking_template(tiny_engine):
    messages = [{"role": "user", "content": "头疼怎么办？"}]
    ids = tiny_engine.prompt_ids(messages, enable_thinking=False)
    text = tiny_engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                     enable_thinking=False)
    assert tiny_engine.tokenizer.decode(ids) == text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    thinking_ids = chat_prompt_ids(tiny_engine.tokenizer, messages, enable_thinking=True)
    assert tiny_engine.tokenizer.decode(thinking_ids).endswith("<|im_start|>assistant\n")


def test_streamed_text_is_the_decoded_generation(tiny_engine):
    import torch

    ids = tiny_engine.prompt_ids([{"role": "user", "content": "你好"}], enable_thinking=False)
    pieces = []
    result = tiny_engine.generate_one(ids, sampling_for(False, 12, seed=7), on_text=pieces.append)
    assert result.tokens == 12 and result.finish_reason == "length"
    assert 0 < result.ttft_seconds < result.latency_seconds
    assert len(pieces) > 1  # streamed, not handed over at the end
    # The same seed, decoded in one go, gives exactly the streamed text.
    torch.manual_seed(7)
    out = tiny_engine.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=True, temperature=0.7,
                                     top_p=0.8, top_k=20, eos_token_id=tiny_engine.stop_ids,
                                     pad_token_id=tiny_engine.tokenizer.pad_token_id)
    assert "".join(pieces) == tiny_engine.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    assert result.text == "".join(pieces)


def test_greedy_is_repeatable_and_stop_ends_generation_early(tiny_engine):
    ids = tiny_engine.prompt_ids([{"role": "user", "content": "hello"}], enable_thinking=False)
    greedy = sampling_for(False, 6, temperature=0.0)
    first, second = [], []
    tiny_engine.generate_one(ids, greedy, on_text=first.append)
    tiny_engine.generate_one(ids, greedy, on_text=second.append)
    assert first == second

    stop = threading.Event()
    result = tiny_engine.generate_one(ids, sampling_for(False, 200, seed=1), on_text=lambda piece: stop.set(), stop=stop)
    assert result.finish_reason == "cancelled"
    assert result.tokens < 5


def test_batched_chat_generation_equals_one_at_a_time_under_greedy(tiny_engine):
    # Left padding must not change a greedy answer: batch of three prompts of different lengths vs one by one.
    conversations = [[{"role": "user", "content": q}] for q in ("你好", "头痛三天了，怎么办？", "hi")]
    greedy = sampling_for(False, 5, temperature=0.0)
    batched = tiny_engine.generate(conversations, greedy, enable_thinking=False, batch_size=3)
    alone = [tiny_engine.generate_one(tiny_engine.prompt_ids(c, False), greedy) for c in conversations]
    assert [b.text for b in batched] == [a.text for a in alone]
    assert [b.tokens for b in batched] == [a.tokens for a in alone] == [5, 5, 5]
