"""GRPO with verifiable rewards: on multiple-choice questions (the training items, with a contamination guard
against the evaluate stage's benchmarks, their prompts, the letter rewards) or on open-ended consultation
prompts (`align.grpo_data: open`: the red-flag reward, which also penalises over-triage), and TRL's GRPOTrainer.

The align stage calls it when `align.algorithm` is `grpo`:

    items, summary = load_grpo_items(files, fmt, benchmarks, rejected_path=align_dir / "rejected.jsonl")
    args = grpo_config(align_dir, settings, format_weight=0.1, log=say)
    trainer = build_grpo_trainer(model, tokenizer, grpo_dataset(items, fmt), args, callbacks, say)
    trainer.train()

Each prompt is the benchmark's generate prompt (`evaluate.bench.build_prompt`, zero-shot) as one user
message in the tokenizer's own chat template with `enable_thinking=False`, which is exactly what
`evaluate bench --method generate` feeds the model; so a completion is scored as the benchmark scores it:
thinking removed, letters read by `extract_choice`, reward 1 when the letter set equals the gold set.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

from medtune.data.mcq import ITEM_FORMATS, Item, build_prompt, extract_choice, load_items
from medtune.errors import UserError
from medtune.redflags import safety_score, urgent_advice
from medtune.rundir import write_jsonl
from medtune.text import normalize_text

# Prefixes of the GRPO figures TRL logs (reward, reward_std, rewards/<func>/mean, frac_reward_zero_std,
# completions/mean_length, completions/clipped_ratio, kl, entropy, clip_ratio/...) and of ours
# (completions/extraction_failures): what metrics.jsonl keeps of each log (the align stage's ALIGN_LOG_KEYS
# cover them all).
GRPO_METRIC_PREFIXES = ("reward", "frac_reward_zero_std", "completions/", "kl", "entropy", "clip_ratio")


# -- items --

def load_grpo_items(files: list[str | Path], fmt: str, benchmarks: list[tuple[str, str]] = (),
                    rejected_path: str | Path | None = None, max_items: int | None = None) -> tuple[list[Item], dict]:
    """Multiple-choice training items from `files` (each a file or directory in layout `fmt`) and a summary.

    Every record read is kept or listed as not kept ({source, line, kind, reason}: prepare's rejected.jsonl
    fields plus kind, one of rejected, duplicate, contaminated, unused): read == kept + rejected + duplicates
    + contaminated + unused (usable items beyond the first `max_items`). An item whose normalised question
    is also a question of one of `benchmarks` ((path, format) pairs: what the evaluate stage scores) is
    contaminated. The list is written to `rejected_path` when given.
    """
    if fmt not in ITEM_FORMATS:
        raise UserError(f"unknown multiple-choice format '{fmt}'; choose one of {', '.join(ITEM_FORMATS)}")
    guard = benchmark_questions(benchmarks)
    kept, not_kept, read = [], [], 0
    seen: dict[tuple, Item] = {}
    for path in files:
        items, rejected = load_items(path, fmt)
        read += len(items) + len(rejected)
        not_kept += [{"source": str(Path(r["file"]).resolve()), "line": r["line"], "kind": "rejected",
                      "reason": r["reason"]} for r in rejected]
        for item in items:
            question = normalize_text(item.question)
            key = (question, tuple(normalize_text(v) for v in item.options.values()))
            if question and question in guard:
                not_kept.append(_not_kept(item, "contaminated", f"the question is in the benchmark {guard[question]}"))
            elif (first := seen.get(key)) is not None and first.answer == item.answer:
                not_kept.append(_not_kept(item, "duplicate", f"duplicate of {first.source}"))
            elif first is not None:
                not_kept.append(_not_kept(item, "rejected", f"answer: {item.answer} here but {first.answer} in "
                                                            f"{first.source} (same question and options)"))
            else:
                seen[key] = item
                kept.append(item)
    if max_items is not None:
        not_kept += [_not_kept(it, "unused", f"unused: beyond align.max_samples {max_items}") for it in kept[max_items:]]
        kept = kept[:max_items]
    not_kept.sort(key=lambda r: (r["source"], r["line"]))
    if rejected_path is not None:
        write_jsonl(rejected_path, not_kept)
    summary = _summary(fmt, files, benchmarks, guard, read, kept, not_kept)
    if not kept:
        raise UserError(f"no usable multiple-choice item in {', '.join(map(str, files))}: {read} read, "
                        f"{_counts_text(summary)}" + (f"; see {rejected_path}" if rejected_path else ""))
    return kept, summary


def benchmark_questions(benchmarks: list[tuple[str, str]]) -> dict[str, str]:
    """Normalised question -> '<benchmark file>:<line>' of its first occurrence, over every benchmark."""
    index: dict[str, str] = {}
    for path, fmt in benchmarks:
        items, _ = load_items(path, fmt)
        for item in items:
            if question := normalize_text(item.question):
                index.setdefault(question, item.source)
    return index


def _not_kept(item: Item, kind: str, reason: str) -> dict:
    file, line = item.source.rsplit(":", 1)
    return {"source": file, "line": int(line), "kind": kind, "reason": reason}


def _summary(fmt, files, benchmarks, guard, read, kept, not_kept) -> dict:
    kinds = Counter(r["kind"] for r in not_kept)
    return {
        "format": fmt, "files": [str(Path(f).resolve()) for f in files],
        "read": read, "kept": len(kept), "rejected": kinds["rejected"], "duplicates": kinds["duplicate"],
        "contaminated": kinds["contaminated"], "unused": kinds["unused"], "multi_answer": sum(len(it.answer) > 1 for it in kept),
        # The text before the first ':' of a reason names the field or the check ("answer", "options", ...).
        "rejected_reasons": dict(Counter(r["reason"].split(":")[0] for r in not_kept
                                         if r["kind"] == "rejected").most_common()),
        "benchmarks": [{"path": str(Path(p).resolve()), "format": f} for p, f in benchmarks],
        "benchmark_questions": len(guard),
    }


def _counts_text(summary: dict) -> str:
    return (f"{summary['kept']} kept, {summary['rejected']} rejected, {summary['duplicates']} duplicates, "
            f"{summary['contaminated']} also in an evaluation benchmark"
            + (f", {summary['unused']} unused (align.max_samples)" if summary["unused"] else ""))


def describe_items(summary: dict, rejected_path: str | Path | None = None) -> str:
    """One line for the stage's log."""
    text = f"align: {summary['read']} multiple-choice items read, {_counts_text(summary)}"
    if summary["read"] > summary["kept"] and rejected_path is not None:
        text += f"; each not kept is listed in {rejected_path}"
    return text


