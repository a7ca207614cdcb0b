"""Benchmark: medtune's batched generation vs the per-question loop, on the demo model, in one run.

Run as: .venv/bin/python benchmarks/generate.py [--questions 38] [--max-new-tokens 32] [--batch-size 38]
                                                [--repeats 3] [--vllm]

- model: the demo model (`builtin:tiny-qwen3`, the tiny random Qwen3 with the real 151,936-token
  vocabulary) or --model PATH; the prompts are the everyday questions in its chat template, thinking off.
- baseline: the common per-question loop: `model.generate` on one prompt at a time.
- medtune: `TransformersEngine.batched` (left padding, KV cache, prompts sorted by length into batches).
Both decode greedily with the same settings, so their answers must be the same (checked and reported).
tokens/s = generated tokens (stop token excluded) / wall seconds; each side gets one untimed warm-up, then
the sides run alternately --repeats times and each keeps its fastest run.
--vllm also times vLLM's engine on the same prompts when vllm and CUDA are available.
Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "data" / "questions" / "zh_everyday.jsonl"


def per_question_loop(model, prompts: list[list[int]], config, stop_ids: set[int]):
    """The baseline: one generate call per prompt. Returns the generated ids (before the stop token) and seconds."""
    import torch

    from medtune.generate.sampling import cut_at_stop

    out = []
    started = time.perf_counter()
    with torch.inference_mode():
        for ids in prompts:
            x = torch.tensor([ids], device=model.device)
            result = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=config)
            out.append(cut_at_stop(result[0, len(ids):].tolist(), stop_ids)[0])
    return out, time.perf_counter() - started


def time_vllm(model_path: str, prompts: list[list[int]], greedy, loop_tokens_per_second: float):
    """vLLM's batched throughput on the same prompts, or why it was skipped."""
    from medtune.generate.loading import choose_engine, load_generator

    if choose_engine("auto") != "vllm":
        return "skipped: needs the vllm package and CUDA"
    vllm_engine = load_generator(model_path, engine="vllm")
    vllm_engine.generate_ids(prompts[:2], greedy)  # warm-up (engine start, CUDA graphs)
    started = time.perf_counter()
    generations = vllm_engine.generate_ids(prompts, greedy)
    seconds = time.perf_counter() - started
    vllm_engine.close()
    tokens = sum(g.tokens for g in generations)
    return {"seconds": round(seconds, 3), "tokens": tokens, "tokens_per_second": round(tokens / seconds, 1),
            "speedup_vs_loop": round((tokens / seconds) / loop_tokens_per_second, 2)}


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:tiny-qwen3")
    parser.add_argument("--questions", type=int, default=38)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=38, help="prompts per batch (default: all 38 at once)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (best kept)")
    parser.add_argument("--vllm", action="store_true", help="also time vLLM (needs vllm and CUDA)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    import torch
    from transformers import GenerationConfig as HFGenerationConfig

    from medtune.data.questions import load_questions
    from medtune.generate.sampling import GREEDY, chat_prompt_ids, stop_ids_of
    from medtune.generate.loading import load_generator
    from medtune.modeling import load_model, resolve_base_model

    model_path = resolve_base_model(args.model)
    questions = [q.question for q in load_questions(QUESTIONS, args.questions)]
    greedy = dataclasses.replace(GREEDY, max_tokens=args.max_new_tokens)
    # The baseline: its own copy of the model, the same greedy settings and stop tokens, one prompt at a time.
    model, tokenizer = load_model(model_path)
    stop_ids = stop_ids_of(model.generation_config, tokenizer)
    config = HFGenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=sorted(stop_ids),
                                pad_token_id=tokenizer.pad_token_id, temperature=1.0, top_p=1.0, top_k=50)
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}], False) for q in questions]
    generator = load_generator(model_path)  # its own copy of the model

    def timed_batched(batch):
        started = time.perf_counter()
        out = generator.generate_ids(batch, greedy, batch_size=args.batch_size)
        return out, time.perf_counter() - started

    # Warm-ups, then the two sides alternately, each side's best run kept: on a shared machine a burst of
    # load from elsewhere then cannot land on one side only.
    timed_batched(prompts[:2])
    per_question_loop(model, prompts[:1], config, stop_ids)
    batched_seconds = loop_seconds = float("inf")
    for _ in range(args.repeats):
        batched, seconds = timed_batched(prompts)
        batched_seconds = min(batched_seconds, seconds)
        loop_ids, seconds = per_question_loop(model, prompts, config, stop_ids)
        loop_seconds = min(loop_seconds, seconds)
    generator.close()
    loop_tokens = sum(len(ids) for ids in loop_ids)
    batched_tokens = sum(g.tokens for g in batched)
    result = {
        "benchmark": "generate", "model": args.model,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "questions": len(questions), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "repeats": args.repeats, "loop_seconds": round(loop_seconds, 3), "loop_tokens": loop_tokens,
        "loop_tokens_per_second": round(loop_tokens / loop_seconds, 1), "batched_seconds": round(batched_seconds, 3),
        "batched_tokens": batched_tokens, "batched_tokens_per_second": round(batched_tokens / batched_seconds, 1),
        "speedup": round((batched_tokens / batched_seconds) / (loop_tokens / loop_seconds), 2),
        "same_outputs": [g.text for g in batched] == [tokenizer.decode(ids, skip_special_tokens=True)
                                                      for ids in loop_ids],
    }
    if args.vllm:
        result["vllm"] = time_vllm(model_path, prompts, greedy, loop_tokens / loop_seconds)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
