"""`medtune plan CONFIG`: parameters, peak memory per GPU, steps and time, before anything is downloaded.

Run as: medtune plan CONFIG [--gpus N] [--gpu-memory 24GB] [--tokens-per-second 950] [--samples N]

Only the base model's config.json is read (a local directory, a hub id whose config is already in the
Hugging Face cache, or `builtin:tiny-qwen3`). The model is built on the `meta` device (shapes, no memory),
wrapped with the run's LoRA exactly as training wraps it, and counted. Activations are counted the same
way: one decoder layer runs forward on meta tensors and every tensor autograd saves for the backward is
added up (deduplicated by storage), so LoRA dropout copies, fp32 adapter casts and the attention kernel's
saved tensors are whatever this architecture and this PEFT version really keep, not a rule of thumb.

Peak memory per GPU = weights + trainable state (param, gradient, AdamW m and v, in the trainable
parameters' own dtype: PEFT keeps LoRA weights in fp32, so no separate master copy) + activations + the
loss's logits chunk + a fixed allowance for the CUDA context and allocator (GPU only).

Activations, with gradient checkpointing on K of the L decoder layers (all of them with `true`):
    K x (B x T x H x bytes)                the input of every checkpointed layer, kept for its recompute
  + (L - K) x one layer's saved tensors    the layers that keep their activations
  + one layer's saved tensors for B x T    the recompute working set of the layer being back-propagated
  + 4 x (B x T x H x bytes)                final norm, the gathered trained positions, and hidden-state gradients
without it: L x one layer's saved tensors + the same 4 x B x T x H. B = per-device batch, T = data.max_length
(the worst batch: every sample at full length), H = hidden size, L = layers. With `gradient_checkpointing:
auto` (the default) training checkpoints as few layers as this estimate needs to fit the device's memory
(every n-th layer, transformers' `every_n_layers`), none when everything fits: recomputing costs about a
third of a LoRA step's compute.

The loss (train.target_only_loss) projects the trained positions to the vocabulary a chunk of `rows` at a
time under checkpointing, so one chunk is alive in the backward: its logits in the compute dtype, their fp32
copy (none when the compute dtype is fp32), the saved log-softmax and its gradient, both fp32.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace

from medtune.config import BUILTIN_TINY_QWEN3, Config
from medtune.errors import UserError
from medtune.modeling import torch_dtype
from medtune.train.common import lora_config

GIB = 1 << 30
CUDA_ALLOWANCE = 1 * GIB
"""CUDA context, cuBLAS/NCCL workspaces and allocator fragmentation: an allowance, not a measurement."""
DEFAULT_TOKENS_PER_SECOND = 950
"""Per GPU: the reference Qwen3-8B LoRA run's measured rate on RTX 4080s (FINDINGS.md); pass your own."""
QUANT_BITS_PER_PARAM = {(4, True): 4 + 8 / 64 + 32 / (64 * 256), (4, False): 4 + 32 / 64, (8, True): 8, (8, False): 8}
"""bitsandbytes storage per quantized weight: 4-bit blocks of 64 with an absmax each (fp32, or 8-bit with a
second fp32 level per 256 blocks under double quantization); LLM.int8 keeps one fp32 scale per row (~0)."""
MARGIN = 0.05
"""A plan fits when at least this share of the GPU's memory is left over."""


class PlanError(UserError):
    """The plan cannot be made (the base model's config cannot be read)."""


@dataclass
class Setup:
    """What a memory estimate depends on; suggestions change one field at a time."""

    gpus: int
    gpu_memory: int | None  # bytes per device; None = no limit given
    device: str  # cuda | cpu
    precision: str  # bf16 | fp16 | fp32
    batch: int
    max_length: int
    checkpointing: bool
    quant_bits: int | None
    double_quant: bool
    shard_weights: bool  # FSDP / ZeRO-3: frozen weights split across the GPUs
    checkpoint_every: int = 1  # with checkpointing: every n-th decoder layer (transformers' every_n_layers)
    mask: str = "none"  # sdpa's boolean mask: none (flash-attention), padded (batch x T^2), packed ((batch x T)^2)


