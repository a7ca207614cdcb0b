"""Benchmark: medtune's answer-letter log-likelihood scoring vs lm-evaluation-harness's HF model, same requests.

Run as: .venv/bin/python benchmarks/bench_loglik.py [--shape tiny|qwen3-0.6b] [--model DIR] [--data DIR] [--shots 5]
        [--repeat 4] [--batch-size 8]

Both score exactly the same (context, " A".." D") requests on the same model object in memory:
- medtune: `medtune.evaluate.bench.continuation_logprobs` (the four letters of a question share one
  forward pass; the k-shot prefix a subject's questions share runs once and only each question's tail runs
  on its cache; only the scored positions get logits).
- baseline: lm-eval 0.4's `HFLM.loglikelihood` (the reference implementation `medtune evaluate bench
  --method loglik` is checked against), same batch size.
Prompts are CMMLU-style k-shot prompts built with `build_prompt` from the data (examples are the subject's
first k questions; only timing and agreement matter here). Each of ../shared's 50 CMMLU medical dev questions
is posed `--repeat` times with its options rotated by 0, 1, 2, ... places (the answer letter follows): 4 makes
the issue's 200 distinct questions, each subject's k-shot prefix the same, the tails all different (an
identical repeat would cost neither tool anything: both run an input once). Without --model a random Qwen3 is
built: `--shape tiny` (2 layers, 64 wide, real vocabulary) or `--shape qwen3-0.6b` (Qwen3-0.6B's shape: 28
layers, hidden 1024, intermediate 3072, 16 query / 8 key-value heads of 128, the 151,936-token vocabulary,
tied embeddings; fp32), where the transformer body, not the output layer, is most of the work. Prints one JSON
object on its last line: requests/s of each, the speedup, the largest log-prob difference, whether every
prediction agrees, and how many prefix groups medtune ran and the share of the distinct inputs' tokens inside
a shared prefix.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "assets" / "cmmlu-medical-dev"
SHAPES = {"tiny": "tiny-qwen3 (2 layers, 64 wide, 151,936 vocabulary)",
          "qwen3-0.6b": "random Qwen3-0.6B shape ({layers} layers, 1024 wide, 151,936 vocabulary, tied), fp32"}


def build_model(path: Path, shape: str, layers: int) -> Path:
    from medtune.modeling import build_tiny_qwen3

    if shape == "tiny":  # init range 0.2: letter preferences that vary between questions
        return build_tiny_qwen3(path, seed=0, initializer_range=0.2)
    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import QWEN3_06B

    return build_tiny_qwen3(path, seed=0, num_hidden_layers=layers, tie_word_embeddings=True,
                            max_position_embeddings=40960, **QWEN3_06B)


def prefix_sharing(tokenizer, requests) -> dict:
    """How many prefix groups medtune forms from these requests and the share of the distinct inputs' tokens
    that lie in a shared prefix (run once per group instead of once per input)."""
    from medtune.evaluate.bench import encode_requests, shared_prefix_groups

    _, rows, keep = encode_requests(tokenizer, requests)
    groups = shared_prefix_groups(rows, keep)
    return {"distinct_inputs": len(rows), "prefix_groups": len(groups),
            "prefix_shared_token_share": round(sum(n * len(g) for n, g in groups) / sum(map(len, rows)), 3)}


def rotated(item, places: int):
    """The item with its option texts moved `places` letters back (A's text to D for 1 of 4), answer included."""
    import dataclasses

    letters = sorted(item.options)
    places %= len(letters)
    texts = [item.options[x] for x in letters]
    moved = dict(zip(letters, texts[places:] + texts[:places]))
    answer = "".join(sorted(letters[(letters.index(a) - places) % len(letters)] for a in item.answer))
    return dataclasses.replace(item, options=moved, answer=answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model directory (default: build a random Qwen3 of --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="random model built without --model")
    parser.add_argument("--layers", type=int, default=28, help=argparse.SUPPRESS)  # qwen3-0.6b cut short: checks only
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CMMLU-layout CSV directory")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"benchmark data not found: {args.data}")

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from medtune.data.mcq import build_prompt
    from medtune.evaluate.bench import continuation_logprobs
    from medtune.data.mcq import load_items
    from medtune.modeling import load_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(build_model(Path(tmp) / args.shape, args.shape, args.layers))
        model, tokenizer = load_model(model_dir, device="cpu", dtype="fp32")
        items, _ = load_items(args.data, "cmmlu")
        by_subject = {}
        for it in items:
            by_subject.setdefault(it.subject, []).append(it)
        prompts = [build_prompt(rotated(it, r), by_subject[it.subject][:args.shots], "cmmlu")
                   for r in range(args.repeat) for it in items]
        requests = [(p, f" {letter}") for p in prompts for letter in "ABCD"]

        harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, device="cpu")
        instances = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
        continuation_logprobs(model, tokenizer, requests[:8], batch_size=args.batch_size)  # warm-up, both
        harness.loglikelihood(instances[:8], disable_tqdm=True)

        started = time.perf_counter()
        ours = continuation_logprobs(model, tokenizer, requests, batch_size=args.batch_size)
        ours_seconds = time.perf_counter() - started
        started = time.perf_counter()
        theirs = [ll for ll, _ in harness.loglikelihood(instances, disable_tqdm=True)]
        theirs_seconds = time.perf_counter() - started

    def predictions(scores):
        return [max(range(4), key=lambda k: scores[i + k]) for i in range(0, len(scores), 4)]

    result = {
        "benchmark": "bench_loglik",
        "model": args.model or SHAPES[args.shape].format(layers=args.layers),
        "questions": len(prompts), "requests": len(requests), "shots": args.shots, "batch_size": args.batch_size,
        "mean_prompt_tokens": round(sum(len(tokenizer(p)["input_ids"]) for p in prompts) / len(prompts), 1),
        "medtune_seconds": round(ours_seconds, 3),
        "medtune_requests_per_second": round(len(requests) / ours_seconds, 1),
        "lm_eval_seconds": round(theirs_seconds, 3),
        "lm_eval_requests_per_second": round(len(requests) / theirs_seconds, 1),
        "speedup": round(theirs_seconds / ours_seconds, 2),
        "max_abs_logprob_difference": max(abs(a - b) for a, b in zip(ours, theirs)),
        "same_predictions": predictions(ours) == predictions(theirs),
        **prefix_sharing(tokenizer, requests),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
