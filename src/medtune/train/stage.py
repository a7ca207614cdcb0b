"""The train stage: LoRA fine-tuning on the prepared data with TRL SFTTrainer and PEFT.

Run as: medtune train CONFIG.yaml [--set train.max_steps=50] [--resume PATH] [--nproc-per-node N]

Reads <output_dir>/data/{train,val} (from `medtune prepare`) and writes, in the Hugging Face Trainer's
layout: adapter_model.safetensors, adapter_config.json, tokenizer files, README.md (model card),
checkpoint-<step>/, trainer_state.json, train_results.json, eval_results.json, metrics.jsonl,
timeline.json, environment.json and TensorBoard events under runs/. See docs/run-directory.md.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

from medtune import __version__
from medtune.config import Config
from medtune.modeling import check_lora_targets, count_parameters, load_causal_lm, resolve_base_model, torch_dtype
from medtune.rundir import StageRun, fingerprint, read_json, write_json
from medtune.train import quantize
from medtune.train.backends import Backends, choose_checkpointing, detect_backends

# COMPLETE_MARKER is re-exported: tests and callers name the train stage's marker through this module.
from medtune.train.common import (
    TRAINER_OUTPUTS,
    TRAINER_STRAYS,
    NonFiniteLoss,
    Timeline,
    TrainingError,
    check_process_group,
    check_saved_adapter,
    choose_checkpoint,
    complete_checkpoints,
    distributed_eval,
    is_main_process,
    lora_config,
    world_size,
)
from medtune.train.loss import _trainer_class, whole_head_weight
from medtune.train.plan import plan_steps

TRAIN_FORMAT = 1  # bump when the same inputs would train differently


def load_prepared(run_dir: Path):
    import datasets

    data_dir = run_dir / "data"
    if not (data_dir / "train").is_dir():
        raise TrainingError(f"{data_dir}/train not found: run `medtune prepare CONFIG` first")
    train = datasets.load_from_disk(str(data_dir / "train"))
    val = datasets.load_from_disk(str(data_dir / "val")) if (data_dir / "val").is_dir() else None
    if len(train) == 0:
        raise TrainingError(f"{data_dir}/train is empty: nothing to train on (see {data_dir}/stats.json)")
    return train, val


def train_fingerprint(cfg: Config, data_fingerprint: str | None) -> str:
    d = cfg.to_dict()
    return fingerprint({"format": TRAIN_FORMAT, "model": d["model"], "lora": d["lora"], "train": d["train"],
                        "data": data_fingerprint, "world_size": world_size()})


def train_stage_run(cfg: Config, data_fingerprint: str | None) -> StageRun:
    """The train stage's manifest (train_manifest.json) and the files it writes into the run directory."""
    return StageRun("train", cfg.run_dir, "train_manifest.json", train_fingerprint(cfg, data_fingerprint),
                    outputs=(*TRAINER_OUTPUTS, "eval_results.json"), strays=TRAINER_STRAYS)


def eval_every(t) -> int | None:
    """Steps between evaluations for eval_strategy 'steps' (eval_steps, else save_steps), else None."""
    return (t.eval_steps or t.save_steps) if t.eval_strategy == "steps" else None


def build_trainer(cfg: Config, model, tokenizer, train_ds, val_ds, backends: Backends, world: int = 1):
    """The SFT trainer medtune trains with: every setting from the config, the backends chosen, the
    target-only loss, and the callbacks (metrics.jsonl, NaN guard, token-weighted eval, checkpoint markers)."""
    from transformers import PrinterCallback
    from trl import SFTConfig

    from medtune.train.callbacks import CompleteMarker, MetricsCallback, NonFiniteGuard, TokenWeightedEval

    run_dir, t = cfg.run_dir, cfg.train
    lora = lora_config(cfg.lora)
    eval_steps = eval_every(t)
    args = SFTConfig(
        output_dir=str(run_dir),
        num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optim,
        bf16=backends.precision == "bf16", fp16=backends.precision == "fp16",
        use_cpu=backends.device == "cpu",
        activation_checkpointing=backends.checkpoint_every is not None,
        activation_checkpointing_kwargs={"use_reentrant": False, "every_n_layers": backends.checkpoint_every}
        if backends.checkpoint_every is not None else None,
        train_sampling_strategy="group_by_length" if backends.batching == "group_by_length" else "random",
        length_column_name="length",
        padding_free=backends.batching == "packing",
        max_length=None,  # prepare already enforced data.max_length
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        use_liger_kernel=backends.liger_kernel,
        logging_steps=t.logging_steps, logging_first_step=True, logging_nan_inf_filter=False,
        eval_strategy="no",  # evaluation is the token-weighted callback below
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        seed=t.seed, data_seed=t.seed, dataloader_num_workers=t.dataloader_num_workers,
        report_to=[r for r in t.report_to if r != "none"],
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,  # our own bar shows loss, lr and tokens/s
        ddp_backend="gloo" if world > 1 and backends.device == "cpu" else None,
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    eval_cb = TokenWeightedEval(val_ds, eval_steps, t.eval_strategy == "epoch", t.per_device_eval_batch_size)
    callbacks = [NonFiniteGuard(), MetricsCallback(run_dir / "metrics.jsonl"), eval_cb, CompleteMarker(run_dir)]
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                               peft_config=lora, callbacks=callbacks)
    trainer.use_liger_loss = backends.liger_kernel and whole_head_weight(trainer.accelerator.state)
    if backends.liger_kernel and not trainer.use_liger_loss:
        backends.reasons.append("Liger's fused loss off: under ZeRO-3/FSDP lm_head.weight is sharded outside the "
                                "forward; the loss calls the head as a module, chunked")
    eval_cb.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace the printed dicts
    return trainer


