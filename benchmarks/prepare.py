"""Benchmark: medtune prepare vs the common per-example approach, on real HuatuoGPT-format dialogues.

Run as: .venv/bin/python benchmarks/prepare.py [--records 100000] [--source FILE.jsonl]

The 1,000 real samples in ../shared/assets/medical-sft-samples are repeated to --records records. Each
copy after the first 1,000 gets its number appended to the question and to the answer, so every
record is unique (nothing is de-duplicated away, and no tokenizer cache sees a repeated answer).

- medtune: `prepare_dataset` end to end (read, validate, de-duplicate, tokenize with labels, write
  Arrow, stats), timed from the call to its return, tokenizer loading included.
- baseline: what fine-tuning scripts commonly do, in one Python loop: per record
  `apply_chat_template(history, tokenize=True, add_generation_prompt=True, enable_thinking=False)` for
  the prompt, the answer tokenized plus <|im_end|>, the template's closing newline, labels -100 on the
  prompt and the newline; results in a list.

Both produce the same token ids and labels (checked on the first 200 records). Prints one JSON object
on its last line: examples/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "assets" / "medical-sft-samples" / "medicalgpt_medical_sft_1K_format.jsonl"


def build_corpus(source: Path, n: int, out: Path) -> None:
    base = [json.loads(x) for x in source.read_text(encoding="utf-8").splitlines() if x.strip()]
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            rec = json.loads(json.dumps(base[i % len(base)]))
            if i >= len(base):
                rec["conversations"][0]["value"] += f"（{i}）"
                rec["conversations"][-1]["value"] += f"（{i}）"
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def baseline(path: Path, tokenizer, max_length: int) -> tuple[list, float]:
    started = time.perf_counter()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            turns = json.loads(line)["conversations"]
            q, a = turns[0]["value"].strip(), turns[1]["value"].strip()
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=True,
                                                   add_generation_prompt=True, enable_thinking=False,
                                                   return_dict=False)
            answer = tokenizer(a, add_special_tokens=False)["input_ids"] + [im_end]
            ids = prompt + answer + newline  # the template's own text after <|im_end|>, not trained
            if len(ids) <= max_length:
                out.append((ids, [-100] * len(prompt) + answer + [-100] * len(newline)))
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--max-length", type=int, default=2048)
    args = parser.parse_args()
    if not args.source.exists():
        sys.exit(f"benchmark data not found: {args.source}")

    import datasets

    from medtune.assets import load_tokenizer
    from medtune.config import config_from_dict
    from medtune.data.prepare import prepare_dataset

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        build_corpus(args.source, args.records, corpus)
        cfg = config_from_dict({"output_dir": f"{tmp}/run",
                                "data": {"train_files": [str(corpus)], "max_length": args.max_length}})
        started = time.perf_counter()
        stats = prepare_dataset(cfg, force=True, log=lambda *_: None)
        medtune_seconds = time.perf_counter() - started

        tokenizer = load_tokenizer(cfg.model)
        base_rows, base_seconds = baseline(corpus, tokenizer, args.max_length)
        train = datasets.load_from_disk(f"{tmp}/run/data/train")
        ours = list(zip(train[:200]["input_ids"], train[:200]["labels"]))
        same = [tuple(map(tuple, r)) for r in ours] == [tuple(map(tuple, r)) for r in base_rows[:200]]
        result = {
            "benchmark": "prepare",
            "records": args.records,
            "max_length": args.max_length,
            "medtune_seconds": round(medtune_seconds, 2),
            "medtune_examples_per_second": round(args.records / medtune_seconds, 1),
            "baseline_seconds": round(base_seconds, 2),
            "baseline_examples_per_second": round(args.records / base_seconds, 1),
            "speedup": round(base_seconds / medtune_seconds, 2),
            "samples_kept": stats["train"] + stats["val"],
            "baseline_samples_kept": len(base_rows),
            "same_ids_and_labels_first_200": same,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
