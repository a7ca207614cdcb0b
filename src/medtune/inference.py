"""Using a trained model: where it lives, how to prompt it, and generation with streamed text.

Shared by `medtune chat` and `medtune serve` (and usable from Python):
- `resolve_model_source("runs/demo")`: a run directory (LoRA adapter; its base comes from
  adapter_config.json) or a plain model directory / hub id (e.g. a merged model).
- `TransformersEngine`: one model, prompts from the tokenizer's own chat template, generation that
  hands on text as it is produced, stoppable between tokens.
- `ThinkSplitter`: splits Qwen3 output into thinking (`<think>...</think>`) and the answer.

Qwen3 defaults (from its model card): non-thinking temperature 0.7, top_p 0.8, top_k 20; thinking
0.6, 0.95, 20. Thinking is off unless asked for: a chat template's `enable_thinking` default cannot be
changed by generation_config.json, so every prompt here passes it explicitly.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medtune.config import BUILTIN_TINY_QWEN3
from medtune.errors import UserError

SAMPLING_DEFAULTS = {
    False: {"temperature": 0.7, "top_p": 0.8, "top_k": 20},   # non-thinking
    True: {"temperature": 0.6, "top_p": 0.95, "top_k": 20},   # thinking
}
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
DTYPE_NAMES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
"""The --dtype choices of merge/chat/serve -> the names medtune.modeling.load_model and vLLM take."""


# -- where the model is --

@dataclass(frozen=True)
class ModelSource:
    base: str
    """Path or hub id for from_pretrained."""
    adapter: Path | None
    """The LoRA adapter directory (a run directory), or None for a plain model."""
    model_id: str
    """The name clients see: the run directory's name, the model directory's name, or the hub id."""


def resolve_model_source(name_or_path: str | Path) -> ModelSource:
    """A run directory (adapter + base from adapter_config.json), a model directory, or a hub id."""
    path = Path(name_or_path)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return ModelSource(_adapter_base(path), path, path.resolve().name)
        if (path / "config.json").is_file():
            return ModelSource(str(path), None, path.resolve().name)
        raise UserError(f"{path} is neither a run directory (no adapter_config.json: has `medtune train` finished?) "
                        "nor a model directory (no config.json)")
    if path.is_absolute() or str(name_or_path).startswith((".", "~")) or path.exists():
        raise UserError(f"{path} does not exist (expected a run directory, a model directory or a hub model id)")
    return ModelSource(str(name_or_path), None, str(name_or_path))


def _adapter_base(run_dir: Path) -> str:
    config_path = run_dir / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{config_path}, line {e.lineno}: invalid JSON ({e.msg})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        raise UserError(f"{config_path}: field 'base_model_name_or_path' is missing or empty; it must name the base "
                        "model (a hub id or a directory)")
    if base == BUILTIN_TINY_QWEN3:
        from medtune.modeling import resolve_base_model

        return resolve_base_model(base, run_dir)
    if Path(base).is_absolute():
        if not Path(base).exists():
            raise UserError(f"{config_path}: field 'base_model_name_or_path' names {base}, which does not exist")
        return base
    # A relative path is taken relative to the run directory first (a moved run keeps working), else as given
    # (relative to the working directory, or a hub id).
    return str(run_dir / base) if (run_dir / base).exists() else base


# -- prompts and sampling --

@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    """0 means greedy decoding."""
    top_p: float
    top_k: int
    """0 means no top-k filtering."""
    seed: int | None = None


def sampling_for(enable_thinking: bool, max_tokens: int, temperature: float | None = None, top_p: float | None = None,
                 top_k: int | None = None, seed: int | None = None) -> Sampling:
    """Qwen3's recommended sampling for the mode; explicit values override it."""
    d = SAMPLING_DEFAULTS[enable_thinking]
    return Sampling(max_tokens=max_tokens, temperature=d["temperature"] if temperature is None else temperature,
                    top_p=d["top_p"] if top_p is None else top_p, top_k=d["top_k"] if top_k is None else top_k,
                    seed=seed)


