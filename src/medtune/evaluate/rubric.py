"""Rubric-graded consultations (HealthBench's method): each model answers each conversation, a grader model
decides every criterion separately, and the scores come with bootstrap intervals, per tag, with the rate of
each negative criterion hit, a ceiling from the ideal completions and the grader's agreement with physicians.

Run as: medtune evaluate rubric --rubrics FILE.jsonl --model M [--adapter A] --grader-base-url URL
        --grader-model NAME --output DIR   (the arguments are parsed in medtune.evaluate.cli)

- Answers: every chat-template arm answers every example's conversation with its own chat template,
  system prompt, thinking setting and decoding (an example's own system message replaces the arm's).
- Grading (medtune.generate.grader): criterion by criterion, thinking text removed from the answer; the
  calls are cached in DIR/grader_cache.jsonl. An example with a criterion the grader failed on (or whose
  reply was unparsable) has no score: counted and listed, never guessed.
- Scores: an example's score = met points / sum of positive points; a model's score = the mean over its
  scored examples clipped to [0, 1], with a 95% percentile bootstrap interval over examples; the same per
  example tag (theme:...) and per criterion tag (axis:...: each example scored on the criteria with that
  tag, examples without a positive one left out); negative criteria: the share hit, overall (Wilson
  interval) and per criterion text.
- Ceiling: each example's ideal completion (ideal_completions_data) graded the same way.
- Grader agreement (--meta FILE, HealthBench's meta-evaluation layout): the grader's verdict against the
  physicians' majority (ties left out), macro F1 over met / not met.
Writes DIR/summary.json, DIR/grades.jsonl (every graded answer with its criteria), DIR/answers.jsonl.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from medtune.data.rubrics import RubricExample, load_meta_eval, load_rubric_set
from medtune.evaluate.arms import Arm, chat_template_arms
from medtune.generate.grader import (
    GRADER_PROMPT,
    GRADER_SYSTEM,
    PROMPT_VERSION,
    GradeCache,
    GraderEndpoint,
    clipped_mean,
    example_score,
    grade_jobs,
    make_job,
)
from medtune.rundir import write_json, write_jsonl
from medtune.stats import bootstrap_interval, wilson_interval

RESAMPLES = 1000
WORST = 5
CACHE_FILE = "grader_cache.jsonl"
IDEAL = "ideal"


# -- answering --

def generation_conversation(example: RubricExample) -> list[dict]:
    return [{**m, "role": "system"} if m["role"] == "developer" else m for m in example.prompt]


def answer_examples(arm: Arm, examples: list[RubricExample], engine) -> list[dict]:
    """Every example's conversation answered by the arm; an example's own system message replaces the arm's."""
    records: list[dict | None] = [None] * len(examples)
    own_system = {i for i, e in enumerate(examples) if e.prompt[0]["role"] in ("system", "developer")}
    groups = [([i for i in range(len(examples)) if i not in own_system], arm),
              (sorted(own_system), dataclasses.replace(arm, system_prompt=None))]
    for indices, group_arm in groups:
        if not indices:
            continue
        generations, _ = engine.batched(group_arm, [generation_conversation(examples[i]) for i in indices])
        for i, gen in zip(indices, generations):
            records[i] = {"arm": arm.name, "model": arm.model, "adapter": arm.adapter, "thinking": arm.thinking,
                          "example_id": examples[i].id, "answer": gen.answer, "thinking_text": gen.thinking,
                          "answer_tokens": gen.tokens - gen.thinking_tokens, "thinking_tokens": gen.thinking_tokens,
                          "finish_reason": gen.finish_reason}
    return records


# -- grading --

def grade_answers(grader: GraderEndpoint, examples: list[RubricExample], answers: dict[str, list[str | None]],
                  cache: GradeCache, log=print) -> list[dict]:
    """One row per (label, example) with an answer: every criterion's verdict, and the example's score."""
    owners, jobs = [], []
    for label, texts in answers.items():
        for example, text in zip(examples, texts):
            if text is None:
                continue
            owners.append((label, example, text))
            jobs += [make_job(example.prompt, text, c.criterion, c.points) for c in example.rubrics]
    grades = iter(grade_jobs(grader, jobs, cache, log=log))
    rows = []
    for label, example, text in owners:
        criteria = [{"criterion": c.criterion, "points": c.points, "tags": list(c.tags), "met": g.met,
                     "explanation": g.explanation, "error": g.error, "cached": g.cached}
                    for c, g in zip(example.rubrics, grades)]
        decided = all(c["met"] is not None for c in criteria)
        rows.append({"label": label, "example_id": example.id, "example_tags": example.example_tags,
                     "answer": text, "criteria": criteria,
                     "score": example_score([(c["points"], c["met"]) for c in criteria]) if decided else None})
    return rows


# -- statistics --

def _score_with_ci(scores: list[float], seed: int) -> dict:
    if not scores:
        return {"n": 0, "score": None, "score_ci": None}
    return {"n": len(scores), "score": clipped_mean(scores),
            "score_ci": list(bootstrap_interval(scores, clipped_mean, resamples=RESAMPLES, seed=seed))}


