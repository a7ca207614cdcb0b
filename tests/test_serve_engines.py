"""Engine selection (vLLM only with the package and a CUDA GPU) and the vLLM stream handling, on CPU."""

from __future__ import annotations

import asyncio
import importlib.util
from types import SimpleNamespace

import pytest

from medtune.errors import UserError
from medtune.serve import _fit_context, _is_loopback
from medtune.serve.api import ServeSettings
from medtune.serve.engines import VllmCompletion, choose_engine, vllm_lora_rank


def test_auto_picks_transformers_without_vllm_or_gpu(monkeypatch):
    import torch

    real_find_spec = importlib.util.find_spec
    for has_vllm, has_cuda, expected in [(False, False, "transformers"), (True, False, "transformers"),
                                         (False, True, "transformers"), (True, True, "vllm")]:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, v=has_vllm: object() if name == "vllm" and v else
                            (None if name == "vllm" else real_find_spec(name, *a)))
        monkeypatch.setattr(torch.cuda, "is_available", lambda c=has_cuda: c)
        assert choose_engine("auto") == expected
        assert choose_engine("transformers") == "transformers"
        if expected == "vllm":
            assert choose_engine("vllm") == "vllm"
        else:
            with pytest.raises(UserError, match="needs the vllm package and a CUDA GPU"):
                choose_engine("vllm")
    with pytest.raises(UserError, match="--engine must be one of"):
        choose_engine("llama.cpp")


def test_on_this_machine_auto_is_transformers():
    if importlib.util.find_spec("vllm") is None:
        assert choose_engine("auto") == "transformers"


def test_vllm_lora_rank():
    assert [vllm_lora_rank(r) for r in (1, 8, 9, 16, 64, 300)] == [8, 8, 16, 16, 64, 320]
    with pytest.raises(UserError, match="above what vLLM supports"):
        vllm_lora_rank(1024)


class FakeAsyncLLM:
    """What vLLM's AsyncLLMEngine.generate yields: RequestOutputs with the text so far (cumulative)."""

    def __init__(self, texts, finish_reason):
        self.texts, self.finish_reason = texts, finish_reason
        self.calls, self.aborted = [], []

    async def generate(self, prompt, params, request_id, lora_request=None):
        self.calls.append((prompt, params, request_id, lora_request))
        for i, text in enumerate(self.texts):
            last = i == len(self.texts) - 1
            yield SimpleNamespace(finished=last, outputs=[SimpleNamespace(
                text=text, token_ids=list(range(i + 1)), finish_reason=self.finish_reason if last else None)])

    async def abort(self, request_id):
        self.aborted.append(request_id)


@pytest.mark.parametrize("finish_reason, expected", [("length", "length"), ("stop", "stop")])
def test_vllm_completion_passes_on_new_text_and_the_finish(finish_reason, expected):
    llm = FakeAsyncLLM(["多", "多喝", "多喝", "多喝水。"], finish_reason)
    lora = SimpleNamespace(lora_name="run")
    completion = VllmCompletion(llm, [1, 2, 3], "params", lora)

    async def read():
        pieces = [p async for p in completion]
        await completion.aclose()
        return pieces

    assert asyncio.run(read()) == ["多", "喝", "水。"]
    assert (completion.result.completion_tokens, completion.result.finish_reason) == (4, expected)
    prompt, params, request_id, lora_request = llm.calls[0]
    assert prompt == {"prompt_token_ids": [1, 2, 3]} and params == "params" and lora_request is lora
    assert llm.aborted == [request_id]


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
