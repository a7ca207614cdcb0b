"""`align.pairs: self`: preference pairs from the SFT run itself.

For the first `align.self_pairs.max_prompts` valid dialogues of data.train_files, the prompt is the
dialogue up to its last question, chosen = the reference answer in the training data, rejected = the SFT
model's own sampled answer to that prompt (batched generation). A pair is dropped when the sample is a
near-duplicate of the reference (character ROUGE-L F1 above `max_rouge_l`), when the sample is empty or
cut off, or (with `judge: true`) when the evaluate judge prefers the sample. Writes align/pairs.jsonl
(one TRL `prompt/chosen/rejected` record per kept pair, with provenance) and align/pairs_summary.json;
the align stage then reads pairs.jsonl with medtune.data.align's reader like any preference file.
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
    write_jsonl(out_dir / "pairs.jsonl", pairs)
    summary = {"prompts": len(prompts), "kept": len(pairs), "dropped": dropped,
               "max_rouge_l": s.max_rouge_l, "judge": judge is not None,
               "chosen_chars_median": _median([len(p["chosen"]) for p in pairs]),
               "rejected_chars_median": _median([len(p["rejected"]) for p in pairs]),
               "rejected_cut_off": sum(p["rejected_finish_reason"] == "length" for p in pairs)}
    write_json(out_dir / "pairs_summary.json", summary)
    log(f"align: {len(pairs)} self-made pair(s) kept of {len(prompts)}"
        + (f"; dropped: {', '.join(f'{k} {v}' for k, v in dropped.items())}" if dropped else "")
        + f"; median length chosen {summary['chosen_chars_median']} vs rejected {summary['rejected_chars_median']} "
          f"characters -> {out_dir / 'pairs.jsonl'}")
    if not pairs:
        raise UserError(f"align: every self-made pair was dropped ({dropped}); raise align.self_pairs.max_rouge_l "
                        "or align.self_pairs.max_prompts")
    return summary


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