@dataclass
class ModelShape:
    """Counts from the meta-device model (see the module docstring)."""

    total_params: int
    trainable_params: int
    trainable_bytes: int  # the trainable parameters in their own dtypes
    quantizable_params: int  # Linear weights bitsandbytes would quantize (every Linear except the output layer)
    other_params: int  # frozen, not quantizable: embeddings, norms, output layer
    layer_saved_bytes_per_token: float
    hidden: int
    layers: int
    vocab: int


@dataclass
class Plan:
    setup: Setup
    shape: ModelShape
    memory: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return sum(self.memory.values())

    @property
    def headroom(self) -> int | None:
        return None if self.setup.gpu_memory is None else self.setup.gpu_memory - self.peak

    @property
    def fits(self) -> bool | None:
        """At least MARGIN of the memory left: the CPU checks measured up to ~10% more than the tensors planned."""
        return None if self.setup.gpu_memory is None else self.headroom >= MARGIN * self.setup.gpu_memory


# --- reading the model config and counting on the meta device ------------------------------------------


def model_config(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The base model's transformers config, without downloading anything."""
    from transformers import AutoConfig

    if name_or_path == BUILTIN_TINY_QWEN3:
        from medtune.modeling import TINY_QWEN3, qwen3_config

        return qwen3_config(**TINY_QWEN3)
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code,
                                          local_files_only=True)
    except (OSError, ValueError) as e:
        raise PlanError(
            f"model.name_or_path: no config.json for '{name_or_path}' on this machine ({e}). `medtune plan` downloads "
            f"nothing: point model.name_or_path at a directory holding the model's config.json, or fetch only that "
            f"file first (hf download {name_or_path} config.json)") from None