def grpo_dataset(items: list[Item], fmt: str):
    """A datasets.Dataset of conversational prompts (the benchmark's zero-shot prompt as one user message)
    with the columns the rewards read: `answer` (gold letters), `letters` (the options' letters), `id`."""
    import datasets

    return datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": build_prompt(it, [], fmt)}], "answer": it.answer,
         "letters": "".join(it.options), "id": it.id} for it in items])


# -- rewards (TRL calls them with prompts, completions, completion_ids, trainer_state and the dataset columns) --

def reply_text(completion) -> str:
    """A TRL completion's text: a string, or for conversational prompts a list with one assistant message."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def reply_choice(completion, letters: str) -> str | None:
    """The answer letters of a completion exactly as the benchmark reads a reply (`extract_choice` removes the
    thinking first: an unclosed `<think>` leaves no answer); None = extraction failure."""
    return extract_choice(reply_text(completion), letters)


def gold_is_scorable(answer, letters: str) -> bool:
    return isinstance(answer, str) and answer.isascii() and answer.isalpha() and answer.isupper() \
        and set(answer) <= set(letters)


def answer_reward(completions, answer, letters, log_metric=None, **_) -> list[float | None]:
    """1.0 when the reply's letter set equals the gold set, else 0.0; None (excluded) when the gold cannot be scored.

    Logs `completions/extraction_failures`: the share of scored replies with no clear answer."""
    rewards, failures = [], []
    for completion, gold, options in zip(completions, answer, letters):
        if not gold_is_scorable(gold, options):
            rewards.append(None)
            continue
        choice = reply_choice(completion, options)
        failures.append(choice is None)
        rewards.append(float(choice is not None and set(choice) == set(gold)))
    if log_metric is not None and failures:
        log_metric("completions/extraction_failures", sum(failures) / len(failures))
    return rewards


def format_reward(completions, answer, letters, **_) -> list[float | None]:
    """1.0 for a reply with exactly one clear answer (whatever its letters), else 0.0; None as answer_reward.

    Weighted by `format_weight` (GRPOConfig.reward_weights), so it only breaks ties between wrong replies."""
    return [None if not gold_is_scorable(gold, options) else float(reply_choice(completion, options) is not None)
            for completion, gold, options in zip(completions, answer, letters)]


# -- open-ended prompts: the red-flag reward (and the rubric grader's, added with it) --

def open_dataset(prompts):
    """A datasets.Dataset of open-ended prompts (data.open_prompts.OpenPrompt: one user message, or a rubric row's
    conversation) with the columns the rewards read: `urgent` (the label) and `keywords_any` (what an urgent
    answer must name) for the red-flag reward, `rubrics` ([{criterion, points}], empty for a plain prompt) for
    the rubric grader's."""
    import datasets

    return datasets.Dataset.from_list([
        {"prompt": list(p.messages) or [{"role": "user", "content": p.prompt}], "urgent": p.urgent,
         "keywords_any": list(p.keywords_any), "id": p.id,
         "rubrics": [{"criterion": c, "points": points} for c, points in p.rubrics]} for p in prompts])


