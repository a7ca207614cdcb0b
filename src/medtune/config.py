"""The run configuration: one YAML file mapped onto typed dataclasses, with `--set` overrides.

A config has `output_dir` and six sections (model, data, lora, train, evaluate, report), plus an optional
`align` section. Unknown keys,
wrong types and impossible combinations are errors that name the file and the key. Training fields
that Hugging Face `TrainingArguments` / TRL `SFTConfig` define keep their names and meaning there.

Relative paths in a config are relative to the directory `medtune` is run from.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medtune.errors import UserError, deprecated

BUILTIN_TINY_QWEN3 = "builtin:tiny-qwen3"
QWEN3_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


QWEN3_SAMPLING = {
    False: {"temperature": 0.7, "top_p": 0.8, "top_k": 20},   # non-thinking
    True: {"temperature": 0.6, "top_p": 0.95, "top_k": 20},   # thinking
}
DTYPE_NAMES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
"""The one dtype table: each dtype name medtune takes (model.torch_dtype, quantization.compute_dtype, every
command's --dtype) -> torch's name for it (`torch.<name>`, and the name from_pretrained and vLLM take).
Everything else is derived from it: modeling.torch_dtype (the torch object), the memory plan's byte sizes."""
DTYPES = tuple(DTYPE_NAMES)
"""The one set of dtype names: model.torch_dtype and every command's --dtype."""
OLD_DTYPES = {torch_name: name for name, torch_name in DTYPE_NAMES.items() if name != "auto"}
"""Spellings medtune 0.1 accepted in some places (torch's names); they still work, with a deprecation note,
until 0.2."""


def dtype_name(value: str, where: str) -> str:
    """`value`, with an old spelling (bfloat16, float16, float32) turned into its name in DTYPES and noted."""
    if value in OLD_DTYPES:
        deprecated(f"{where} {value!r} is deprecated and stops working in medtune 0.2: write {OLD_DTYPES[value]!r}")
        return OLD_DTYPES[value]
    return value


class ConfigError(UserError, ValueError):
    """A config problem a person must fix; the message names the file and the key.

    `key` is the dotted key it is about (`evaluate.compare[1].model`), so load_config can add the YAML line
    or name the `--set` it came from."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


@dataclass
class QuantizationConfig:
    """bitsandbytes quantization of the frozen base weights while training (QLoRA); merge loads them unquantized."""

    bits: int = 4
    """4 (QLoRA, NF4/FP4) or 8 (LLM.int8)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type; nf4 is QLoRA's."""
    double_quant: bool = True
    """Quantize the quantization constants too (about 0.4 bits per weight saved)."""
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Dtype the 4-bit weights are dequantized to for each matmul (fp32 on CPU)."""

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"model.quantization.bits must be 4 or 8, not {self.bits}")


@dataclass
class ModelConfig:
    name_or_path: str = BUILTIN_TINY_QWEN3
    """Hub id (Qwen/Qwen3-8B), local directory, or `builtin:tiny-qwen3` (tiny random Qwen3 for CPU demos)."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; defaults to the model's own."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the model and tokenizer."""
    trust_remote_code: bool = False
    torch_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Weights dtype; `auto` is bf16 where the hardware has it, fp32 otherwise (bfloat16 etc.: deprecated)."""
    attn_implementation: Literal["auto", "eager", "sdpa", "sdpa_varlen", "flash_attention_2",
                                 "flash_attention_3"] = "auto"
    """`auto` picks flash-attention when installed on a GPU, else sdpa_varlen (medtune.attention: sdpa sample by
    sample in padding-free batches)."""
    enable_thinking: bool = False
    """Chat-template thinking switch used for training data (Qwen3 hybrid models); off = non-thinking SFT."""
    quantization: QuantizationConfig | None = None
    """null = full-precision base weights; {bits: 4, quant_type: nf4, double_quant: true, compute_dtype: bf16} =
    QLoRA through bitsandbytes."""


@dataclass
class TrainSource:
    """One source of a data mixture: a file, glob, directory or hub id read with its own layout."""

    path: str
    weight: float | None = None
    """Share of the training set: sources' weights are normalised to shares (3 and 1 = 75% and 25%)."""
    max_samples: int | None = None
    """At most this many usable records of this source (chosen as data.select says); null = all."""
    format: Literal["auto", "sharegpt", "messages", "alpaca", "csv"] | None = None
    """Record layout of this source; null = data.format."""
    columns: dict[str, str] | None = None
    """CSV column mapping of this source; null = data.columns."""
    encoding: str | None = None
    """Text encoding of this source; null = data.encoding."""
    system_prompt: str | None = None
    """System prompt for this source's records that have none; null = data.system_prompt."""

    def __post_init__(self):
        if not self.path.strip():
            raise ValueError("data.train_files: a source needs a non-empty path")
        if self.weight is not None and self.weight <= 0:
            raise ValueError(f"data.train_files '{self.path}': weight must be > 0")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"data.train_files '{self.path}': max_samples must be >= 1 or null")