def count_model(config, cfg: Config, precision: str) -> ModelShape:
    """Build the model on the meta device, wrap it with the run's LoRA, count parameters and saved activations."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from medtune.modeling import check_lora_targets

    dtype = torch_dtype(precision)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
        out_layer = model.get_output_embeddings()
        quantizable = sum(m.weight.numel() for m in model.modules()
                          if isinstance(m, torch.nn.Linear) and m is not out_layer)
        check_lora_targets(model, list(cfg.lora.target_modules))
        model = get_peft_model(model, lora_config(cfg.lora))
    from medtune.modeling import count_parameters

    trainable, total = count_parameters(model)
    trainable_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    model.train()
    per_token = _layer_saved_bytes(model, config, dtype, rows=16, tokens=16) / (16 * 16)
    frozen = total - trainable
    return ModelShape(total, trainable, trainable_bytes, quantizable, frozen - quantizable, per_token,
                      config.hidden_size, config.num_hidden_layers, config.vocab_size)


def _layer_saved_bytes(model, config, dtype, rows: int, tokens: int) -> int:
    """Bytes autograd saves in one decoder layer's forward over rows x tokens positions (meta tensors).

    The sequences are short on purpose: on meta tensors SDPA takes its math path, which keeps a tokens x tokens
    attention matrix per head; the kernels training uses (flash-attention, SDPA's efficient and CPU flash
    kernels) keep none, and at 16 tokens that matrix is under 1% of the count."""
    import torch

    inner = model.get_base_model().model
    layer = inner.layers[0]
    hidden = torch.zeros((rows, tokens, config.hidden_size), dtype=dtype, device="meta", requires_grad=True)
    positions = torch.arange(tokens, device="meta")[None]
    # Weights that autograd saves (a matmul keeps its weight for the input's gradient) are counted as weights;
    # the layer's input is counted as the checkpoint's.
    skip = {p.untyped_storage()._cdata for p in layer.parameters()} | {hidden.untyped_storage()._cdata}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s._cdata not in skip:
            storages[s._cdata] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(hidden, attention_mask=None, position_ids=positions,
              position_embeddings=inner.rotary_emb(hidden, positions))
    return sum(storages.values())


# --- the estimate -----------------------------------------------------------------------------------------


def logits_chunk_rows(vocab: int) -> int:
    """The rows train.loss.target_only_loss projects to the vocabulary at once: about 256 MB of fp32 logits."""
    return max(64, (256 << 20) // (4 * vocab))


def estimate(shape: ModelShape, s: Setup) -> Plan:
    b = torch_dtype(s.precision).itemsize
    notes = []
    if s.quant_bits:
        # prepare_model_for_kbit_training upcasts every non-quantized weight (embeddings, norms, output layer) to fp32.
        weights = shape.quantizable_params * QUANT_BITS_PER_PARAM[(s.quant_bits, s.double_quant)] / 8 \
            + shape.other_params * 4
        notes.append(f"weights: {s.quant_bits}-bit Linear layers; embeddings, norms and the output layer in fp32 "
                     "(prepare_model_for_kbit_training upcasts them)")
    else:
        weights = (shape.quantizable_params + shape.other_params) * b
    if s.shard_weights and s.gpus > 1:
        weights /= s.gpus
        notes.append(f"weights sharded over {s.gpus} GPUs (FSDP/ZeRO-3); each layer is gathered whole while it runs")
    tokens = s.batch * s.max_length
    token_state = tokens * shape.hidden * b
    layer = shape.layer_saved_bytes_per_token * tokens
    if s.checkpointing:
        kept = checkpointed_layers(shape.layers, s.checkpoint_every)
        activations = kept * token_state + (shape.layers - kept) * layer + layer + 4 * token_state
    else:
        activations = shape.layers * layer + 4 * token_state
    rows = min(logits_chunk_rows(shape.vocab), tokens)
    chunk = rows * shape.vocab * (b + (4 if b != 4 else 0) + 4 + 4)
    mask = {"none": 0, "padded": s.batch * s.max_length ** 2, "packed": tokens ** 2}[s.mask]  # bool: 1 byte
    memory = {
        "weights": int(weights),
        # parameter, gradient, AdamW m and v; TRL casts the trainable weights of a quantized model to bf16.
        "trainable_state": (shape.trainable_params * 2 if s.quant_bits else shape.trainable_bytes) * 4,
        "activations": int(activations),
        "logits_chunk": int(chunk),
        **({"attention_mask": mask} if mask else {}),
    }
    if s.device == "cuda":
        memory["cuda_allowance"] = CUDA_ALLOWANCE
    return Plan(s, shape, memory, notes)


def checkpointed_layers(layers: int, every: int) -> int:
    """How many of `layers` decoder layers transformers checkpoints with every_n_layers=every (index % every == 0)."""
    return -(-layers // every)


def describe_checkpointing(s: Setup, layers: int) -> str:
    if not s.checkpointing:
        return "off"
    if s.checkpoint_every == 1:
        return "on"
    return f"on every {s.checkpoint_every} layers ({checkpointed_layers(layers, s.checkpoint_every)} of {layers})"


def least_checkpointing(shape: ModelShape, s: Setup) -> tuple[Setup, Plan]:
    """The setup that recomputes the fewest layers and still fits s.gpu_memory: no checkpointing, else every
    n-th layer for the largest n that fits, else every layer (which may still not fit: the plan says so)."""
    off = replace(s, checkpointing=False, checkpoint_every=1)
    plan = estimate(shape, off)
    if plan.fits:
        return off, plan
    for every in range(shape.layers, 1, -1):
        candidate = replace(s, checkpointing=True, checkpoint_every=every)
        plan = estimate(shape, candidate)
        if plan.fits:
            return candidate, plan
    every_layer = replace(s, checkpointing=True, checkpoint_every=1)
    return every_layer, estimate(shape, every_layer)


def suggestions(shape: ModelShape, s: Setup, max_gpus: int = 8) -> list[tuple[str, Plan]]:
    """Single-setting changes that make the plan fit, cheapest in throughput first."""
    candidates = []
    for batch in (s.batch // 2, s.batch // 4, 1):
        if 1 <= batch < s.batch:
            candidates.append((f"train.per_device_train_batch_size: {batch} (raise gradient_accumulation_steps "
                               f"by {s.batch // batch}x to keep the effective batch)", replace(s, batch=batch)))
    if not s.checkpointing:
        candidates.append(("train.gradient_checkpointing: true", replace(s, checkpointing=True)))
    for length in (s.max_length // 2, s.max_length // 4):
        if length >= 256:
            candidates.append((f"data.max_length: {length} (longer dialogues are cut at turn boundaries)",
                               replace(s, max_length=length)))
    if not s.quant_bits:
        candidates.append(("model.quantization: {bits: 4, quant_type: nf4, double_quant: true} (QLoRA)",
                           replace(s, quant_bits=4, double_quant=True)))
    if s.gpus > 1 and not s.shard_weights:
        candidates.append(("--accelerate-config configs/accelerate/fsdp.yaml (shard the weights over the GPUs)",
                           replace(s, shard_weights=True)))
    for gpus in (2, 4, 8):
        if s.gpus < gpus <= max_gpus:
            candidates.append((f"{gpus} GPUs with FSDP (configs/accelerate/fsdp.yaml)",
                               replace(s, gpus=gpus, shard_weights=True)))
    fits = [(what, estimate(shape, c)) for what, c in dict(candidates).items()]
    return [(what, p) for what, p in fits if p.fits]


# --- the whole plan for a config --------------------------------------------------------------------------


def parse_memory(text: str) -> int:
    """'24GB', '24GiB', '24G' or '24' (GiB) -> bytes. GPU makers' "24 GB" cards hold 24 GiB."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(g|gb|gib|m|mb|mib)?\s*", text.lower())
    if not m:
        raise PlanError(f"--gpu-memory {text!r}: expected a size such as 24GB or 80GiB")
    value, unit = float(m.group(1)), (m.group(2) or "g")[0]
    return int(value * (GIB if unit == "g" else 1 << 20))


