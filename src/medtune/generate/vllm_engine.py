"""The vLLM engines (batched and streamed; LoRA adapters unmerged through LoRARequest).

vllm cannot be installed on CPU machines: these are written against vLLM's documented API (v0.11+:
`EngineArgs`/`LLMEngine` step loop, `AsyncEngineArgs`/`AsyncLLMEngine.generate`/`abort`, `SamplingParams`,
`LoRARequest(name, int_id, path)`), and only their decisions and stream handling are tested there."""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

from medtune.errors import UserError
from medtune.generate.sampling import Generation, Sampling, chat_prompt_ids, finished_generation, stop_ids_of
from medtune.generate.source import ModelSource, read_adapter_config

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of this rank."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise UserError(f"the adapter's LoRA rank {rank} is above what vLLM supports ({VLLM_LORA_RANKS[-1]}); "
                    "use the transformers engine or merge it first (medtune merge)")


def _vllm_engine_args(source: ModelSource, adapters: list, dtype: str, max_model_len: int | None) -> dict:
    """Arguments shared by vLLM's EngineArgs and AsyncEngineArgs: LoRA slots sized for the largest adapter."""
    tokenizer = source.adapter if source.adapter and (source.adapter / "tokenizer_config.json").exists() \
        else source.base
    lora = {}
    if adapters:
        rank = max(int(read_adapter_config(a).get("r", 0)) for a in adapters)
        lora = dict(enable_lora=True, max_loras=1, max_lora_rank=vllm_lora_rank(rank))
    return dict(model=source.base, tokenizer=str(tokenizer), dtype=dtype, max_model_len=max_model_len, **lora)


def _vllm_params(sampling: Sampling, stop_ids: list[int], seed: int | None):
    from vllm import SamplingParams

    chosen = dict(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1) \
        if sampling.temperature > 0 else dict(temperature=0.0)
    return SamplingParams(n=1, max_tokens=sampling.max_tokens, repetition_penalty=sampling.repetition_penalty,
                          seed=seed, stop_token_ids=list(stop_ids), skip_special_tokens=True, **chosen)


def _tokenizer_and_stops(tokenizer_dir: str, base: str):
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    try:
        config = GenerationConfig.from_pretrained(base)
    except OSError:  # a model without generation_config.json
        config = None
    return tokenizer, stop_ids_of(config, tokenizer)


class VllmGenerator:
    """vLLM's offline LLMEngine (GPU): LoRA adapters unmerged through LoRARequest, switched with `use_adapter`.

    `generate_one` adds one request and steps the engine until it finishes, noting the first step that
    produced a token (a real time to first token); `generate_ids` adds every request and lets vLLM schedule.
    """

    name = "vllm"

    def __init__(self, engine, tokenizer, stop_ids: list[int], model_id: str, max_model_len: int):
        self.engine, self.tokenizer, self.stop_ids = engine, tokenizer, stop_ids
        self.model_id, self.max_model_len = model_id, max_model_len
        self._loras: dict[str, object] = {}
        self._lora = None
        self._request = 0

    @classmethod
    def load(cls, source: ModelSource, adapters: list, dtype: str = "auto",
             max_model_len: int | None = None) -> "VllmGenerator":
        from vllm import EngineArgs, LLMEngine

        args = _vllm_engine_args(source, adapters, dtype, max_model_len)
        engine = LLMEngine.from_engine_args(EngineArgs(**args))
        tokenizer, stops = _tokenizer_and_stops(args["tokenizer"], source.base)
        generator = cls(engine, tokenizer, stops, source.model_id, engine.model_config.max_model_len)
        if source.adapter is not None:
            generator._lora = generator._lora_request(str(source.adapter))
        return generator

    def close(self) -> None:
        import gc

        import torch

        self.engine = None
        gc.collect()
        torch.cuda.empty_cache()

    def prompt_ids(self, messages: list[dict], enable_thinking: bool) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages, enable_thinking)

    def _lora_request(self, adapter: str):
        from vllm.lora.request import LoRARequest

        if adapter not in self._loras:
            self._loras[adapter] = LoRARequest(f"adapter{len(self._loras) + 1}", len(self._loras) + 1, adapter)
        return self._loras[adapter]

    @contextlib.contextmanager
    def use_adapter(self, adapter: str | Path | None):
        previous, self._lora = self._lora, self._lora_request(str(adapter)) if adapter is not None else None
        try:
            yield self
        finally:
            self._lora = previous

    def generate(self, conversations: list[list[dict]], sampling: Sampling, enable_thinking: bool = False,
                 batch_size: int = 8) -> list[Generation]:
        prompts = [self.prompt_ids(messages, enable_thinking) for messages in conversations]
        return self.generate_ids(prompts, sampling, enable_thinking)

    def generate_ids(self, prompts: list[list[int]], sampling: Sampling, enable_thinking: bool = False,
                     batch_size: int = 8) -> list[Generation]:
        """All prompts at once (vLLM schedules them); request i is seeded with sampling.seed + i."""
        return self._run(prompts, sampling, enable_thinking, timed=False)

    def generate_one(self, prompt_ids: list[int], sampling: Sampling, enable_thinking: bool = False,
                     on_text=None, stop=None, streamer=None) -> Generation:
        if on_text is not None or stop is not None or streamer is not None:
            raise UserError("the offline vLLM engine does not stream; serve with load_generator(serving=True)")
        return self._run([prompt_ids], sampling, enable_thinking, timed=True)[0]

    def _run(self, prompts: list[list[int]], sampling: Sampling, enable_thinking: bool,
             timed: bool) -> list[Generation]:
        started = time.perf_counter()
        ids = {}
        for k, prompt in enumerate(prompts):
            self._request += 1
            ids[str(self._request)] = k
            seed = sampling.seed + k if sampling.seed is not None else None
            self.engine.add_request(str(self._request), {"prompt_token_ids": prompt},
                                    _vllm_params(sampling, self.stop_ids, seed), lora_request=self._lora)
        first: dict[str, float] = {}
        done: dict[str, tuple] = {}
        while self.engine.has_unfinished_requests():
            for output in self.engine.step():
                if output.request_id not in first and output.outputs and output.outputs[0].token_ids:
                    first[output.request_id] = time.perf_counter()
                if output.finished:
                    done[output.request_id] = (list(output.outputs[0].token_ids), time.perf_counter())
        out: list[Generation | None] = [None] * len(prompts)
        for rid, k in ids.items():
            token_ids, ended = done[rid]
            timing = dict(latency_seconds=ended - started,
                          ttft_seconds=first[rid] - started if rid in first else None) if timed else {}
            out[k] = finished_generation(token_ids, self.stop_ids, self.tokenizer, enable_thinking, **timing)
        return out


