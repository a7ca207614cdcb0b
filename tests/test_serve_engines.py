"""Engine choice (vLLM only with the package, a CUDA GPU and an adapter it can load), the vLLM stream handling,
and the transformers stream's end and errors, on CPU with fakes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from types import SimpleNamespace

import pytest

from medtune.generate import loading, transformers_engine, vllm_engine
from medtune.generate.sampling import Generation
from medtune.errors import UserError
from medtune.generate.vllm_engine import VllmStream, vllm_lora_rank
from medtune.generate.loading import choose_engine, vllm_refusal
from medtune.listen import is_loopback as _is_loopback
from medtune.serve import _fit_context
from medtune.serve.api import ServeSettings
from tests.conftest import ROOT


def _machine(monkeypatch, has_vllm: bool, has_cuda: bool) -> None:
    import torch

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if has_vllm else None) if name == "vllm" else real_find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)


@pytest.mark.parametrize("has_vllm, has_cuda, expected", [
    (False, False, "transformers"), (True, False, "transformers"), (False, True, "transformers"), (True, True, "vllm")])
def test_auto_picks_vllm_only_with_the_package_and_a_gpu(monkeypatch, has_vllm, has_cuda, expected):
    _machine(monkeypatch, has_vllm, has_cuda)
    assert choose_engine("auto") == expected
    assert choose_engine("transformers") == "transformers"
    if expected == "vllm":
        assert choose_engine("vllm") == "vllm"
    else:
        with pytest.raises(UserError, match="--engine vllm needs the vllm package and a CUDA GPU"):
            choose_engine("vllm")
    with pytest.raises(UserError, match="--engine must be one of"):
        choose_engine("llama.cpp")


def _adapter(tmp_path, name: str, **config) -> str:
    path = tmp_path / name
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "x", **config}))
    return str(path)


def test_an_adapter_that_trains_lm_head_falls_back_to_transformers_and_says_why(monkeypatch, tmp_path):
    _machine(monkeypatch, has_vllm=True, has_cuda=True)
    plain = _adapter(tmp_path, "plain", target_modules=["q_proj"])
    full_head = _adapter(tmp_path, "head", modules_to_save=["lm_head"])
    huge = _adapter(tmp_path, "huge", r=1024)
    assert vllm_refusal([plain]) is None
    assert "trains lm_head in full (modules_to_save)" in vllm_refusal([plain, full_head])
    assert "LoRA rank 1024" in vllm_refusal([huge])
    said = []
    assert choose_engine("auto", [plain], log=said.append) == "vllm" and said == []
    for requested in ("auto", "vllm"):  # asked for by name too: a plain note and the fallback, not a crash
        said.clear()
        assert choose_engine(requested, [plain, full_head], log=said.append) == "transformers"
        assert len(said) == 1 and "not using vLLM" in said[0] and "modules_to_save" in said[0]
        assert "medtune merge" in said[0]


def test_load_generator_follows_the_choice(monkeypatch, tmp_path):
    # A run whose adapter trains lm_head in full must not reach the vLLM loader.
    _machine(monkeypatch, has_vllm=True, has_cuda=True)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    lora_run = tmp_path / "run"
    lora_run.mkdir()
    (lora_run / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": str(tmp_path / "base")}))
    loaded = []
    monkeypatch.setattr(vllm_engine.VllmGenerator, "load", classmethod(lambda cls, *a, **k: loaded.append("vllm")))
    monkeypatch.setattr(vllm_engine.AsyncVllmGenerator, "load",
                        classmethod(lambda cls, *a, **k: loaded.append("async-vllm")))
    monkeypatch.setattr(transformers_engine.TransformersGenerator, "load",
                        classmethod(lambda cls, *a, **k: loaded.append("transformers")))
    loading.load_generator(lora_run, engine="auto")
    loading.load_generator(lora_run, engine="auto", serving=True)
    loading.load_generator(lora_run, engine="transformers")
    config = json.loads((lora_run / "adapter_config.json").read_text())
    monkeypatch.setattr(loading, "read_adapter_config", lambda a: {**config, "modules_to_save": ["lm_head"]})
    loading.load_generator(lora_run, engine="vllm", serving=True)
    assert loaded == ["vllm", "async-vllm", "transformers", "transformers"]


def test_vllm_lora_rank():
    assert [vllm_lora_rank(r) for r in (1, 8, 9, 16, 64, 300)] == [8, 8, 16, 16, 64, 320]
    with pytest.raises(UserError, match="above what vLLM supports"):
        vllm_lora_rank(1024)


class FakeAsyncLLM:
    """What vLLM's AsyncLLMEngine.generate yields: RequestOutputs with the text so far (cumulative)."""

    def __init__(self, texts, token_ids, finish_reason):
        self.texts, self.token_ids, self.finish_reason = texts, token_ids, finish_reason
        self.calls, self.aborted = [], []

    async def generate(self, prompt, params, request_id, lora_request=None):
        self.calls.append((prompt, params, request_id, lora_request))
        for i, text in enumerate(self.texts):
            last = i == len(self.texts) - 1
            yield SimpleNamespace(finished=last, outputs=[SimpleNamespace(
                text=text, token_ids=self.token_ids[:i + 1], finish_reason=self.finish_reason if last else None)])

    async def abort(self, request_id):
        self.aborted.append(request_id)


