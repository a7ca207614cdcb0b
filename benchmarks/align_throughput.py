"""Benchmark: DPO pairs/s on CPU, `medtune align`'s default vs TRL DPOTrainer with its defaults, same pairs and model.

Run as: .venv/bin/python benchmarks/align_throughput.py [--shape tiny|qwen3-0.6b] [--steps 4] [--batch 2]
        [--epochs 2] [--max-length 256] [--repeats 2]

Model and pairs (`--shape`):
- `qwen3-0.6b` (the issue 19 figure): Qwen3-0.6B's shape (28 layers, hidden 1,024, 16/8 heads of 128, the real
  151,936-token vocabulary, random init, fp32) with the real Qwen3 tokenizer; pairs from the 1,000 real
  dialogues in ../shared/assets/medical-sft-samples, so prompt and answer lengths are real ones.
- `tiny` (default; the toy row): the builtin tiny Qwen3 (`builtin:tiny-qwen3`: 2 layers, 64 wide, the real
  vocabulary) and the demo dialogues (data/demo).
Each dialogue becomes a TRL `prompt` / `chosen` / `rejected` pair of message lists: chosen = the dialogue's
reference answer, rejected = the next dialogue's answer. Only pairs that `medtune align` keeps at --max-length
are used (it rejects longer ones instead of truncating): steps x batch of them (tiny: the first; qwen3-0.6b: a
seeded random choice, a real length mix), so both arms train `--epochs` epochs on the same pairs (2 by default:
DPO recipes run one to three, and the reference model's log-probs do not change between them).

- medtune: `align_model` itself, i.e. exactly what `medtune align` runs: the run's SFT adapter (a LoRA with
  medtune's default lora settings, saved as a finished train stage) loaded as a trainable PeftModel, which TRL
  copies into the frozen reference adapter; rows pre-tokenized by medtune.data.align with prepare's rule;
  `MedtuneDPOTrainer` with `trl_settings` from medtune's align defaults: padding-free batches with sdpa_varlen
  attention on CPU, the LM head projecting only completion positions, and the reference log-probs computed
  once, when the trainer is built.
- baseline: `trl.DPOTrainer` + `trl.DPOConfig` defaults, except what CPU requires (bf16=False, use_cpu) and the
  same batch size, steps, learning rate and max_length; the same base model with a new PEFT LoRA of the same
  shape (reference = the adapter disabled); the rows carry `chat_template_kwargs: {enable_thinking: false}`
  so TRL renders the same no-think prompt as medtune.

Timed per arm: tokenizing the pairs, building the trainer (medtune computes the reference log-probs there) and
the training loop; not the model loading. Both arms start from the base model's log-probs (a new LoRA's B is
zero), so their mean training losses should agree within the noise of different LoRA A initialisations. Each arm runs in its own process (peak RSS per arm); the arms
alternate `--repeats` times and each keeps its best time, since the machine is shared. Prints one JSON object
on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from arms import alternate

ROOT = Path(__file__).resolve().parents[1]
DIALOGUES = {"tiny": ROOT / "data" / "demo" / "huatuo_style_dialogues.jsonl",
             "qwen3-0.6b": ROOT.parent / "shared" / "assets" / "medical-sft-samples" /
             "medicalgpt_medical_sft_1K_format.jsonl"}
ROLES = {"system": "system", "human": "user", "gpt": "assistant"}
MODELS = {"tiny": "builtin:tiny-qwen3 (toy shape: 2 layers, 64 wide, 151,936 vocabulary), fp32",
          "qwen3-0.6b": "Qwen3-0.6B's shape (28 layers, 1,024 wide, 151,936 vocabulary), random init, fp32"}


def model_path(workdir: Path) -> str:
    """The base model: the one built in workdir (--shape qwen3-0.6b), else the builtin tiny Qwen3."""
    built = workdir / "base"
    return str(built) if built.is_dir() else "builtin:tiny-qwen3"


def config(workdir: Path, pairs: Path, steps: int, batch: int, max_length: int, epochs: int = 1):
    from medtune.config import config_from_dict

    return config_from_dict({"output_dir": str(workdir / "run"), "model": {"name_or_path": model_path(workdir)},
                             "align": {"algorithm": "dpo", "train_files": [str(pairs)], "num_train_epochs": epochs,
                                       "per_device_train_batch_size": batch, "max_length": max_length,
                                       "save_steps": 100 * steps * epochs, "logging_steps": steps}})


def candidate_pairs(path: Path, source: Path) -> None:
    """Every dialogue of `source` as a TRL message-list pair; rejected = the next dialogue's answer."""
    dialogues = [json.loads(line)["conversations"] for line in source.read_text(encoding="utf-8").splitlines()]
    with open(path, "w", encoding="utf-8") as f:
        for i, turns in enumerate(dialogues):
            other = dialogues[(i + 1) % len(dialogues)][-1]["value"]
            prompt = [{"role": ROLES[t["from"]], "content": t["value"]} for t in turns[:-1]]
            f.write(json.dumps({"prompt": prompt, "chosen": [{"role": "assistant", "content": turns[-1]["value"]}],
                                "rejected": [{"role": "assistant", "content": other}]}, ensure_ascii=False) + "\n")


