"""Engine choice (vLLM where it can serve the adapter, transformers otherwise) and loading a generator."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from medtune.config import DTYPE_NAMES
from medtune.errors import UserError
from medtune.generate.source import ModelSource, read_adapter_config, resolve_model_source
from medtune.generate.transformers_engine import TransformersGenerator
from medtune.generate.vllm_engine import VLLM_LORA_RANKS, AsyncVllmGenerator, VllmGenerator

ENGINES = ("auto", "vllm", "transformers")


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
