"""Generation engines: transformers (here), vLLM (when installed with CUDA) and any OpenAI-compatible endpoint.

Each engine answers a list of questions for one arm in two ways:
- `single_stream`: one question at a time, as the reference table was measured: per answer the latency
  and a real time to first token (a streamer's first token, vLLM's first step that produced a token,
  or the endpoint's first streamed chunk).
- `batched`: all questions at once (batches of `batch_size` with left padding and the KV cache,
  vLLM's own scheduler, or `batch_size` concurrent requests): the throughput a deployment would get.

Question i of an arm is sampled with seed + i in single-stream mode, so reruns draw the same answers.
"""

from __future__ import annotations

import gc
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from medtune.errors import UserError
from medtune.evaluate.arms import (THINK_CLOSE, Arm, Generation, api_key, chat_messages, count_thinking_tokens,
                                   cut_at_stop, prompt_token_ids, render_prompt)


class EngineError(UserError):
    """An engine that cannot run here, or an endpoint that refused or could not be reached."""


def local_engine_name(requested: str, has_cuda: bool, has_vllm: bool) -> str:
    """transformers or vllm for arms run on this machine; `auto` takes vLLM only with CUDA."""
    if requested == "vllm" and not (has_cuda and has_vllm):
        missing = "CUDA" if not has_cuda else "the vllm package (pip install 'medtune[vllm]')"
        raise EngineError(f"evaluate.engine is vllm, but {missing} is not available here; use engine: auto")
    if requested == "vllm" or (requested == "auto" and has_cuda and has_vllm):
        return "vllm"
    return "transformers"


def vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # a broken install raises more than ImportError (CUDA libraries, version clashes)
        return False
    return True


class Engines:
    """The engines a list of arms needs: one local engine (built on first use) and the endpoint client."""

    def __init__(self, arms: list[Arm], requested: str = "auto", batch_size: int = 8, dtype: str = "auto"):
        self.arms, self.requested, self.batch_size, self.dtype = arms, requested, batch_size, dtype
        self._local = None
        self._remote = None

    def for_arm(self, arm: Arm):
        if arm.base_url:
            if self._remote is None:
                self._remote = OpenAIEngine(self.batch_size)
            return self._remote
        if self._local is None:
            import torch

            has_cuda = torch.cuda.is_available()
            wants_vllm = self.requested in ("auto", "vllm") and has_cuda
            name = local_engine_name(self.requested, has_cuda, wants_vllm and vllm_importable())
            local_arms = [a for a in self.arms if not a.base_url]
            self._local = (VllmEngine(local_arms, self.dtype) if name == "vllm"
                           else TransformersEngine(self.batch_size, self.dtype))
        return self._local

    def close(self) -> None:
        if self._local is not None:
            self._local.close()

    def __enter__(self) -> "Engines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # frees the loaded model, also when generation failed