def train_model(cfg: Config, resume: str | None = None, force: bool = False, log=print) -> dict:
    """Run the train stage; returns the contents of train_results.json."""
    run_dir = cfg.run_dir
    main = is_main_process()
    say = log if main else (lambda *a, **k: None)
    timeline = Timeline()
    with timeline("data_loading"):
        train_ds, val_ds = load_prepared(run_dir)
        data_stats = read_json(run_dir / "data" / "stats.json", {})
    run = train_stage_run(cfg, read_json(run_dir / "data" / "manifest.json", {}).get("fingerprint"))
    checkpoint = choose_checkpoint(run, resume, force, say)
    if checkpoint is None and not force and run.is_current("adapter_model.safetensors"):
        say(f"train: {run_dir} already holds the adapter for this config and data (fingerprint {run.fingerprint}); "
            "skipping (--force retrains)")
        return read_json(run_dir / "train_results.json", {})

    backends = detect_backends(cfg)
    world = world_size()
    with timeline("model_loading"):
        base, model, tokenizer = load_base(cfg, backends, main)
    check_lora_targets(model, list(cfg.lora.target_modules))  # before anything is written or trained
    choose_checkpointing(cfg, model.config, backends, world=world,
                         longest=data_stats.get("token_length", {}).get("max"))
    trainer = build_trainer(cfg, model, tokenizer, train_ds, val_ds, backends, world)
    check_process_group(trainer.accelerator.state, world)  # before anything is written to the run directory
    if main:
        if checkpoint is None:
            run.clear()  # a fresh start: no earlier run's checkpoints to resume from, no metrics appended to
        run.start()
    plan = plan_steps(len(train_ds), cfg, world)
    say(_summary(cfg, base, backends, trainer, plan, world, train_ds, val_ds, data_stats, checkpoint))
    with timeline("training"):
        result = _fit(trainer, checkpoint, run, main)
    with timeline("evaluation"):
        final_eval = distributed_eval(trainer.model, val_ds, cfg.train.per_device_eval_batch_size) \
            if val_ds is not None and len(val_ds) else None
    # Every rank calls these (FSDP and ZeRO-3 gather the weights from all of them); only rank 0 writes.
    trainer.save_model(str(run_dir))  # adapter_model.safetensors, adapter_config.json, tokenizer files
    trainer.save_state()  # trainer_state.json
    if not main:
        return {}
    try:
        check_saved_adapter(run_dir, base, cfg.model.trust_remote_code)
    except TrainingError as e:
        run.fail(str(e))
        raise
    results = _train_results(result.metrics, trainer, backends, plan, world, len(train_ds), checkpoint, base)
    results["quantization"] = dataclasses.asdict(cfg.model.quantization) if cfg.model.quantization else None
    _write_run_files(cfg, base, results, final_eval, len(val_ds or []), timeline, backends, world, data_stats)
    run.complete()
    say(f"train: done in {result.metrics.get('train_runtime', 0):.0f} s: train loss {results['train_loss']:.4f} "
        f"(run average; last logged {results.get('last_logged_loss')})"
        + (f", eval loss {final_eval['eval_loss']:.4f}, perplexity {math.exp(final_eval['eval_loss']):.3f}"
           if final_eval else "") + f"; adapter in {run_dir}")
    return results