@dataclass
class ExcludeFile:
    """An evaluation file whose items are removed from the training data by prepare."""

    path: str
    format: Literal["questions", "safety", "cmmlu", "cmexam", "cmb", "medqa", "cmb-clin", "rubrics"] = "questions"
    """questions/safety: JSONL or CSV with a `question`/`prompt` field; rubrics: HealthBench's layout (its user
    messages); else a benchmark layout."""


@dataclass
class DataConfig:
    train_files: list[str | TrainSource] = field(default_factory=list)
    """Local JSON/JSONL(.gz)/Parquet/CSV files or globs, or one hub dataset id; an entry may also be a
    mapping {path, weight | max_samples, format, columns, encoding, system_prompt} to mix sources."""
    val_files: list[str] = field(default_factory=list)
    """Optional separate validation files; when empty, `val_size` records are held out of train_files."""
    format: Literal["auto", "sharegpt", "messages", "alpaca", "csv"] = "auto"
    """Record layout; `auto` decides per record (conversations / messages / instruction+output) or by .csv."""
    hub_split: str = "train"
    """Split to stream when train_files is a hub dataset id."""
    columns: dict[str, str] = field(default_factory=lambda: {"user": "ask", "assistant": "answer"})
    """CSV column mapping: user, assistant and optional system column names."""
    encoding: str = "utf-8"
    """Text encoding of local files (e.g. gb18030 for GBK-encoded CSV)."""
    system_prompt: str | None = None
    """System prompt added to records that have none; null adds nothing."""
    max_samples: int | None = None
    """Number of training records to keep after validation and de-duplication; null keeps all."""
    select: Literal["first", "random"] = "first"
    """How max_samples are chosen: the first N in file order, or a seeded random N."""
    val_size: float = 0
    """Validation records: a count (>= 1) or a fraction of the usable records (< 1), never overlapping train."""
    max_length: int = 2048
    """Maximum tokens per training sample."""
    truncation: Literal["turn", "drop"] = "turn"
    """Over-long dialogues: keep the leading whole turns that fit (`turn`) or drop the dialogue (`drop`)."""
    multi_turn: Literal["joint", "expand"] = "joint"
    """`joint`: one sample per dialogue, every answer trained; `expand`: one sample per answer, its exact prompt."""
    dedup: bool = True
    """Drop exact duplicate conversations (counted and listed in rejected.jsonl)."""
    seed: int = 42
    """Seed for random selection and the validation split."""
    exclude: list[str | ExcludeFile] = field(default_factory=list)
    """Evaluation files whose items must not be trained on: a training dialogue that contains one (the
    contamination check's test) is rejected as `overlaps evaluation item FILE:LINE`. A plain path must be
    one of the evaluate section's files (its format is taken from there); else give {path, format}."""

    def source_paths(self) -> list[str]:
        """The path (or glob, or hub id) of every data.train_files entry, in order."""
        return [s.path if isinstance(s, TrainSource) else s for s in self.train_files]

    def __post_init__(self):
        weighted = [isinstance(s, TrainSource) and s.weight is not None for s in self.train_files]
        if any(weighted) and not all(weighted):
            raise ValueError("data.train_files: give every source a weight, or none (weights are shares of the "
                             "training set)")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("data.max_samples must be >= 1 or null")
        if self.val_size < 0 or (self.val_size >= 1 and self.val_size != int(self.val_size)):
            raise ValueError("data.val_size must be a whole count >= 1, a fraction in [0, 1), or 0")
        if self.max_length < 16:
            raise ValueError("data.max_length must be at least 16 tokens")
        if "user" not in self.columns or "assistant" not in self.columns:
            raise ValueError("data.columns needs at least 'user' and 'assistant' column names")
        if unknown := set(self.columns) - {"user", "assistant", "system"}:
            raise ValueError(f"data.columns has unknown role(s) {sorted(unknown)}; use user, assistant, system")


