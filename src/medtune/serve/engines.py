"""Which engine serves the model: vLLM (with the LoRA adapter, unmerged) on a CUDA GPU when vllm is
installed, transformers otherwise.

Both engines offer the same few things to the API: `model_id`, `name`, `tokenizer`, `max_model_len`,
`prompt_ids(messages, enable_thinking)` and `start(prompt_ids, sampling)`, which returns a completion
to read with `async for text in completion`, then `completion.result` (tokens, finish reason), and
`await completion.aclose()` to stop it early.

The vLLM engine is written against vLLM's documented AsyncLLMEngine API (v0.11+: `AsyncEngineArgs`,
`AsyncLLMEngine.from_engine_args`, `generate(prompt, sampling_params, request_id, lora_request=...)`,
`abort(request_id)`, `LoRARequest(name, int_id, path)`); vllm cannot be installed on CPU machines, so
only its selection and its stream handling are tested there.
"""

from __future__ import annotations

import importlib.util
import uuid

from medtune.errors import UserError
from medtune.inference import (DTYPE_NAMES, GenerationResult, ModelSource, Sampling, TransformersEngine,
                               chat_prompt_ids)

ENGINES = ("auto", "vllm", "transformers")
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def vllm_usable() -> bool:
    """vllm is installed and a CUDA GPU is visible (vllm is not imported: that takes seconds)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def choose_engine(requested: str) -> str:
    """'vllm' or 'transformers' for --engine auto|vllm|transformers."""
    if requested not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, not {requested!r}")
    if requested == "transformers":
        return "transformers"
    usable = vllm_usable()
    if requested == "vllm" and not usable:
        raise UserError("--engine vllm needs the vllm package and a CUDA GPU (pip install 'medtune[vllm]' on a GPU "
                        "machine); use --engine transformers (or auto) here")
    return "vllm" if usable else "transformers"


def load_engine(source: ModelSource, engine: str, dtype: str = "auto", max_model_len: int | None = None):
    """The chosen engine with the model loaded; dtype is auto|bf16|fp16|fp32."""
    if engine == "vllm":
        return VllmEngine.load(source, dtype=DTYPE_NAMES[dtype], max_model_len=max_model_len)
    return TransformersEngine.load(source, dtype=DTYPE_NAMES[dtype])


class VllmEngine:
    """vLLM's async engine: continuous batching on the GPU, the run's LoRA adapter applied per request."""

    name = "vllm"

    def __init__(self, llm, tokenizer, model_id: str, lora_request, max_model_len: int):
        self.llm = llm
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.lora_request = lora_request
        self.max_model_len = max_model_len

    @classmethod
    def load(cls, source: ModelSource, dtype: str = "auto", max_model_len: int | None = None) -> "VllmEngine":
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.lora.request import LoRARequest

        tokenizer_dir = source.adapter if source.adapter and (source.adapter / "tokenizer_config.json").exists() \
            else source.base
        lora_args = {}
        if source.adapter is not None:
            from peft import PeftConfig

            rank = PeftConfig.from_pretrained(str(source.adapter)).r
            lora_args = dict(enable_lora=True, max_loras=1, max_lora_rank=vllm_lora_rank(rank))
        args = AsyncEngineArgs(model=source.base, tokenizer=str(tokenizer_dir), dtype=dtype,
                               max_model_len=max_model_len, **lora_args)
        llm = AsyncLLMEngine.from_engine_args(args)
        lora = LoRARequest(source.model_id, 1, str(source.adapter)) if source.adapter is not None else None
        return cls(llm, AutoTokenizer.from_pretrained(str(tokenizer_dir)), source.model_id, lora,
                   llm.model_config.max_model_len)

    def prompt_ids(self, messages: list[dict], enable_thinking: bool) -> list[int]:
        # The same chat-template rendering as the transformers engine; vLLM receives token ids.
        return chat_prompt_ids(self.tokenizer, messages, enable_thinking)

    def start(self, prompt_ids: list[int], sampling: Sampling) -> "VllmCompletion":
        from vllm import SamplingParams

        params = SamplingParams(n=1, max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                top_p=sampling.top_p, top_k=sampling.top_k if sampling.top_k > 0 else -1,
                                seed=sampling.seed, skip_special_tokens=True)
        return VllmCompletion(self.llm, prompt_ids, params, self.lora_request)


def vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of this rank."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise UserError(f"the adapter's LoRA rank {rank} is above what vLLM supports ({VLLM_LORA_RANKS[-1]}); "
                    "use --engine transformers or merge it first (medtune merge)")


class VllmCompletion:
    """One vLLM request read as a stream of text pieces (vLLM reports the text so far; we pass on what is new)."""

    def __init__(self, llm, prompt_ids: list[int], params, lora_request):
        self.llm = llm
        self.prompt_ids = prompt_ids
        self.params = params
        self.lora_request = lora_request
        self.request_id = f"medtune-{uuid.uuid4().hex}"
        self.result: GenerationResult | None = None

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
                self.result = GenerationResult(len(choice.token_ids),
                                               "length" if choice.finish_reason == "length" else "stop")

    async def aclose(self) -> None:
        await self.llm.abort(self.request_id)  # a no-op for a finished request
