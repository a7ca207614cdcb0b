"""Benchmark: medtune's training step vs TRL SFTTrainer with its default settings, on CPU.

Run as: .venv/bin/python benchmarks/train_throughput.py [--steps 12] [--hidden 256] [--layers 4]

Data: the 1,000 real HuatuoGPT-format dialogues in ../shared/assets/medical-sft-samples, prepared by
`medtune prepare` with the real Qwen3 tokenizer (max length 1,024), so batches follow the real length
distribution. Model: a small Qwen3-architecture model (real 151,936-token vocabulary), random init,
fp32, the same LoRA (r 16 on q/k/v/o/gate/up/down) and optimizer settings in both arms.

- baseline: `trl.SFTTrainer` with SFTConfig's defaults (padded batches in random order, no packing,
  gradient checkpointing on, TRL's own loss) on the same tokenized data.
- baseline + huge pages: the same, with PyTorch's CPU allocator on transparent huge pages
  (THP_MEM_ALLOC_ENABLE=1, which medtune sets for itself), to show how much of the gain is the allocator.
- medtune: `medtune train`'s own path (`train_model`) with medtune's defaults for this machine.

Each arm runs in its own process so peak RSS is its own. Throughput is non-padding tokens per second
over the training loop (the Trainer's `num_input_tokens_seen` with "non_padding", over `train_runtime`).
Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "assets" / "medical-sft-samples" / "medicalgpt_medical_sft_1K_format.jsonl"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prepare(workdir: Path, max_length: int) -> Path:
    """The real samples prepared by medtune into workdir/run/data; returns the run directory."""
    from medtune.config import config_from_dict
    from medtune.prepare import prepare_dataset

    cfg = config_from_dict({"output_dir": str(workdir / "run"),
                            "data": {"train_files": [str(SAMPLES)], "max_length": max_length}})
    prepare_dataset(cfg, log=lambda *a: None)
    return workdir / "run"


def build_model(path: Path, hidden: int, layers: int) -> None:
    from medtune.modeling import build_tiny_qwen3

    build_tiny_qwen3(path, seed=0, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                     num_attention_heads=max(4, hidden // 64), num_key_value_heads=max(2, hidden // 128),
                     head_dim=64 if hidden >= 256 else hidden // 4)


def run_trl(run_dir: Path, model_dir: Path, steps: int, batch: int) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    train = datasets.load_from_disk(str(run_dir / "data" / "train")).select_columns(["input_ids", "labels"])
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    args = SFTConfig(output_dir=str(run_dir / "trl"), max_steps=steps, per_device_train_batch_size=batch,
                     learning_rate=2e-4, report_to=[], save_strategy="no", logging_steps=steps, use_cpu=True,
                     disable_tqdm=True, include_num_input_tokens_seen="non_padding", seed=42)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train,
                         processing_class=AutoTokenizer.from_pretrained(str(model_dir)),
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
                                                task_type="CAUSAL_LM"))
    metrics = trainer.train().metrics
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": metrics["train_runtime"]}


def run_medtune(run_dir: Path, model_dir: Path, steps: int, batch: int) -> dict:
    from medtune.config import config_from_dict
    from medtune.train import train_model

    cfg = config_from_dict({"output_dir": str(run_dir), "model": {"name_or_path": str(model_dir)},
                            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": TARGETS},
                            "train": {"max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 2e-4,
                                      "save_steps": 10 * steps, "logging_steps": steps, "report_to": ["none"]}})
    results = train_model(cfg, force=True, log=lambda *a: None)
    return {"tokens": results["train_tokens"], "seconds": results["train_runtime"], "batching": results["batching"]}


def child(arm: str, workdir: Path, steps: int, batch: int) -> None:
    run_dir, model_dir = workdir / "run", workdir / "model"
    result = (run_trl if arm == "trl" else run_medtune)(run_dir, model_dir, steps, batch)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--arm", choices=["trl", "medtune"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        child(args.arm, args.workdir, args.steps, args.batch)
        return
    if not SAMPLES.exists():
        sys.exit(f"benchmark data not found: {SAMPLES}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.max_length)
        build_model(workdir / "model", args.hidden, args.layers)
        arms = {}
        base_env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
        for arm, child_arm, extra in (("trl", "trl", {}), ("trl_thp", "trl", {"THP_MEM_ALLOC_ENABLE": "1"}),
                                      ("medtune", "medtune", {})):
            started = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--arm", child_arm, "--workdir", str(workdir),
                                  "--steps", str(args.steps), "--batch", str(args.batch)],
                                 capture_output=True, text=True, env={**base_env, "TQDM_DISABLE": "1", **extra})
            if out.returncode != 0:
                sys.exit(f"{arm} arm failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            arms[arm] = json.loads(out.stdout.strip().splitlines()[-1])
            arms[arm]["wall_seconds"] = round(time.perf_counter() - started, 1)
        for a in arms.values():
            a["tokens_per_second"] = round(a["tokens"] / a["seconds"], 1)
        result = {
            "benchmark": "train_throughput", "device": "cpu", "threads": os.cpu_count(),
            "model": {"hidden": args.hidden, "layers": args.layers, "vocab": 151936},
            "steps": args.steps, "per_device_batch": args.batch, "max_length": args.max_length,
            "trl_default_tokens_per_second": arms["trl"]["tokens_per_second"],
            "trl_default_hugepages_tokens_per_second": arms["trl_thp"]["tokens_per_second"],
            "medtune_tokens_per_second": arms["medtune"]["tokens_per_second"],
            "speedup": round(arms["medtune"]["tokens_per_second"] / arms["trl"]["tokens_per_second"], 2),
            "speedup_vs_trl_with_hugepages": round(arms["medtune"]["tokens_per_second"]
                                                   / arms["trl_thp"]["tokens_per_second"], 2),
            "trl_default_peak_rss_mb": arms["trl"]["peak_rss_mb"],
            "medtune_peak_rss_mb": arms["medtune"]["peak_rss_mb"],
            "memory_ratio": round(arms["medtune"]["peak_rss_mb"] / arms["trl"]["peak_rss_mb"], 2),
            "medtune_batching": arms["medtune"]["batching"],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
