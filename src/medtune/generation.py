"""Generation: load a model (+ LoRA adapter), prompt it with its own chat template, and generate with the
transformers or the vLLM engine, batched or streamed. The evaluate stage (comparison, safety probe,
benchmarks), `medtune chat` and `medtune serve` all generate through this module.

    gen = load_generator("runs/demo")        # a run directory, a model directory, a hub id or builtin:tiny-qwen3
    (out,) = gen.generate([[{"role": "user", "content": "头疼怎么办？"}]], sampling_for(False, 256))
    out.answer, out.thinking, out.tokens, out.finish_reason

What it owns:
- prompts: the tokenizer's own chat template; `enable_thinking` is always passed explicitly (a template's
  default cannot be changed by generation_config.json), and thinking is off unless asked for.
- stop ids: the model's generation_config end-of-sequence ids plus the tokenizer's end-of-turn token.
- sampling: Qwen3's recommended values (model card): 0.7/0.8/20 (temperature/top_p/top_k) without thinking,
  0.6/0.95/20 with it; temperature 0 means greedy.
- the thinking split (`split_thinking`, one rule for whole texts and streams, see THINKING_RULE).
- engines: transformers (any device; batched with left padding, or one prompt streamed through transformers'
  own streamers) and vLLM (CUDA; LoRA adapters unmerged through LoRARequest). vLLM cannot load an adapter
  that trains whole modules (`modules_to_save`, e.g. lm_head): `choose_engine` says so and falls back.

vllm cannot be installed on CPU machines: its engines are written against vLLM's documented API (v0.11+:
`EngineArgs`/`LLMEngine` step loop, `AsyncEngineArgs`/`AsyncLLMEngine.generate`/`abort`, `SamplingParams`,
`LoRARequest(name, int_id, path)`), and only their decisions and stream handling are tested there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medtune.errors import UserError

QWEN3_SAMPLING = {
    False: {"temperature": 0.7, "top_p": 0.8, "top_k": 20},   # non-thinking
    True: {"temperature": 0.6, "top_p": 0.95, "top_k": 20},   # thinking
}
DTYPE_NAMES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
"""The --dtype choices of merge/chat/serve -> the names load_model and vLLM take."""
ENGINES = ("auto", "vllm", "transformers")
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINKING_RULE = (
    "The thinking part of a reply is the text before its first '</think>' when thinking is on, or when the reply "
    "opens with '<think>' (after whitespace) even though thinking is off; the '<think>' tag itself is dropped. A "
    "thinking part that never closes takes the whole reply, and the answer is empty. Everything after that first "
    "'</think>' is the answer, a later '</think>' included; a reply with thinking off that does not open with "
    "'<think>' is all answer. Whitespace around each part is dropped.")


# -- the thinking split --

class ThinkSplitter:
    """Splits generated text, fed piece by piece, into (thinking, answer) deltas by THINKING_RULE.

    Tags split across pieces, and whitespace that may end a part, are held back until the next piece
    shows what they are; `flush()` hands on the rest at the end of generation.
    """

    def __init__(self, enable_thinking: bool):
        self.in_think = enable_thinking
        self.at_start = True          # nothing but whitespace seen yet: an opening tag may still come
        self.part_started = False     # the current part has produced visible text
        self.pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        thinking, answer = [], []
        self.pending += text
        if self.at_start and not self._read_start():
            return "", ""
        if self.in_think and (i := self.pending.find(THINK_CLOSE)) != -1:
            self._emit(self.pending[:i].rstrip(), thinking)
            self.pending = self.pending[i + len(THINK_CLOSE):]
            self.in_think, self.part_started = False, False
        held = self._held()
        self._emit(self.pending[:len(self.pending) - held], thinking if self.in_think else answer)
        self.pending = self.pending[len(self.pending) - held:]
        return "".join(thinking), "".join(answer)

    def flush(self) -> tuple[str, str]:
        """The held-back rest, at the end of generation (an unfinished tag is text)."""
        rest, self.pending = self.pending.rstrip(), ""
        out: list[str] = []
        self._emit(rest, out)
        return ("".join(out), "") if self.in_think else ("", "".join(out))

    def _read_start(self) -> bool:
        """Decide whether the reply opens with <think>; False while the text so far cannot tell."""
        stripped = self.pending.lstrip()
        if not stripped or (THINK_OPEN.startswith(stripped) and stripped != THINK_OPEN):
            return False
        if stripped.startswith(THINK_OPEN):
            self.in_think, self.pending = True, stripped[len(THINK_OPEN):]
        self.at_start = False
        return True

    def _held(self) -> int:
        """How much of the end of `pending` waits: a possible start of '</think>' and the whitespace before it."""
        tag = 0
        if self.in_think:
            tag = next((n for n in range(min(len(THINK_CLOSE) - 1, len(self.pending)), 0, -1)
                        if self.pending.endswith(THINK_CLOSE[:n])), 0)
        body = self.pending[:len(self.pending) - tag]
        return len(self.pending) - len(body.rstrip())

    def _emit(self, text: str, out: list[str]) -> None:
        if not self.part_started:
            text = text.lstrip()
            self.part_started = bool(text)
        if text:
            out.append(text)


def split_thinking(text: str, enable_thinking: bool) -> tuple[str, str]:
    """(thinking, answer) of a whole generated text, by THINKING_RULE."""
    splitter = ThinkSplitter(enable_thinking)
    t1, a1 = splitter.feed(text)
    t2, a2 = splitter.flush()
    return t1 + t2, a1 + a2


def answer_only(text: str) -> str:
    """The answer of a text whose thinking setting is unknown (a judge's reply, a stored answer)."""
    return split_thinking(text, enable_thinking=False)[1]


def count_thinking_tokens(ids: list[int], decode: Callable[[list[int]], str], enable_thinking: bool) -> int:
    """How many of `ids` are thinking by THINKING_RULE: up to and including the token that completes the first
    '</think>'; all of them when it never closes; none when the reply has no thinking part.

    Binary search over decoded prefixes: exact for any tokenizer, whether '</think>' is one token or several.
    """
    text = decode(ids)
    if not (enable_thinking or text.lstrip().startswith(THINK_OPEN)):
        return 0
    if THINK_CLOSE not in text:
        return len(ids)
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if THINK_CLOSE in decode(ids[:mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo


# -- sampling, prompts, stop tokens, results --

@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    """0 means greedy decoding."""
    top_p: float = 1.0
    top_k: int = 0
    """0 means no top-k filtering."""
    seed: int | None = None
    """Batched transformers generation seeds batch b with seed + b; vLLM seeds request i with seed + i."""
    repetition_penalty: float = 1.0


GREEDY = Sampling(max_tokens=1, temperature=0.0)
"""Greedy decoding; `dataclasses.replace(GREEDY, max_tokens=n)`."""


def sampling_for(enable_thinking: bool, max_tokens: int, temperature: float | None = None, top_p: float | None = None,
                 top_k: int | None = None, seed: int | None = None) -> Sampling:
    """Qwen3's recommended sampling for the mode; explicit values override it."""
    d = QWEN3_SAMPLING[enable_thinking]
    return Sampling(max_tokens=max_tokens, temperature=d["temperature"] if temperature is None else temperature,
                    top_p=d["top_p"] if top_p is None else top_p, top_k=d["top_k"] if top_k is None else top_k,
                    seed=seed)


def chat_prompt_ids(tokenizer, messages: list[dict], enable_thinking: bool) -> list[int]:
    """The token ids of the tokenizer's own chat-template prompt for `messages`, ending with the generation prompt."""
    from jinja2 import TemplateError

    if not tokenizer.chat_template:
        raise UserError(f"'{tokenizer.name_or_path}' has no chat template: it is not a chat model")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=enable_thinking)
    except TemplateError as e:
        raise UserError(f"the chat template rejected the messages: {e}") from None
    # The rendered template already holds any BOS it wants.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def stop_ids_of(generation_config, tokenizer) -> list[int]:
    """The model's end-of-sequence ids (generation_config) plus the tokenizer's end-of-turn token."""
    eos = generation_config.eos_token_id if generation_config is not None else None
    ids = set([eos] if isinstance(eos, int) else eos or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def cut_at_stop(ids: list[int], stop_ids) -> tuple[list[int], str]:
    """The generated ids before the first stop token, and the finish reason (stop, or length when none)."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[:i], "stop"
    return ids, "length"


@dataclass
class Generation:
    """One reply: the decoded text (without the stop token), split into thinking and answer."""

    text: str
    thinking: str
    answer: str
    tokens: int
    """Tokens generated, not counting the stop token."""
    thinking_tokens: int
    """How many of `tokens` are thinking (count_thinking_tokens)."""
    finish_reason: str
    """stop (the model ended its turn), length (max_tokens reached) or cancelled (stopped from outside)."""
    latency_seconds: float | None = None
    ttft_seconds: float | None = None


def finished_generation(ids: list[int], stop_ids, tokenizer, enable_thinking: bool, **timing) -> Generation:
    """A Generation from the generated token ids (cut at the first stop token)."""
    kept, reason = cut_at_stop(ids, stop_ids)

    def decode(part):
        return tokenizer.decode(part, skip_special_tokens=True)

    text = decode(kept)
    thinking, answer = split_thinking(text, enable_thinking)
    return Generation(text=text, thinking=thinking, answer=answer, tokens=len(kept),
                      thinking_tokens=count_thinking_tokens(kept, decode, enable_thinking), finish_reason=reason,
                      **timing)


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
    """A run directory (adapter + base from adapter_config.json), a model directory, a hub id or builtin:tiny-qwen3."""
    from medtune.modeling import resolve_base_model

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
    return ModelSource(resolve_base_model(str(name_or_path)), None, str(name_or_path))


def read_adapter_config(adapter: str | Path) -> dict:
    config_path = Path(adapter) / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{config_path}, line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: expected a JSON object")
    return config


def _adapter_base(run_dir: Path) -> str:
    from medtune.modeling import resolve_base_model

    from medtune.config import BUILTIN_TINY_QWEN3

    config_path = run_dir / "adapter_config.json"
    base = read_adapter_config(run_dir).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise UserError(f"{config_path}: field 'base_model_name_or_path' is missing or empty; it must name the base "
                        "model (a hub id or a directory)")
    if base == BUILTIN_TINY_QWEN3:  # saved in the run directory
        return resolve_base_model(base, run_dir)
    if Path(base).is_absolute():
        if not Path(base).exists():
            raise UserError(f"{config_path}: field 'base_model_name_or_path' names {base}, which does not exist")
        return base
    # A relative path is taken relative to the run directory first (a moved run keeps working), else as given
    # (relative to the working directory, or a hub id).
    return str(run_dir / base) if (run_dir / base).exists() else base


# -- which engine --

def vllm_usable() -> bool:
    """vllm is installed and a CUDA GPU is visible (vllm is not imported: that takes seconds)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def vllm_refusal(adapters) -> str | None:
    """Why vLLM cannot load these LoRA adapters, or None when it can."""
    for adapter in adapters:
        config = read_adapter_config(adapter)
        if config.get("modules_to_save"):
            return (f"the adapter {adapter} trains {', '.join(config['modules_to_save'])} in full (modules_to_save), "
                    "which vLLM's LoRA loading does not support")
        if int(config.get("r", 0)) > VLLM_LORA_RANKS[-1]:
            return f"the adapter {adapter} has LoRA rank {config['r']}, above vLLM's limit of {VLLM_LORA_RANKS[-1]}"
    return None


def choose_engine(requested: str, adapters=(), setting: str = "--engine", log=print) -> str:
    """'vllm' or 'transformers' for a requested auto|vllm|transformers and the adapters to be loaded.

    vLLM needs the package and a CUDA GPU (asking for it without them is an error); adapters it cannot load
    make both auto and vllm fall back to transformers, saying why.
    """
    if requested not in ENGINES:
        raise UserError(f"{setting} must be one of {', '.join(ENGINES)}, not {requested!r}")
    if requested == "transformers":
        return "transformers"
    if not vllm_usable():
        if requested == "vllm":
            raise UserError(f"{setting} vllm needs the vllm package and a CUDA GPU (pip install 'medtune[vllm]' on a "
                            "GPU machine); use transformers (or auto) here")
        return "transformers"
    refusal = vllm_refusal(adapters)
    if refusal:
        log(f"note: not using vLLM: {refusal}; generating with the transformers engine instead (or merge the adapter "
            "with `medtune merge` and give the merged model to vLLM)")
        return "transformers"
    return "vllm"


def vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of this rank."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise UserError(f"the adapter's LoRA rank {rank} is above what vLLM supports ({VLLM_LORA_RANKS[-1]}); "
                    "use the transformers engine or merge it first (medtune merge)")


def load_generator(model: str | Path | ModelSource, adapter: str | Path | None = None, *, dtype: str = "auto",
                   engine: str = "transformers", merge: bool = False, serving: bool = False,
                   adapters=(), device: str | None = None, max_model_len: int | None = None):
    """A generator for `model`: a run directory (its adapter and base), a model directory, a hub id,
    builtin:tiny-qwen3 or a resolved ModelSource, with `adapter` applied (a run directory's own adapter when
    `model` is one).

    dtype: auto|bfloat16|float16|float32 (or bf16|fp16|fp32). engine: auto|transformers|vllm (auto and vllm go
    through choose_engine: vLLM only with a CUDA GPU and adapters it can load). merge: fold the
    adapter into the weights in memory (transformers; faster decoding, no switching). serving: the vLLM
    engine for asyncio streaming (AsyncLLMEngine) rather than the offline one. adapters: more adapters
    the generator may switch to with `use_adapter` (vLLM sizes its LoRA slots for them up front).
    """
    source = model if isinstance(model, ModelSource) else resolve_model_source(model)
    if adapter is not None:
        source = dataclasses.replace(source, adapter=Path(adapter))
    dtype = DTYPE_NAMES.get(dtype, dtype)
    every = [a for a in [source.adapter, *adapters] if a is not None]
    if choose_engine(engine, every) == "vllm":
        cls = AsyncVllmGenerator if serving else VllmGenerator
        return cls.load(source, every, dtype=dtype, max_model_len=max_model_len)
    return TransformersGenerator.load(source, dtype=dtype, merge=merge, device=device)


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