def same_pairs(workdir: Path, steps: int, batch: int, max_length: int, shape: str) -> dict:
    """Write workdir/pairs.jsonl: steps x batch candidate pairs medtune keeps (tiny: the first ones, else a seeded
    random choice); their token counts."""
    import random

    from medtune.data.align import read_align_data
    from medtune.assets import load_tokenizer

    candidates, pairs = workdir / "candidates.jsonl", workdir / "pairs.jsonl"
    candidate_pairs(candidates, DIALOGUES[shape])
    cfg = config(workdir, candidates, steps, batch, max_length)
    tokenizer = load_tokenizer(cfg.model)
    read_align_data(cfg, tokenizer, [str(candidates)], workdir / "rejected.jsonl", log=lambda *a: None)
    dropped = {json.loads(line)["line"] for line in (workdir / "rejected.jsonl").read_text().splitlines()}
    kept = [line for n, line in enumerate(candidates.read_text(encoding="utf-8").splitlines(), 1) if n not in dropped]
    if len(kept) < steps * batch:
        sys.exit(f"only {len(kept)} pairs fit --max-length {max_length}; need steps x batch = {steps * batch}")
    chosen = kept[:steps * batch] if shape == "tiny" else random.Random(0).sample(kept, steps * batch)
    pairs.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    rows, _ = read_align_data(config(workdir, pairs, steps, batch, max_length), tokenizer, [str(pairs)],
                              workdir / "rejected.jsonl", log=lambda *a: None)
    lengths = [n for r in rows for n in (len(r["prompt_ids"]) + len(r["chosen_ids"]),
                                         len(r["prompt_ids"]) + len(r["rejected_ids"]))]
    return {"pairs": len(rows), "medtune_tokens_per_pair": tokens_per_pair(rows),
            "sequence_tokens_mean": round(sum(lengths) / len(lengths), 1), "sequence_tokens_max": max(lengths)}


def tokens_per_pair(rows) -> float:
    """Tokens one pair puts through the model: prompt + chosen and prompt + rejected."""
    total = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    return round(total / len(rows), 1)


