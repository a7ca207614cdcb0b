"""Benchmark (for a lent GPU): LoRA training throughput on the real Qwen3-8B architecture, medtune vs TRL default.

Run as: python benchmarks/gpu_train.py            # on one GPU: Qwen3-8B architecture, random init, bf16
        python benchmarks/gpu_train.py --dry-run  # CPU, a tiny model: checks the script (used by the tests)

The model is Qwen3-8B built from its config values (random init, bf16, no download) with the reference
LoRA (r 16, alpha 32, dropout 0.05 on q/k/v/o/gate/up/down_proj); batches follow the real length
distribution of ../shared/assets/medical-sft-samples, prepared by medtune with the real Qwen3 tokenizer
at max length 2,048; per-device batch 4 as in the reference run.

- baseline: `trl.SFTTrainer` with SFTConfig's defaults (padding, no packing, gradient checkpointing, TRL's
  fused LM head), bf16.
- medtune: `medtune.train.stage.build_trainer` with medtune's defaults for the machine (flash-attention varlen
  packing and Liger kernels when installed, bf16, gradient checkpointing, target-only chunked loss).
- medtune_padded: the same with `train.batching: padding` (random padded batches, as TRL forms them), for
  half the steps: what padding-free batches alone buy on this shape (`padding_free_speedup`).

Each arm runs in its own process (peak memory is its own). Reports non-padding tokens/s, model FLOPs
utilisation (6 x parameters x tokens/s, and the LoRA-aware 4 x, against this card's bf16 matmul peak
measured in the same run), peak memory and whether it fits a 24 GB card. One JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "assets" / "medical-sft-samples" / "medicalgpt_medical_sft_1K_format.jsonl"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16)


def prepare(workdir: Path, max_length: int, source: Path) -> Path:
    from medtune.config import config_from_dict
    from medtune.data.prepare import prepare_dataset

    cfg = config_from_dict({"output_dir": str(workdir / "run"),
                            "data": {"train_files": [str(source)], "max_length": max_length}})
    prepare_dataset(cfg, log=lambda *a: None)
    return workdir / "run" / "data" / "train"


def matmul_peak(device: str) -> float:
    """FLOP/s of large bf16 matmuls on this device (fp32 on CPU), measured now."""
    import torch

    n, dtype, reps = (8192, torch.bfloat16, 50) if device == "cuda" else (512, torch.float32, 20)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - started)


def build_model(device: str, attn: str):
    import torch
    from transformers import Qwen3ForCausalLM

    from medtune.attention import register
    from medtune.modeling import QWEN3_8B, qwen3_config

    register()  # medtune's CPU default, sdpa_varlen, is a name transformers learns from medtune
    values = dict(QWEN3_8B) if device == "cuda" else {**QWEN3_8B, **TINY}
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        return Qwen3ForCausalLM._from_config(qwen3_config(**values), dtype=dtype, attn_implementation=attn)


def child(arm: str, data_dir: Path, steps: int, batch: int, workdir: Path) -> dict:
    """One arm's run: trl, medtune or medtune_padded (medtune with train.batching: padding)."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from medtune.assets import find_qwen3_tokenizer
    from medtune.config import config_from_dict
    from medtune.modeling import count_parameters, enable_cpu_hugepages
    from medtune.train.stage import build_trainer
    from medtune.train.backends import detect_backends

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(str(find_qwen3_tokenizer()))
    train = datasets.load_from_disk(str(data_dir))
    train = train.select(range(min(len(train), steps * batch)))
    lora = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": TARGETS}
    if arm.startswith("medtune"):
        enable_cpu_hugepages()
        cfg = config_from_dict({"output_dir": str(workdir / arm), "lora": lora, "train": {
            "max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 2e-5, "logging_steps": steps,
            "save_steps": 100 * steps, "report_to": ["none"],
            **({"batching": "padding"} if arm == "medtune_padded" else {})}})
        backends = detect_backends(cfg)
        model = build_model(device, backends.attn_implementation)
        trainer = build_trainer(cfg, model, tokenizer, train, None, backends)
        chosen = {"batching": backends.batching, "attention": backends.attn_implementation,
                  "liger": backends.liger_kernel, "precision": backends.precision}
    else:
        from trl import SFTConfig, SFTTrainer

        model = build_model(device, "sdpa")
        args = SFTConfig(output_dir=str(workdir / "trl"), max_steps=steps, per_device_train_batch_size=batch,
                         learning_rate=2e-5, bf16=device == "cuda", use_cpu=device == "cpu", report_to=[],
                         save_strategy="no", logging_steps=steps, disable_tqdm=True,
                         include_num_input_tokens_seen="non_padding", max_length=None)
        trainer = SFTTrainer(model=model, args=args, train_dataset=train.select_columns(["input_ids", "labels"]),
                             processing_class=tokenizer,
                             peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
                                                    task_type="CAUSAL_LM"))
        chosen = {"batching": "padding", "attention": "sdpa", "liger": False,
                  "precision": "bf16" if device == "cuda" else "fp32"}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    metrics = trainer.train().metrics
    _, total = count_parameters(trainer.model)
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": metrics["train_runtime"], "params": total,
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", **chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--dry-run", action="store_true", help="CPU and a tiny model: check the script only")
    parser.add_argument("--source", type=Path, default=SAMPLES, help="HuatuoGPT-format JSONL for the lengths")
    parser.add_argument("--arm", choices=["trl", "medtune", "medtune_padded"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(child(args.arm, args.data, args.steps, args.batch, args.workdir)))
        return
    if args.dry_run:
        args.steps, args.max_length = 2, 256
    if not args.source.exists():
        sys.exit(f"benchmark data not found: {args.source}")

    import torch

    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = prepare(workdir, args.max_length, args.source)
        peak = matmul_peak(device)
        arms = {}
        for arm in ("trl", "medtune", "medtune_padded"):
            steps = max(2, args.steps // 2) if arm == "medtune_padded" else args.steps
            out = subprocess.run([sys.executable, __file__, "--arm", arm, "--data", str(data), "--workdir",
                                  str(workdir), "--steps", str(steps), "--batch", str(args.batch)],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                sys.exit(f"{arm} arm failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            arms[arm] = json.loads(out.stdout.strip().splitlines()[-1])
    result = {"benchmark": "gpu_train", "dry_run": args.dry_run, "device": arms["medtune"]["device"],
              "model": "Qwen3-8B architecture (random init)" if not args.dry_run else "tiny Qwen3 (dry run)",
              "steps": args.steps, "per_device_batch": args.batch, "max_length": args.max_length,
              "matmul_peak_tflops": round(peak / 1e12, 1)}
    for name, a in arms.items():
        tps = a["tokens"] / a["seconds"]
        gib = a["peak_memory_bytes"] / 2 ** 30 if a["peak_memory_bytes"] else None
        result[name] = {"tokens_per_second": round(tps, 1), "mfu_6n": round(6 * a["params"] * tps / peak, 4),
                        "mfu_lora_4n": round(4 * a["params"] * tps / peak, 4),
                        "peak_memory_gib": round(gib, 2) if gib else None,
                        "fits_24gb_card": (a["peak_memory_bytes"] < 24e9 - 2 ** 30) if gib else None,
                        **{k: a[k] for k in ("batching", "attention", "liger", "precision")}}
    result["speedup"] = round(result["medtune"]["tokens_per_second"] / result["trl"]["tokens_per_second"], 2)
    result["padding_free_speedup"] = round(
        result["medtune"]["tokens_per_second"] / result["medtune_padded"]["tokens_per_second"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