def stop_ids_of(generation_config, tokenizer) -> set[int]:
    """The model's end-of-sequence ids (generation_config) plus the tokenizer's end-of-turn token."""
    eos = generation_config.eos_token_id if generation_config is not None else None
    ids = set([eos] if isinstance(eos, int) else eos or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def finished_generation(ids: list[int], stop_ids: set[int], tokenizer, thinking: bool, **timing) -> Generation:
    kept, reason = cut_at_stop(ids, stop_ids)

    def decode(part):
        return tokenizer.decode(part, skip_special_tokens=True)

    return Generation(text=decode(kept), tokens=len(kept),
                      thinking_tokens=count_thinking_tokens(kept, decode) if thinking else 0,
                      finish_reason=reason, **timing)


class _FirstTokenClock:
    """A generate() streamer that only notes when the first new token arrives (its first put is the prompt)."""

    def __init__(self):
        self.puts = 0
        self.first_token_at: float | None = None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


class TransformersEngine:
    """Hugging Face generate(): single-stream with a first-token clock, batched with left padding.

    Arms sharing a base model share one loaded copy: adapters are loaded by name next to each other
    and switched, and a base-model arm runs with the adapters disabled.
    """

    name = "transformers"

    def __init__(self, batch_size: int = 8, dtype: str = "auto", device: str | None = None):
        self.batch_size, self.dtype, self.device = batch_size, dtype, device
        self._base: str | None = None
        self._model = None
        self._stop_ids: set[int] = set()
        self._adapters: dict[str, str] = {}
        self._tokenizers: dict[str, object] = {}

    def close(self) -> None:
        self._model, self._base, self._adapters = None, None, {}
        gc.collect()

    def _tokenizer(self, arm: Arm):
        source = arm.adapter if arm.adapter and (Path(arm.adapter) / "tokenizer_config.json").exists() else arm.model
        if source not in self._tokenizers:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(source)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            self._tokenizers[source] = tok
        return self._tokenizers[source]

    def _prepare(self, arm: Arm):
        """The model with this arm's adapter active, and a context that disables adapters for a base arm."""
        import contextlib

        from medtune.modeling import load_model

        if self._base != arm.model:
            self.close()
            self._model, tokenizer = load_model(arm.model, dtype=self.dtype, device=self.device)
            self._stop_ids = stop_ids_of(self._model.generation_config, tokenizer)
            self._base = arm.model
        if arm.adapter is None:
            return self._model.disable_adapter() if self._adapters else contextlib.nullcontext()
        if arm.adapter not in self._adapters:
            name = f"adapter{len(self._adapters)}"
            if not self._adapters:
                from peft import PeftModel

                self._model = PeftModel.from_pretrained(self._model, arm.adapter, adapter_name=name)
            else:
                self._model.load_adapter(arm.adapter, adapter_name=name)
            self._model.eval()
            self._adapters[arm.adapter] = name
        self._model.set_adapter(self._adapters[arm.adapter])
        return contextlib.nullcontext()

    def _config(self, arm: Arm, tokenizer, max_new_tokens: int | None = None):
        from transformers import GenerationConfig

        g = arm.generation
        values = dict(max_new_tokens=max_new_tokens or g.max_new_tokens, do_sample=g.do_sample, repetition_penalty=g.repetition_penalty,
                      eos_token_id=sorted(self._stop_ids), pad_token_id=tokenizer.pad_token_id)
        if g.do_sample:
            values.update(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k)
        else:  # transformers' own defaults, so the model's sampling values are not filled in (and warned about)
            values.update(temperature=1.0, top_p=1.0, top_k=50)
        return GenerationConfig(**values)

    def single_stream(self, arm: Arm, questions: list[str]) -> list[Generation]:
        import torch

        tokenizer = self._tokenizer(arm)
        with self._prepare(arm), torch.inference_mode():
            config = self._config(arm, tokenizer)
            device = self._model.device
            # One untimed warm-up generation, so one-time setup is not billed to this arm's first answer.
            warm = torch.tensor([prompt_token_ids(tokenizer, arm, questions[0])], device=device)
            self._model.generate(input_ids=warm, attention_mask=torch.ones_like(warm),
                                 generation_config=self._config(arm, tokenizer, max_new_tokens=2))
            out = []
            for i, question in enumerate(questions):
                ids = torch.tensor([prompt_token_ids(tokenizer, arm, question)], device=device)
                clock = _FirstTokenClock()
                torch.manual_seed(arm.generation.seed + i)
                started = time.perf_counter()
                result = self._model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                              generation_config=config, streamer=clock)
                new = result[0, ids.shape[1]:].tolist()  # .tolist() waits for the device
                latency = time.perf_counter() - started
                ttft = clock.first_token_at - started if clock.first_token_at is not None else None
                out.append(finished_generation(new, self._stop_ids, tokenizer, arm.thinking,
                                               latency_seconds=latency, ttft_seconds=ttft))
        return out

    def batched(self, arm: Arm, questions: list[str]) -> tuple[list[Generation], float]:
        import torch

        tokenizer = self._tokenizer(arm)
        prompts = [prompt_token_ids(tokenizer, arm, q) for q in questions]
        # Longest first and similar lengths together: less padding, and a too-large batch fails at once.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[Generation | None] = [None] * len(prompts)
        with self._prepare(arm), torch.inference_mode():
            config = self._config(arm, tokenizer)
            started = time.perf_counter()
            for b, start in enumerate(range(0, len(order), self.batch_size)):
                rows = order[start:start + self.batch_size]
                enc = tokenizer.pad({"input_ids": [prompts[i] for i in rows]}, padding=True, padding_side="left",
                                    return_tensors="pt").to(self._model.device)
                torch.manual_seed(arm.generation.seed + b)
                result = self._model.generate(**enc, generation_config=config)
                for row, ids in zip(rows, result[:, enc["input_ids"].shape[1]:].tolist()):
                    out[row] = finished_generation(ids, self._stop_ids, tokenizer, arm.thinking)
            seconds = time.perf_counter() - started
        return out, seconds


