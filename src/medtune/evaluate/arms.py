"""Comparison arms: one model (+ adapter) in one prompt format with one thinking setting and its decoding.

A configured model with `thinking: [false, true]` becomes two arms, `name` and `name/think`, so a hybrid
model's thinking tokens never mix into its non-thinking numbers. This module also holds what every
engine shares: the prompt a question becomes and the arm's sampling (generation itself: medtune.generate).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from medtune.config import QWEN3_SAMPLING, CompareModel, GenerationConfig
from medtune.errors import UserError
from medtune.generate.sampling import Sampling, chat_prompt_ids, generation_sampling
from medtune.modeling import resolve_base_model


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


def thinking_generation(model: CompareModel, generation: GenerationConfig) -> GenerationConfig:
    if model.thinking_generation is not None:
        return model.thinking_generation
    return dataclasses.replace(generation, **QWEN3_SAMPLING[True])


def resolve_arms(models: list[CompareModel], default_generation: GenerationConfig,
                 run_dir: str | Path | None = None, run_base: str | None = None) -> list[Arm]:
    """Arms for these models; `run:base` is `run_base`, adapter `run` is `run_dir` and adapter `run:align` is
    `run_dir/align` (the align stage's adapter); a run is needed for all three."""
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
        if adapter in ("run", "run:align"):
            if run_dir is None:
                raise UserError(f"model '{m.name}': adapter '{adapter}' means a run's trained adapter, which needs a "
                                "config; give the adapter directory instead")
            adapter = str(run_dir) if adapter == "run" else str(Path(run_dir) / "align")
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            hint = {"run": " (run `medtune train CONFIG` first)",
                    "run:align": " (run `medtune align CONFIG` first)"}.get(m.adapter, "")
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


def default_models(base_name: str, system_prompt: str | None, aligned: bool = False) -> list[CompareModel]:
    """The tuned model and its base, thinking off, both with the system prompt training used; when the align
    stage ran, its model comes first (the judge compares the first arm with each other: aligned vs SFT)."""
    short = short_name(base_name)
    models = [CompareModel(name=f"{short}-medtune", model="run:base", adapter="run", system_prompt=system_prompt),
              CompareModel(name=short, model="run:base", system_prompt=system_prompt)]
    if aligned:
        models.insert(0, CompareModel(name=f"{short}-medtune-aligned", model="run:base", adapter="run:align",
                                      system_prompt=system_prompt))
    return models


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
    if arm.prompt_format == "chat_template":
        return chat_prompt_ids(tokenizer, chat_messages(arm, question), arm.thinking)
    return tokenizer(render_prompt(tokenizer, arm, question))["input_ids"]  # a plain format gets the tokenizer's BOS


def arm_sampling(arm: Arm) -> Sampling:
    """The arm's decoding settings as generation's Sampling (do_sample false = temperature 0, greedy)."""
    return generation_sampling(arm.generation)


def api_key(arm: Arm) -> str:
    # Local OpenAI-compatible servers accept any key; the client refuses an empty one.
    return os.environ.get(arm.api_key_env) or "EMPTY"


def chat_template_arms(arms: list[Arm], what: str, log=print) -> list[Arm]:
    """The arms that prompt through the model's chat template (a conversation needs one); the others are
    skipped with a log line naming `what`, and no arm left is an error."""
    plain = [a.name for a in arms if a.prompt_format != "chat_template"]
    if plain:
        log(f"{what}: skipping {', '.join(plain)}: a conversation needs the model's chat template")
    kept = [a for a in arms if a.prompt_format == "chat_template"]
    if not kept:
        raise UserError(f"no arm with prompt_format: chat_template to run the {what} with")
    return kept