def tag_score(row: dict, tag: str) -> float | None:
    """The example's score on its criteria that carry `tag` (None when none of them has positive points)."""
    return example_score([(c["points"], c["met"]) for c in row["criteria"] if tag in c["tags"]])


def by_tags(scored: list[dict], seed: int) -> tuple[dict, dict]:
    example_tags = sorted({t for r in scored for t in r["example_tags"]})
    criterion_tags = sorted({t for r in scored for c in r["criteria"] for t in c["tags"]})
    per_example = {t: _score_with_ci([r["score"] for r in scored if t in r["example_tags"]], seed)
                   for t in example_tags}
    per_criterion = {}
    for t in criterion_tags:
        values = [s for s in (tag_score(r, t) for r in scored) if s is not None]
        if values:
            per_criterion[t] = _score_with_ci(values, seed)
    return per_example, per_criterion


def negatives(scored: list[dict]) -> dict:
    graded = [c for r in scored for c in r["criteria"] if c["points"] < 0]
    hits = sum(c["met"] for c in graded)
    by_text: dict[str, list] = {}
    for c in graded:
        by_text.setdefault(c["criterion"], []).append(c)
    per = [{"criterion": text, "points": cs[0]["points"], "n": len(cs), "hits": sum(c["met"] for c in cs),
            "rate": sum(c["met"] for c in cs) / len(cs)} for text, cs in by_text.items()]
    per.sort(key=lambda x: (-x["rate"], x["points"]))
    return {"n": len(graded), "hits": hits, "rate": hits / len(graded) if graded else None,
            "rate_ci": list(wilson_interval(hits, len(graded))) if graded else None, "per_criterion": per}


def worst_examples(scored: list[dict], prompts: dict[str, list[dict]], k: int = WORST) -> list[dict]:
    out = []
    for r in sorted(scored, key=lambda r: (r["score"], r["example_id"]))[:k]:
        out.append({"example_id": r["example_id"], "score": r["score"], "example_tags": r["example_tags"],
                    "question": prompts[r["example_id"]][-1]["content"], "answer": r["answer"],
                    "missed": [{"criterion": c["criterion"], "points": c["points"]} for c in r["criteria"]
                               if c["points"] > 0 and not c["met"]],
                    "negative_hit": [{"criterion": c["criterion"], "points": c["points"]} for c in r["criteria"]
                                     if c["points"] < 0 and c["met"]]})
    return out


def label_summary(rows: list[dict], examples: list[RubricExample], seed: int) -> dict:
    """The score with its interval, per tag, negative criteria, grader failures and the worst examples."""
    scored = [r for r in rows if r["score"] is not None]
    per_example_tag, per_criterion_tag = by_tags(scored, seed)
    criteria = [c for r in rows for c in r["criteria"]]
    return {**_score_with_ci([r["score"] for r in scored], seed), "examples": len(rows),
            "mean_unclipped": sum(r["score"] for r in scored) / len(scored) if scored else None,
            "by_example_tag": per_example_tag, "by_criterion_tag": per_criterion_tag, "negative": negatives(scored),
            "grader": {"criteria": len(criteria), "from_cache": sum(c["cached"] for c in criteria),
                       "failed": sum((c["error"] or "").startswith("failed") for c in criteria),
                       "unparsable": sum(c["error"] == "unparsable" for c in criteria),
                       "unscored_examples": [r["example_id"] for r in rows if r["score"] is None]},
            "worst": worst_examples(scored, {e.id: e.prompt for e in examples})}


def paired_differences(rows: list[dict], arms: list[str], seed: int) -> list[dict]:
    """The first arm against each other arm on the examples both scored: the mean difference of example scores
    (unclipped) with a bootstrap interval over those examples; 'differs' when the interval excludes 0."""
    scores = {(r["label"], r["example_id"]): r["score"] for r in rows if r["score"] is not None}
    out = []
    for other in arms[1:]:
        diffs = [scores[(arms[0], e)] - scores[(other, e)] for (label, e) in scores
                 if label == arms[0] and (other, e) in scores]
        mean = sum(diffs) / len(diffs) if diffs else None
        ci = list(bootstrap_interval(diffs, lambda d: sum(d) / len(d), resamples=RESAMPLES, seed=seed)) \
            if diffs else None
        out.append({"a": arms[0], "b": other, "n": len(diffs), "difference": mean, "difference_ci": ci,
                    "differs": bool(ci and (ci[0] > 0 or ci[1] < 0))})
    return out


def macro_f1(predicted: list[bool], truth: list[bool]) -> float | None:
    """The mean of the F1 of 'met' and the F1 of 'not met' (a class that neither side ever uses is left out)."""
    f1s = []
    for cls in (True, False):
        tp = sum(p == cls and t == cls for p, t in zip(predicted, truth))
        wrong = sum(p != t and cls in (p, t) for p, t in zip(predicted, truth))
        if tp or wrong:
            f1s.append(2 * tp / (2 * tp + wrong))
    return sum(f1s) / len(f1s) if f1s else None