@dataclass
class LoraConfig:
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (peft `lora_alpha`); the update is scaled by alpha / r."""
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(QWEN3_LORA_TARGETS))
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] = field(default_factory=list)
    """Modules trained in full next to the LoRA (e.g. lm_head); saved with the adapter."""

    def __post_init__(self):
        if self.r < 1:
            raise ValueError("lora.r must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("lora.dropout must be in [0, 1)")
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module")


@dataclass
class TrainConfig:
    """Fields named and meant as in transformers `TrainingArguments` / TRL `SFTConfig`, plus `batching`."""

    num_train_epochs: float = 1.0
    max_steps: int = -1
    """Total optimizer steps; -1 derives them from num_train_epochs."""
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0.0
    """Warmup: whole steps (>= 1) or a ratio of total steps (< 1), as in transformers 5."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    bf16: bool | None = None
    """null = bf16 where the hardware supports it (CUDA with bf16), else fp32; the choice is logged."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Non-reentrant activation checkpointing (trades compute for memory): true (every layer), false, or auto:
    as few layers as `medtune plan`'s memory estimate needs to fit the device (none when all fits)."""
    batching: Literal["auto", "packing", "group_by_length", "padding"] = "auto"
    """How batches avoid padding: `auto` packs padding-free with flash-attention varlen, else groups by length."""
    use_liger_kernel: bool | None = None
    """null = Liger fused kernels when installed on CUDA."""
    logging_steps: int = 10
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    eval_steps: int | None = None
    save_steps: int = 500
    save_total_limit: int | None = 3
    seed: int = 42
    dataloader_num_workers: int = 0
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self):
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("train.max_steps must be -1 (use num_train_epochs) or >= 1")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError("train.num_train_epochs must be > 0 when train.max_steps is -1")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("train.learning_rate must be > 0")
        if self.warmup_steps < 0 or (self.warmup_steps >= 1 and self.warmup_steps != int(self.warmup_steps)):
            raise ValueError("train.warmup_steps must be a whole number of steps or a ratio in [0, 1)")
        if self.eval_strategy == "steps" and self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError("train.eval_steps must be >= 1")