def setup_from_config(cfg: Config, gpus: int, gpu_memory: int | None, device: str = "cuda",
                      shard_weights: bool = False) -> Setup:
    t, q = cfg.train, cfg.model.quantization
    if cfg.model.torch_dtype != "auto":
        precision = cfg.model.torch_dtype  # bf16 | fp16 | fp32
    elif device == "cuda":
        precision = "fp32" if t.bf16 is False else "bf16"
    else:
        precision = "bf16" if t.bf16 else "fp32"  # medtune trains fp32 on CPU unless told otherwise
    return Setup(gpus=gpus, gpu_memory=gpu_memory, device=device, precision=precision,
                 batch=t.per_device_train_batch_size, max_length=cfg.data.max_length,
                 checkpointing=t.gradient_checkpointing is not False, quant_bits=q.bits if q else None,
                 double_quant=bool(q and q.double_quant), shard_weights=shard_weights,
                 mask=attention_mask_kind(cfg, device))


def attention_mask_kind(cfg: Config, device: str) -> str:
    """The boolean mask transformers builds for sdpa: none with flash-attention (what `auto` picks on a GPU,
    assumed installed there), else one (batch x T x T) for padded batches, or one (batch*T)^2 block-diagonal
    mask over a padding-free row (sdpa_varlen then attends sample by sample, but the mask is still built)."""
    attn, batching = cfg.model.attn_implementation, cfg.train.batching
    if attn.startswith("flash_attention") or (attn == "auto" and device == "cuda"):
        return "none"
    packed = batching == "packing" or (batching == "auto" and attn in ("auto", "sdpa_varlen"))
    return "packed" if packed else "padded"