def chat_prompt_ids(tokenizer, messages: list[dict], enable_thinking: bool) -> list[int]:
    """The token ids of the tokenizer's own chat-template prompt for `messages`, ending with the generation prompt."""
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=enable_thinking)
    except TemplateError as e:
        raise UserError(f"the chat template rejected the messages: {e}") from None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class ThinkSplitter:
    """Splits generated text, fed piece by piece, into (thinking, answer) deltas.

    Text inside `<think>...</think>` is thinking; with thinking on, text before `</think>` is thinking
    even without the opening tag (templates that put `<think>` in the prompt), and a missing closing tag
    means everything is thinking (the answer was cut off while thinking). Tags split across pieces are
    held back until they are whole. Leading whitespace of each part is dropped.
    """

    def __init__(self, enable_thinking: bool):
        self.in_think = enable_thinking
        self.at_start = True          # nothing but whitespace seen yet: an opening tag may still come
        self.part_started = False     # the current part has produced visible text
        self.pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        thinking, answer = [], []
        self.pending += text
        while self.pending:
            if self.at_start:
                stripped = self.pending.lstrip()
                if not stripped:
                    break
                if stripped.startswith(THINK_OPEN):
                    self.in_think, self.at_start = True, False
                    self.pending = stripped[len(THINK_OPEN):]
                    continue
                if THINK_OPEN.startswith(stripped):
                    break  # maybe the start of <think>
                self.at_start = False
            tag = THINK_CLOSE if self.in_think else None
            if tag and (i := self.pending.find(tag)) != -1:
                self._emit(self.pending[:i], thinking)
                self.pending = self.pending[i + len(tag):]
                self.in_think, self.part_started = False, False
                continue
            keep = _partial_tag_suffix(self.pending, tag) if tag else 0
            self._emit(self.pending[:len(self.pending) - keep], thinking if self.in_think else answer)
            self.pending = self.pending[len(self.pending) - keep:]
            break
        return "".join(thinking), "".join(answer)

    def flush(self) -> tuple[str, str]:
        """The held-back rest, at the end of generation."""
        rest, self.pending = self.pending, ""
        out: list[str] = []
        if not (self.at_start and not rest.strip()):
            self._emit(rest, out)
        return ("".join(out), "") if self.in_think else ("", "".join(out))

    def _emit(self, text: str, out: list[str]) -> None:
        if not self.part_started:
            text = text.lstrip()
            self.part_started = bool(text)
        if text:
            out.append(text)


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split_thinking(text: str, enable_thinking: bool) -> tuple[str, str]:
    """(thinking, answer) of a whole generated text."""
    splitter = ThinkSplitter(enable_thinking)
    t1, a1 = splitter.feed(text)
    t2, a2 = splitter.flush()
    return t1 + t2, a1 + a2


# -- the transformers engine --

@dataclass
class GenerationResult:
    completion_tokens: int
    finish_reason: str
    """stop (end of turn), length (max_tokens reached) or cancelled."""


