"""Benchmark: the contamination check's streaming n-gram index vs a naive per-pair check, same data.

Run as: .venv/bin/python benchmarks/contamination.py [--records 100000] [--items 300] [--naive-records 300]

Training data: `--records` HuatuoGPT-style ShareGPT dialogues written to a temporary JSONL, replicated
from ../shared/assets' 1k medical samples (or data/demo) with a serial number prefixed to every message,
so no two are equal. Evaluation items: a third are planted (copied out of training questions: half
verbatim with full-width punctuation and spaces changed, half with one character changed), two thirds are
fresh questions written from this project's everyday and safety files plus numbered variants.

- medtune: `medtune.data.contamination.scan` over the records streamed from the file through
  prepare's readers and validation (`_iter_training`): what `medtune evaluate contamination` runs.
- baseline: for every (item, record) pair, build both n-gram sets and intersect them (the obvious
  quadratic check, same normalisation and coverage rule), timed on `--naive-records` records and
  extrapolated linearly to all records (it is exactly linear in the record count). On the subsample both
  must flag the same (item, record) pairs.

Prints one JSON object on its last line: records/s, seconds, the extrapolated baseline seconds and the
speedup, and how many planted items were found and fresh items falsely flagged.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [ROOT.parent / "shared" / "assets" / "medical-sft-samples" / "medicalgpt_medical_sft_1K_format.jsonl",
           ROOT / "data" / "demo" / "huatuo_style_dialogues.jsonl"]


def base_dialogues() -> list[list[tuple[str, str]]]:
    from medtune.config import DataConfig
    from medtune.data.readers import RecordError, iter_raw_records, to_conversation

    path = next(p for p in SAMPLES if p.is_file())
    out = []
    for rec in iter_raw_records(str(path), DataConfig()):
        try:
            out.append(to_conversation(rec, DataConfig()).turns)
        except RecordError:
            continue
    return out


def write_training(path: Path, n: int, dialogues) -> list[str]:
    """n dialogues (each message prefixed with its serial number); returns the first question of each."""
    questions = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            turns = dialogues[i % len(dialogues)]
            conv = [{"from": who, "value": f"{i}号：{text}"} for q, a in turns for who, text in (("human", q), ("gpt", a))]
            questions.append(conv[0]["value"])
            f.write(json.dumps({"conversations": conv}, ensure_ascii=False) + "\n")
    return questions


def evaluation_items(questions: list[str], n_items: int, rng: random.Random):
    from medtune.data.overlap import EvalItem

    fresh = [json.loads(line).get("question") or json.loads(line).get("prompt")
             for p in (ROOT / "data" / "questions" / "zh_everyday.jsonl", ROOT / "data" / "safety" / "redflags_zh.jsonl")
             for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    planted_n = n_items // 3
    items, planted = [], []
    for k, qi in enumerate(rng.sample(range(len(questions)), planted_n)):
        q = questions[qi][:120]
        if k % 2 == 0:
            text = q.replace("，", ", ").replace("？", "?")  # verbatim but for punctuation and spaces
        else:
            pos = len(q) // 2
            text = q[:pos] + ("甲" if q[pos] != "甲" else "乙") + q[pos + 1:]  # one character changed
        items.append(EvalItem(f"planted{k}", len(items) + 1, text))
        planted.append(qi + 1)  # its training line
    while len(items) < n_items:
        items.append(EvalItem(f"fresh{len(items)}", len(items) + 1,
                              f"{fresh[len(items) % len(fresh)]}（第{len(items)}问）"))
    return items, planted


def naive_pairs(items, records, n, threshold) -> set[tuple[int, str, int]]:
    """Every (item, record) pair checked on its own: both n-gram sets built and intersected per pair."""
    from medtune.text import normalize_text

    found = set()
    for i, it in enumerate(items):
        stem = normalize_text(it.text)
        t = stem + normalize_text(it.options)  # a multiple-choice item: coverage counts the stem's characters
        for rec in records:
            texts = [normalize_text(m) for m in rec.messages]
            grams = {x[p:p + n] for x in texts for p in range(len(x) - n + 1)}
            covered = [False] * len(t)
            for p in range(len(t) - n + 1):
                if t[p:p + n] in grams:
                    covered[p:p + n] = [True] * n
            if stem in texts or t in texts or (stem and sum(covered[:len(stem)]) / len(stem) >= threshold):
                found.add((i, rec.source, rec.line))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--naive-records", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from medtune.config import DataConfig
    from medtune.data.contamination import EvalFile, _iter_training, scan
    from medtune.data.overlap import N, THRESHOLD
    from medtune.text import normalize_text

    normalize_text("warm up")  # builds the translation table once, outside the timings
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "train.jsonl"
        questions = write_training(train, args.records, base_dialogues())
        items, planted = evaluation_items(questions, args.items, rng)
        data = DataConfig(train_files=[str(train)])
        files = [EvalFile("questions", "items", items)]

        started = time.perf_counter()
        (result,), checked = scan(files, _iter_training(data, None))
        seconds = time.perf_counter() - started

        sub = list(_iter_training(DataConfig(train_files=[str(train)]), None))[: args.naive_records]
        started = time.perf_counter()
        naive = naive_pairs(items, sub, N, THRESHOLD)
        naive_seconds = (time.perf_counter() - started) * args.records / len(sub)
        (sub_result,), _ = scan(files, iter(sub))
    index_pairs = {(int(x["id"][len("planted"):]) if x["id"].startswith("planted") else
                    next(i for i, it in enumerate(items) if it.id == x["id"]), m["file"], m["line"])
                   for x in sub_result["flagged_items"] for m in x["matches"]}
    flagged = {x["id"]: x for x in result["flagged_items"]}
    found = sum(1 for k, line in enumerate(planted)
                if f"planted{k}" in flagged and any(m["line"] == line for m in flagged[f"planted{k}"]["matches"]))
    print(json.dumps({
        "benchmark": "contamination", "records": checked, "items": len(items), "n": N, "threshold": THRESHOLD,
        "seconds": round(seconds, 2), "records_per_second": round(checked / seconds, 1),
        "naive_records_timed": len(sub), "naive_seconds_extrapolated": round(naive_seconds, 1),
        "speedup": round(naive_seconds / seconds, 1), "same_pairs_on_subsample": naive == index_pairs,
        "planted": len(planted), "planted_found_at_their_line": found,
        "fresh_flagged": sum(1 for k in flagged if k.startswith("fresh")),
    }))


if __name__ == "__main__":
    main()