class VllmEngine:
    """vLLM's LLMEngine (GPU): LoRA adapters served unmerged through LoRARequest.

    Single-stream adds one request and steps the engine until it finishes, noting the first step that
    produced a token (a real time to first token); batched adds every request and lets vLLM schedule.
    """

    name = "vllm"
    LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts

    def __init__(self, arms: list[Arm], dtype: str = "auto"):
        self.dtype = dtype
        self._ranks: dict[str, int] = {}  # per base model: the largest adapter rank used on it
        for arm in arms:
            if arm.adapter:
                r = json.loads((Path(arm.adapter) / "adapter_config.json").read_text())["r"]
                self._ranks[arm.model] = max(self._ranks.get(arm.model, 0), r)
        self._engine = None
        self._base: str | None = None
        self._loras: dict[str, object] = {}
        self._tokenizer = None
        self._stop_ids: set[int] = set()
        self._request = 0

    def close(self) -> None:
        if self._engine is not None:
            import torch

            self._engine = None
            gc.collect()
            torch.cuda.empty_cache()

    def _prepare(self, arm: Arm):
        from transformers import AutoTokenizer, GenerationConfig
        from vllm import EngineArgs, LLMEngine
        from vllm.lora.request import LoRARequest

        if self._base != arm.model:
            self.close()
            rank = self._ranks.get(arm.model)
            lora = {}
            if rank:
                lora = dict(enable_lora=True, max_loras=1,
                            max_lora_rank=next((r for r in self.LORA_RANKS if r >= rank), rank))
            self._engine = LLMEngine.from_engine_args(EngineArgs(model=arm.model, dtype=self.dtype, **lora))
            self._tokenizer = AutoTokenizer.from_pretrained(arm.model)
            try:
                gen_config = GenerationConfig.from_pretrained(arm.model)
            except OSError:  # a model without generation_config.json
                gen_config = None
            self._stop_ids = stop_ids_of(gen_config, self._tokenizer)
            self._base, self._loras = arm.model, {}
        if arm.adapter and arm.adapter not in self._loras:
            self._loras[arm.adapter] = LoRARequest(f"adapter{len(self._loras) + 1}", len(self._loras) + 1,
                                                   arm.adapter)
        return self._loras.get(arm.adapter) if arm.adapter else None

    def _params(self, arm: Arm, seed: int):
        from vllm import SamplingParams

        g = arm.generation
        sampling = dict(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k or -1) if g.do_sample else \
            dict(temperature=0.0)
        return SamplingParams(max_tokens=g.max_new_tokens, repetition_penalty=g.repetition_penalty, seed=seed,
                              stop_token_ids=sorted(self._stop_ids), **sampling)

    def _run(self, arm: Arm, lora, questions: list[str], seeds: list[int]) -> tuple[list[Generation], float]:
        engine, started = self._engine, time.perf_counter()
        ids = {}
        for k, (question, seed) in enumerate(zip(questions, seeds)):
            self._request += 1
            ids[str(self._request)] = k
            prompt = {"prompt_token_ids": prompt_token_ids(self._tokenizer, arm, question)}
            engine.add_request(str(self._request), prompt, self._params(arm, seed), lora_request=lora)
        first: dict[str, float] = {}
        done: dict[str, tuple] = {}
        while engine.has_unfinished_requests():
            for output in engine.step():
                if output.request_id not in first and output.outputs and output.outputs[0].token_ids:
                    first[output.request_id] = time.perf_counter()
                if output.finished:
                    done[output.request_id] = (output.outputs[0], time.perf_counter())
        out: list[Generation | None] = [None] * len(questions)
        for rid, k in ids.items():
            completion, ended = done[rid]
            gen = finished_generation(list(completion.token_ids), self._stop_ids, self._tokenizer, arm.thinking,
                                      latency_seconds=ended - started,
                                      ttft_seconds=first[rid] - started if rid in first else None)
            if completion.finish_reason == "length":
                gen.finish_reason = "length"
            out[k] = gen
        return out, time.perf_counter() - started

    def single_stream(self, arm: Arm, questions: list[str]) -> list[Generation]:
        lora = self._prepare(arm)
        return [self._run(arm, lora, [q], [arm.generation.seed + i])[0][0] for i, q in enumerate(questions)]

    def batched(self, arm: Arm, questions: list[str]) -> tuple[list[Generation], float]:
        lora = self._prepare(arm)
        return self._run(arm, lora, questions, [arm.generation.seed + i for i in range(len(questions))])