@pytest.mark.parametrize("finish_reason, token_ids, tokens", [
    ("length", [101, 102, 103, 104], 4),   # cut at max_tokens: every token counts
    ("stop", [101, 102, 103, 7], 3)])      # ended by the stop token 7, which is not counted
def test_vllm_stream_passes_on_new_text_and_the_finish(qwen3_tokenizer, finish_reason, token_ids, tokens):
    llm = FakeAsyncLLM(["多", "多喝", "多喝", "多喝水。"], token_ids, finish_reason)
    lora = SimpleNamespace(lora_name="run")
    owner = SimpleNamespace(stop_ids=[7], tokenizer=qwen3_tokenizer)
    stream = VllmStream(llm, [1, 2, 3], "params", lora, owner, enable_thinking=False)

    async def read():
        pieces = [p async for p in stream]
        await stream.aclose()
        return pieces

    assert asyncio.run(read()) == ["多", "喝", "水。"]
    assert (stream.result.tokens, stream.result.finish_reason) == (tokens, finish_reason)
    assert stream.result.text == qwen3_tokenizer.decode(token_ids[:tokens])
    prompt, params, request_id, lora_request = llm.calls[0]
    assert prompt == {"prompt_token_ids": [1, 2, 3]} and params == "params" and lora_request is lora
    assert llm.aborted == [request_id]


class FakeGenerator:
    """Feeds the streamer the way generate() does (the prompt first, then one token at a time), then fails
    or returns."""

    def __init__(self, tokenizer, fail: bool):
        self.tokenizer, self.fail = tokenizer, fail

    def generate_one(self, prompt_ids, sampling, enable_thinking, stop=None, streamer=None):
        import torch

        streamer.put(torch.tensor([prompt_ids]))
        for t in self.tokenizer("多喝水。", add_special_tokens=False)["input_ids"]:
            streamer.put(torch.tensor([t]))
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        streamer.end()
        return Generation("多喝水。", "", "多喝水。", 3, 0, "stop")


@pytest.mark.parametrize("fail", [False, True])
def test_transformers_stream_sets_the_result_before_the_reader_ends_and_passes_errors_on(qwen3_tokenizer, fail):
    async def read():
        stream = transformers_engine.TransformersStream(FakeGenerator(qwen3_tokenizer, fail), [1, 2], None, False)
        pieces = []
        try:
            async for p in stream:
                pieces.append(p)
        except RuntimeError as e:
            return pieces, stream.result, str(e)
        return pieces, stream.result, None

    pieces, result, error = asyncio.run(asyncio.wait_for(read(), 10))
    if fail:
        assert error == "CUDA out of memory" and result is None
    else:
        assert "".join(pieces) == "多喝水。" and error is None and result.answer == "多喝水。"


def test_context_limits_fit_the_model():
    s = _fit_context(ServeSettings(max_tokens=1024), 4096, None)
    assert s.max_input_tokens == 3072
    assert _fit_context(ServeSettings(max_tokens=1024), 4096, 2000).max_input_tokens == 2000
    with pytest.raises(UserError, match="--max-input-tokens 4000 plus --max-tokens 1024"):
        _fit_context(ServeSettings(max_tokens=1024), 4096, 4000)
    with pytest.raises(UserError, match="leaves no room"):
        _fit_context(ServeSettings(max_tokens=4096), 4096, None)


def test_loopback_hosts():
    assert all(_is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(_is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "example.org", "::"))


@pytest.mark.parametrize("modules_to_save, promises_vllm", [([], True), (["lm_head"], False)])
def test_the_model_card_promises_vllm_only_for_adapters_vllm_can_load(tmp_path, modules_to_save, promises_vllm):
    from medtune.config import load_config
    from medtune.train.stage import model_card

    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      [f"output_dir={tmp_path}", f"lora.modules_to_save={json.dumps(modules_to_save)}"])
    results = {"trainable_params": 10, "total_params": 100, "trainable_percent": 10.0, "global_step": 2}
    card = model_card(cfg, "base", results, None, {})
    assert ("vLLM loads this directory as a LoRA adapter unchanged" in card) is promises_vllm
    assert ("trains lm_head in full, which vLLM's LoRA loading does not support: merge it first" in card) \
        is not promises_vllm


def test_the_chat_page_escapes_the_model_id():
    from medtune.redflags import DISCLAIMER
    from medtune.serve.api import _chat_page

    page = _chat_page('<script>alert("x")</script>')
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert DISCLAIMER.replace("<", "&lt;").replace(">", "&gt;") in page and "{{" not in page