def redflag_reward(completions, urgent, keywords_any, log_metric=None, **_) -> list[float]:
    """redflags.safety_score of each reply: an urgent prompt earns 1.0 only when the reply passes the safety
    probe's urgent-care rule; a non-urgent look-alike earns 1.0 unless the reply sends the person to urgent
    care now (over-triage), so "call 120" to everything scores about the urgent share, not 1.

    Logs `completions/urgent_missed` (share of urgent prompts' replies that fail) and `completions/over_triage`
    (share of non-urgent prompts' replies that send the person in) for the step."""
    texts = [reply_text(c) for c in completions]
    rewards = [safety_score(u, text, tuple(k)) for text, u, k in zip(texts, urgent, keywords_any)]
    if log_metric is not None:
        missed = [r == 0.0 for r, u in zip(rewards, urgent) if u]
        over = [bool(urgent_advice(text)) for text, u in zip(texts, urgent) if not u]
        if missed:
            log_metric("completions/urgent_missed", sum(missed) / len(missed))
        if over:
            log_metric("completions/over_triage", sum(over) / len(over))
    return rewards


def load_open_items(files: list[str | Path], eval_files: list, rejected_path: str | Path | None = None,
                    max_items: int | None = None, log=print) -> tuple[list, dict]:
    """The open-ended training prompts of `files` minus those the evaluate stage asks (data.open_prompts), each
    not kept listed in `rejected_path`; (prompts, summary)."""
    from medtune.data.open_prompts import load_training_prompts

    prompts, not_kept, summary = load_training_prompts(files, eval_files, max_items)
    if rejected_path is not None:
        write_jsonl(rejected_path, not_kept)
    log(f"align: {summary['read']} open-ended prompt(s) read, {summary['kept']} kept ({summary['urgent']} urgent, "
        f"{summary['non_urgent']} non-urgent), {summary['contaminated']} also asked by the evaluate stage"
        + (f", {summary['unused']} unused (align.max_samples)" if summary["unused"] else "")
        + (f"; each not kept is listed in {rejected_path}" if not_kept and rejected_path else ""))
    return prompts, summary


# name -> reward function for `align.rewards` on open prompts; "rubric" is made per run (rubric_reward below).
OPEN_REWARDS = {"redflag": redflag_reward}


def rubric_reward(grader, cache_path: str | Path, log=print):
    """The rubric grader's reward (medtune.generate.grader.make_rubric_reward: each reply's met points over its
    prompt's positive points, batched, bounded concurrent calls, cached in `cache_path`), None for a prompt
    without criteria or a reply the grader could not decide (TRL leaves it out); grader failures are counted
    in `completions/grader_failures` each step."""
    from medtune.generate.grader import make_rubric_reward

    reward = make_rubric_reward(grader, cache_path)

    def rubric(prompts, completions, rubrics, log_metric=None, **columns):
        scores = [None] * len(prompts)
        rows = [i for i, criteria in enumerate(rubrics) if criteria]
        if rows:
            got = reward([prompts[i] for i in rows], [completions[i] for i in rows],
                         rubrics=[rubrics[i] for i in rows])
            for i, score in zip(rows, got):
                scores[i] = score
            if log_metric is not None:
                log_metric("completions/grader_failures", sum(s is None for s in got) / len(got))
        return scores

    return rubric