class OpenAIEngine:
    """Any OpenAI-compatible endpoint (vLLM serve, SGLang, llama.cpp, a hosted API), streamed.

    chat_template arms use /chat/completions (the server applies the model's template; thinking goes as
    chat_template_kwargs.enable_thinking, as vLLM and SGLang read it); plain formats use /completions.
    Token counts come from the server's usage; thinking tokens from usage.completion_tokens_details when
    the server reports them, else from the streamed chunks that carried thinking (one token per chunk
    on vLLM and SGLang).
    """

    name = "openai"

    def __init__(self, batch_size: int = 8, timeout: float = 600.0):
        self.batch_size, self.timeout = batch_size, timeout
        self._clients: dict[tuple[str, str], object] = {}

    def close(self) -> None:
        pass

    def _client(self, arm: Arm):
        from openai import OpenAI

        key = (arm.base_url, arm.api_key_env)
        if key not in self._clients:
            self._clients[key] = OpenAI(base_url=arm.base_url, api_key=api_key(arm), timeout=self.timeout)
        return self._clients[key]

    def _request(self, arm: Arm, question: str, seed: int) -> Generation:
        import openai

        g = arm.generation
        extra: dict = {"repetition_penalty": g.repetition_penalty} if g.repetition_penalty != 1.0 else {}
        sampling = dict(temperature=g.temperature, top_p=g.top_p) if g.do_sample else dict(temperature=0.0)
        if g.do_sample and g.top_k:
            extra["top_k"] = g.top_k
        common = dict(model=arm.model, max_tokens=g.max_new_tokens, seed=seed, stream=True,
                      stream_options={"include_usage": True}, **sampling)
        chat = arm.prompt_format == "chat_template"
        text, reasoning = [], []
        chunks = thinking_chunks = 0
        closed, tail = False, ""
        first = finish = usage = None
        started = time.perf_counter()
        try:
            if chat:
                extra["chat_template_kwargs"] = {"enable_thinking": arm.thinking}
                stream = self._client(arm).chat.completions.create(messages=chat_messages(arm, question),
                                                                   extra_body=extra, **common)
            else:
                stream = self._client(arm).completions.create(prompt=render_prompt(None, arm, question),
                                                              extra_body=extra, **common)
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if chat:
                    piece = choice.delta.content or ""
                    extras = choice.delta.model_extra or {}
                    thought = extras.get("reasoning_content") or extras.get("reasoning") or ""
                else:
                    piece, thought = choice.text or "", ""
                if piece or thought:
                    first = first or time.perf_counter()
                    chunks += 1
                    if thought or (arm.thinking and not closed):
                        thinking_chunks += 1
                    text.append(piece)
                    reasoning.append(thought)
                    window = tail + piece  # '</think>' may arrive split over chunks
                    closed = closed or THINK_CLOSE in window
                    tail = window[-len(THINK_CLOSE):]
                if choice.finish_reason:
                    finish = choice.finish_reason
        except openai.APIConnectionError as e:
            raise EngineError(f"cannot reach {arm.base_url} for model '{arm.model}': {e}") from None
        except openai.APIStatusError as e:
            raise EngineError(f"{arm.base_url} refused model '{arm.model}': HTTP {e.status_code}: {e.message}") \
                from None
        latency = time.perf_counter() - started
        tokens = usage.completion_tokens if usage is not None else chunks
        details = usage.completion_tokens_details if usage is not None else None
        if not arm.thinking:
            thinking = 0
        elif details is not None and details.reasoning_tokens:
            thinking = details.reasoning_tokens
        else:
            thinking = min(thinking_chunks, tokens)
        thought_text = "".join(reasoning)
        return Generation(text="".join(text), tokens=tokens, thinking_tokens=thinking,
                          finish_reason="length" if finish == "length" else "stop", latency_seconds=latency,
                          ttft_seconds=first - started if first is not None else None,
                          reasoning=thought_text if thought_text else None)

    def single_stream(self, arm: Arm, questions: list[str]) -> list[Generation]:
        return [self._request(arm, q, arm.generation.seed + i) for i, q in enumerate(questions)]

    def batched(self, arm: Arm, questions: list[str]) -> tuple[list[Generation], float]:
        started = time.perf_counter()
        with ThreadPoolExecutor(self.batch_size) as pool:
            out = list(pool.map(lambda iq: self._request(arm, iq[1], arm.generation.seed + iq[0]),
                                enumerate(questions)))
        return out, time.perf_counter() - started
