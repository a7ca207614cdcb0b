"""Medical multiple-choice benchmarks: prompts, scoring by log-likelihood or by generation, accuracy with
95% Wilson intervals overall and per subject, and paired McNemar tests between results.

Run as: medtune evaluate bench --model PATH_OR_ID --data PATH --format cmmlu --method loglik --output FILE.json

Prompts follow lm-evaluation-harness's `cmmlu` task token for token: the description
"以下是关于{科目}的单项选择题，请直接给出正确答案的选项。\\n\\n", then each few-shot example as
"{question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n答案： {letter}\\n\\n", then the question ending in "答案：".
Items without Chinese text (MedQA US) use the MMLU wording ("The following are multiple choice questions
(with answers) about medicine.", "Answer:").

Scoring:
- loglik (lm-eval's `acc`): the log-probability of " A", " B", ... after the prompt, tokenized as lm-eval
  does (the whole text, split at the context's length); the highest wins, ties go to the first letter.
  Multi-answer items (CMB 多项选择题, CMExam 'ABD'): ranking single letters cannot produce a set, so such
  an item is scored wrong under loglik, and the result counts them (`multi_answer_items`). Ranking every
  subset instead was rejected: a longer letter string has a lower probability, so it would mostly measure
  length.
- generate: the prompt as one user message in the chat template, no thinking (`enable_thinking=False`),
  greedy; the answer letters are extracted from the reply (`extract_choice`) and must equal the gold set
  exactly. A reply with no clear answer is an extraction failure: counted and scored wrong, never guessed.

Few-shot: the first k items of each subject from `dev_path`, or, without it, from the data itself; an
example is never also scored.
"""

from __future__ import annotations

import dataclasses
import time
from itertools import combinations
from pathlib import Path

from medtune.data.mcq import FORMATS, Item, build_prompt, extract_choice, load_items
from medtune.errors import UserError
from medtune.generate.sampling import GREEDY
from medtune.generate.transformers_engine import TransformersGenerator
from medtune.rundir import write_json
from medtune.stats import mcnemar, wilson_interval

METHODS = ("loglik", "generate")


# -- prompts --


def select_shots(items: list[Item], dev_items: list[Item] | None, shots: int, where: str) -> tuple[dict, list[Item]]:
    """({subject: first `shots` dev items}, the items left to score). Without dev items, shots come from `items`."""
    if shots == 0:
        return {}, items
    pool = items if dev_items is None else dev_items
    by_subject: dict[str, list[Item]] = {}
    for it in pool:
        by_subject.setdefault(it.subject, []).append(it)
    examples = {}
    for subject in dict.fromkeys(it.subject for it in items):
        have = by_subject.get(subject, [])
        if len(have) < shots:
            raise UserError(f"--shots {shots}: {where} has only {len(have)} item(s) for subject '{subject}'; "
                            "lower --shots or give --dev with enough examples")
        examples[subject] = have[:shots]
    used = {s.source for group in examples.values() for s in group}
    return examples, [it for it in items if it.source not in used]


# -- scoring --