@dataclass
class GenerationConfig:
    """Decoding settings for one compared arm (defaults: Qwen3's recommended non-thinking sampling)."""

    max_new_tokens: int = 512
    do_sample: bool = True
    """false = greedy decoding (temperature, top_p and top_k are then unused)."""
    temperature: float = QWEN3_SAMPLING[False]["temperature"]
    top_p: float = QWEN3_SAMPLING[False]["top_p"]
    top_k: int = QWEN3_SAMPLING[False]["top_k"]
    """0 disables top-k (needed for endpoints that reject it, e.g. api.openai.com)."""
    repetition_penalty: float = 1.0
    seed: int = 0
    """Question i is sampled with seed + i, so every arm and rerun draws the same way."""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("generation.max_new_tokens must be >= 1")
        if self.do_sample and self.temperature <= 0:
            raise ValueError("generation.temperature must be > 0 when sampling; set do_sample: false for greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError("generation.top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("generation.top_k must be >= 0 (0 = off)")
        if self.repetition_penalty <= 0:
            raise ValueError("generation.repetition_penalty must be > 0")


@dataclass
class CompareModel:
    """One model of a comparison: a model (+ optional adapter) in its own prompt format; one arm per thinking value."""

    name: str
    model: str = "run:base"
    """Hub id or path; `run:base` = this run's base model; with base_url, the model name the endpoint serves."""
    adapter: str | None = None
    """LoRA adapter directory; `run` = this run's trained adapter, `run:align` = its aligned adapter (run/align)."""
    prompt_format: str = "chat_template"
    """`chat_template` (the model's own) or a plain format with {question}, e.g. '<human>:{question}\\n<bot>:'."""
    system_prompt: str | None = None
    """System message for chat_template models; null = none (the default arms use data.system_prompt)."""
    thinking: list[bool] = field(default_factory=lambda: [False])
    """Thinking arms for hybrid models: [false], [true] or [false, true] (each a separate arm)."""
    generation: GenerationConfig | None = None
    """Decoding settings, complete on their own; null = evaluate.generation."""
    thinking_generation: GenerationConfig | None = None
    """Decoding settings of the thinking arm; null = `generation` with Qwen3's thinking sampling (0.6/0.95/20)."""
    base_url: str | None = None
    """An OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) that serves `model`; null = run it locally."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (unset is fine for local servers)."""

    def __post_init__(self):
        if not self.name.strip() or "/" in self.name:
            raise ValueError(f"evaluate.compare name {self.name!r} must be non-empty and without '/'")
        if not self.thinking or len(set(self.thinking)) != len(self.thinking):
            raise ValueError(f"evaluate.compare '{self.name}': thinking must be [false], [true] or [false, true]")
        if self.prompt_format != "chat_template":
            if "{question}" not in self.prompt_format:
                raise ValueError(f"evaluate.compare '{self.name}': prompt_format must be chat_template or contain "
                                 "{question}")
            if True in self.thinking or self.system_prompt is not None:
                raise ValueError(f"evaluate.compare '{self.name}': thinking and system_prompt need prompt_format: "
                                 "chat_template")
        if self.base_url and self.adapter:
            raise ValueError(f"evaluate.compare '{self.name}': an endpoint (base_url) serves its own weights; serve "
                             "the adapter there and name it in `model` instead of `adapter`")


def repeated_names(models: list[CompareModel]) -> list[str]:
    names = [m.name for m in models]
    return sorted({n for n in names if names.count(n) > 1})


@dataclass
class BenchmarkSet:
    """A local multiple-choice benchmark."""

    path: str
    format: Literal["cmmlu", "cmexam", "cmb", "medqa"] = "cmmlu"
    method: Literal["loglik", "generate"] = "loglik"
    shots: int = 0
    dev_path: str | None = None
    """Few-shot examples come from here (default: the first `shots` items of each subject are used and excluded)."""
    kind: Literal["medical", "general"] = "medical"
    """general: a non-medical set (e.g. CMMLU's non-medical subjects); the report sets the tuned model's change on it
    (the cost of medical tuning) beside its change on the medical sets (the gain)."""
    subjects: list[str] | None = None
    """Score only these subjects (CMMLU: file stems such as high_school_geography); null = all."""
    name: str | None = None
    """The benchmark's name in the results (default: the path's stem); needed to score one path twice."""


@dataclass
class ConsultationSet:
    """Multi-turn consultation cases (medtune.evaluate.consult)."""

    path: str
    """A CMB-Clin JSON file: [{id, title, description, QA_pairs: [{question, answer}]}]."""
    format: Literal["cmb-clin"] = "cmb-clin"
    max_cases: int | None = None
    """Use the first N cases; null = all."""

    def __post_init__(self):
        if self.max_cases is not None and self.max_cases < 1:
            raise ValueError("evaluate.consultations max_cases must be >= 1 or null")


@dataclass
class RubricSet:
    """A rubric set in HealthBench's JSONL layout, graded criterion by criterion (medtune.evaluate.rubric)."""

    path: str
    """JSONL: {prompt_id, prompt: [messages], rubrics: [{criterion, points, tags}], example_tags,
    ideal_completions_data}, e.g. data/rubrics/zh_consultations.jsonl or HealthBench's own files."""
    name: str | None = None
    """Its name in the results, eval/rubric/<name>/ (default: the path's stem)."""
    max_examples: int | None = None
    """Use the first N usable examples; null = all."""
    meta: str | None = None
    """Physician-labelled criteria in HealthBench's meta-evaluation layout: the grader's macro F1 against them."""

    def __post_init__(self):
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError("evaluate.rubrics max_examples must be >= 1 or null")


@dataclass
class EvaluateConfig:
    perplexity: bool = True
    """Eval loss and perplexity of the trained adapter (and of its base) on the validation split."""
    questions: str | None = "data/questions/zh_everyday.jsonl"
    """Question set for the comparison (JSONL or CSV with a `question` field); null skips the comparison."""
    max_questions: int | None = None
    """Use the first N questions; null = all."""
    compare: list[CompareModel] = field(default_factory=list)
    """Models to compare; empty = this run's tuned model and its base, thinking off."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """Decoding settings of every compared model that has no `generation` of its own."""
    engine: Literal["auto", "transformers", "vllm", "openai"] = "auto"
    """Local generation engine: `auto` = vLLM when installed with CUDA, else transformers. Models with a
    base_url always go through their OpenAI-compatible endpoint; `openai` requires every model to have one."""
    batch_size: int = 8
    """Prompts per batch (transformers) or concurrent requests (endpoints) for batched generation."""
    benchmarks: list[BenchmarkSet] = field(default_factory=list)
    consultations: list[ConsultationSet] = field(default_factory=list)
    """Multi-turn consultation sets (CMB-Clin layout), answered by every chat-template arm of the comparison."""
    judge_base_url: str | None = None
    """OpenAI-compatible endpoint for LLM-as-judge; null skips judging."""
    judge_model: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the judge's API key."""
    rubrics: list[RubricSet] = field(default_factory=list)
    """Rubric sets (HealthBench layout) answered by every chat-template arm and graded by the grader below."""
    grader_base_url: str | None = None
    """OpenAI-compatible endpoint of the rubric grader; null = the judge's (judge_base_url). `builtin:rules`
    starts a loopback grader that decides by fixed rules (quoted phrases): for the demo, not a real grader."""
    grader_model: str | None = None
    """Model name sent to the grader endpoint; null = judge_model."""
    grader_api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the grader's API key (the judge's when the grader is the judge's)."""
    references: str | None = None
    """JSONL with reference answers for ROUGE-L / BLEU-4 / Distinct-n; null uses the questions' `reference`."""
    safety: str | None = "data/safety/redflags_zh.jsonl"
    """Red-flag prompt set for the safety probe; null skips it."""
    contamination: bool = True
    """Check every evaluation input against the training (and align) data -> eval/contamination.json."""

    def __post_init__(self):
        if self.max_questions is not None and self.max_questions < 1:
            raise ValueError("evaluate.max_questions must be >= 1 or null")
        if self.batch_size < 1:
            raise ValueError("evaluate.batch_size must be >= 1")
        if dupes := repeated_names(self.compare):
            raise ValueError(f"evaluate.compare names must be unique; repeated: {', '.join(dupes)}")
        if self.engine == "openai":
            if not self.compare:
                raise ValueError("evaluate.engine is openai: list the endpoint models in evaluate.compare, each with "
                                 "a base_url (the default models run locally)")
            if local := [m.name for m in self.compare if not m.base_url]:
                raise ValueError(f"evaluate.engine is openai, so every evaluate.compare model needs a base_url; "
                                 f"missing for: {', '.join(local)}")


@dataclass
class SelfPairsConfig:
    """`align.pairs: self`: pairs from the SFT run. scorer `reference`: chosen = the training data's answer,
    rejected = the SFT model's own sample; any other scorer: num_samples answers per prompt, scored, the best
    paired with the worst when they differ by at least `margin`."""

    scorer: Literal["reference", "safety", "judge", "rubric"] = "reference"
    """`safety`: the safety probe's rule (urgent prompts must be sent to urgent care, non-urgent ones must not:
    redflags.safety_score); `judge`: the evaluate judge, each sample against the others in both orders;
    `rubric`: the rubric grader (evaluate.grader_base_url, else the judge's) on prompts from rubric-layout files
    (self_pairs.prompts), met points over positive points."""
    prompts: list[str] = field(default_factory=list)
    """Open-ended prompt files ({prompt, urgent} JSONL, e.g. data/align-safety/redflags_train_zh.jsonl); empty =
    the training dialogues' prompts."""
    num_samples: int = 4
    """Answers sampled per prompt for a scorer other than `reference`."""
    margin: float = 0.5
    """Pair best and worst only when their scores differ by at least this (safety and judge scores are in
    [0, 1]; a rubric score is met over positive points, below 0 when negative criteria are hit)."""

    max_prompts: int | None = 64
    """Training dialogues (the first N of the prepared train split) turned into pairs; null = all."""
    max_rouge_l: float = 0.7
    """Drop a pair when the sample's character ROUGE-L F1 against the reference answer is above this (near-duplicate)."""
    judge: bool = False
    """Also ask the evaluate judge (evaluate.judge_base_url) and drop pairs where it prefers the sample."""
    batch_size: int = 8
    """Prompts per batch of generation."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """Decoding of the sampled (rejected) answers."""

    def __post_init__(self):
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ValueError("align.self_pairs.max_prompts must be >= 1 or null")
        if not 0 < self.max_rouge_l <= 1:
            raise ValueError("align.self_pairs.max_rouge_l must be in (0, 1]")
        if self.batch_size < 1:
            raise ValueError("align.self_pairs.batch_size must be >= 1")
        if self.scorer != "reference" and self.num_samples < 2:
            raise ValueError(f"align.self_pairs.num_samples must be >= 2 with scorer {self.scorer}: the best sample is "
                             "paired with the worst")
        if not 0 < self.margin <= 1:
            raise ValueError("align.self_pairs.margin must be in (0, 1]")
        if self.judge and self.scorer != "reference":
            raise ValueError("align.self_pairs.judge filters reference pairs; with another scorer set scorer: judge "
                             "to score by the judge, or judge: false")
        if self.prompts and self.scorer == "reference":
            raise ValueError("align.self_pairs.prompts have no reference answer: set align.self_pairs.scorer "
                             "(safety, judge or rubric)")
        if self.scorer == "rubric" and not self.prompts:
            raise ValueError("align.self_pairs.scorer rubric grades prompts that carry criteria: list rubric-layout "
                             "files (e.g. data/rubrics/zh_consultations.jsonl) in align.self_pairs.prompts")


@dataclass
class AlignConfig:
    """The align stage (after train): DPO / KTO / GRPO through TRL on top of the SFT adapter. Fields keep
    their TRL names (DPOConfig / KTOConfig / GRPOConfig); any other TRL field goes under `trl`."""

    algorithm: Literal["dpo", "kto", "grpo"]
    pairs: Literal["files", "self"] = "files"
    """`files`: records from train_files; `self`: pairs built from the SFT run (see self_pairs)."""
    train_files: list[str] = field(default_factory=list)
    """Preference (DPO), unpaired (KTO) or multiple-choice (GRPO) JSON/JSONL files; the format is detected per record."""
    max_samples: int | None = None
    """Keep the first N usable records; null keeps all."""
    mcq_format: Literal["mcq", "cmmlu", "cmexam", "cmb", "medqa"] = "mcq"
    """GRPO: layout of train_files: `question/options/answer` JSONL (mcq) or a benchmark layout."""
    grpo_data: Literal["mcq", "open"] = "mcq"
    """GRPO: train_files hold multiple-choice items (`mcq`, rewarded by the answer letter) or open-ended prompts
    (`open`: {prompt, urgent} JSONL such as data/align-safety/redflags_train_zh.jsonl, or HealthBench-layout
    rubric files, rewarded by align.rewards)."""
    rewards: list[str] = field(default_factory=lambda: ["redflag"])
    """GRPO on open prompts: `redflag` = the safety probe's urgent-care rule on urgent prompts, over-triage
    penalised on non-urgent ones (local, no endpoint); `rubric` = the rubric grader's score on prompts from
    rubric-layout files (evaluate.grader_base_url, else the judge's)."""
    reward_weights: list[float] | None = None
    """GRPO on open prompts: one weight per align.rewards entry; null = 1 each."""
    self_pairs: SelfPairsConfig = field(default_factory=SelfPairsConfig)
    beta: float | None = None
    """KL weight; null = TRL's default (0.1 for DPO/KTO, 0.0 for GRPO: no reference model)."""
    loss_type: list[str] | None = None
    """TRL loss(es), mixed by loss_weights; null = TRL's default (DPO sigmoid, KTO kto, GRPO dapo)."""
    loss_weights: list[float] | None = None
    learning_rate: float = 5e-6
    """Higher than TRL's full-model 1e-6: only the LoRA weights move."""
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 1024
    """Prompt + completion tokens (DPO/KTO); longer records are rejected before training, not truncated."""
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool | None = None
    """null = bf16 on a bf16-capable GPU, else fp32 (bf16 on CPU is 8-19x slower)."""
    gradient_checkpointing: bool | None = None
    """null = as train.gradient_checkpointing `auto`: the memory plan checkpoints as few layers as fit the device
    (none for the tiny CPU models)."""
    batching: Literal["auto", "packing", "padding"] = "auto"
    """DPO/KTO: `packing` runs each padded batch as one padding-free row (position ids restarting per sequence),
    `padding` as TRL pads it; `auto` = packing where the attention keeps sequences apart (flash-attention,
    sdpa_varlen: model.attn_implementation auto), else padding. GRPO's batches are always TRL's."""
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int | None = 2
    seed: int = 42
    num_generations: int = 8
    """GRPO: completions sampled per prompt (one group)."""
    max_completion_length: int = 512
    """GRPO: most tokens per sampled completion."""
    temperature: float = 1.0
    """GRPO: sampling temperature of the completions."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """GRPO: normalise advantages by the group's (or batch's) reward std, or not."""
    mask_truncated_completions: bool = False
    """GRPO: completions cut at max_completion_length get no loss."""
    trl: dict[str, Any] = field(default_factory=dict)
    """Any other field of trl.DPOConfig / KTOConfig / GRPOConfig under its TRL name (checked when the stage starts)."""

    def __post_init__(self):
        if self.pairs == "self" and self.algorithm == "grpo":
            raise ValueError("align.pairs: self builds preference pairs; GRPO needs multiple-choice items in "
                             "align.train_files")
        if self.pairs == "files" and not self.train_files:
            raise ValueError(f"align.train_files is empty: name the {self.algorithm.upper()} data files, or set "
                             "align.pairs: self to build pairs from the SFT run")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("align.max_samples must be >= 1 or null")
        if unknown := [r for r in self.rewards if r not in OPEN_REWARD_NAMES]:
            raise ValueError(f"align.rewards: unknown reward '{unknown[0]}'; choose from {', '.join(OPEN_REWARD_NAMES)}")
        if not self.rewards or (self.reward_weights is not None and len(self.reward_weights) != len(self.rewards)):
            raise ValueError("align.rewards needs at least one reward, and align.reward_weights one weight per reward")
        if self.reward_weights is not None and (self.algorithm != "grpo" or self.grpo_data != "open"):
            raise ValueError("align.reward_weights weighs align.rewards, which apply to GRPO with grpo_data: open")
        if self.loss_type is not None and (not self.loss_type or (self.algorithm != "dpo" and len(self.loss_type) != 1)):
            raise ValueError("align.loss_type: name one loss (DPO may mix several, weighted by align.loss_weights)")
        if self.loss_weights is not None and (self.algorithm != "dpo" or len(self.loss_weights) != len(self.loss_type or [])):
            raise ValueError("align.loss_weights is for DPO and needs one weight per align.loss_type entry")
        if self.beta is not None and self.beta < 0:
            raise ValueError("align.beta must be >= 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("align.max_steps must be -1 (use num_train_epochs) or >= 1")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError("align.num_train_epochs must be > 0 when align.max_steps is -1")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"align.{name} must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("align.learning_rate must be > 0")
        if self.max_length < 16:
            raise ValueError("align.max_length must be at least 16 tokens")
        if self.algorithm == "grpo" and self.num_generations < 2:
            raise ValueError("align.num_generations must be >= 2: GRPO compares completions within a group")
        if self.max_completion_length < 1 or self.temperature <= 0:
            raise ValueError("align.max_completion_length must be >= 1 and align.temperature > 0")
        if owned := sorted(set(self.trl) & (ALIGN_OWNED_TRL_KEYS | {f.name for f in dataclasses.fields(self)})):
            raise ValueError(f"align.trl.{owned[0]}: set by medtune or by its own align key; remove it from align.trl")


# align.rewards for GRPO on open prompts (medtune.align.grpo: OPEN_REWARDS, and rubric_reward for `rubric`).
OPEN_REWARD_NAMES = ("redflag", "rubric")


# TRL settings medtune derives itself (output place, precision, logging): not settable under align.trl.
ALIGN_OWNED_TRL_KEYS = {"output_dir", "fp16", "use_cpu", "report_to", "disable_tqdm", "logging_dir",
                        "save_strategy", "overwrite_output_dir", "gradient_checkpointing", "gradient_checkpointing_kwargs",
                        "activation_checkpointing", "activation_checkpointing_kwargs"}


@dataclass
class ReportConfig:
    lang: Literal["zh", "en"] = "zh"
    title: str | None = None
    examples: int = 3
    """Example answers shown side by side."""


@dataclass
class Config:
    output_dir: str
    """Run directory; every stage reads and writes only here."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    align: AlignConfig | None = None
    """Preference / RL stage after train (DPO, KTO, GRPO); null = no align stage."""

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """A stable hash of the named sections (all when none), for deciding whether a stage must rerun."""
        d = self.to_dict()
        picked = {k: d[k] for k in sections} if sections else d
        return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Keys users bring from older transformers / other tools, with what to write instead.
RENAMED_KEYS = {
    "train.warmup_ratio": "train.warmup_steps (a value < 1 is a ratio in transformers 5)",
    "train.group_by_length": "train.batching: group_by_length",
    "train.packing": "train.batching: packing",
    "train.evaluation_strategy": "train.eval_strategy",
    "lora.lora_alpha": "lora.alpha",
    "lora.lora_dropout": "lora.dropout",
    "lora.lora_r": "lora.r",
    "data.max_seq_length": "data.max_length",
    "model.model_name_or_path": "model.name_or_path",
}


def _read_yaml(path: Path, what: str):
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply `section.key=value` overrides, and return the checked Config."""
    path = Path(path)
    raw = _read_yaml(path, "config file")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item, source=str(path))
    try:
        return config_from_dict(raw, source=str(path))
    except ConfigError as e:
        raise _located(e, path, overrides or []) from None


def _located(e: ConfigError, path: Path, overrides: list[str]) -> ConfigError:
    """The error with its place: `--set key=value` when the key came from one, else `path:line` of the key
    (or of its nearest parent in the file)."""
    body = str(e).removeprefix(f"{path}: ")
    key = e.key or ""
    set_keys = {item.partition("=")[0].strip(): item for item in overrides}  # a later --set of a key wins
    try:
        lines = _key_lines(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        lines = {}
    for set_key, item in reversed(set_keys.items()):
        if key and (_within(key, set_key) or (_within(set_key, key) and key not in lines)):
            return ConfigError(f"--set {item}: {body}", e.key)
    while key and key not in lines:
        key = key[:max(key.rfind("."), key.rfind("["), 0)]
    return ConfigError(f"{path}:{lines[key]}: {body}" if key else str(e), e.key)


def _within(key: str, parent: str) -> bool:
    return key == parent or key.startswith((f"{parent}.", f"{parent}["))


def _key_lines(text: str) -> dict[str, int]:
    """Each dotted key of a YAML document (`data.max_length`, `evaluate.compare[1].model`) -> its 1-based line."""
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[name] = k.start_mark.line + 1
                walk(v, name)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
                walk(item, f"{prefix}[{i}]")

    walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    return lines


def load_compare_models(path: str | Path) -> list[CompareModel]:
    """An arms file (`medtune evaluate compare --arms`): a YAML list of entries shaped like evaluate.compare."""
    path = Path(path)
    raw = _read_yaml(path, "arms file")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: expected a non-empty YAML list of models, e.g. '- {{name: base, model: "
                          "Qwen/Qwen3-8B}'")
    models = _convert(raw, list[CompareModel], str(path), "arms")
    if dupes := repeated_names(models):
        raise ConfigError(f"{path}: model names must be unique; repeated: {', '.join(dupes)}")
    return models


def apply_override(raw: dict, item: str, source: str = "--set") -> None:
    """Apply one `a.b.c=value` override to a raw config dict; the value is parsed as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.learning_rate=1e-4")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{part}' in {source} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {e}") from None