def grader_agreement(grader: GraderEndpoint, path: str | Path, cache: GradeCache, max_rows: int | None,
                     log=print) -> dict:
    """The grader's verdicts against the physicians' majority on HealthBench's meta-evaluation rows."""
    rows, rejected = load_meta_eval(path, max_rows)
    grades = grade_jobs(grader, [make_job(r.prompt, r.completion, r.criterion, r.points) for r in rows], cache,
                        log=log)
    pairs, ties = [], 0
    for row, grade in zip(rows, grades):
        share = sum(row.labels) / len(row.labels)
        if share == 0.5:
            ties += 1
        elif grade.met is not None:
            pairs.append((grade.met, share > 0.5))
    predicted, truth = [p for p, _ in pairs], [t for _, t in pairs]
    return {"data": str(Path(path).resolve()), "rows": len(rows), "rejected": rejected, "n": len(pairs),
            "physician_ties": ties, "grader_undecided": sum(g.met is None for g in grades),
            "macro_f1": macro_f1(predicted, truth),
            "agreement": sum(p == t for p, t in pairs) / len(pairs) if pairs else None,
            "rule": "grader verdict vs the physicians' majority (ties left out); macro F1 = mean of the F1 of "
                    "met and of not met"}


# -- the whole evaluation --

def run_rubric(arms: list[Arm], path: str | Path, output_dir: str | Path, engines, grader: GraderEndpoint,
               name: str | None = None, max_examples: int | None = None, meta: str | Path | None = None,
               seed: int = 0, log=print) -> dict:
    """Answer, grade and score; writes summary.json, grades.jsonl, answers.jsonl under output_dir."""
    started, output_dir = time.perf_counter(), Path(output_dir)
    examples, rejected = load_rubric_set(path, max_examples)
    for r in rejected:
        log(f"rubric: skipping {r['file']}:{r['line']}: {r['reason']}")
    arms = chat_template_arms(arms, "rubric", log)
    records = []
    for arm in arms:
        log(f"rubric: {arm.name} answers {len(examples)} conversation(s)")
        records += answer_examples(arm, examples, engines.for_arm(arm))
    answers = {arm.name: [r["answer"] for r in records if r["arm"] == arm.name] for arm in arms}
    ideal = [e.ideal_completion for e in examples]
    if any(x is not None for x in ideal):
        answers[IDEAL] = ideal
    cache = GradeCache(output_dir / CACHE_FILE)
    rows = grade_answers(grader, examples, answers, cache, log)
    summary = {
        "rubric_set": name or Path(path).stem, "data": str(Path(path).resolve()), "examples": len(examples),
        "criteria": sum(len(e.rubrics) for e in examples), "rejected": rejected,
        "grader": {"model": grader.model, "base_url": grader.base_url, "prompt_version": PROMPT_VERSION,
                   "system": GRADER_SYSTEM, "prompt": GRADER_PROMPT},
        "method": {"example_score": "points of met criteria / sum of positive points",
                   "score": "mean of example scores, clipped to [0, 1]",
                   "intervals": f"95% percentile bootstrap over examples, {RESAMPLES} resamples, seed {seed}",
                   "unscored": "an example with a criterion the grader failed on or answered unparsably",
                   "paired": "first arm minus each other arm, example by example (unclipped), mean over the "
                             "examples both scored, 95% bootstrap; differs when the interval excludes 0"},
        "arms": [{"arm": a.name, "model": a.model, "adapter": a.adapter, "thinking": a.thinking,
                  **label_summary([r for r in rows if r["label"] == a.name], examples, seed)} for a in arms],
        "paired": paired_differences(rows, [a.name for a in arms], seed),
        "ceiling": label_summary([r for r in rows if r["label"] == IDEAL], examples, seed) if IDEAL in answers
        else None,
        "meta": grader_agreement(grader, meta, cache, None, log) if meta else None,
    }
    summary["seconds"] = round(time.perf_counter() - started, 3)
    write_jsonl(output_dir / "answers.jsonl", records)
    write_jsonl(output_dir / "grades.jsonl", rows)
    write_json(output_dir / "summary.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    def line(label: str, s: dict) -> str:
        ci = s["score_ci"] or [None, None]
        neg = s["negative"]
        return (f"{label:<28} score {f(s['score'])} [{f(ci[0])}, {f(ci[1])}] on {s['n']}/{s['examples']} example(s); "
                f"negative criteria hit {neg['hits']}/{neg['n']}; grader failed {s['grader']['failed']}, "
                f"unparsable {s['grader']['unparsable']}")

    lines = [f"{summary['rubric_set']}: {summary['examples']} example(s), {summary['criteria']} criteria, "
             f"grader {summary['grader']['model']}"]
    lines += [line(a["arm"], a) for a in summary["arms"]]
    if summary["ceiling"]:
        lines.append(line("ideal completions (ceiling)", summary["ceiling"]))
    if summary["meta"]:
        m = summary["meta"]
        lines.append(f"grader vs physicians: macro F1 {f(m['macro_f1'])}, agreement {f(m['agreement'])} (n={m['n']})")
    if summary["rejected"]:
        lines.append(f"{len(summary['rejected'])} row(s) rejected (listed under 'rejected' in summary.json)")
    return "\n".join(lines)


