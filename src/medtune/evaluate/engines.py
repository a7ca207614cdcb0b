"""Generation engines for comparison arms: local models through medtune.generate (transformers, or vLLM
when installed with CUDA) and any OpenAI-compatible endpoint.

Each engine answers a list of questions for one arm in two ways:
- `single_stream`: one question at a time, as the reference table was measured: per answer the latency
  and a real time to first token (a streamer's first token, vLLM's first step that produced a token,
  or the endpoint's first streamed chunk).
- `batched`: all questions at once (batches of `batch_size` with left padding and the KV cache,
  vLLM's own scheduler, or `batch_size` concurrent requests): the throughput a deployment would get.

Question i of an arm is sampled with seed + i in single-stream mode, so reruns draw the same answers.
One local model is loaded at a time: arms on the same base share it (adapters switched), and a new base
frees the previous one first.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

from medtune.errors import UserError
from medtune.evaluate.arms import Arm, api_key, arm_sampling, chat_messages, prompt_token_ids, render_prompt
from medtune.generate.loading import choose_engine, load_generator
from medtune.generate.sampling import Generation
from medtune.text import ThinkSplitter, split_thinking


class EngineError(UserError):
    """An engine that cannot run here, or an endpoint that refused or could not be reached."""


class Engines:
    """The engines a list of arms needs: one local engine (built on first use) and the endpoint client."""

    def __init__(self, arms: list[Arm], requested: str = "auto", batch_size: int = 8, dtype: str = "auto",
                 log=print):
        self.arms, self.requested, self.batch_size, self.dtype, self.log = arms, requested, batch_size, dtype, log
        self._local: LocalEngine | None = None
        self._remote = None

    def for_arm(self, arm: Arm):
        if arm.base_url:
            if self._remote is None:
                self._remote = OpenAIEngine(self.batch_size)
            return self._remote
        if self._local is None:
            adapters = [a.adapter for a in self.arms if not a.base_url and a.adapter]
            try:
                name = choose_engine(self.requested, adapters, setting="evaluate.engine", log=self.log)
            except UserError as e:
                raise EngineError(str(e)) from None
            self._local = LocalEngine(name, adapters, self.batch_size, self.dtype)
        return self._local

    def close(self) -> None:
        """Frees the local model (vLLM holds most of the GPU's memory); a later arm loads it again."""
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self) -> "Engines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # frees the loaded model, also when generation failed