def left_padded(rows: list, pad_id: int | None):
    """(input_ids, attention_mask) tensors for token lists, padded on the left to the longest."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[r, width - len(row):] = 1
    return ids, mask


def encode_requests(tokenizer, requests: list[tuple[str, str]]) -> tuple[list, list[tuple[int, ...]], list[int]]:
    """(per request: its model input's index and continuation ids; the distinct model inputs; per input: how many
    of its last positions are scored), tokenized as lm-eval's HF model does: context alone, then the whole text
    split at the context's length. Requests with identical inputs (the single-token letters of one question)
    share one input."""
    encoded, inputs = [], {}
    ctx_cache: dict[str, list[int]] = {}
    for context, continuation in requests:
        spaces = len(context) - len(context.rstrip())  # lm-eval moves trailing spaces into the continuation
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if context not in ctx_cache:
            ctx_cache[context] = tokenizer(context)["input_ids"]
        ctx_ids = ctx_cache[context]
        cont_ids = tokenizer(context + continuation)["input_ids"][len(ctx_ids):]
        if not cont_ids:
            raise ValueError(f"the continuation {continuation!r} adds no token to its context")
        key = tuple(ctx_ids + cont_ids[:-1])
        encoded.append((inputs.setdefault(key, len(inputs)), cont_ids))
    keep = [0] * len(inputs)
    for row, cont in encoded:
        keep[row] = max(keep[row], len(cont))
    return encoded, list(inputs), keep


# A prefix is run once for a group when it is at least this many tokens and at least half of the group's longest
# input. Below that the saving is small (a few tokens per row) while each group costs one more forward and
# batches of its own tails only; in k-shot prompts the rule picks exactly the description + examples of one
# subject, while different subjects (sharing only "以下是关于") stay apart.
MIN_SHARED_PREFIX = 16


def shared_prefix_groups(rows: list[tuple[int, ...]], keep: list[int]) -> list[tuple[int, list[int]]]:
    """(prefix length, row indices) for each group of two or more inputs that start with the same tokens. Rows
    sorted by token ids put common prefixes next to each other; a prefix never reaches a scored position."""
    groups, current, shared, longest = [], [], 0, 0
    for i in sorted(range(len(rows)), key=lambda i: rows[i]):
        if current:
            common = next((n for n, (a, b) in enumerate(zip(rows[current[-1]], rows[i])) if a != b),
                          min(len(rows[current[-1]]), len(rows[i])))
            candidate = min(shared, common, len(rows[i]) - keep[i])
            if candidate >= MIN_SHARED_PREFIX and 2 * candidate >= max(longest, len(rows[i])):
                current, shared, longest = current + [i], candidate, max(longest, len(rows[i]))
                continue
            groups.append((shared, current))
        current, shared, longest = [i], len(rows[i]) - keep[i], len(rows[i])
    if current:
        groups.append((shared, current))
    return [(n, group) for n, group in groups if len(group) > 1]


def batch_logprobs(model, ids, mask, position_ids, keep: int, cache=None):
    """Log-softmax over the last `keep` positions of a left-padded batch (on the CPU, float32); with `cache`
    (the keys/values of a shared prefix) the batch continues it."""
    import torch

    device = next(model.parameters()).device
    extra = {"cache": cache, "use_cache": True} if cache is not None else {"use_cache": False}
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device),
                logits_to_keep=keep, **extra)
    return torch.log_softmax(out.logits.float(), dim=-1).cpu()


def score_full(model, rows, keep, indices, batch_size: int, pad_id, logprobs: dict) -> None:
    """Each input's scored log-probabilities into `logprobs`, whole inputs in batches (longest first)."""
    order = sorted(indices, key=lambda i: -len(rows[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        ids, mask = left_padded([rows[i] for i in batch], pad_id)  # scored positions line up at the end
        lp = batch_logprobs(model, ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), max(keep[i] for i in batch))
        for r, i in enumerate(batch):
            logprobs[i] = lp[r]


def prefix_cache(model, prefix: tuple[int, ...]):
    """[(keys, values) per layer] of one forward of `prefix`, or None when the model gives no plain DynamicCache
    (no cache support, sliding-window or linear-attention layers): those inputs take the full path."""
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
    cache = out.get("cache")
    if not isinstance(cache, DynamicCache) or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    return [(layer.keys, layer.values) for layer in cache.layers]


def score_on_prefix(model, rows, keep, prefix_len: int, group: list[int], batch_size: int, pad_id,
                    logprobs: dict) -> bool:
    """The group's scored log-probabilities into `logprobs`: the shared prefix once, then only the tails, each
    batch on its own cache built from the prefix's tensors (a DynamicCache grows in place, so reusing one would
    put the previous batch's tails into the next one's past). False (nothing scored) without a usable cache."""
    import torch
    from transformers.cache_utils import DynamicCache

    past = prefix_cache(model, rows[group[0]][:prefix_len])
    if past is None:
        return False
    order = sorted(group, key=lambda i: -len(rows[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        ids, tail_mask = left_padded([rows[i][prefix_len:] for i in batch], pad_id)
        n = len(batch)
        cache = DynamicCache([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in past])
        # [prefix | tail's left padding | tail]: the padding sits between them, masked, and positions go on from
        # the prefix's, so each tail sees exactly what it would see in its own unpadded full input.
        mask = torch.cat([torch.ones((n, prefix_len), dtype=torch.long), tail_mask], dim=1)
        positions = prefix_len + (tail_mask.cumsum(-1) - 1).clamp(min=0)
        lp = batch_logprobs(model, ids, mask, positions, max(keep[i] for i in batch), cache)
        for r, i in enumerate(batch):
            logprobs[i] = lp[r]
    return True


def continuation_logprobs(model, tokenizer, requests: list[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Sum of log-probabilities of each continuation given its context, tokenized as lm-eval's HF model does.

    Requests whose model input is identical (every single-token letter of one question) share one forward
    pass, and only the logits of the continuation positions are computed (`logits_to_keep`). Inputs that start
    with the same long token prefix (the description and k examples of one subject in k-shot prompts) run that
    prefix once and only their tails on top of its keys/values: causal attention makes the prefix's keys and
    values the same in every input, so the scores equal a full forward's within float rounding.
    """
    import torch

    encoded, rows, keep = encode_requests(tokenizer, requests)
    logprobs: dict[int, torch.Tensor] = {}
    pad_id = tokenizer.pad_token_id
    with torch.inference_mode():
        for prefix_len, group in shared_prefix_groups(rows, keep):
            if not score_on_prefix(model, rows, keep, prefix_len, group, batch_size, pad_id, logprobs):
                break  # the model takes no cache: every other input goes the full way
        score_full(model, rows, keep, [i for i in range(len(rows)) if i not in logprobs], batch_size, pad_id,
                   logprobs)
    scores = []
    for row, cont in encoded:
        lp = logprobs[row]
        positions = lp[lp.shape[0] - len(cont):]
        scores.append(float(positions.gather(-1, torch.tensor(cont).unsqueeze(-1)).sum()))
    return scores


def generate_replies(model, tokenizer, prompts: list[str], batch_size: int = 8, max_new_tokens: int = 32) -> list[str]:
    """Greedy no-think replies to each prompt sent as one user message in the tokenizer's chat template."""
    if not tokenizer.chat_template:
        raise UserError(f"--method generate needs a chat model; '{tokenizer.name_or_path}' has no chat template "
                        "(use --method loglik)")
    generator = TransformersGenerator(model, tokenizer)
    replies = generator.generate([[{"role": "user", "content": p}] for p in prompts],
                                 dataclasses.replace(GREEDY, max_tokens=max_new_tokens), enable_thinking=False,
                                 batch_size=batch_size)
    return [r.text for r in replies]


# -- answer extraction --


# -- results --

def accuracy_summary(outcomes: list[dict]) -> dict:
    n = len(outcomes)
    correct = sum(o["correct"] for o in outcomes)
    lo, hi = wilson_interval(correct, n)
    return {"accuracy": correct / n if n else None, "n": n, "correct": correct, "ci_low": lo, "ci_high": hi,
            "extraction_failures": sum(o["predicted"] is None for o in outcomes)}


def score_items(model, tokenizer, items: list[Item], examples: dict, format: str, method: str,
                batch_size: int = 8, max_new_tokens: int = 32) -> list[dict]:
    """Per-item outcomes: id, subject, gold, predicted (None = extraction failure), correct, and the evidence."""
    prompts = [build_prompt(it, examples.get(it.subject, []), format) for it in items]
    outcomes = []
    if method == "loglik":
        requests = [(p, f" {letter}") for p, it in zip(prompts, items) for letter in it.options]
        scores = iter(continuation_logprobs(model, tokenizer, requests, batch_size))
        for it in items:
            lls = {letter: next(scores) for letter in it.options}
            best = max(lls.values())
            predicted = next(letter for letter, v in lls.items() if v == best)  # ties: first letter, as lm-eval
            outcomes.append({"id": it.id, "subject": it.subject, "gold": it.answer, "predicted": predicted,
                             "correct": predicted == it.answer, "logprobs": lls})
    else:
        replies = generate_replies(model, tokenizer, prompts, batch_size, max_new_tokens)
        for it, reply in zip(items, replies):
            predicted = extract_choice(reply, "".join(it.options))
            outcomes.append({"id": it.id, "subject": it.subject, "gold": it.answer, "predicted": predicted,
                             "correct": predicted == it.answer, "output": reply})
    return outcomes


def run_benchmark(model: str, adapter: str | None, path: str, format: str, method: str, shots: int,
                  dev_path: str | None, output: Path, batch_size: int = 8, max_new_tokens: int = 32,
                  name: str | None = None, arm: str | None = None, kind: str = "medical",
                  subjects: list[str] | None = None) -> dict:
    """Load the model, score the benchmark, write the result JSON (docs/run-directory.md) and return it.

    `arm` names the model in tables and tests (e.g. the comparison arm it belongs to); default model+adapter.
    `kind` (medical|general) is recorded for the report; `subjects` keeps only those subjects."""
    from medtune.modeling import load_model, resolve_base_model

    if format not in FORMATS:
        raise UserError(f"unknown benchmark format '{format}'; choose one of {', '.join(FORMATS)}")
    if method not in METHODS:
        raise UserError(f"unknown scoring method '{method}'; choose one of {', '.join(METHODS)}")
    if shots < 0:
        raise UserError(f"--shots must be 0 or more, not {shots}")
    started = time.perf_counter()
    items, rejected = load_items(path, format)
    if subjects is not None:
        items = only_subjects(items, subjects, path)
    dev_items = None
    if dev_path is not None:
        dev_items, dev_rejected = load_items(dev_path, format)
        rejected += dev_rejected
    examples, items = select_shots(items, dev_items, shots, dev_path or path)
    if not items:
        raise UserError(f"{path}: no item left to score ({len(rejected)} rejected"
                        + (f", {shots} per subject used as examples)" if shots else ")"))
    lm, tokenizer = load_model(resolve_base_model(model), adapter)
    outcomes = score_items(lm, tokenizer, items, examples, format, method, batch_size, max_new_tokens)
    subjects = {}
    for subject in sorted({o["subject"] for o in outcomes}):
        subjects[subject] = accuracy_summary([o for o in outcomes if o["subject"] == subject])
    result = {
        "benchmark": name or Path(path).stem, "kind": kind, "subjects_selected": subjects,
        "format": format, "method": method, "shots": shots,
        "arm": arm, "model": model, "adapter": adapter, "data": str(Path(path).resolve()),
        "dev": str(Path(dev_path).resolve()) if dev_path else None,
        **accuracy_summary(outcomes),
        "multi_answer_items": sum(len(it.answer) > 1 for it in items),
        "subjects": subjects, "rejected": rejected,
        "seconds": round(time.perf_counter() - started, 3),
        "items": outcomes,
    }
    write_json(output, result)
    return result


def only_subjects(items: list[Item], subjects: list[str], where) -> list[Item]:
    """The items of these subjects; every named subject must exist (a typo would silently score nothing)."""
    present = {it.subject for it in items}
    unknown = [s for s in subjects if s not in present]
    if unknown:
        raise UserError(f"{where}: no subject {', '.join(map(repr, unknown))}; it has {', '.join(sorted(present))}")
    return [it for it in items if it.subject in set(subjects)]


def result_label(result: dict) -> str:
    model = result.get("arm") or result["model"] + (f"+{result['adapter']}" if result.get("adapter") else "")
    return f"{model} ({result['method']}, {result['shots']}-shot)"


def significance(results: list[dict]) -> dict:
    """Exact McNemar test between every two results scored on the same data (paired by item id)."""
    tests = []
    for a, b in combinations(results, 2):
        if (a["format"], a["data"]) != (b["format"], b["data"]):
            continue
        outcome_a = {o["id"]: o["correct"] for o in a["items"]}
        outcome_b = {o["id"]: o["correct"] for o in b["items"]}
        common = [i for i in outcome_a if i in outcome_b]
        if not common:
            continue
        test = mcnemar([outcome_a[i] for i in common], [outcome_b[i] for i in common])
        tests.append({"benchmark": a["benchmark"], "a": result_label(a), "b": result_label(b),
                      "accuracy_a": sum(outcome_a[i] for i in common) / len(common),
                      "accuracy_b": sum(outcome_b[i] for i in common) / len(common), **test,
                      "unpaired_items": len(outcome_a) + len(outcome_b) - 2 * len(common)})
    return {"test": "exact two-sided McNemar on the items both results scored", "tests": tests}


def format_summary(result: dict) -> str:
    def row(name, s):
        acc = "  n/a" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
        return (f"{name:<32} {acc}  [{s['ci_low']:.3f}, {s['ci_high']:.3f}]  {s['correct']:>5}/{s['n']:<5}"
                f"  {s['extraction_failures']:>5}")

    lines = [f"{result['benchmark']}: {result['method']}, {result['shots']}-shot, {result_label(result)}",
             f"{'subject':<32} {'acc':>5}  {'95% Wilson':<16}  {'correct':>11}  {'failed':>5}"]
    lines += [row(name, s) for name, s in result["subjects"].items()]
    lines.append(row("overall", result))
    if result["multi_answer_items"] and result["method"] == "loglik":
        lines.append(f"{result['multi_answer_items']} multi-answer item(s) are scored wrong under loglik "
                     "(one letter cannot be a set); use --method generate for them")
    if result["rejected"]:
        lines.append(f"{len(result['rejected'])} row(s) rejected (listed under 'rejected' in the result)")
    return "\n".join(lines)