def load_base(cfg: Config, backends: Backends, main: bool):
    """(base model path, model, tokenizer) in the precision and attention kernel chosen."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*", category=FutureWarning)
    base = resolve_base_model(cfg.model.name_or_path, cfg.run_dir) if main else _wait_for_base(cfg, cfg.run_dir)
    dtype = backends.precision if cfg.model.torch_dtype == "auto" else cfg.model.torch_dtype
    try:
        model = load_causal_lm(base, dtype=torch_dtype(dtype), revision=cfg.model.revision,
                               attn_implementation=backends.attn_implementation,
                               trust_remote_code=cfg.model.trust_remote_code,
                               **quantize.load_kwargs(cfg.model.quantization, backends.device))
        tokenizer = AutoTokenizer.from_pretrained(base, revision=cfg.model.revision,
                                                  trust_remote_code=cfg.model.trust_remote_code)
    except OSError as e:
        raise TrainingError(f"model.name_or_path: cannot load '{base}': {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.model.quantization:
        # k-bit preparation upcasts and re-enables input gradients; checkpointing itself is the Trainer's
        # (choose_checkpointing decides how many layers).
        model = quantize.prepare_for_training(model, False)
    return base, model, tokenizer


def _summary(cfg: Config, base: str, backends: Backends, trainer, plan: dict, world: int, train_ds, val_ds,
             data_stats: dict, checkpoint) -> str:
    """What is about to run, with the reason for each choice and the derived batch and step counts."""
    t = cfg.train
    trainable, total = count_parameters(trainer.model)
    eval_steps = eval_every(t)
    trained = data_stats.get("train_target_tokens")
    return "\n".join([
        f"train: base model {base} ({backends.device}, {backends.precision}, attention {backends.attn_implementation}"
        + (f", weights {quantize.describe(cfg.model.quantization)}" if cfg.model.quantization else "") + ")",
        *(f"  - {r}" for r in backends.reasons),
        f"  parameters: {total:,} total, {trainable:,} trainable ({100 * trainable / total:.2f}%)",
        f"  effective batch: {t.per_device_train_batch_size} per device x {t.gradient_accumulation_steps} accumulation"
        f" x {world} process(es) = {plan['effective_batch_size']} samples per optimizer step",
        f"  steps: {plan['steps_per_epoch']} per epoch, {plan['total_steps']} in total",
        f"  data: {len(train_ds):,} training samples, {int(sum(train_ds['length'])):,} tokens per epoch"
        + (f" ({trained:,} of them trained)" if isinstance(trained, int) else ""),
        f"  validation: {len(val_ds) if val_ds is not None else 0:,} samples"
        + (f", evaluated every {eval_steps} steps" if eval_steps else ", evaluated every epoch"
           if t.eval_strategy == "epoch" else ""),
        f"  output: {cfg.run_dir}" + (f" (resuming from {checkpoint})" if checkpoint else ""),
    ])


def _fit(trainer, checkpoint: Path | None, run: StageRun, main: bool):
    """trainer.train(), turning a diverged loss into a TrainingError that names the last good checkpoint."""
    try:
        return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except NonFiniteLoss as e:
        good = complete_checkpoints(run.directory)
        if main:
            run.fail(str(e))
        raise TrainingError(
            f"training stopped at {e}: the loss diverged. Nothing from that step was saved; the last good "
            f"checkpoint is {good[-1] if good else 'none (no checkpoint was saved before it)'}. Lower "
            "train.learning_rate or check the data, then rerun (it resumes from that checkpoint).") from None


def _write_run_files(cfg: Config, base: str, results: dict, final_eval: dict | None, n_val: int, timeline: Timeline,
                     backends: Backends, world: int, data_stats: dict) -> None:
    """train_results.json, eval_results.json, timeline.json, environment.json and the model card."""
    run_dir = cfg.run_dir
    write_json(run_dir / "train_results.json", results)
    if final_eval is not None:
        write_json(run_dir / "eval_results.json", {
            "eval_loss": final_eval["eval_loss"], "perplexity": math.exp(final_eval["eval_loss"]),
            "eval_samples": n_val, "eval_tokens": final_eval["eval_tokens"],
            "eval_runtime": timeline.events[-1]["seconds"], "epoch": results.get("epoch")})
    write_json(run_dir / "timeline.json", {"events": timeline.events})
    write_json(run_dir / "environment.json", environment(cfg, backends, world))
    (run_dir / "README.md").write_text(model_card(cfg, base, results, final_eval, data_stats), encoding="utf-8")


def _wait_for_base(cfg: Config, run_dir: Path) -> str:
    """Non-zero ranks: the builtin base model is written by rank 0; wait until it is there."""
    from medtune.config import BUILTIN_TINY_QWEN3

    if cfg.model.name_or_path != BUILTIN_TINY_QWEN3:
        return cfg.model.name_or_path
    target = run_dir / "base_model" / "config.json"
    for _ in range(600):
        if target.exists():
            return str(target.parent.resolve())
        time.sleep(0.5)
    raise TrainingError(f"{target} did not appear: rank 0 failed to create the builtin base model")


def _train_results(metrics: dict, trainer, backends: Backends, plan: dict, world: int, n_train: int, checkpoint,
                   base: str) -> dict:
    import torch

    trainable, total = count_parameters(trainer.model)
    peak = torch.cuda.max_memory_allocated() if backends.device == "cuda" else None
    history = [h for h in trainer.state.log_history if "loss" in h]
    runtime = metrics.get("train_runtime") or 0.0
    tokens = trainer.state.num_input_tokens_seen
    devices = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
               if backends.device == "cuda" else ["cpu"])
    return {
        **metrics,
        "train_tokens": tokens,
        "train_tokens_per_second": round(tokens / runtime, 2) if runtime else None,
        "first_logged_loss": history[0]["loss"] if history else None,
        "last_logged_loss": history[-1]["loss"] if history else None,
        "global_step": trainer.state.global_step,
        "num_train_samples": n_train,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
        "per_device_train_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "world_size": world,
        "effective_batch_size": plan["effective_batch_size"],
        "planned_steps": plan["total_steps"],
        "precision": backends.precision,
        "batching": backends.batching,
        "checkpoint_every_n_layers": backends.checkpoint_every,  # null: no activation checkpointing
        "attn_implementation": backends.attn_implementation,
        "liger_kernel": backends.liger_kernel,
        "device": devices[0] if devices else backends.device,
        "num_devices": len(devices),
        "peak_memory_bytes": peak,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "base_model": base,
    }


def environment(cfg: Config, backends: Backends, world: int) -> dict:
    from importlib import metadata

    packages = {}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    packages["medtune"] = __version__
    commit, dirty = _git_state()
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "git_commit": commit, "git_dirty": dirty, "devices": [backends.device], "world_size": world,
            "seeds": {"data": cfg.data.seed, "train": cfg.train.seed}, "command": " ".join(sys.argv)}


def _git_state() -> tuple[str | None, bool | None]:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                                    text=True, timeout=5).stdout.strip()) if commit else None
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def _vllm_use(cfg: Config) -> str:
    if cfg.lora.modules_to_save:  # vLLM's LoRA loading refuses adapters with fully trained modules
        return (f"this adapter also trains {', '.join(cfg.lora.modules_to_save)} in full, which vLLM's LoRA loading "
                "does not support: merge it first (`medtune merge`) and load the merged model in vLLM.")
    return "vLLM loads this directory as a LoRA adapter unchanged."


def model_card(cfg: Config, base: str, results: dict, final_eval: dict | None, data_stats: dict) -> str:
    eval_line = (f"- eval loss {final_eval['eval_loss']:.4f}, perplexity {math.exp(final_eval['eval_loss']):.3f} "
                 f"on {data_stats.get('val', '?')} held-out dialogues (token-weighted)\n" if final_eval else "")
    return f"""---
