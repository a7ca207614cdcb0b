"""Sampling settings (Qwen3's recommended values unless a config says otherwise), chat prompts with
`enable_thinking` always explicit, stop ids, and the Generation record every engine returns."""

from __future__ import annotations

from dataclasses import dataclass

from medtune.config import QWEN3_SAMPLING, GenerationConfig
from medtune.errors import UserError
from medtune.text import count_thinking_tokens, split_thinking


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


def generation_sampling(g: GenerationConfig) -> Sampling:
    """A config's decoding settings as generation's Sampling (do_sample false = temperature 0, greedy)."""
    return Sampling(max_tokens=g.max_new_tokens, temperature=g.temperature if g.do_sample else 0.0, top_p=g.top_p,
                    top_k=g.top_k, seed=g.seed, repetition_penalty=g.repetition_penalty)
