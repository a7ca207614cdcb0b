"""Benchmark: medtune's training step vs TRL SFTTrainer with its default settings, on CPU, on the same samples.

Run as: .venv/bin/python benchmarks/train_throughput.py [--steps 4] [--batch 4] [--layers 28] [--max-length 2048]
        [--repeats 1] [--batches default|same]

Model: Qwen3-0.6B's shape by default (28 layers, hidden 1024, intermediate 3072, 16 query / 8 key-value heads of
128, the real 151,936-token vocabulary), random init, fp32: the transformer body, not the output layer, is
most of the work, as in the 8B models users train. `--layers` cuts the depth for time (say so with the
figures). Same LoRA (r 16 on q/k/v/o/gate/up/down, dropout 0.05) and optimizer settings in both arms.

Data: the 1,000 real HuatuoGPT-format dialogues in ../shared/assets/medical-sft-samples, prepared by `medtune
prepare` with the real Qwen3 tokenizer at `--max-length` (2,048 as the reference run); `steps x batch` of them
(seeded) are the benchmark's samples, one epoch: both arms train on the same samples for the same number of
optimizer steps.

- `--batches default` (the default): each tool forms its batches with its own default sampler and settings,
  as users run them: TRL's random batches, padded; medtune's defaults for the machine (on CPU: padding-free
  batches with sdpa_varlen attention). Equal work is checked as the same non-padding tokens in total; the
  final training losses of both arms are reported (same samples, different batches: equal within noise).
- `--batches same`: both arms read the same length-grouped batches in order (`train_sampling_strategy=
  "sequential"`), so only the step differs; the script checks every step's token count in both arms.

- baseline: `trl.SFTTrainer` with SFTConfig's defaults otherwise (gradient checkpointing on, TRL's own loss),
  except `bf16=False`: its bf16 default means bf16 autocast on CPU, 8-19x slower here, a baseline nobody should
  compare against.
- medtune: `medtune train`'s own path (`train_model`) with medtune's defaults for this machine.

The arms alternate (trl, medtune, trl, medtune, ...; `--repeats` rounds), each in its own process, and each
keeps its best round, so a busy shared machine slows both alike. Throughput is non-padding tokens/s over the
training loop (`train_runtime`). Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

from arms import alternate

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "assets" / "medical-sft-samples" / "medicalgpt_medical_sft_1K_format.jsonl"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prepare(workdir: Path, max_length: int) -> Path:
    """The real samples prepared by medtune into workdir/run/data; returns the run directory."""
    from medtune.config import config_from_dict
    from medtune.data.prepare import prepare_dataset

    cfg = config_from_dict({"output_dir": str(workdir / "run"),
                            "data": {"train_files": [str(SAMPLES)], "max_length": max_length}})
    prepare_dataset(cfg, log=lambda *a: None)
    return workdir / "run"


QWEN3_06B = {"hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16, "num_key_value_heads": 8,
             "head_dim": 128}


def build_model(path: Path, hidden: int, layers: int) -> None:
    from medtune.modeling import build_tiny_qwen3

    shape = dict(QWEN3_06B) if hidden == QWEN3_06B["hidden_size"] else {
        "hidden_size": hidden, "intermediate_size": 3 * hidden, "num_attention_heads": max(4, hidden // 64),
        "num_key_value_heads": max(2, hidden // 128), "head_dim": 64 if hidden >= 256 else hidden // 4}
    build_tiny_qwen3(path, seed=0, num_hidden_layers=layers, **shape)


def benchmark_samples(run_dir: Path, steps: int, batch: int, grouped: bool) -> dict:
    """Keep steps x batch training samples (seeded); with `grouped`, ordered into length-grouped batches, longest
    first (medtune's LengthGroupedSampler forms exactly these from these samples; TRL's arm reads them in this
    order). Returns the token counts: in total, and per step when the batches are fixed."""
    import datasets
    import numpy as np

    path = run_dir / "data" / "train"
    train = datasets.load_from_disk(str(path))
    keep = np.random.default_rng(0).choice(len(train), size=min(steps * batch, len(train)), replace=False).tolist()
    order = sorted(keep, key=lambda i: -train[i]["length"]) if grouped else keep
    subset = train.select(order)
    subset.save_to_disk(str(path) + ".same")
    lengths = subset["length"]
    batches = [lengths[a:a + batch] for a in range(0, len(lengths), batch)]
    fixed = {"processed_tokens": int(sum(max(b) * len(b) for b in batches)), "step_tokens": [sum(b) for b in batches]}
    return {"samples": len(order), "non_padding_tokens": int(sum(lengths)),
            "mean_length": round(sum(lengths) / len(lengths), 1), "max_length_seen": max(lengths),
            **(fixed if grouped else {})}


def step_tokens_callback(record: list):
    """A TrainerCallback that appends the non-padding tokens each optimizer step trained on."""
    from transformers import TrainerCallback

    class StepTokens(TrainerCallback):
        seen = 0

        def on_step_end(self, args, state, control, **kwargs):
            record.append(state.num_input_tokens_seen - self.seen)
            self.seen = state.num_input_tokens_seen

    return StepTokens()


def run_trl(run_dir: Path, model_dir: Path, steps: int, batch: int, grouped: bool) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    train = datasets.load_from_disk(str(run_dir / "data" / "train")).select_columns(["input_ids", "labels"])
    # --batches same: the samples are already in length-grouped batches (benchmark_samples): read them in order.
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    # bf16=False: SFTConfig defaults to bf16, which with use_cpu=True runs bf16 autocast, 8-19x slower than fp32
    # on a CPU without bf16 instructions (../shared/FINDINGS.md); both arms compute in fp32.
    args = SFTConfig(output_dir=str(run_dir / "trl"), max_steps=steps, per_device_train_batch_size=batch,
                     learning_rate=2e-4, report_to=[], save_strategy="no", logging_steps=steps, use_cpu=True,
                     bf16=False,
                     disable_tqdm=True, include_num_input_tokens_seen="non_padding", seed=42,
                     **({"train_sampling_strategy": "sequential"} if grouped else {}))
    per_step = []
    trainer = SFTTrainer(model=model, args=args, train_dataset=train,
                         processing_class=AutoTokenizer.from_pretrained(str(model_dir)),
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
                                                task_type="CAUSAL_LM"), callbacks=[step_tokens_callback(per_step)])
    metrics = trainer.train().metrics
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": metrics["train_runtime"],
            "step_tokens": per_step, "train_loss": metrics["train_loss"]}


def run_medtune(run_dir: Path, model_dir: Path, steps: int, batch: int, grouped: bool) -> dict:
    import medtune.train.stage
    from medtune.config import config_from_dict
    from medtune.train.stage import train_model

    per_step, build = [], medtune.train.stage.build_trainer

    def build_in_order(*args, **kwargs):  # --batches same: the benchmark's batches, in order (module docstring)
        trainer = build(*args, **kwargs)
        if grouped:
            trainer.args.train_sampling_strategy = "sequential"
        trainer.add_callback(step_tokens_callback(per_step))
        return trainer

    medtune.train.stage.build_trainer = build_in_order
    cfg = config_from_dict({"output_dir": str(run_dir), "model": {"name_or_path": str(model_dir)},
                            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": TARGETS},
                            "train": {"max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 2e-4,
                                      "save_steps": 10 * steps, "logging_steps": steps, "report_to": ["none"],
                                      **({"batching": "group_by_length"} if grouped else {})}})
    results = train_model(cfg, force=True, log=lambda *a: None)
    return {"tokens": results["train_tokens"], "seconds": results["train_runtime"], "step_tokens": per_step,
            "checkpoint_every_n_layers": results["checkpoint_every_n_layers"], "train_loss": results["train_loss"],
            "batching": results["batching"], "attention": results.get("attn_implementation")}


def child(arm: str, workdir: Path, steps: int, batch: int, grouped: bool) -> None:
    run_dir, model_dir = workdir / "run", workdir / "model"
    result = (run_trl if arm == "trl" else run_medtune)(run_dir, model_dir, steps, batch, grouped)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=1024, help="1024 = Qwen3-0.6B's shape; others scale it")
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; each arm keeps its best")
    parser.add_argument("--batches", choices=["default", "same"], default="default",
                        help="each tool's own default batches (default), or the same length-grouped batches in order")
    parser.add_argument("--arm", choices=["trl", "medtune"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    grouped = args.batches == "same"
    if args.arm:
        child(args.arm, args.workdir, args.steps, args.batch, grouped)
        return
    if not SAMPLES.exists():
        sys.exit(f"benchmark data not found: {SAMPLES}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        run_dir = prepare(workdir, args.max_length)
        tokens = benchmark_samples(run_dir, args.steps, args.batch, grouped)
        os.replace(run_dir / "data" / "train", run_dir / "data" / "train.all")
        os.replace(str(run_dir / "data" / "train") + ".same", run_dir / "data" / "train")
        build_model(workdir / "model", args.hidden, args.layers)
        rounds, best = alternate(__file__, ["--workdir", str(workdir), "--steps", str(args.steps), "--batch",
                                            str(args.batch), "--batches", args.batches], args.repeats)
    for arm, r in best.items():
        if r["tokens"] != tokens["non_padding_tokens"] or (grouped and r["step_tokens"] != tokens["step_tokens"]):
            sys.exit(f"{arm} arm saw {r['step_tokens']} non-padding tokens per step, {r['tokens']} in all; expected "
                     f"{tokens.get('step_tokens')}, {tokens['non_padding_tokens']} in all")
    rate = {arm: tokens["non_padding_tokens"] / r["seconds"] for arm, r in best.items()}
    result = {
        "benchmark": "train_throughput", "device": "cpu", "threads": os.cpu_count(),
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": 151936,
                  "shape": "Qwen3-0.6B" + ("" if args.layers == 28 else f" with {args.layers} of its 28 layers")
                  if args.hidden == 1024 else "scaled"},
        "steps": args.steps, "per_device_batch": args.batch, "max_length": args.max_length, "repeats": args.repeats,
        "batches": args.batches, **tokens,
        "trl_default_tokens_per_second": round(rate["trl"], 2),
        "medtune_tokens_per_second": round(rate["medtune"], 2),
        "speedup": round(rate["medtune"] / rate["trl"], 2),
        "round_seconds": {arm: [r["seconds"] for r in runs] for arm, runs in rounds.items()},
        "trl_default_train_loss": round(best["trl"]["train_loss"], 4),
        "medtune_train_loss": round(best["medtune"]["train_loss"], 4),
        "trl_default_peak_rss_mb": best["trl"]["peak_rss_mb"],
        "medtune_peak_rss_mb": best["medtune"]["peak_rss_mb"],
        "memory_ratio": round(best["medtune"]["peak_rss_mb"] / best["trl"]["peak_rss_mb"], 2),
        "medtune_batching": best["medtune"]["batching"], "medtune_attention": best["medtune"]["attention"],
        "medtune_checkpoint_every_n_layers": best["medtune"]["checkpoint_every_n_layers"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