def config_from_dict(raw: dict, source: str = "<config>") -> Config:
    if "output_dir" not in raw or raw["output_dir"] in (None, ""):
        raise ConfigError(f"{source}: missing required key 'output_dir' (the run directory)")
    return _build(Config, raw, source, prefix="")


def save_config(config: Config, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


def _build(cls, raw: Any, source: str, prefix: str):
    section = prefix.rstrip(".") or None
    where = section or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(raw).__name__} {raw!r}", section)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            hint = RENAMED_KEYS.get(full)
            if hint is None:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"{prefix}{close[0]}" if close else None
            msg = f"{source}: unknown key '{full}'"
            raise ConfigError(msg + (f"; did you mean {hint}?" if hint else f"; known keys: {', '.join(names)}"),
                              full)
        try:
            if full == "model.torch_dtype" and isinstance(value, str):
                value = dtype_name(value, f"{source}: {full}:")
            kwargs[key] = _convert(value, hints[key], source, full)
        except ConfigError as e:
            e.key = e.key or full  # the innermost key wins: a nested section's own loop set it first
            raise
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{source}: '{where}' is missing required key(s): {', '.join(prefix + m for m in missing)}",
                          section)
    try:
        return cls(**kwargs)
    except ValueError as e:
        # Cross-field checks name their key first ("lora.r must be >= 1"); else the error is the section's.
        named = re.match(r"[A-Za-z_]+(\.[A-Za-z_]+)+\b", str(e))
        raise ConfigError(f"{source}: {e}", named.group(0) if named else section) from None


def _expected(tp: Any) -> str:
    """What a value of type tp looks like, for error messages."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(str, typing.get_args(tp)))
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, source: str, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for a in non_none:
            try:
                return _convert(value, a, source, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{source}: '{key}' = {value!r} must be {' or '.join(map(_expected, non_none))}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: '{key}' = {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, (str, dict)) or not isinstance(value, list):
            if args and str in (args[0], *typing.get_args(args[0])) and isinstance(value, str):
                return [value]  # a single path is a one-element list
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        return [_convert(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], source, f"{key}.{k}") for k, v in value.items()} if args else value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: '{key}' must be a whole number, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{source}: '{key}': unsupported field type {tp}")

