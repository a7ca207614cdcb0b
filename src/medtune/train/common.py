"""Pieces every training stage shares (train, align): the LoRA config, checkpoint markers and resume, ranks
and the checks that a launched process really is one rank of one group, decisions taken once for all ranks,
the token-weighted distributed eval, the saved-adapter check, and the stage timeline.

Importing this module imports no torch or transformers; the callbacks that use these pieces are in
medtune.callbacks.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

from medtune.config import LoraConfig
from medtune.errors import UserError
from medtune.modeling import dataset_loss
from medtune.rundir import StageRun, read_json, write_json

COMPLETE_MARKER = "medtune-complete.json"
# What the Trainer and medtune's callbacks write into a training stage's directory (StageRun.outputs, with
# checkpoint-<step>/): removed when the stage starts over.
TRAINER_OUTPUTS = ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "train_results.json",
                   "metrics.jsonl", "timeline.json")
# What the Trainer writes that medtune's own files replace (train_results.json, the config in config.yaml).
TRAINER_STRAYS = ("all_results.json", "training_args.bin")


class TrainingError(UserError):
    """Training cannot start or had to stop (the message says why and what to do)."""


class NonFiniteLoss(Exception):
    def __init__(self, step: int, what: str):
        super().__init__(f"step {step}: {what}")
        self.step, self.what = step, what


def lora_config(lora: LoraConfig):
    """The config's `lora` section as a peft.LoraConfig: what train, align (a new LoRA) and the memory plan wrap
    the base model with."""
    import peft

    return peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                           target_modules=list(lora.target_modules), bias=lora.bias, task_type="CAUSAL_LM",
                           modules_to_save=list(lora.modules_to_save) or None)


# --- ranks ---------------------------------------------------------------------------------------------


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any: a decision to stop must be the same everywhere, or the ranks
    that go on wait forever in their next collective for the ones that stopped."""
    import torch
    import torch.distributed as dist

    if rank_and_world()[1] == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    import torch.distributed as dist

    if rank_and_world()[1] > 1:
        dist.barrier()


