"""Comparison arms: one model (+ adapter) in one prompt format with one thinking setting and its decoding.

A configured model with `thinking: [false, true]` becomes two arms, `name` and `name/think`, so a hybrid
model's thinking tokens never mix into its non-thinking numbers. This module also holds what every
engine shares: the prompt a question becomes, where generation stopped, and the thinking/answer split.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from medtune.config import QWEN3_THINKING_SAMPLING, CompareModel, GenerationConfig
from medtune.errors import UserError
from medtune.modeling import resolve_base_model

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class Arm:
    name: str
    """e.g. `qwen3-8b` or `qwen3-8b/think`."""
    model: str
    """What from_pretrained loads (hub id or directory), or the model name an endpoint serves."""
    adapter: str | None
    thinking: bool
    prompt_format: str
    system_prompt: str | None
    generation: GenerationConfig
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"

    def describe(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Generation:
    """One answer as an engine produced it (text without the stop token)."""

    text: str
    tokens: int
    """Tokens generated, not counting the stop token."""
    thinking_tokens: int
    """How many of `tokens` are thinking (up to and including </think>; all of them when it never closed)."""
    finish_reason: str
    """stop (the model ended its turn) or length (max_new_tokens reached)."""
    latency_seconds: float | None = None
    ttft_seconds: float | None = None
    reasoning: str | None = None
    """Thinking text an endpoint returned apart from the answer (reasoning_content); None = inside `text`."""


def thinking_generation(model: CompareModel, generation: GenerationConfig) -> GenerationConfig:
    if model.thinking_generation is not None:
        return model.thinking_generation
    return dataclasses.replace(generation, **QWEN3_THINKING_SAMPLING)


def resolve_arms(models: list[CompareModel], default_generation: GenerationConfig,
                 run_dir: str | Path | None = None, run_base: str | None = None) -> list[Arm]:
    """Arms for these models; `run:base` is `run_base` and adapter `run` is `run_dir` (a run is needed for both)."""
    arms = []
    for m in models:
        model = m.model
        if model == "run:base":
            if run_base is None:
                raise UserError(f"model '{m.name}': 'run:base' means a run's base model, which needs a config; "
                                "give a hub id or a path instead")
            model = run_base
        elif not m.base_url:
            model = resolve_base_model(model, run_dir)  # creates the builtin tiny model on first use
        adapter = m.adapter
        if adapter == "run":
            if run_dir is None:
                raise UserError(f"model '{m.name}': adapter 'run' means a run's trained adapter, which needs a "
                                "config; give the adapter directory instead")
            adapter = str(run_dir)
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            hint = " (run `medtune train CONFIG` first)" if m.adapter == "run" else ""
            raise UserError(f"model '{m.name}': no LoRA adapter in '{adapter}': adapter_config.json is missing{hint}")
        generation = m.generation or default_generation
        for thinking in m.thinking:
            arms.append(Arm(name=f"{m.name}/think" if thinking else m.name, model=model, adapter=adapter,
                            thinking=thinking, prompt_format=m.prompt_format, system_prompt=m.system_prompt,
                            generation=thinking_generation(m, generation) if thinking else generation,
                            base_url=m.base_url, api_key_env=m.api_key_env))
    return arms


def short_name(model: str) -> str:
    """A model's name for tables: Qwen/Qwen3-8B -> qwen3-8b, builtin:tiny-qwen3 -> tiny-qwen3."""
    return model.rstrip("/").split("/")[-1].split(":")[-1].lower()


def default_models(base_name: str, system_prompt: str | None) -> list[CompareModel]:
    """The tuned model and its base, thinking off, both with the system prompt training used."""
    short = short_name(base_name)
    return [CompareModel(name=f"{short}-medtune", model="run:base", adapter="run", system_prompt=system_prompt),
            CompareModel(name=short, model="run:base", system_prompt=system_prompt)]


def chat_messages(arm: Arm, question: str | list[dict]) -> list[dict]:
    """The arm's system message, then one user message, or a whole conversation so far (a list of
    user/assistant messages ending with the user's, as a multi-turn consultation passes it)."""
    system = [{"role": "system", "content": arm.system_prompt}] if arm.system_prompt else []
    return system + ([{"role": "user", "content": question}] if isinstance(question, str) else list(question))


def render_prompt(tokenizer, arm: Arm, question: str | list[dict]) -> str:
    """The exact text the model continues: its own chat template, or the plain format verbatim."""
    if arm.prompt_format == "chat_template":
        return tokenizer.apply_chat_template(chat_messages(arm, question), tokenize=False,
                                             add_generation_prompt=True, enable_thinking=arm.thinking)
    if not isinstance(question, str):
        raise UserError(f"arm '{arm.name}': a conversation of several turns needs prompt_format: chat_template, "
                        f"not the plain format {arm.prompt_format!r}")
    return arm.prompt_format.replace("{question}", question)


def prompt_token_ids(tokenizer, arm: Arm, question: str | list[dict]) -> list[int]:
    # A rendered chat template already holds any BOS it wants; a plain format gets the tokenizer's own.
    return tokenizer(render_prompt(tokenizer, arm, question),
                     add_special_tokens=arm.prompt_format != "chat_template")["input_ids"]


def cut_at_stop(ids: list[int], stop_ids: set[int]) -> tuple[list[int], str]:
    """The generated ids before the first stop token, and the finish reason (stop, or length when none)."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[:i], "stop"
    return ids, "length"


def count_thinking_tokens(ids: list[int], decode) -> int:
    """Tokens up to and including the one that completes '</think>'; all when it never closes.

    Binary search over decoded prefixes: exact for any tokenizer, whether '</think>' is one token or several.
    """
    if THINK_CLOSE not in decode(ids):
        return len(ids)
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if THINK_CLOSE in decode(ids[:mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo


def split_thinking(gen: Generation, thinking: bool) -> tuple[str, str]:
    """(thinking text, answer). With thinking on, text before '</think>' is thinking; when the model never
    closed it, everything is thinking and the answer is empty. With thinking off, all of it is the answer."""
    if gen.reasoning is not None:
        return gen.reasoning.strip(), gen.text.strip()
    if not thinking:
        return "", gen.text.strip()
    head, closed, tail = gen.text.partition(THINK_CLOSE)
    head = head.strip().removeprefix(THINK_OPEN).strip()
    return (head, tail.strip()) if closed else (head, "")


def api_key(arm: Arm) -> str:
    # Local OpenAI-compatible servers accept any key; the client refuses an empty one.
    return os.environ.get(arm.api_key_env) or "EMPTY"