def sft_stage(cfg) -> None:
    """A finished train stage in the run directory: an SFT LoRA (medtune's lora defaults) + its manifest."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from medtune.assets import load_tokenizer
    from medtune.modeling import resolve_base_model
    from medtune.rundir import write_json

    base = resolve_base_model(cfg.model.name_or_path, cfg.run_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(str(cfg.run_dir))
    load_tokenizer(cfg.model).save_pretrained(str(cfg.run_dir))
    write_json(cfg.run_dir / "train_manifest.json", {"status": "completed"})


def run_medtune(cfg) -> dict:
    from medtune.align.stage import align_model

    results = align_model(cfg, force=True, log=lambda *a: None)
    assert results["reference"] == "sft", results["reference"]
    timeline = json.loads((cfg.run_dir / "align" / "timeline.json").read_text())
    events = {e["name"]: e["seconds"] for e in timeline["events"]}
    return {"seconds": events["data_loading"] + events["trainer_setup"] + results["train_runtime"],
            "steps": results["global_step"], "rows": results["num_train_rows"], "train_loss": results["train_loss"],
            "batching": results["batching"], "attention": results["attn_implementation"],
            "checkpoint_every_n_layers": results["checkpoint_every_n_layers"]}


def run_trl(cfg, pairs: Path) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from medtune.assets import load_tokenizer
    from medtune.modeling import resolve_base_model

    a = cfg.align
    rows = [{**json.loads(line), "chat_template_kwargs": {"enable_thinking": False}}
            for line in pairs.read_text(encoding="utf-8").splitlines()]
    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(cfg.model.name_or_path, cfg.run_dir),
                                                 dtype=torch.float32)
    args = DPOConfig(output_dir=str(cfg.run_dir / "trl"), bf16=False, use_cpu=True,
                     num_train_epochs=a.num_train_epochs,
                     per_device_train_batch_size=a.per_device_train_batch_size, learning_rate=a.learning_rate,
                     max_length=a.max_length, report_to=[], disable_tqdm=True)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    tokenizer = load_tokenizer(cfg.model)
    started = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora)
    setup = time.perf_counter() - started
    metrics = trainer.train().metrics
    return {"seconds": setup + metrics["train_runtime"], "steps": trainer.state.global_step,
            "rows": len(trainer.train_dataset), "train_loss": metrics["train_loss"],
            "tokens_per_pair": tokens_per_pair(trainer.train_dataset)}


def child(arm: str, workdir: Path, steps: int, batch: int, max_length: int, epochs: int) -> None:
    cfg = config(workdir, workdir / "pairs.jsonl", steps, batch, max_length, epochs)
    result = run_trl(cfg, workdir / "pairs.jsonl") if arm == "trl" else run_medtune(cfg)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(DIALOGUES), default="tiny",
                        help="qwen3-0.6b: Qwen3-0.6B's shape on real dialogue pairs; tiny: the toy model and demo pairs")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds; each arm keeps its best")
    parser.add_argument("--arm", choices=["trl", "medtune"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        child(args.arm, args.workdir, args.steps, args.batch, args.max_length, args.epochs)
        return
    if not DIALOGUES[args.shape].is_file():
        sys.exit(f"benchmark data not found: {DIALOGUES[args.shape]}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.shape == "qwen3-0.6b":
            from train_throughput import build_model

            build_model(workdir / "base", hidden=1024, layers=28)
        data = same_pairs(workdir, args.steps, args.batch, args.max_length, args.shape)
        sft_stage(config(workdir, workdir / "pairs.jsonl", args.steps, args.batch, args.max_length))
        rounds, best = alternate(__file__, ["--workdir", str(workdir), "--steps", str(args.steps), "--batch",
                                            str(args.batch), "--max-length", str(args.max_length), "--epochs",
                                            str(args.epochs)], args.repeats)
    for arm, r in best.items():
        if r["rows"] != data["pairs"] or r["steps"] * args.batch != data["pairs"] * args.epochs:
            sys.exit(f"{arm} arm trained {r['steps']} steps on {r['rows']} rows, expected {args.epochs} epochs of "
                     f"{data['pairs']} pairs")
    rate = {arm: data["pairs"] * args.epochs / r["seconds"] for arm, r in best.items()}
    print(json.dumps({
        "benchmark": "align_throughput", "algorithm": "dpo", "device": "cpu", "threads": os.cpu_count(),
        "model": MODELS[args.shape], "steps": args.steps,
        "epochs": args.epochs, "per_device_batch": args.batch, "max_length": args.max_length, "repeats": args.repeats,
        **data, "medtune_pairs_trained": best["medtune"]["steps"] * args.batch,
        "trl_default_pairs_trained": best["trl"]["steps"] * args.batch,
        "trl_default_tokens_per_pair": best["trl"]["tokens_per_pair"],
        "trl_default_seconds": round(best["trl"]["seconds"], 3), "medtune_seconds": round(best["medtune"]["seconds"], 3),
        "trl_default_pairs_per_second": round(rate["trl"], 4), "medtune_pairs_per_second": round(rate["medtune"], 4),
        "speedup": round(rate["medtune"] / rate["trl"], 3),
        "trl_default_train_loss": round(best["trl"]["train_loss"], 4),
        "medtune_train_loss": round(best["medtune"]["train_loss"], 4),
        "medtune_batching": best["medtune"]["batching"], "medtune_attention": best["medtune"]["attention"],
        "medtune_checkpoint_every_n_layers": best["medtune"]["checkpoint_every_n_layers"],
        "round_seconds": {arm: [round(r["seconds"], 3) for r in runs] for arm, runs in rounds.items()},
        "trl_default_peak_rss_mb": best["trl"]["peak_rss_mb"], "medtune_peak_rss_mb": best["medtune"]["peak_rss_mb"],
        "memory_ratio": round(best["medtune"]["peak_rss_mb"] / best["trl"]["peak_rss_mb"], 3),
    }))


if __name__ == "__main__":
    main()