def data_size(cfg: Config, samples: int | None) -> dict:
    """Training samples and tokens per sample: given, or from the prepared data, or from the config."""
    stats_path = cfg.run_dir / "data" / "stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else None
    if samples is not None:
        n, source = samples, "--samples"
    elif stats:
        n, source = stats["train"], str(stats_path)
    elif cfg.data.max_samples:
        n, source = cfg.data.max_samples, "data.max_samples (before the validation split)"
    else:
        return {"samples": None, "source": "unknown: pass --samples or run `medtune prepare` first"}
    if stats and stats.get("kept"):
        per_sample, how = stats["tokens"] / stats["kept"], "mean of the prepared data"
    else:
        per_sample, how = cfg.data.max_length, "data.max_length (an upper bound: the data is not prepared yet)"
    return {"samples": n, "source": source, "tokens_per_sample": per_sample, "tokens_per_sample_source": how}


def plan_config(cfg: Config, gpus: int = 1, gpu_memory: int | None = None, tokens_per_second: float | None = None,
                samples: int | None = None, shard_weights: bool = False, device: str = "cuda") -> dict:
    """Everything `medtune plan` prints, as a dict."""

    if gpus < 1:
        raise PlanError(f"--gpus {gpus}: the run needs at least 1 GPU (data-parallel process)")
    setup = setup_from_config(cfg, gpus, gpu_memory, device, shard_weights)
    config = model_config(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)
    shape = count_model(config, cfg, setup.precision)
    if cfg.train.gradient_checkpointing == "auto" and gpu_memory is not None:
        setup, plan = least_checkpointing(shape, setup)  # what the train stage will choose on such a GPU
    else:
        plan = estimate(shape, setup)
    data = data_size(cfg, samples)
    rate = tokens_per_second or DEFAULT_TOKENS_PER_SECOND * gpus
    schedule = None
    if data["samples"]:
        steps = plan_steps(data["samples"], cfg, gpus)
        epochs = cfg.train.num_train_epochs if cfg.train.max_steps < 0 else \
            steps["total_steps"] / steps["steps_per_epoch"]
        tokens = data["samples"] * data["tokens_per_sample"] * epochs
        schedule = {**steps, "epochs": epochs, "tokens": int(tokens), "tokens_per_second": rate,
                    "hours": tokens / rate / 3600, "other_gpus": {}}
        # Steps (and, at the default per-GPU rate, hours) for other GPU counts: the effective batch grows with
        # the GPUs, so a plan for 1 GPU says nothing of a run on 4 (the reference's) unless it is shown.
        for n in sorted({1, 2, 4, 8} - {gpus}):
            other = plan_steps(data["samples"], cfg, n)
            hours = None if tokens_per_second else tokens / (DEFAULT_TOKENS_PER_SECOND * n) / 3600
            schedule["other_gpus"][n] = {**other, "hours": hours}
    return {"plan": plan, "data": data, "schedule": schedule,
            "fixes": suggestions(shape, setup) if plan.fits is False else [],
            "rate_source": "--tokens-per-second" if tokens_per_second else
            f"{DEFAULT_TOKENS_PER_SECOND} per GPU, the reference run's measured rate on RTX 4080s"}


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def format_plan(cfg: Config, result: dict) -> str:
    plan, data, schedule = result["plan"], result["data"], result["schedule"]
    s, shape, mem = plan.setup, plan.shape, plan.memory
    quant = f", {s.quant_bits}-bit base" if s.quant_bits else ""
    lines = [
        f"plan: {cfg.model.name_or_path} on {s.gpus} x {_gib(s.gpu_memory) if s.gpu_memory else s.device}"
        f" ({s.precision}{quant}, LoRA r {cfg.lora.r} on {', '.join(cfg.lora.target_modules)})",
        f"  parameters: {shape.total_params:,} total, {shape.trainable_params:,} trainable "
        f"({100 * shape.trainable_params / shape.total_params:.2f}%)",
        f"  peak memory per GPU at batch {s.batch} x length {s.max_length}, gradient checkpointing "
        f"{describe_checkpointing(s, shape.layers)}"
        f"{' (auto)' if cfg.train.gradient_checkpointing == 'auto' else ''}:",
        f"    weights            {_gib(mem['weights']):>12}",
        f"    LoRA state         {_gib(mem['trainable_state']):>12}  (parameters, gradients, AdamW m and v: "
        f"{mem['trainable_state'] // max(shape.trainable_params, 1)} bytes per trainable parameter)",
        f"    activations        {_gib(mem['activations']):>12}  ({shape.layer_saved_bytes_per_token / 1024:.0f} KiB "
        f"saved per token in one layer, {shape.layers} layers)",
        f"    logits chunk       {_gib(mem['logits_chunk']):>12}  ({min(logits_chunk_rows(shape.vocab), s.batch * s.max_length)}"
        f" positions x {shape.vocab:,} vocabulary)",
    ]
    if "attention_mask" in mem:
        lines.append(f"    attention mask     {_gib(mem['attention_mask']):>12}  (sdpa's boolean mask, "
                     + ("one block-diagonal over the padding-free row)" if s.mask == "packed" else "per padded sample)"))
    if "cuda_allowance" in mem:
        lines.append(f"    CUDA allowance     {_gib(mem['cuda_allowance']):>12}  (context, workspaces, fragmentation)")
    lines.append(f"    total              {_gib(plan.peak):>12}")
    if plan.headroom is not None:
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        lines.append(f"    headroom           {_gib(plan.headroom):>12}  -> {verdict} in {_gib(s.gpu_memory)} (keeping "
                     f"{MARGIN:.0%} = {_gib(MARGIN * s.gpu_memory)} free)")
    lines += [f"  note: {n}" for n in plan.notes]
    lines += _schedule_lines(cfg, s.gpus, result) if schedule else [f"  steps, tokens, time: {data['source']}"]
    if result["fixes"]:
        lines.append("  to fit, change one of:")
        lines += [f"    - {what}: {_gib(p.peak)} peak, {_gib(p.headroom)} headroom" for what, p in result["fixes"]]
    elif plan.fits is False:
        lines.append("  no single setting change makes it fit; combine them (e.g. 4-bit and a smaller batch)")
    return "\n".join(lines)