class AsyncVllmGenerator:
    """vLLM's AsyncLLMEngine for the server: continuous batching, the run's LoRA adapter applied per request."""

    name = "vllm"

    def __init__(self, llm, tokenizer, stop_ids: list[int], model_id: str, lora_request, max_model_len: int):
        self.llm, self.tokenizer, self.stop_ids = llm, tokenizer, stop_ids
        self.model_id, self.lora_request, self.max_model_len = model_id, lora_request, max_model_len

    @classmethod
    def load(cls, source: ModelSource, adapters: list, dtype: str = "auto",
             max_model_len: int | None = None) -> "AsyncVllmGenerator":
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.lora.request import LoRARequest

        args = _vllm_engine_args(source, adapters, dtype, max_model_len)
        llm = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**args))
        tokenizer, stops = _tokenizer_and_stops(args["tokenizer"], source.base)
        lora = LoRARequest(source.model_id, 1, str(source.adapter)) if source.adapter is not None else None
        return cls(llm, tokenizer, stops, source.model_id, lora, llm.model_config.max_model_len)

    def prompt_ids(self, messages: list[dict], enable_thinking: bool) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages, enable_thinking)

    def stream(self, prompt_ids: list[int], sampling: Sampling, enable_thinking: bool = False) -> "VllmStream":
        params = _vllm_params(sampling, self.stop_ids, sampling.seed)
        return VllmStream(self.llm, prompt_ids, params, self.lora_request, self, enable_thinking)


class VllmStream:
    """One vLLM request read as a stream of text pieces (vLLM reports the text so far; we pass on what is new)."""

    def __init__(self, llm, prompt_ids: list[int], params, lora_request, generator, enable_thinking: bool):
        self.llm, self.prompt_ids, self.params, self.lora_request = llm, prompt_ids, params, lora_request
        self.generator, self.enable_thinking = generator, enable_thinking
        self.request_id = f"medtune-{uuid.uuid4().hex}"
        self.result: Generation | None = None

    async def __aiter__(self):
        sent = 0
        # A TokensPrompt is a TypedDict: {"prompt_token_ids": [...]}.
        async for out in self.llm.generate({"prompt_token_ids": self.prompt_ids}, self.params, self.request_id,
                                           lora_request=self.lora_request):
            choice = out.outputs[0]
            if len(choice.text) > sent:
                yield choice.text[sent:]
                sent = len(choice.text)
            if out.finished:
                self.result = finished_generation(list(choice.token_ids), self.generator.stop_ids,
                                                  self.generator.tokenizer, self.enable_thinking)
                self.result.finish_reason = "length" if choice.finish_reason == "length" else "stop"

    async def aclose(self) -> None:
        await self.llm.abort(self.request_id)  # a no-op for a finished request
