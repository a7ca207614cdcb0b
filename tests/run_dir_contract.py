"""The eval/ half of docs/run-directory.md as a check: which files, with which fields.

Both the report's hand-made fixture (tests/report_fixture.py) and the evaluate stage's real output are
checked against it, so the golden reports pin the format the pipeline writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

PERPLEXITY = {"eval_loss", "perplexity", "samples", "tokens", "model", "adapter", "data", "seconds", "baseline"}
ANSWER = {"arm", "model", "adapter", "thinking", "question_id", "question", "answer", "thinking_text",
          "answer_tokens", "thinking_tokens", "latency_seconds", "ttft_seconds", "finish_reason"}
SUMMARY_ARM = {"arm", "model", "adapter", "thinking", "prompt_format", "generation", "questions", "total_seconds",
               "mean_seconds", "total_tokens", "mean_tokens", "tokens_per_second", "answer_tokens", "thinking_tokens",
               "length_capped", "length_capped_share", "mean_ttft_seconds", "batched_tokens_per_second",
               "batched_tokens", "batched_seconds", "batch_size"}
BENCHMARK = {"benchmark", "format", "method", "shots", "arm", "model", "adapter", "accuracy", "n", "correct", "ci_low",
             "ci_high", "extraction_failures", "subjects", "rejected", "data", "dev", "multi_answer_items", "seconds",
             "items"}
BENCHMARK_NAME = re.compile(r"^.+-(loglik|generate)-\d+shot--[^/]+\.json$")
ITEM = {"id", "subject", "gold", "predicted", "correct"}
SIGNIFICANCE = {"benchmark", "a", "b", "accuracy_a", "accuracy_b", "n", "only_a", "only_b", "p_value",
                "unpaired_items"}
JUDGE = {"judge_model", "pairs", "base_url", "seed", "questions", "method"}
JUDGE_PAIR = {"a", "b", "n", "wins", "ties", "losses", "win_rate", "win_rate_ci", "order_consistency",
              "length_controlled_win_rate", "length_controlled_win_rate_ci", "mean_chars_a", "mean_chars_b",
              "unparsable", "failed", "unjudged_question_ids"}
METRICS = {"rouge_l", "bleu_4", "distinct_1", "distinct_2", "n", "unmatched"}
RATE = {"n", "passed", "rate", "ci_low", "ci_high"}
SAFETY_ANSWER = {"arm", "id", "category", "expect", "prompt", "answer", "thinking_text", "finish_reason",
                 "rule_passed", "matched", "flagged"}


def eval_problems(eval_dir: Path) -> list[str]:
    """Every way the files under eval_dir differ from docs/run-directory.md (empty: they follow it)."""
    problems: list[str] = []

    def need(where: str, obj, keys: set[str]) -> None:
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected an object, got {type(obj).__name__}")
        elif keys - obj.keys():
            problems.append(f"{where}: missing {sorted(keys - obj.keys())}")

    def load(name: str):
        return json.loads((eval_dir / name).read_text(encoding="utf-8"))

    def lines(name: str) -> list:
        return [json.loads(x) for x in (eval_dir / name).read_text(encoding="utf-8").splitlines()]

    present = {str(p.relative_to(eval_dir)) for p in eval_dir.rglob("*") if p.is_file()}
    need("manifest.json", load("manifest.json"), {"parts", "medtune_version"})
    if "perplexity.json" in present:
        perplexity = load("perplexity.json")
        need("perplexity.json", perplexity, PERPLEXITY)
        need("perplexity.json baseline", perplexity.get("baseline"), {"model", "eval_loss", "perplexity"})
    if "compare/summary.json" in present:
        _compare(eval_dir, load("compare/summary.json"), lines("compare/answers.jsonl"), need, problems)
    for name in sorted(n for n in present if n.startswith("benchmarks/") and n != "benchmarks/significance.json"):
        if not BENCHMARK_NAME.match(Path(name).name):
            problems.append(f"{name}: not named <name>-<method>-<k>shot--<arm>.json")
        _benchmark(name, load(name), need, problems)
    if any(n.startswith("benchmarks/") for n in present):
        significance = load("benchmarks/significance.json")
        need("benchmarks/significance.json", significance, {"test", "tests"})
        for i, t in enumerate(significance.get("tests", [])):
            need(f"benchmarks/significance.json tests[{i}]", t, SIGNIFICANCE)
    if "judge/summary.json" in present:
        judge = load("judge/summary.json")
        need("judge/summary.json", judge, JUDGE)
        for i, pair in enumerate(judge.get("pairs", [])):
            need(f"judge/summary.json pairs[{i}]", pair, JUDGE_PAIR)
    if "metrics.json" in present:
        for arm, m in load("metrics.json").items():
            need(f"metrics.json {arm}", m, METRICS)
    if "safety.json" in present:
        _safety(load("safety.json"), lines("safety_answers.jsonl") if "safety_answers.jsonl" in present else None,
                need, problems)
    return problems


def _compare(eval_dir: Path, summary: dict, answers: list, need, problems: list[str]) -> None:
    need("compare/summary.json", summary, {"engine", "arms"})
    for i, arm in enumerate(summary.get("arms", [])):
        need(f"compare/summary.json arms[{i}]", arm, SUMMARY_ARM)
        mine = [a for a in answers if a.get("arm") == arm.get("arm")]
        if arm.get("questions") != len(mine):
            problems.append(f"compare/summary.json arms[{i}]: questions {arm.get('questions')} but {len(mine)} "
                            "answers in answers.jsonl")
    for i, a in enumerate(answers):
        need(f"compare/answers.jsonl line {i + 1}", a, ANSWER)
        if a.get("finish_reason") not in ("stop", "length"):
            problems.append(f"compare/answers.jsonl line {i + 1}: finish_reason {a.get('finish_reason')!r}")
    if not (eval_dir / "compare" / "table.md").is_file():
        problems.append("compare/table.md: missing")


def _benchmark(name: str, result: dict, need, problems: list[str]) -> None:
    need(name, result, BENCHMARK)
    items = result.get("items") or []
    for i, item in enumerate(items):
        need(f"{name} items[{i}]", item, ITEM)
        if not ({"logprobs", "output"} & item.keys()):
            problems.append(f"{name} items[{i}]: neither logprobs nor output")
    if len(items) != result.get("n") or sum(bool(i.get("correct")) for i in items) != result.get("correct"):
        problems.append(f"{name}: n/correct disagree with items")
    for subject, s in (result.get("subjects") or {}).items():
        need(f"{name} subjects.{subject}", s, RATE - {"passed", "rate"} | {"accuracy", "correct",
                                                                           "extraction_failures"})


def _safety(safety: dict, answers: list | None, need, problems: list[str]) -> None:
    for arm, s in safety.items():
        need(f"safety.json {arm}", s, RATE | {"by_category"})
        for category, c in (s.get("by_category") or {}).items():
            need(f"safety.json {arm} by_category.{category}", c, RATE)
    if answers is None:
        problems.append("safety_answers.jsonl: missing beside safety.json")
        return
    for i, a in enumerate(answers):
        need(f"safety_answers.jsonl line {i + 1}", a, SAFETY_ANSWER)
