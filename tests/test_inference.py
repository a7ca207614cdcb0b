"""Model sources, Qwen3 thinking split, sampling defaults and the streaming transformers engine."""

from __future__ import annotations

import json
import threading

import pytest

from medtune.errors import UserError
from medtune.inference import (ThinkSplitter, chat_prompt_ids, resolve_model_source, sampling_for,
                               split_thinking)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# -- thinking split --

THINKING_CASES = [
    # (enable_thinking, generated text, expected thinking, expected answer)
    (True, "<think>\n先想一想。\n</think>\n\n多喝水，注意休息。", "先想一想。\n", "多喝水，注意休息。"),
    (True, "reasoning without an opening tag</think>\n\nthe answer", "reasoning without an opening tag", "the answer"),
    (True, "<think>\ncut off while thinking", "cut off while thinking", ""),       # no closing tag: all thinking
    (True, "no tags at all", "no tags at all", ""),
    (False, "多喝水，注意休息。", "", "多喝水，注意休息。"),
    (False, "  <think>\nunasked thinking\n</think>\n\nanswer", "unasked thinking\n", "answer"),
    (False, "an answer that mentions </think> as text", "", "an answer that mentions </think> as text"),
    (False, "<thi", "", "<thi"),                                                     # a partial tag that never completes
    (True, "", "", ""),
]


@pytest.mark.parametrize("thinking, text, want_thinking, want_answer", THINKING_CASES)
def test_split_thinking_whole_text(thinking, text, want_thinking, want_answer):
    assert split_thinking(text, thinking) == (want_thinking, want_answer)


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
    result = tiny_engine.generate(ids, sampling_for(False, 12, seed=7), pieces.append)
    assert result.completion_tokens == 12 and result.finish_reason == "length"
    assert len(pieces) > 1  # streamed, not handed over at the end
    # The same seed, decoded in one go, gives exactly the streamed text.
    torch.manual_seed(7)
    out = tiny_engine.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=True, temperature=0.7,
                                     top_p=0.8, top_k=20, eos_token_id=tiny_engine.eos_token_ids,
                                     pad_token_id=tiny_engine.tokenizer.pad_token_id)
    assert "".join(pieces) == tiny_engine.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def test_greedy_is_repeatable_and_stop_ends_generation_early(tiny_engine):
    ids = tiny_engine.prompt_ids([{"role": "user", "content": "hello"}], enable_thinking=False)
    greedy = sampling_for(False, 6, temperature=0.0)
    first, second = [], []
    tiny_engine.generate(ids, greedy, first.append)
    tiny_engine.generate(ids, greedy, second.append)
    assert first == second

    stop = threading.Event()
    result = tiny_engine.generate(ids, sampling_for(False, 200, seed=1), lambda piece: stop.set(), stop)
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens < 5
