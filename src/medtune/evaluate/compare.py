"""The model comparison: every arm answers the same questions; per answer and per arm records, and a table.

Run as: medtune evaluate compare --model M [--adapter A] --output DIR   (or the stage: medtune evaluate CONFIG)

Writes DIR/answers.jsonl (one line per answer), DIR/summary.json (per arm: the reference table measured
single-stream, plus batched throughput and the length-capped share) and DIR/table.md (arms side by side).
Every per-arm number follows from the per-answer records, except batched throughput (its own run).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medtune.data.questions import Question
from medtune.evaluate.arms import Arm
from medtune.evaluate.engines import Engines
from medtune.generate.sampling import Generation
from medtune.rundir import write_json, write_jsonl, write_text


def answer_record(arm: Arm, question: Question, gen: Generation) -> dict:
    return {
        "arm": arm.name, "model": arm.model, "adapter": arm.adapter, "thinking": arm.thinking,
        "question_id": question.id, "question": question.question,
        "answer": gen.answer, "thinking_text": gen.thinking,
        "answer_tokens": gen.tokens - gen.thinking_tokens, "thinking_tokens": gen.thinking_tokens,
        "latency_seconds": gen.latency_seconds, "ttft_seconds": gen.ttft_seconds,
        "finish_reason": gen.finish_reason,
    }


def summarize_arm(arm: Arm, engine: str, records: list[dict], batched: list[Generation], batched_seconds: float,
                  batch_size: int) -> dict:
    """The reference table's columns (single stream, one question at a time) and the batched throughput."""
    n = len(records)
    total_seconds = sum(r["latency_seconds"] for r in records)
    answer_tokens = sum(r["answer_tokens"] for r in records)
    thinking_tokens = sum(r["thinking_tokens"] for r in records)
    total_tokens = answer_tokens + thinking_tokens
    ttfts = [r["ttft_seconds"] for r in records if r["ttft_seconds"] is not None]
    capped = sum(r["finish_reason"] == "length" for r in records)
    batched_tokens = sum(g.tokens for g in batched)
    return {
        "arm": arm.name, "model": arm.model, "adapter": arm.adapter, "thinking": arm.thinking,
        "prompt_format": arm.prompt_format, "generation": dataclasses.asdict(arm.generation), "engine": engine,
        "questions": n,
        "total_seconds": total_seconds, "mean_seconds": total_seconds / n,
        "total_tokens": total_tokens, "mean_tokens": total_tokens / n,
        "tokens_per_second": total_tokens / total_seconds if total_seconds > 0 else 0.0,
        "answer_tokens": answer_tokens, "thinking_tokens": thinking_tokens,
        "length_capped": capped, "length_capped_share": capped / n,
        "mean_ttft_seconds": sum(ttfts) / len(ttfts) if ttfts else None,
        "batched_tokens_per_second": batched_tokens / batched_seconds if batched_seconds > 0 else 0.0,
        "batched_tokens": batched_tokens, "batched_seconds": batched_seconds, "batch_size": batch_size,
    }


TABLE_ROWS = [
    ("questions", "questions", "{}"),
    ("total time (s)", "total_seconds", "{:.2f}"),
    ("mean time (s)", "mean_seconds", "{:.2f}"),
    ("total tokens", "total_tokens", "{}"),
    ("mean tokens", "mean_tokens", "{:.1f}"),
    ("tokens/s (single stream)", "tokens_per_second", "{:.1f}"),
    ("thinking tokens", "thinking_tokens", "{}"),
    ("length-capped", "length_capped", "{}"),
    ("mean time to first token (s)", "mean_ttft_seconds", "{:.3f}"),
    ("tokens/s (batched)", "batched_tokens_per_second", "{:.1f}"),
]


def markdown_table(arms: list[dict]) -> str:
    """Arms as columns, the reference table's measures as rows."""
    lines = ["| | " + " | ".join(a["arm"] for a in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for label, key, fmt in TABLE_ROWS:
        cells = ["-" if a[key] is None else fmt.format(a[key]) for a in arms]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_comparison(arms: list[Arm], questions: list[Question], output_dir: str | Path, engines: Engines,
                   log=print) -> dict:
    """Every arm answers every question single-stream, then batched; writes answers, summary and table."""
    output_dir = Path(output_dir)
    texts = [q.question for q in questions]
    records, summaries = [], []
    for arm in arms:
        engine = engines.for_arm(arm)
        log(f"compare: {arm.name}: {len(texts)} questions, one at a time ({engine.name})")
        single = engine.single_stream(arm, texts)
        arm_records = [answer_record(arm, q, g) for q, g in zip(questions, single)]
        log(f"compare: {arm.name}: the same questions batched")
        batched, seconds = engine.batched(arm, texts)
        records += arm_records
        summaries.append(summarize_arm(arm, engine.name, arm_records, batched, seconds, engines.batch_size))
    summary = {"engine": "+".join(dict.fromkeys(s["engine"] for s in summaries)), "arms": summaries}
    write_jsonl(output_dir / "answers.jsonl", records)
    write_json(output_dir / "summary.json", summary)
    write_text(output_dir / "table.md", markdown_table(summaries))
    return summary
