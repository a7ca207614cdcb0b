"""Benchmark: decoding with the LoRA merged in memory (what `medtune chat`/`serve` do with the transformers
engine) vs base + unmerged LoRA, on the same prompts, in the same process.

Run as: .venv/bin/python benchmarks/serve_decode.py [--run RUN_DIR] [--prompts 4] [--tokens 64]

Without --run, a tiny run is built in a temporary directory (the builtin tiny Qwen3 + a random rank-16 LoRA
on the seven projections). Each prompt is decoded greedily for exactly --tokens tokens (no early stop), one
prompt at a time as the server does; both arms must produce the same tokens (checked, and reported).
Prints one JSON object on its last line: tokens/s of each arm and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["我最近总是失眠，白天没精神，该怎么调理？", "高血压患者平时饮食要注意什么？",
             "孩子发烧38.5度，需要马上去医院吗？", "What are the early signs of diabetes?"]


def build_run(dest: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medtune.config import QWEN3_LORA_TARGETS
    from medtune.modeling import build_tiny_qwen3

    base = build_tiny_qwen3(dest / "base_model")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=16, lora_alpha=32, target_modules=QWEN3_LORA_TARGETS))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(base).save_pretrained(dest)
    return dest


def decode(model, prompts: list[list[int]], tokens: int) -> tuple[list[list[int]], float]:
    import torch

    outputs = []
    started = time.perf_counter()
    with torch.inference_mode():
        for ids in prompts:
            x = torch.tensor([ids], device=model.device)
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=tokens,
                                 min_new_tokens=tokens, do_sample=False, temperature=None, top_p=None, top_k=None)
            outputs.append(out[0, len(ids):].tolist())
    return outputs, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run directory with an adapter (default: a tiny one)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args(argv)

    from medtune.generate.sampling import chat_prompt_ids
    from medtune.generate.source import resolve_model_source
    from medtune.modeling import load_model

    with tempfile.TemporaryDirectory() as tmp:
        source = resolve_model_source(args.run or build_run(Path(tmp) / "run"))
        model, tokenizer = load_model(source.base, adapter=source.adapter)
        prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], False)
                   for i in range(args.prompts)]
        decode(model, prompts[:1], 2)  # warm-up
        unmerged, unmerged_s = decode(model, prompts, args.tokens)
        model = model.merge_and_unload()
        merged, merged_s = decode(model, prompts, args.tokens)

    n = args.prompts * args.tokens
    result = {
        "benchmark": "serve_decode", "model": source.base, "adapter": str(source.adapter),
        "device": str(model.device), "prompts": args.prompts, "tokens_per_prompt": args.tokens,
        "unmerged_tokens_per_second": round(n / unmerged_s, 2), "merged_tokens_per_second": round(n / merged_s, 2),
        "merged_speedup": round(unmerged_s / merged_s, 3), "same_tokens": merged == unmerged,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