def _schedule_lines(cfg: Config, gpus: int, result: dict) -> list[str]:
    data, schedule, t = result["data"], result["schedule"], cfg.train
    lines = [
        f"  steps: {schedule['steps_per_epoch']:,} per epoch, {schedule['total_steps']:,} in total, "
        f"{schedule['effective_batch_size']} samples per step ({t.per_device_train_batch_size} per device x "
        f"{t.gradient_accumulation_steps} accumulation x {gpus} GPU{'s' if gpus > 1 else ''}; {data['samples']:,} "
        f"samples from {data['source']})",
        f"  tokens: {schedule['tokens']:,} = {schedule['epochs']:.3g} epoch{'s' if schedule['epochs'] != 1 else ''} "
        f"x {data['samples']:,} samples x {data['tokens_per_sample']:.0f} per sample "
        f"({data['tokens_per_sample_source']})",
        f"  time: {schedule['hours']:.1f} h at {schedule['tokens_per_second']:,.0f} tokens/s ({result['rate_source']})",
    ]
    others = [f"{n} GPU{'s' if n > 1 else ''}: {o['effective_batch_size']} per step, {o['total_steps']:,} steps" + (f", {o['hours']:.1f} h" if o["hours"] is not None else "")
              for n, o in schedule["other_gpus"].items()]
    lines.append(f"  this plan is for {gpus} GPU{'s' if gpus > 1 else ''} (--gpus); with --gpus N the effective batch "
                 f"and the steps change: {'; '.join(others)}")
    return lines


def plan_steps(n_train: int, cfg: Config, world: int) -> dict:
    """Steps and batch sizes as the Trainer derives them (ceil at each division)."""
    t = cfg.train
    batches_per_rank = math.ceil(math.ceil(n_train / world) / t.per_device_train_batch_size)
    per_epoch = max(math.ceil(batches_per_rank / t.gradient_accumulation_steps), 1)
    total = t.max_steps if t.max_steps > 0 else math.ceil(t.num_train_epochs * per_epoch)
    return {"effective_batch_size": t.per_device_train_batch_size * t.gradient_accumulation_steps * world,
            "steps_per_epoch": per_epoch, "total_steps": total}
