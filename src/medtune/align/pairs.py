"""`align.pairs: self`: preference pairs from the SFT run itself.

`align.self_pairs.scorer: reference` (the default): for the first `align.self_pairs.max_prompts` valid dialogues of data.train_files, the prompt is the
dialogue up to its last question, chosen = the reference answer in the training data, rejected = the SFT
model's own sampled answer to that prompt (batched generation). A pair is dropped when the sample is a
near-duplicate of the reference (character ROUGE-L F1 above `max_rouge_l`), when the sample is empty or
cut off, or (with `judge: true`) when the evaluate judge prefers the sample. Writes align/pairs.jsonl
(one TRL `prompt/chosen/rejected` record per kept pair, with provenance) and align/pairs_summary.json;
the align stage then reads pairs.jsonl with medtune.data.align's reader like any preference file.

Any other scorer (`safety`: redflags.safety_score, the red-flag probe's rule with over-triage; `judge`: the
evaluate judge, round robin): `num_samples` answers per prompt (align.self_pairs.prompts, e.g. the red-flag
training set, or the training dialogues' prompts), each scored in [0, 1]; chosen = the best, rejected = the
worst, kept only when the scores differ by at least `margin`. On red-flag prompts the chosen answer of an
urgent prompt is one that sends the person to urgent care, of a non-urgent look-alike one that does not.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from medtune.config import Config
from medtune.data.readers import (
    Conversation,
    RecordError,
    control_texts,
    expand_sources,
    iter_raw_records,
    to_conversation,
)
from medtune.errors import UserError
from medtune.rundir import write_json, write_jsonl
from medtune.text import rouge_l


def training_prompts(cfg: Config, tokenizer, limit: int | None) -> list[Conversation]:
    """The first `limit` valid dialogues of data.train_files (prepare's rules), in file order."""
    forbidden = control_texts(tokenizer)
    found = []
    for spec, data in ((f, src.data) for src in expand_sources(cfg.data) if src.role == "train" for f in src.files):
        for rec in iter_raw_records(spec, data):
            try:
                found.append(to_conversation(rec, data, forbidden))
            except RecordError:
                continue  # prepare lists these in data/rejected.jsonl
            if limit is not None and len(found) >= limit:
                return found
    return found


def build_self_pairs(cfg: Config, tokenizer, generate, out_dir: Path, judge=None, log=print) -> dict:
    """Sample, filter and write the pairs; `generate(list of message lists) -> list of (text, finish_reason)`.

    `judge(question, reference, sample) -> "win" | "tie" | "loss" | None` (the reference's outcome, both
    orders) drops pairs the judge decides for the sample ("loss"). Returns the summary (also written to pairs_summary.json).
    """
    s = cfg.align.self_pairs
    convs = training_prompts(cfg, tokenizer, s.max_prompts)
    if not convs:
        raise UserError("align.pairs is self, but data.train_files has no valid dialogue to take prompts from")
    prompts = [c.messages(with_last_answer=False) for c in convs]
    log(f"align: sampling the SFT model's own answers to {len(prompts)} training prompt(s) "
        f"(batch {s.batch_size}, up to {s.generation.max_new_tokens} tokens)")
    samples = generate(prompts)
    dropped: dict[str, int] = {}
    pairs = []
    for conv, prompt, (sample, finish) in zip(convs, prompts, samples):
        reference = conv.turns[-1][1]
        score = rouge_l(sample, reference)
        reason = ("empty sample" if not sample.strip() else
                  f"near-duplicate (ROUGE-L > {s.max_rouge_l})" if score > s.max_rouge_l else None)
        if reason is None and judge is not None and judge(conv.turns[-1][0], reference, sample) == "loss":
            reason = "judge prefers the sample"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        pairs.append({"prompt": prompt, "chosen": reference, "rejected": sample,
                      "source": conv.source, "line": conv.line, "rouge_l": round(score, 4),
                      "rejected_finish_reason": finish})
    return _write_pairs(out_dir, pairs, dropped, len(prompts), {"scorer": "reference", "max_rouge_l": s.max_rouge_l,
                                                                "judge": judge is not None}, log)


# -- scored pairs: N samples per prompt, the best against the worst --

def scored_prompts(cfg: Config, tokenizer) -> tuple[list[tuple], dict | None]:
    """(messages, urgent, keywords_any, source, rubrics) per prompt: align.self_pairs.prompts minus what the
    evaluate stage asks (data.open_prompts, rubric-layout rows with their conversation and criteria; with their
    summary), or the training dialogues' prompts (urgent as the red-flag rules decide; no criteria; summary None)."""
    from medtune.data.open_prompts import evaluation_prompts, load_training_prompts
    from medtune.redflags import URGENT_CARE, find_red_flags

    s = cfg.align.self_pairs
    if s.prompts:
        found, not_kept, summary = load_training_prompts(
            s.prompts, evaluation_prompts(cfg.evaluate.safety, cfg.evaluate.questions), s.max_prompts)
        summary["not_kept"] = not_kept
        return [(list(p.messages) or [{"role": "user", "content": p.prompt}], p.urgent, p.keywords_any, p.source,
                 p.rubrics) for p in found], summary
    convs = training_prompts(cfg, tokenizer, s.max_prompts)
    return [(c.messages(with_last_answer=False), bool(find_red_flags(c.turns[-1][0])), URGENT_CARE,
             f"{c.source}:{c.line}", ()) for c in convs], None


def safety_scorer(messages: list[dict], urgent: bool, keywords_any, samples: list[str], rubrics=()) -> list[float]:
    """redflags.safety_score of each sample: what the red-flag probe (and GRPO's red-flag reward) counts as safe."""
    from medtune.redflags import safety_score

    return [safety_score(urgent, text, keywords_any) for text in samples]


def pick_pair(samples: list[tuple[str, str]], scores: list[float | None], margin: float) -> tuple[int, int] | str:
    """(best, worst) indices, or why there is no pair. The first best and the last worst win ties, so equal
    scores never pair a sample with itself; empty samples and samples the scorer could not score are left out."""
    usable = [i for i, ((text, _), sc) in enumerate(zip(samples, scores)) if text.strip() and sc is not None]
    if len(usable) < 2:
        return "fewer than two scored samples"
    best = max(usable, key=lambda i: scores[i])
    worst = min(reversed(usable), key=lambda i: scores[i])
    if scores[best] - scores[worst] < margin:
        return f"scores differ by less than the margin {margin}"
    return best, worst


def build_scored_pairs(cfg: Config, tokenizer, generate, scorer, out_dir: Path, log=print) -> dict:
    """`num_samples` answers per prompt, scored by `scorer(messages, urgent, keywords_any, samples, rubrics) ->
    scores` (None = not scored; rubrics: a rubric row's (criterion, points)); chosen = the best, rejected = the worst, when they differ by at least
    `margin`. Writes pairs.jsonl (with both scores and provenance) and pairs_summary.json; returns the summary."""
    s = cfg.align.self_pairs
    prompts, prompt_set = scored_prompts(cfg, tokenizer)
    if not prompts:
        raise UserError("align.pairs is self, but there is no prompt to sample (align.self_pairs.prompts or "
                        "data.train_files)")
    log(f"align: sampling {s.num_samples} answers to each of {len(prompts)} prompt(s) from the SFT model, scored "
        f"by {s.scorer} (pairs need a score gap of at least {s.margin})")
    flat = generate([messages for messages, *_ in prompts for _ in range(s.num_samples)])
    pairs, dropped = [], {}
    for k, (messages, urgent, keywords, source, rubrics) in enumerate(prompts):
        samples = flat[k * s.num_samples:(k + 1) * s.num_samples]
        scores = scorer(messages, urgent, keywords, [text for text, _ in samples], rubrics)
        picked = pick_pair(samples, scores, s.margin)
        if isinstance(picked, str):
            dropped[picked] = dropped.get(picked, 0) + 1
            continue
        best, worst = picked
        pairs.append({"prompt": messages, "chosen": samples[best][0], "rejected": samples[worst][0],
                      "chosen_score": scores[best], "rejected_score": scores[worst], "urgent": urgent,
                      "source": source.rsplit(":", 1)[0], "line": int(source.rsplit(":", 1)[1]),
                      "rejected_finish_reason": samples[worst][1]})
    return _write_pairs(out_dir, pairs, dropped, len(prompts), {"scorer": s.scorer, "num_samples": s.num_samples,
                                                                "margin": s.margin, "prompt_set": prompt_set}, log)


def _write_pairs(out_dir: Path, pairs: list[dict], dropped: dict, prompts: int, settings: dict, log) -> dict:
    write_jsonl(out_dir / "pairs.jsonl", pairs)
    summary = {"prompts": prompts, "kept": len(pairs), "dropped": dropped, **settings,
               "urgent_pairs": sum(bool(p.get("urgent")) for p in pairs),
               "chosen_chars_median": _median([len(p["chosen"]) for p in pairs]),
               "rejected_chars_median": _median([len(p["rejected"]) for p in pairs]),
               "rejected_cut_off": sum(p["rejected_finish_reason"] == "length" for p in pairs)}
    write_json(out_dir / "pairs_summary.json", summary)
    log(f"align: {len(pairs)} self-made pair(s) kept of {prompts}"
        + (f"; dropped: {', '.join(f'{k} {v}' for k, v in dropped.items())}" if dropped else "")
        + f"; median length chosen {summary['chosen_chars_median']} vs rejected {summary['rejected_chars_median']} "
          f"characters -> {out_dir / 'pairs.jsonl'}")
    if not pairs:
        raise UserError(f"align: every self-made pair was dropped ({dropped}); raise align.self_pairs.max_prompts"
                        + (", num_samples or lower margin" if settings["scorer"] != "reference" else " or max_rouge_l"))
    return summary


def judge_scorer(cfg: Config):
    """Each sample's share of wins against the other samples of its prompt, by the evaluate judge in both orders
    (a tie counts half); None for a sample whose every comparison failed."""
    judge = pair_judge(cfg)

    def score(messages: list[dict], urgent: bool, keywords_any, samples: list[str], rubrics=()) -> list[float | None]:
        question = messages[-1]["content"]
        points: list[list[float]] = [[] for _ in samples]
        for i in range(len(samples)):
            for j in range(i + 1, len(samples)):
                outcome = judge(question, samples[i], samples[j])
                if outcome is None:
                    continue
                win = {"win": 1.0, "tie": 0.5, "loss": 0.0}[outcome]
                points[i].append(win)
                points[j].append(1.0 - win)
        return [sum(p) / len(p) if p else None for p in points]

    return score


def rubric_scorer(grader, cache_path: str | Path):
    """Each sample's rubric score: GRPO's rubric reward (align.grpo.rubric_reward: met points over positive points,
    None where the grader could not grade a criterion or the prompt has none) on the prompt's samples."""
    from medtune.align.grpo import rubric_reward

    reward = rubric_reward(grader, cache_path)

    def score(messages: list[dict], urgent: bool, keywords_any, samples: list[str], rubrics=()) -> list[float | None]:
        criteria = [{"criterion": c, "points": p} for c, p in rubrics]
        return reward([messages] * len(samples), samples, rubrics=[criteria] * len(samples))

    return score


def pair_scorer(cfg: Config, grader=None):
    """The scorer align.self_pairs.scorer names; `rubric` grades with `grader` (the align stage's reward_grader)."""
    scorer = cfg.align.self_pairs.scorer
    if scorer == "rubric":
        return rubric_scorer(grader, cfg.run_dir / "align" / "grader_cache.jsonl")
    return {"safety": lambda: safety_scorer, "judge": lambda: judge_scorer(cfg)}[scorer]()


def pair_judge(cfg: Config):
    """The evaluate judge, asked in both orders: the reference's outcome against the sample."""
    from medtune.generate.judge import combine_orders, configured_judge, judge_messages, parse_verdict

    endpoint = configured_judge(cfg.evaluate)
    if endpoint is None:
        raise UserError("align.self_pairs.judge is true: set evaluate.judge_base_url and evaluate.judge_model")
    client = endpoint.client()

    def judge(question: str, reference: str, sample: str):
        first = parse_verdict(client.complete(judge_messages(question, reference, sample)))
        second = parse_verdict(client.complete(judge_messages(question, sample, reference)))
        return combine_orders(first, second)[0]

    return judge


def _median(values: list[int]):
    return statistics.median(values) if values else None


class SampleAnswers:
    """Batched sampling from the in-memory SFT model with medtune.generate (longest prompts first, left
    padding, batch b seeded with seed + b); returns (answer, finish_reason) per prompt, thinking removed.

    The align stage holds the model already; evaluate's engines load their own copy from disk.
    """

    def __init__(self, model, tokenizer, generation, batch_size: int, enable_thinking: bool):
        from medtune.generate.sampling import generation_sampling
        from medtune.generate.transformers_engine import TransformersGenerator

        self.model, self.generator = model, TransformersGenerator(model, tokenizer)
        self.sampling = generation_sampling(generation)
        self.batch_size, self.enable_thinking = batch_size, enable_thinking

    def __call__(self, prompts: list[list[dict]]) -> list[tuple[str, str]]:
        was_training = self.model.training
        self.model.eval()
        try:
            replies = self.generator.generate(prompts, self.sampling, self.enable_thinking, self.batch_size)
        finally:
            self.model.train(was_training)
        return [(r.answer, r.finish_reason) for r in replies]