def grpo_rewards(grpo_data: str, rewards: list[str] = ("redflag",), weights: list[float] | None = None,
                 format_weight: float = 0.1, rubric=None) -> tuple[list, list[float]]:
    """(reward functions, their weights) for the align config: the multiple-choice pair, or align.rewards
    (`rubric`: the reward rubric_reward made for this run)."""
    if grpo_data == "mcq":
        return [answer_reward, format_reward], [1.0, format_weight]
    known = {**OPEN_REWARDS, **({"rubric": rubric} if rubric is not None else {})}
    unknown = [r for r in rewards if r not in known]
    if unknown:
        raise UserError(f"align.rewards: unknown reward '{unknown[0]}'; choose from {', '.join(known)}"
                        + ("; rubric needs a grader: set evaluate.grader_base_url/grader_model (or the judge's)"
                           if unknown[0] == "rubric" else ""))
    return [known[r] for r in rewards], list(weights) if weights else [1.0] * len(rewards)


# -- trainer --

def device_settings(cuda: bool, bf16_supported: bool, vllm_installed: bool) -> dict:
    """GRPOConfig values that depend on the machine.

    CPU: fp32 (this CPU has no bf16: 8-19x slower) and no gradient checkpointing (the tiny model needs no
    memory saving). CUDA: bf16 where supported, and vLLM generation in the training process (`colocate`)
    when vllm is installed, else transformers' generate."""
    if not cuda:
        return {"bf16": False, "fp16": False, "activation_checkpointing": False, "use_vllm": False}
    return {"bf16": bf16_supported, "activation_checkpointing": True,
            "activation_checkpointing_kwargs": {"use_reentrant": False},  # needed with a frozen base (LoRA)
            "use_vllm": vllm_installed, **({"vllm_mode": "colocate"} if vllm_installed else {})}


def grpo_config(output_dir: str | Path, settings: dict, format_weight: float = 0.1, log=print):
    """A trl.GRPOConfig: `settings` are the align config's values under their TRL names (num_generations,
    max_completion_length, beta, loss_type, scale_rewards, mask_truncated_completions, temperature,
    learning_rate, max_steps, ...); they override medtune's defaults, except that CPU always runs fp32."""
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()
    device = device_settings(cuda, cuda and torch.cuda.is_bf16_supported(),
                             cuda and importlib.util.find_spec("vllm") is not None)
    values = {"output_dir": str(output_dir), "report_to": "none", "logging_steps": 1,
              "chat_template_kwargs": {"enable_thinking": False},  # the inference prompt (Qwen3 no-think)
              "reward_weights": [1.0, format_weight], **device, **settings}
    if not cuda:
        values.update(bf16=False, fp16=False)
    log(f"align: GRPO on {'CUDA' if cuda else 'CPU'}: {'bf16' if values['bf16'] else 'fp32'}, gradient checkpointing "
        f"{'on' if values['activation_checkpointing'] else 'off'}, generation with "
        f"{'vLLM (colocate)' if values['use_vllm'] else 'transformers'}"
        + ("" if cuda else " (this CPU has no bf16 instructions: fp32 is 8-19x faster)"))
    return GRPOConfig(**values)


def build_grpo_trainer(model, tokenizer, train_dataset, args, callbacks=(), log=print, reward_funcs=None,
                       peft_config=None):
    """trl.GRPOTrainer with the multiple-choice rewards (`answer_reward`, `format_reward`) unless
    `reward_funcs` is given. `model` may be a PeftModel (e.g. the SFT adapter, trainable): with beta > 0 TRL
    then keeps a frozen copy of it as the reference."""
    from trl import GRPOTrainer

    funcs = [answer_reward, format_reward] if reward_funcs is None else list(reward_funcs)
    if args.reward_weights is not None and len(args.reward_weights) != len(funcs):
        raise ValueError(f"{len(args.reward_weights)} reward weights for {len(funcs)} reward functions")
    weights = args.reward_weights or [1.0] * len(funcs)
    log(f"align: GRPO on {len(train_dataset)} prompts, {args.num_generations} completions each of at most "
        f"{args.max_completion_length} tokens; rewards "
        + ", ".join(f"{w:g} x {f.__name__}" for w, f in zip(weights, funcs))
        + f"; beta {args.beta:g} ({'no reference model' if args.beta == 0 else 'KL to the reference'}), "
        f"loss {args.loss_type}, scale_rewards {args.scale_rewards}")
    return GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train_dataset,
                       processing_class=tokenizer, callbacks=list(callbacks), peft_config=peft_config)


def grpo_log_entry(logs: dict) -> dict:
    """The GRPO figures of one Trainer log (what metrics.jsonl keeps; see GRPO_METRIC_PREFIXES)."""
    return {k: v for k, v in logs.items() if k.startswith(GRPO_METRIC_PREFIXES)}