base_model: {base}
library_name: peft
tags: [medtune, lora, medical, sft]
---
# LoRA adapter trained with medtune

A LoRA adapter (r {cfg.lora.r}, alpha {cfg.lora.alpha}, dropout {cfg.lora.dropout} on
{', '.join(cfg.lora.target_modules)}) for `{base}`, fine-tuned on {', '.join(cfg.data.source_paths())}
({results.get('num_train_samples', '?')} dialogues, max length {cfg.data.max_length}) for
{results.get('global_step')} optimizer steps of {results.get('effective_batch_size')} samples.

- train loss {results.get('train_loss', float('nan')):.4f} (run average), last logged {results.get('last_logged_loss')}
{eval_line}- trainable parameters {results['trainable_params']:,} of {results['total_params']:,} \
({results['trainable_percent']:.2f}%)
- trained non-thinking: answers follow `<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n`; use
  `enable_thinking=False` in the chat template at inference.

## Use

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{cfg.run_dir}")
tokenizer = AutoTokenizer.from_pretrained("{cfg.run_dir}")
prompt = tokenizer.apply_chat_template([{{"role": "user", "content": "糖尿病有哪些症状？"}}],
                                       add_generation_prompt=True, enable_thinking=False, tokenize=False)
```

Or `medtune chat {cfg.run_dir}` / `medtune serve {cfg.run_dir}`; {_vllm_use(cfg)}

Not a medical device: answers are not medical advice. Made with medtune {__version__}.
"""
