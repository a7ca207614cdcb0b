"""Peak memory of real CPU training steps, for checking `medtune plan` (run by tests/test_plan.py in a fresh process).

Run as: python tests/memory_probe.py CONFIG.yaml [CONFIG.yaml ...]

Trains `train.max_steps` steps of medtune's own trainer (train.build_trainer: its loss, LoRA, AdamW) on
samples that are all exactly data.max_length tokens with every token trained, the plan's worst batch.
Prints one JSON list, an object per config: `measured_bytes` = the process's peak resident memory during training (VmHWM, reset
with /proc/self/clear_refs just before) minus its resident memory after the base model and every library
were loaded. That is what the plan's peak minus its `weights` line predicts: LoRA state, activations and
the logits chunk. glibc is told (MALLOC_MMAP_THRESHOLD_, set by the caller) to return freed blocks to the
system at once, so resident memory follows the live tensors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(config_paths: list[str]) -> None:
    import gc

    import peft  # noqa: F401  (imported before the baseline, like every library)
    import trl  # noqa: F401

    results = []
    for path in config_paths:
        results.append(measure(path))
        gc.collect()
    print(json.dumps(results))


def measure(config_path: str) -> dict:
    import datasets
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from medtune.config import load_config
    from medtune.modeling import load_causal_lm, resolve_base_model
    from medtune.train.backends import detect_backends
    from medtune.train.stage import build_trainer

    cfg = load_config(config_path)
    base = resolve_base_model(cfg.model.name_or_path, cfg.run_dir)
    backends = detect_backends(cfg)  # the attention and batching training would use
    model = load_causal_lm(base, dtype=torch.float32, attn_implementation=backends.attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(base)
    n, length = cfg.train.per_device_train_batch_size * cfg.train.max_steps, cfg.data.max_length
    ids = np.random.default_rng(0).integers(3, min(model.config.vocab_size, 4000), size=(n, length)).tolist()
    train = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids, "length": [length] * n})
    before = rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    trainer = build_trainer(cfg, model, tokenizer, train, None, backends)
    trainer.train()
    return {"config": config_path, "measured_bytes": rss("VmHWM") - before, "baseline_bytes": before}


if __name__ == "__main__":
    main(sys.argv[1:])
