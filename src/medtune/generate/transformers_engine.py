"""The transformers engine: any device; batched generation with left padding, or one prompt streamed through
transformers' own streamers (cancelled when the client goes away)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Callable

from medtune.generate.sampling import Generation, Sampling, chat_prompt_ids, finished_generation, stop_ids_of
from medtune.generate.source import ModelSource

# -- the thinking split --


# -- sampling, prompts, stop tokens, results --


# -- where the model is --


# -- which engine --


# -- the transformers engine --

class TransformersGenerator:
    """One model on one device (+ LoRA adapters, switched with `use_adapter`).

    `generate`/`generate_ids`: batched, longest prompts first, left padding. `generate_one`: one prompt, timed
    (latency, time to first token), text handed on as decoded. `stream`: `generate_one` in a worker thread read
    from asyncio. One generation runs at a time (a lock): each request keeps its own sampling, seed, streaming
    and cancellation exactly as if it were alone; on GPUs the vLLM engine batches continuously instead.
    """

    name = "transformers"

    def __init__(self, model, tokenizer, model_id: str = "", adapter: str | Path | None = None):
        self.model, self.model_id = model, model_id
        self.max_model_len = int(model.config.max_position_embeddings)
        self._lock = threading.Lock()
        self._adapters = {str(adapter): "default"} if adapter is not None else {}
        self._tokenizers = {str(adapter) if adapter is not None else None: tokenizer}
        self._use_tokenizer(tokenizer)

    @classmethod
    def load(cls, source: ModelSource, dtype: str = "auto", merge: bool = False,
             device: str | None = None) -> "TransformersGenerator":
        from medtune.modeling import load_model

        model, tokenizer = load_model(source.base, adapter=source.adapter, dtype=dtype, device=device)
        if merge and source.adapter is not None:
            # Merged weights decode faster than base + LoRA (benchmarks/serve_decode.py: 1.6x on CPU) and agree
            # within ~1e-6 in fp32 (FINDINGS.md).
            return cls(model.merge_and_unload(), tokenizer, source.model_id)
        return cls(model, tokenizer, source.model_id, source.adapter)

    def _use_tokenizer(self, tokenizer) -> None:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids_of(self.model.generation_config, tokenizer)

    def close(self) -> None:
        self.model = None
        import gc

        gc.collect()

    def prompt_ids(self, messages: list[dict], enable_thinking: bool) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages, enable_thinking)

    @contextlib.contextmanager
    def use_adapter(self, adapter: str | Path | None):
        """Generate with this LoRA adapter (loaded next to the others on first use), or with none (the base)."""
        key = str(adapter) if adapter is not None else None
        if key is not None and key not in self._adapters:
            self._load_adapter(key)
        previous = self.tokenizer
        self._use_tokenizer(self._tokenizers.get(key, self._tokenizers.get(None, previous)))
        try:
            if key is None and self._adapters:
                with self.model.disable_adapter():
                    yield self
            else:
                if key is not None:
                    self.model.set_adapter(self._adapters[key])
                yield self
        finally:
            self._use_tokenizer(previous)

    def _load_adapter(self, adapter: str) -> None:
        from peft import PeftModel
        from transformers import AutoTokenizer

        name = f"adapter{len(self._adapters)}"
        if not self._adapters:
            self.model = PeftModel.from_pretrained(self.model, adapter, adapter_name=name)
        else:
            self.model.load_adapter(adapter, adapter_name=name)
        self.model.eval()
        self._adapters[adapter] = name
        if (Path(adapter) / "tokenizer_config.json").exists():
            self._tokenizers[adapter] = AutoTokenizer.from_pretrained(adapter)

    def _config(self, sampling: Sampling):
        from transformers import GenerationConfig

        values = dict(max_new_tokens=sampling.max_tokens, repetition_penalty=sampling.repetition_penalty,
                      eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
        if sampling.temperature > 0:
            values.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k)
        else:  # transformers' own neutral values, so the model's sampling defaults are not filled in (and warned about)
            values.update(do_sample=False, temperature=1.0, top_p=1.0, top_k=50)
        return GenerationConfig(**values)

    def generate(self, conversations: list[list[dict]], sampling: Sampling, enable_thinking: bool = False,
                 batch_size: int = 8) -> list[Generation]:
        """One reply per conversation (a list of messages), batched."""
        prompts = [self.prompt_ids(messages, enable_thinking) for messages in conversations]
        return self.generate_ids(prompts, sampling, enable_thinking, batch_size)

    def generate_ids(self, prompts: list[list[int]], sampling: Sampling, enable_thinking: bool = False,
                     batch_size: int = 8) -> list[Generation]:
        """One reply per prompt (token ids); batch b is seeded with sampling.seed + b."""
        import torch

        # Longest first and similar lengths together: less padding, and a too-large batch fails at once.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[Generation | None] = [None] * len(prompts)
        config = self._config(sampling)
        with self._lock, torch.inference_mode():
            for b, start in enumerate(range(0, len(order), batch_size)):
                rows = order[start:start + batch_size]
                enc = self.tokenizer.pad({"input_ids": [prompts[i] for i in rows]}, padding=True,
                                         padding_side="left", return_tensors="pt").to(self.model.device)
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed + b)
                result = self.model.generate(**enc, generation_config=config)
                for row, ids in zip(rows, result[:, enc["input_ids"].shape[1]:].tolist()):
                    out[row] = finished_generation(ids, self.stop_ids, self.tokenizer, enable_thinking)
        return out

    def generate_one(self, prompt_ids: list[int], sampling: Sampling, enable_thinking: bool = False,
                     on_text: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                     streamer=None) -> Generation:
        """One reply, timed. `on_text` gets the text as transformers' TextStreamer decodes it (or pass any
        `streamer`); once `stop` is set, generation ends at the next token (finish_reason 'cancelled')."""
        import torch
        from transformers import StoppingCriteriaList

        clock = _FirstTokenClock(streamer or (_text_streamer(self.tokenizer, on_text) if on_text else None))
        extra = {"stopping_criteria": StoppingCriteriaList([_StopWhenSet(stop)])} if stop is not None else {}
        with self._lock:
            if stop is not None and stop.is_set():
                clock.end()
                return Generation("", "", "", 0, 0, "cancelled", latency_seconds=0.0)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)  # global, which is safe under the lock
            ids = torch.tensor([prompt_ids], device=self.model.device)
            started = time.perf_counter()
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                          generation_config=self._config(sampling), streamer=clock, **extra)
            new = out[0, len(prompt_ids):].tolist()  # .tolist() waits for the device
            latency = time.perf_counter() - started
        ttft = clock.first_token_at - started if clock.first_token_at is not None else None
        gen = finished_generation(new, self.stop_ids, self.tokenizer, enable_thinking, latency_seconds=latency,
                                  ttft_seconds=ttft)
        if stop is not None and stop.is_set():
            gen.finish_reason = "cancelled"
        return gen

    def stream(self, prompt_ids: list[int], sampling: Sampling, enable_thinking: bool = False) -> "TransformersStream":
        """Start generating in a worker thread; read the text with `async for` (for the server)."""
        return TransformersStream(self, prompt_ids, sampling, enable_thinking)


class _FirstTokenClock:
    """A generate() streamer that notes when the first new token arrives (its first put is the prompt) and
    passes every call on to `inner` (a transformers TextStreamer), if any."""

    def __init__(self, inner=None):
        self.inner, self.puts = inner, 0
        self.first_token_at: float | None = None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first_token_at = time.perf_counter()
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()


def _text_streamer(tokenizer, on_text: Callable[[str], None]):
    """transformers' TextStreamer (prompt skipped, special tokens dropped) handing each decoded piece to `on_text`."""
    from transformers import TextStreamer

    class TextCallback(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return TextCallback(tokenizer, skip_prompt=True, skip_special_tokens=True)


class _StopWhenSet:
    """A stopping criterion that ends generation once the event is set (client gone, Ctrl-C)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TransformersStream:
    """One generation read from asyncio: `generate_one` runs in a worker thread and feeds transformers'
    AsyncTextIteratorStreamer. `async for text in stream` yields the text; afterwards `result` is the
    Generation. `aclose()` stops it at the next token. Must be created inside a running event loop."""

    def __init__(self, generator, prompt_ids: list[int], sampling: Sampling, enable_thinking: bool):
        import asyncio

        self.result: Generation | None = None
        self._stop = threading.Event()
        self._streamer = _async_streamer(generator.tokenizer, self._stop)
        self._done = asyncio.get_running_loop().run_in_executor(
            None, self._work, generator, prompt_ids, sampling, enable_thinking)

    def _work(self, generator, prompt_ids, sampling, enable_thinking) -> None:
        try:
            self.result = generator.generate_one(prompt_ids, sampling, enable_thinking, stop=self._stop,
                                                 streamer=self._streamer)
        except BaseException:
            self._streamer.end()  # wakes the reader, which then gets the exception from `_done`
            raise

    async def __aiter__(self):
        async for text in self._streamer:
            if text:
                yield text
        await self._done  # the result is set (or generation's exception raised) before the reader goes on

    async def aclose(self) -> None:
        self._stop.set()


def _async_streamer(tokenizer, stop: threading.Event):
    from transformers import AsyncTextIteratorStreamer

    class StopWhenUnread(AsyncTextIteratorStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            try:
                super().on_finalized_text(text, stream_end)
            except RuntimeError:  # the event loop is gone (server shut down): nobody is listening
                stop.set()

    return StopWhenUnread(tokenizer, skip_prompt=True, skip_special_tokens=True)


# -- the vLLM engines --


