"""Benchmark: DPO pairs/s on CPU, `medtune align`'s default vs TRL DPOTrainer with its defaults, same pairs and model.

Run as: .venv/bin/python benchmarks/align_throughput.py [--steps 4] [--batch 2] [--epochs 2] [--max-length 256]
        [--repeats 2]

Model: the builtin tiny Qwen3 (`builtin:tiny-qwen3`: 2 layers, 64 wide, the real 151,936-token vocabulary,
random init, fp32 on CPU) with the real Qwen3 tokenizer. Pairs: the demo dialogues (data/demo), written as TRL
`prompt` / `chosen` / `rejected` message lists: chosen = the dialogue's reference answer, rejected = the next
dialogue's answer. Only pairs that `medtune align` keeps at --max-length are used (it rejects longer ones
instead of truncating), the first steps x batch of them, so both arms train `--epochs` epochs on the same pairs
(2 by default: DPO recipes run one to three, and the reference model's log-probs do not change between them).

- medtune: `align_model` itself, i.e. exactly what `medtune align` runs: the run's SFT adapter (a LoRA with
  medtune's default lora settings, saved as a finished train stage) loaded as a trainable PeftModel, which TRL
  copies into the frozen reference adapter; rows pre-tokenized by medtune.data.align with prepare's rule;
  `MedtuneDPOTrainer` with `trl_settings` from medtune's align defaults: the LM head projects only completion
  positions, and the reference log-probs are computed once, when the trainer is built.
- baseline: `trl.DPOTrainer` + `trl.DPOConfig` defaults, except what CPU requires (bf16=False, use_cpu) and the
  same batch size, steps, learning rate and max_length; the same base model with a new PEFT LoRA of the same
  shape (reference = the adapter disabled); the rows carry `chat_template_kwargs: {enable_thinking: false}`
  so TRL renders the same no-think prompt as medtune.

Timed per arm: tokenizing the pairs, building the trainer (medtune computes the reference log-probs there) and
the training loop; not the model loading. Each arm runs in its own process (peak RSS per arm); the arms
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
DIALOGUES = ROOT / "data" / "demo" / "huatuo_style_dialogues.jsonl"
ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def config(workdir: Path, pairs: Path, steps: int, batch: int, max_length: int, epochs: int = 1):
    from medtune.config import config_from_dict

    return config_from_dict({"output_dir": str(workdir / "run"), "model": {"name_or_path": "builtin:tiny-qwen3"},
                             "align": {"algorithm": "dpo", "train_files": [str(pairs)], "num_train_epochs": epochs,
                                       "per_device_train_batch_size": batch, "max_length": max_length,
                                       "save_steps": 100 * steps * epochs, "logging_steps": steps}})


def candidate_pairs(path: Path) -> None:
    """Every demo dialogue as a TRL message-list pair; rejected = the next dialogue's answer."""
    dialogues = [json.loads(line)["conversations"] for line in DIALOGUES.read_text(encoding="utf-8").splitlines()]
    with open(path, "w", encoding="utf-8") as f:
        for i, turns in enumerate(dialogues):
            other = dialogues[(i + 1) % len(dialogues)][-1]["value"]
            prompt = [{"role": ROLES[t["from"]], "content": t["value"]} for t in turns[:-1]]
            f.write(json.dumps({"prompt": prompt, "chosen": [{"role": "assistant", "content": turns[-1]["value"]}],
                                "rejected": [{"role": "assistant", "content": other}]}, ensure_ascii=False) + "\n")


def same_pairs(workdir: Path, steps: int, batch: int, max_length: int) -> dict:
    """Write workdir/pairs.jsonl: the first steps x batch candidate pairs medtune keeps; their token counts."""
    from medtune.data.align import read_align_data
    from medtune.assets import load_tokenizer

    candidates, pairs = workdir / "candidates.jsonl", workdir / "pairs.jsonl"
    candidate_pairs(candidates)
    cfg = config(workdir, candidates, steps, batch, max_length)
    tokenizer = load_tokenizer(cfg.model)
    read_align_data(cfg, tokenizer, [str(candidates)], workdir / "rejected.jsonl", log=lambda *a: None)
    dropped = {json.loads(line)["line"] for line in (workdir / "rejected.jsonl").read_text().splitlines()}
    kept = [line for n, line in enumerate(candidates.read_text(encoding="utf-8").splitlines(), 1) if n not in dropped]
    if len(kept) < steps * batch:
        sys.exit(f"only {len(kept)} demo pairs fit --max-length {max_length}; need steps x batch = {steps * batch}")
    pairs.write_text("\n".join(kept[:steps * batch]) + "\n", encoding="utf-8")
    rows, _ = read_align_data(config(workdir, pairs, steps, batch, max_length), tokenizer, [str(pairs)],
                              workdir / "rejected.jsonl", log=lambda *a: None)
    return {"pairs": len(rows), "medtune_tokens_per_pair": tokens_per_pair(rows)}


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
            "steps": results["global_step"], "rows": results["num_train_rows"]}


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
            "rows": len(trainer.train_dataset),
            "tokens_per_pair": tokens_per_pair(trainer.train_dataset)}


def child(arm: str, workdir: Path, steps: int, batch: int, max_length: int, epochs: int) -> None:
    cfg = config(workdir, workdir / "pairs.jsonl", steps, batch, max_length, epochs)
    result = run_trl(cfg, workdir / "pairs.jsonl") if arm == "trl" else run_medtune(cfg)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = same_pairs(workdir, args.steps, args.batch, args.max_length)
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
        "model": "builtin:tiny-qwen3 (2 layers, 64 wide, 151,936 vocabulary), fp32", "steps": args.steps,
        "epochs": args.epochs, "per_device_batch": args.batch, "max_length": args.max_length, "repeats": args.repeats,
        "pairs": data["pairs"], "medtune_pairs_trained": best["medtune"]["steps"] * args.batch,
        "trl_default_pairs_trained": best["trl"]["steps"] * args.batch,
        "medtune_tokens_per_pair": data["medtune_tokens_per_pair"],
        "trl_default_tokens_per_pair": best["trl"]["tokens_per_pair"],
        "trl_default_seconds": round(best["trl"]["seconds"], 3), "medtune_seconds": round(best["medtune"]["seconds"], 3),
        "trl_default_pairs_per_second": round(rate["trl"], 4), "medtune_pairs_per_second": round(rate["medtune"], 4),
        "speedup": round(rate["medtune"] / rate["trl"], 3),
        "round_seconds": {arm: [round(r["seconds"], 3) for r in runs] for arm, runs in rounds.items()},
        "trl_default_peak_rss_mb": best["trl"]["peak_rss_mb"], "medtune_peak_rss_mb": best["medtune"]["peak_rss_mb"],
        "memory_ratio": round(best["medtune"]["peak_rss_mb"] / best["trl"]["peak_rss_mb"], 3),
    }))


if __name__ == "__main__":
    main()