class TransformersEngine:
    """One model on one device; generations run one at a time, in arrival order.

    A lock rather than a batcher: each request keeps its own sampling, seed, streaming and cancellation,
    exactly as if it were alone. Batching would raise throughput (FINDINGS.md: batched greedy generate
    gave 4-6x the tokens/s on CPU), but this engine is the CPU and no-vLLM fallback; on GPUs the vLLM
    engine batches continuously. The server bounds the queue with its concurrency limit.
    """

    name = "transformers"

    def __init__(self, model, tokenizer, model_id: str):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_model_len = int(model.config.max_position_embeddings)
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_token_ids = sorted(set(eos) | ({tokenizer.eos_token_id} - {None}))
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: ModelSource, dtype: str = "auto", device: str | None = None) -> "TransformersEngine":
        from medtune.modeling import load_model

        model, tokenizer = load_model(source.base, adapter=source.adapter, dtype=dtype, device=device)
        if source.adapter is not None:
            # Merged weights decode faster than base + LoRA (benchmarks/serve_decode.py: 1.6x on CPU) and agree
            # within ~1e-6 in fp32 (FINDINGS.md).
            model = model.merge_and_unload()
        return cls(model, tokenizer, source.model_id)

    def prompt_ids(self, messages: list[dict], enable_thinking: bool) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages, enable_thinking)

    def generate(self, prompt_ids: list[int], sampling: Sampling, on_text: Callable[[str], None],
                 stop: threading.Event | None = None) -> GenerationResult:
        """Generate, calling `on_text` with each new piece of text; returns early once `stop` is set."""
        import torch
        from transformers import StoppingCriteriaList

        streamer = _TextDeltas(self.tokenizer, on_text)
        kwargs = dict(max_new_tokens=sampling.max_tokens, eos_token_id=self.eos_token_ids,
                      pad_token_id=self.tokenizer.pad_token_id, streamer=streamer)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k or None)
        else:  # None clears the model's sampling defaults, which greedy decoding would warn about
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhenSet(stop)])
        with self._lock:
            if stop is not None and stop.is_set():
                return GenerationResult(0, "cancelled")
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)  # global, which is safe under the lock
            input_ids = torch.tensor([prompt_ids], device=self.model.device)
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        new = out[0, len(prompt_ids):].tolist()
        if stop is not None and stop.is_set():
            reason = "cancelled"
        elif new and new[-1] in self.eos_token_ids:
            reason = "stop"
        else:
            reason = "length"
        return GenerationResult(len(new), reason)

    def start(self, prompt_ids: list[int], sampling: Sampling) -> "ThreadedCompletion":
        """Start generating in a worker thread; read the text as an async stream (for the server)."""
        return ThreadedCompletion(lambda on_text, stop: self.generate(prompt_ids, sampling, on_text, stop))


class _TextDeltas:
    """A generate() streamer: decodes new tokens and hands on text as soon as it is whole.

    Tokens are decoded line by line (as transformers' TextStreamer does), so the cost stays flat for
    long answers; text ending in an incomplete UTF-8 character waits for the next token.
    """

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.line_ids: list[int] = []
        self.sent = 0
        self.prompt_skipped = False

    def put(self, value) -> None:
        if not self.prompt_skipped:  # generate() passes the prompt first
            self.prompt_skipped = True
            return
        self.line_ids.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.line_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        if len(text) > self.sent:
            self.on_text(text[self.sent:])
        if text.endswith("\n"):
            self.line_ids, self.sent = [], 0
        else:
            self.sent = len(text)

    def end(self) -> None:
        text = self.tokenizer.decode(self.line_ids, skip_special_tokens=True)
        if len(text) > self.sent:
            self.on_text(text[self.sent:])
        self.line_ids, self.sent = [], 0


class _StopWhenSet:
    """A stopping criterion that ends generation once the event is set (client gone, Ctrl-C)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


_DONE = object()


class ThreadedCompletion:
    """A blocking generation run in its own thread, read from asyncio as a stream of text pieces.

    The thread starts at once, so it always runs to its end (or to `stop`) even if nobody reads it;
    `result` is set when it is done. `aclose()` stops it at the next token.
    """

    def __init__(self, run: Callable[[Callable[[str], None], threading.Event], GenerationResult]):
        self.result: GenerationResult | None = None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        threading.Thread(target=self._work, args=(run,), daemon=True, name="medtune-generate").start()

    def _work(self, run) -> None:
        try:
            self.result = run(self._put, self._stop)
            item = _DONE
        except Exception as e:  # handed to the reader, which turns it into an error response
            item = e
        self._put(item)

    def _put(self, item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shut down): nobody is listening
            self._stop.set()

    async def __aiter__(self):
        while True:
            item = await self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def aclose(self) -> None:
        self._stop.set()