# --- checkpoints -------------------------------------------------------------------------------------


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints whose completion marker lists files that are all present, oldest first."""
    found = []
    for d in run_dir.glob("checkpoint-*"):
        if not d.is_dir() or not d.name.split("-")[-1].isdigit():
            continue
        marker = read_json(d / COMPLETE_MARKER)
        if not marker:
            continue
        if all((d / name).is_file() and (d / name).stat().st_size == size for name, size in marker["files"].items()):
            found.append(d)
    return sorted(found, key=lambda d: int(d.name.split("-")[-1]))


def mark_complete(checkpoint: Path) -> None:
    """Written last, by rank 0, once every file of the checkpoint is on disk: a killed save leaves none."""
    files = {str(p.relative_to(checkpoint)): p.stat().st_size for p in checkpoint.rglob("*")
             if p.is_file() and p.name != COMPLETE_MARKER}
    write_json(checkpoint / COMPLETE_MARKER, {"files": files})


def choose_checkpoint(run: StageRun, resume: str | None, force: bool, say) -> Path | None:
    """The checkpoint to resume from: --resume, else the latest complete one of an unfinished run with the
    same fingerprint (as the stage's manifest records it), else None (the stage starts over)."""
    if resume:
        path = Path(resume).resolve()
        if path not in {c.resolve() for c in complete_checkpoints(path.parent)}:
            raise TrainingError(f"--resume {resume}: not a complete checkpoint directory (it has no "
                                f"{COMPLETE_MARKER}, or files listed there are missing)")
        return path
    if force:
        return None
    checkpoints = complete_checkpoints(run.directory)
    recorded = run.recorded()
    if not checkpoints or recorded.get("status") == "completed":
        return None
    if recorded.get("fingerprint") != run.fingerprint:
        raise TrainingError(f"{run.directory} has checkpoints from a different config or data (fingerprint "
                            f"{recorded.get('fingerprint')} vs {run.fingerprint}); rerun with --force to start over "
                            "(it deletes them) or use another output_dir")
    say(f"{run.stage}: resuming from the latest complete checkpoint {checkpoints[-1]}")
    return checkpoints[-1]


# --- evaluation --------------------------------------------------------------------------------------


def distributed_eval(model, dataset, batch_size: int) -> dict:
    """Token-weighted eval loss over the whole dataset, each rank scoring its share of the batches (the
    same number of forwards on every rank, see dataset_loss), summed over ranks."""
    import torch
    import torch.distributed as dist

    rank, world = rank_and_world()
    nll, tokens = dataset_loss(model, dataset, batch_size, rank=rank, world=world)
    if world > 1:
        t = torch.tensor([nll, float(tokens)], dtype=torch.float64,
                         device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        nll, tokens = float(t[0]), int(t[1])
    loss = nll / max(tokens, 1)
    return {"eval_loss": loss, "eval_perplexity": math.exp(loss), "eval_tokens": tokens}


# --- the stage timeline ------------------------------------------------------------------------------


class Timeline:
    def __init__(self):
        self.events = []

    @contextmanager
    def __call__(self, name: str):
        start, t0 = dt.datetime.now().astimezone(), time.perf_counter()
        yield
        self.events.append({"name": name, "start": start.isoformat(timespec="seconds"),
                            "end": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "seconds": round(time.perf_counter() - t0, 3)})


# --- checks that a launched process trains what was asked --------------------------------------------


def sharding_asked() -> str | None:
    """The sharding `accelerate launch` was asked for by its config (it tells the processes through these
    variables): "FSDP", "DEEPSPEED" or None."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "FSDP"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "DEEPSPEED"
    return None


def process_group_problems(state, world: int, group_size: int, asked: str | None) -> list[str]:
    """What is wrong with this process's distributed setup (accelerate's AcceleratorState `state`), given
    the launcher's WORLD_SIZE, the size of the initialised process group and the sharding asked for."""
    kind = state.distributed_type.value
    problems = []
    if world > 1 and group_size != world:
        problems.append(f"its process group has {group_size} rank(s), the launcher started {world}")
    if world > 1 and kind == "NO":
        problems.append("accelerate set up no distributed training (DistributedType.NO)")
    if world > 1 and state.num_processes != world:
        problems.append(f"accelerate counts {state.num_processes} process(es), the launcher started {world}")
    if asked and kind != asked:
        problems.append(f"the accelerate config asks for {asked} but accelerate runs {kind}"
                        + (" (accelerate runs FSDP and DeepSpeed only on GPUs/accelerators; on CPU it trains "
                           "plain data-parallel, every rank holding the whole model)" if kind in ("MULTI_CPU", "NO")
                           else ""))
    elif asked == "FSDP" and state.fsdp_plugin is None or asked == "DEEPSPEED" and state.deepspeed_plugin is None:
        problems.append(f"accelerate runs {kind} without its plugin")
    return problems


def check_process_group(state, world: int) -> None:
    """Stop unless this process is one of `world` ranks of one process group, sharded as its launcher
    asked. Otherwise each process would train on its own and all of them would write one run directory."""
    rank, group_size = rank_and_world()
    problems = process_group_problems(state, world, group_size, sharding_asked())
    if problems:
        raise TrainingError(
            f"process {os.environ.get('RANK', rank)} of {world}: not one rank of one distributed training: "
            + "; ".join(problems) + ". Nothing was trained. On CPU, run `medtune train CONFIG --nproc-per-node N` "
            "(or --accelerate-config configs/accelerate/ddp.yaml): data-parallel over gloo; FSDP and DeepSpeed "
            "need GPUs.")


def check_saved_adapter(adapter_dir: Path, base: str, trust_remote_code: bool = False) -> None:
    """PEFT must load the adapter just saved, with every weight it expects, each non-empty and finite.
    The check loads it onto the base architecture built on the meta device, so no base weight is read."""
    import warnings

    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file() or not (adapter_dir / "adapter_config.json").is_file():
        raise TrainingError(f"{adapter_dir}: training ended but no adapter was written ({path.name} or "
                            "adapter_config.json is missing). Under FSDP set fsdp_state_dict_type: FULL_STATE_DICT; "
                            "under ZeRO-3 set zero3_save_16bit_model: true (see configs/accelerate/)")
    bad = [k for k, v in load_file(str(path)).items() if v.numel() == 0 or not torch.isfinite(v).all()]
    if bad:
        raise TrainingError(f"{path}: {len(bad)} saved weight(s) are empty or not finite, e.g. {bad[0]} "
                            "(a sharded weight saved without gathering it?)")
    config = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PeftModel.from_pretrained(skeleton, str(adapter_dir), low_cpu_mem_usage=True)
    missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
    if missing:
        raise TrainingError(f"{adapter_dir}: PEFT cannot load this adapter whole: {missing[0][:300]}")