class LocalEngine:
    """A model of this machine through medtune.generate, one base model loaded at a time."""

    def __init__(self, name: str, adapters: list[str], batch_size: int = 8, dtype: str = "auto",
                 device: str | None = None):
        self.name, self.adapters, self.batch_size, self.dtype, self.device = name, adapters, batch_size, dtype, device
        self._base: str | None = None
        self._generator = None

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()
        self._generator, self._base = None, None

    def _generator_for(self, arm: Arm):
        if self._base != arm.model:
            self.close()  # before the next model loads: two need twice the memory
            self._generator = load_generator(arm.model, dtype=self.dtype, engine=self.name, adapters=self.adapters,
                                             device=self.device)
            self._base = arm.model
        return self._generator.use_adapter(arm.adapter)

    def single_stream(self, arm: Arm, questions: list[str]) -> list[Generation]:
        sampling = arm_sampling(arm)
        with self._generator_for(arm) as gen:
            prompts = [prompt_token_ids(gen.tokenizer, arm, q) for q in questions]
            # One untimed warm-up generation, so one-time setup is not billed to this arm's first answer.
            gen.generate_one(prompts[0], dataclasses.replace(sampling, max_tokens=2), arm.thinking)
            return [gen.generate_one(p, dataclasses.replace(sampling, seed=sampling.seed + i), arm.thinking)
                    for i, p in enumerate(prompts)]

    def batched(self, arm: Arm, questions: list[str]) -> tuple[list[Generation], float]:
        with self._generator_for(arm) as gen:
            prompts = [prompt_token_ids(gen.tokenizer, arm, q) for q in questions]
            started = time.perf_counter()
            out = gen.generate_ids(prompts, arm_sampling(arm), arm.thinking, self.batch_size)
            return out, time.perf_counter() - started


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

    def _open(self, arm: Arm, question: str, seed: int):
        """The streamed request: /chat/completions for chat_template arms, /completions for plain formats."""
        g = arm.generation
        extra: dict = {"repetition_penalty": g.repetition_penalty} if g.repetition_penalty != 1.0 else {}
        sampling = dict(temperature=g.temperature, top_p=g.top_p) if g.do_sample else dict(temperature=0.0)
        if g.do_sample and g.top_k:
            extra["top_k"] = g.top_k
        common = dict(model=arm.model, max_tokens=g.max_new_tokens, seed=seed, stream=True,
                      stream_options={"include_usage": True}, extra_body=extra, **sampling)
        if arm.prompt_format == "chat_template":
            extra["chat_template_kwargs"] = {"enable_thinking": arm.thinking}
            return self._client(arm).chat.completions.create(messages=chat_messages(arm, question), **common)
        return self._client(arm).completions.create(prompt=render_prompt(None, arm, question), **common)

    def _request(self, arm: Arm, question: str, seed: int) -> Generation:
        import openai

        started = time.perf_counter()
        try:
            read = _read_stream(self._open(arm, question, seed), arm.prompt_format == "chat_template", arm.thinking)
        except openai.APIConnectionError as e:
            raise EngineError(f"cannot reach {arm.base_url} for model '{arm.model}': {e}") from None
        except openai.APIStatusError as e:
            raise EngineError(f"{arm.base_url} refused model '{arm.model}': HTTP {e.status_code}: {e.message}") \
                from None
        usage = read["usage"]
        tokens = usage.completion_tokens if usage is not None else read["chunks"]
        details = usage.completion_tokens_details if usage is not None else None
        if details is not None and details.reasoning_tokens:
            thinking_tokens = details.reasoning_tokens
        else:
            thinking_tokens = min(read["thinking_chunks"], tokens)
        text, reasoning = "".join(read["text"]), "".join(read["reasoning"])
        # A server that returns the reasoning apart (reasoning_content) has split it already.
        thinking, answer = (reasoning.strip(), text.strip()) if reasoning else split_thinking(text, arm.thinking)
        return Generation(text=text, thinking=thinking, answer=answer, tokens=tokens, thinking_tokens=thinking_tokens,
                          finish_reason="length" if read["finish"] == "length" else "stop",
                          latency_seconds=time.perf_counter() - started,
                          ttft_seconds=read["first"] - started if read["first"] is not None else None)

    def single_stream(self, arm: Arm, questions: list[str]) -> list[Generation]:
        return [self._request(arm, q, arm.generation.seed + i) for i, q in enumerate(questions)]

    def batched(self, arm: Arm, questions: list[str]) -> tuple[list[Generation], float]:
        started = time.perf_counter()
        with ThreadPoolExecutor(self.batch_size) as pool:
            out = list(pool.map(lambda iq: self._request(arm, iq[1], arm.generation.seed + iq[0]),
                                enumerate(questions)))
        return out, time.perf_counter() - started


def _read_stream(stream, chat: bool, enable_thinking: bool) -> dict:
    """The pieces of a streamed completion, the usage, the finish reason, the first piece's time, and how many
    chunks carried thinking (reasoning_content, or text inside the thinking part by THINKING_RULE)."""
    read = {"text": [], "reasoning": [], "chunks": 0, "thinking_chunks": 0, "first": None, "finish": None,
            "usage": None}
    splitter = ThinkSplitter(enable_thinking)
    for chunk in stream:
        if chunk.usage is not None:
            read["usage"] = chunk.usage
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
            read["first"] = read["first"] or time.perf_counter()
            read["chunks"] += 1
            was_thinking = splitter.in_think  # the chunk that closes the thinking part is thinking too
            splitter.feed(piece)
            read["thinking_chunks"] += bool(thought or was_thinking or splitter.in_think)
            read["text"].append(piece)
            read["reasoning"].append(thought)
        if choice.finish_reason:
            read["finish"] = choice.finish_reason
    return read
