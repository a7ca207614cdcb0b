"""What the train stage runs on, decided once: precision, attention implementation, Liger kernels,
gradient checkpointing (from the memory plan when `auto`). The align stage decides its precision, attention,
batching and checkpointing here too, by the same rules (align_backends)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from medtune.config import Config
from medtune.train.common import TrainingError, sharding_asked


@dataclass
class Backends:
    device: str
    precision: str  # bf16 | fp16 | fp32
    attn_implementation: str
    batching: str  # packing | group_by_length | padding
    liger_kernel: bool
    reasons: list[str] = field(default_factory=list)
    # activation checkpointing on every n-th decoder layer, None = off; for `auto`, every layer until
    # choose_checkpointing (which needs the loaded model's config and the device's memory) asks the memory plan
    checkpoint_every: int | None = 1


def select_backends(cfg: Config, cuda: bool, bf16_supported: bool, flash_attn: bool, liger: bool,
                    flash_attn_3: bool = False) -> Backends:
    """Pick precision, attention kernel, batching and kernels from the config and what the machine has
    (flash_attn: the flash-attn 2 package, flash_attn_3: FA3's flash_attn_interface)."""
    t = cfg.train
    device = "cuda" if cuda else "cpu"
    precision, reason = choose_precision(t.bf16, cuda, bf16_supported, "train.bf16")
    reasons = [reason]

    attn, reason = choose_attention(cfg, cuda, flash_attn, flash_attn_3)
    reasons.append(reason)

    if t.batching != "auto":
        batching = t.batching
        reasons.append(f"batching {batching}: train.batching")
    elif has_varlen(attn):
        batching = "packing"
        reasons.append(f"batching packing: padding-free, per-sample position ids; {attn} keeps samples apart "
                       "at the cost of each sample's own attention")
    else:
        batching = "group_by_length"
        reasons.append(f"batching group_by_length: {attn} has no varlen path, so packed samples would cost a full "
                       "block-diagonal attention mask; grouping similar lengths wastes little on padding")

    if t.use_liger_kernel is None:
        liger_kernel = cuda and liger
        reasons.append("Liger kernels " + ("on: installed on a GPU" if liger_kernel else
                                           "off: " + ("not installed" if cuda else "no GPU")))
    else:
        liger_kernel = t.use_liger_kernel
        if liger_kernel and not (cuda and liger):
            raise TrainingError("train.use_liger_kernel is true but liger-kernel is not installed on a GPU here")
        reasons.append(f"Liger kernels {'on' if liger_kernel else 'off'}: train.use_liger_kernel")
    return Backends(device, precision, attn, batching, liger_kernel, reasons,
                    checkpoint_every=None if t.gradient_checkpointing is False else 1)


def choose_attention(cfg: Config, cuda: bool, flash_attn: bool, flash_attn_3: bool = False) -> tuple[str, str]:
    """(attention implementation, reason): model.attn_implementation when set (checked to be installed),
    else flash-attention 2 on a GPU that has it, else sdpa_varlen."""
    attn = cfg.model.attn_implementation
    if attn != "auto":
        installed = {"flash_attention_2": flash_attn, "flash_attention_3": flash_attn_3}.get(attn, True)
        if not (installed and (cuda or not attn.startswith("flash_attention"))):
            package = "flash-attn 3 (flash_attn_interface)" if attn == "flash_attention_3" else "flash-attn"
            raise TrainingError(f"model.attn_implementation is {attn} but {package} is not installed on a GPU here; "
                                "use auto or sdpa")
        return attn, f"attention {attn}: model.attn_implementation"
    if cuda and flash_attn:
        return "flash_attention_2", "attention flash_attention_2: flash-attn is installed on a GPU"
    return "sdpa_varlen", ("attention sdpa_varlen: sdpa sample by sample in padding-free batches, plain sdpa "
                           "otherwise (" + ("flash-attn is not installed" if cuda else "no GPU") + ")")


def has_varlen(attn: str) -> bool:
    """Whether `attn` keeps the samples of a padding-free row apart at the cost of each sample's own attention."""
    return attn.startswith("flash_attention") or attn == "sdpa_varlen"


def choose_precision(bf16: bool | None, cuda: bool, bf16_supported: bool, key: str) -> tuple[str, str]:
    """(precision, reason) from a bf16 setting (`key` names it): null = bf16 on a bf16-capable GPU, else fp32."""
    if bf16 is None:
        precision = "bf16" if cuda and bf16_supported else "fp32"
        return precision, f"precision {precision}: " + (
            "the GPU supports bf16" if precision == "bf16" else
            "no bf16-capable GPU (bf16 on CPU is 8-19x slower than fp32)")
    if not bf16:
        return "fp32", f"precision fp32: {key} is false"
    if cuda and not bf16_supported:
        raise TrainingError(f"{key} is true but this GPU has no bf16 support; set {key}: false")
    return "bf16", f"precision bf16: {key} is true" + ("" if cuda else " (on CPU this is much slower than fp32)")


def align_backends(cfg: Config, cuda: bool, bf16_supported: bool, flash_attn: bool = False,
                   flash_attn_3: bool = False) -> Backends:
    """The align stage's precision, attention, batching and gradient checkpointing, decided as train decides
    them: precision by choose_precision from align.bf16; attention by choose_attention; DPO/KTO batches
    padding-free (medtune.align.padding_free) when align.batching allows and the attention keeps sequences
    apart (GRPO's batches are TRL's, padded); checkpointing from align.gradient_checkpointing, null being
    train's `auto` (choose_checkpointing settles it on align_plan_config once the align data is read)."""
    a = cfg.align
    precision, reason = choose_precision(a.bf16, cuda, bf16_supported, "align.bf16")
    attn, attn_reason = choose_attention(cfg, cuda, flash_attn, flash_attn_3)
    reasons = [reason, attn_reason]
    if a.algorithm == "grpo":
        batching = "padding"
        reasons.append("batching padding: GRPO's batches are TRL's")
    elif a.batching != "auto":
        batching = a.batching
        reasons.append(f"batching {batching}: align.batching")
    elif has_varlen(attn):
        batching = "packing"
        reasons.append(f"batching packing: padding-free, per-sequence position ids; {attn} keeps sequences apart")
    else:
        batching = "padding"
        reasons.append(f"batching padding: {attn} has no varlen path (a flattened row would cost a full "
                       "block-diagonal mask)")
    if a.gradient_checkpointing is not None:
        reasons.append(f"gradient checkpointing {'on' if a.gradient_checkpointing else 'off'}: "
                       "align.gradient_checkpointing")
    return Backends("cuda" if cuda else "cpu", precision, attn, batching, False, reasons,
                    checkpoint_every=None if a.gradient_checkpointing is False else 1)


def align_plan_config(cfg: Config) -> Config:
    """The config as the memory plan sees one align step: align's checkpointing setting (null = auto), and
    its per-device rows of align.max_length tokens (DPO runs chosen and rejected in one forward; a GRPO
    sequence is a prompt plus up to align.max_completion_length tokens)."""
    a = cfg.align
    rows = a.per_device_train_batch_size * (2 if a.algorithm == "dpo" else 1)
    length = a.max_length + (a.max_completion_length if a.algorithm == "grpo" else 0)
    setting = "auto" if a.gradient_checkpointing is None else a.gradient_checkpointing
    batching = "padding" if a.algorithm == "grpo" else a.batching  # the plan counts a flattened row's mask
    return replace(cfg, train=replace(cfg.train, gradient_checkpointing=setting, per_device_train_batch_size=rows,
                                      bf16=a.bf16, batching=batching),
                   data=replace(cfg.data, max_length=length))


def detect_backends(cfg: Config) -> Backends:
    import torch
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    cuda = torch.cuda.is_available()
    # transformers' own checks, the ones from_pretrained applies: FA3 is `flash_attn_interface` from the
    # flash-attn-3 distribution, not the flash_attn (2) package.
    return select_backends(
        cfg, cuda=cuda, bf16_supported=cuda and torch.cuda.is_bf16_supported(),
        flash_attn=is_flash_attn_2_available(), flash_attn_3=is_flash_attn_3_available(),
        liger=importlib.util.find_spec("liger_kernel") is not None)


def device_memory(device: str) -> int:
    """Bytes one training process may plan with: the GPU's total memory, or on CPU the memory available now
    plus what this process already holds (the loaded weights), shared by the processes on this machine."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * page
    except (OSError, KeyError, ValueError):  # not Linux: all of physical memory
        available, rss = os.sysconf("SC_PHYS_PAGES") * page, 0
    return (available + rss) // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def choose_checkpointing(cfg: Config, model_config, backends: Backends, memory: int | None = None,
                         world: int = 1, longest: int | None = None) -> None:
    """Set backends.checkpoint_every from train.gradient_checkpointing; `auto` asks the memory plan for the
    fewest checkpointed layers that fit this device (recomputing a layer costs a third of its step), for the
    worst batch: every sample as long as the longest prepared one (`longest`, else data.max_length)."""
    from medtune.train import plan

    setting = cfg.train.gradient_checkpointing
    if setting != "auto":  # select_backends set checkpoint_every from it
        backends.reasons.append(f"gradient checkpointing {'on' if setting else 'off'}: train.gradient_checkpointing")
        return
    memory = memory or device_memory(backends.device)
    setup = plan.setup_from_config(cfg, world, memory, backends.device, shard_weights=sharding_asked() is not None)
    setup = replace(setup, precision=backends.precision, max_length=min(setup.max_length, longest or setup.max_length))
    shape = plan.count_model(model_config, cfg, backends.precision)
    chosen, estimate = plan.least_checkpointing(shape, setup)
    backends.checkpoint_every = chosen.checkpoint_every if chosen.checkpointing else None
    backends.reasons.append(
        f"gradient checkpointing {plan.describe_checkpointing(chosen, shape.layers)}: auto, the memory plan needs "
        f"{estimate.peak / plan.GIB:.1f} GiB of {memory / plan.GIB:.1f} GiB at batch {setup.batch} x length "
        f"{setup.max_length}" + ("" if estimate.fits else " (it may not fit even so: see `medtune plan`)"))
