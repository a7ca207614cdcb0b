"""Preference (DPO) and unpaired (KTO) data for the align stage: readers, validation and accounting.

Record layouts, detected per record:
- TRL: `prompt` / `chosen` / `rejected`, each text or a list of chat messages (the prompt may hold a system
  message and earlier turns; chosen and rejected hold one assistant message);
- ShareGPT: `conversations` (ending with a human turn) + `chosen` / `rejected` (text or a `from`/`value` turn);
- OpenAI messages: `messages` (ending with the chosen assistant answer) + `rejected_response`;
- `question` / `response_chosen` / `response_rejected` (optional `system`);
- KTO: `prompt` / `completion` / `label` (true = desirable).

Every record read is kept or listed in `align/rejected.jsonl` with file, line and reason:
read == kept + rejected + duplicates + too_long + unused (beyond align.max_samples). Conversations are
validated by prepare's rules (readers.check_conversation), and a missing system prompt gets
data.system_prompt, as in SFT, so the prompt is the one the SFT model answers.

DPO and KTO rows are tokenized here with prepare's rule: prompt = the ids of `apply_chat_template(history,
add_generation_prompt=True, enable_thinking=model.enable_thinking)`, exactly the inference prompt;
completion = the answer's ids + the end-of-turn ids (`<|im_end|>`), exactly SFT's trained tokens. (TRL's own
tokenization starts the completion where the prompt and prompt+answer renders diverge, which drops the
prompt's last token for templates whose generation prompt ends inside a token, e.g. `assistant: `, and adds
the template's newline after `<|im_end|>` to the completion.) tests/test_align.py checks the ids the trainers train on.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from medtune.config import Config
from medtune.data.readers import (
    ASSISTANT,
    SYSTEM,
    USER,
    Conversation,
    InputError,
    RawRecord,
    RecordError,
    check_conversation,
    control_texts,
    expand_inputs,
    iter_raw_records,
    record_object,
    role_turns,
)
from medtune.data.template import ConversationTemplate
from medtune.errors import UserError


class AlignDataError(UserError):
    """The align data cannot be used (no usable record, unreadable input)."""


@dataclass
class AlignExample:
    conv: Conversation
    """The history and the final question, whose answer is the chosen (or the KTO) completion."""
    rejected: str | None = None
    label: bool | None = None
    """KTO records only: is the completion desirable."""

    @property
    def prompt(self) -> list[dict]:
        return self.conv.messages(with_last_answer=False)

    @property
    def chosen(self) -> str:
        return self.conv.turns[-1][1]


@dataclass
class AlignCounts:
    read: int = 0
    kept: int = 0
    rejected: int = 0
    duplicates: int = 0
    too_long: int = 0
    unused: int = 0
    rows: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)


# --- one record -> AlignExample ------------------------------------------------------------------------


def to_example(rec: RawRecord, cfg: Config, forbidden: tuple[str, ...]) -> AlignExample:
    """Validate one record of any supported layout, or raise RecordError naming the field."""
    data = record_object(rec)
    if "conversations" in data:
        turns = role_turns(data, "conversations", "sharegpt")
        if data.get("system") not in (None, ""):
            turns = [(SYSTEM, data["system"], "system")] + turns
        chosen, rejected = _one_answer(data, "chosen", "sharegpt"), _one_answer(data, "rejected", "sharegpt")
        return _pair(turns + [chosen], rejected, cfg, forbidden, rec)
    if "messages" in data:
        if "rejected_response" not in data:
            raise RecordError("missing field 'rejected_response' (a `messages` record ends with the chosen answer)")
        return _pair(role_turns(data, "messages", "messages"), (ASSISTANT, data["rejected_response"],
                                                                "rejected_response"), cfg, forbidden, rec)
    if "question" in data and "response_chosen" in data:
        system = [(SYSTEM, data["system"], "system")] if data.get("system") not in (None, "") else []
        if "response_rejected" not in data:
            raise RecordError("missing field 'response_rejected'")
        return _pair(system + [(USER, data["question"], "question"), (ASSISTANT, data["response_chosen"],
                                                                      "response_chosen")],
                     (ASSISTANT, data["response_rejected"], "response_rejected"), cfg, forbidden, rec)
    if "prompt" in data and "completion" in data:
        if not isinstance(data.get("label"), bool):
            raise RecordError("field 'label' must be true (desirable) or false (undesirable)")
        conv = check_conversation(_prompt_turns(data) + [_one_answer(data, "completion", "messages")], cfg.data,
                                  forbidden, rec)
        return AlignExample(conv, label=data["label"])
    if "prompt" in data and "chosen" in data:
        return _pair(_prompt_turns(data) + [_one_answer(data, "chosen", "messages")],
                     _one_answer(data, "rejected", "messages"), cfg, forbidden, rec)
    raise RecordError("missing fields: expected prompt/chosen/rejected, conversations + chosen/rejected, messages + "
                      "rejected_response, question/response_chosen/response_rejected, or prompt/completion/label; "
                      f"found keys {sorted(data)[:8]}")


def _prompt_turns(data: dict) -> list[tuple[str, Any, str]]:
    if isinstance(data["prompt"], list):
        return role_turns(data, "prompt", "messages")
    return [(USER, data["prompt"], "prompt")]


def _one_answer(data: dict, key: str, layout: str) -> tuple[str, Any, str]:
    """A completion given as text, as one turn object, or as a list of exactly one assistant turn."""
    if key not in data:
        raise RecordError(f"missing field '{key}'")
    value = data[key]
    if isinstance(value, dict):
        value = {key: [value]}
        turns = role_turns(value, key, layout)
    elif isinstance(value, list):
        turns = role_turns(data, key, layout)
    else:
        return ASSISTANT, value, key
    if len(turns) != 1 or turns[0][0] != ASSISTANT:
        raise RecordError(f"field '{key}' must hold exactly one assistant answer")
    return ASSISTANT, turns[0][1], f"{key}[0]" if isinstance(data[key], list) else key


def _pair(turns: list, rejected: tuple[str, Any, str], cfg: Config, forbidden, rec: RawRecord) -> AlignExample:
    conv = check_conversation(turns, cfg.data, forbidden, rec)
    if not turns or turns[-1][0] != ASSISTANT:
        raise RecordError("the conversation must end with the chosen assistant answer")
    # The rejected answer goes through the same rules, in the same position.
    other = check_conversation(turns[:-1] + [rejected], cfg.data, forbidden, rec).turns[-1][1]
    if other == conv.turns[-1][1]:
        raise RecordError("chosen and rejected answers are identical")
    return AlignExample(conv, rejected=other)


# --- files -> TRL rows -----------------------------------------------------------------------------------


def read_align_data(cfg: Config, tokenizer, files: list[str], rejected_path: Path, log=print):
    """(TRL rows, summary) from `files`; every record not kept is listed in `rejected_path`."""
    try:
        inputs = expand_inputs(files, "align.train_files")
    except InputError as e:
        raise AlignDataError(str(e)) from None
    a = cfg.align
    forbidden = control_texts(tokenizer)
    kwargs = {"enable_thinking": cfg.model.enable_thinking}
    tokens = Tokens(tokenizer, kwargs)
    counts, seen, examples = AlignCounts(), {}, []
    rejected_path.parent.mkdir(parents=True, exist_ok=True)
    with open(rejected_path, "wb") as out:
        def reject(rec, reason, what="rejected"):
            setattr(counts, what, getattr(counts, what) + 1)
            if what == "rejected":
                kind = reason.split(":")[0]
                counts.rejected_reasons[kind] = counts.rejected_reasons.get(kind, 0) + 1
            out.write(orjson.dumps({"source": rec.source, "line": rec.line, "reason": reason}) + b"\n")

        for spec in inputs:
            for rec in iter_raw_records(spec, cfg.data):
                counts.read += 1
                try:
                    ex = to_example(rec, cfg, forbidden)
                    _fits_algorithm(ex, a.algorithm)
                except RecordError as e:
                    reject(rec, str(e))
                    continue
                key = hashlib.blake2b(orjson.dumps([ex.conv.system, ex.conv.turns, ex.rejected, ex.label]),
                                      digest_size=16).digest()
                if key in seen:
                    reject(rec, f"duplicate of {seen[key]}", "duplicates")
                    continue
                seen[key] = f"{rec.source}:{rec.line}"
                if (n := tokens.length(ex)) > a.max_length:
                    reject(rec, f"too long: {n} tokens > align.max_length {a.max_length}", "too_long")
                    continue
                if a.max_samples is not None and len(examples) >= a.max_samples:
                    reject(rec, f"unused: beyond align.max_samples {a.max_samples}", "unused")
                    continue
                examples.append(ex)
    counts.kept = len(examples)
    rows = [tokens.dpo_row(ex) for ex in examples] if a.algorithm == "dpo" else \
        [row for ex in examples for row in tokens.kto_rows(ex)]
    counts.rows = len(rows)
    if not rows:
        raise AlignDataError(f"no usable {a.algorithm.upper()} record in {', '.join(inputs)}: {counts.read} read, "
                             f"see {rejected_path} for the reasons")
    summary = {**counts.__dict__, "inputs": inputs, "algorithm": a.algorithm, **length_summary(examples)}
    log(f"align: {counts.read} record(s) read, {counts.kept} kept, {counts.rejected} rejected, {counts.duplicates} "
        f"duplicate(s), {counts.too_long} too long, {counts.unused} unused -> {counts.rows} training row(s)"
        + (f"; not kept: see {rejected_path}" if counts.read > counts.kept else ""))
    return rows, summary


def _fits_algorithm(ex: AlignExample, algorithm: str) -> None:
    if algorithm == "dpo" and ex.rejected is None:
        raise RecordError("unpaired record (prompt/completion/label): DPO needs chosen and rejected answers; use "
                          "align.algorithm: kto for unpaired data")


class Tokens:
    """Prepare's token rule for align rows: the inference prompt, then the answer + end of turn."""

    def __init__(self, tokenizer, template_kwargs: dict):
        self.tokenizer, self.kwargs = tokenizer, template_kwargs
        self.end_of_turn_ids = ConversationTemplate(tokenizer, template_kwargs=template_kwargs).end_of_turn_ids

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, ex: AlignExample) -> list[int]:
        return self.encode(self.tokenizer.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False,
                                                              **self.kwargs))

    def length(self, ex: AlignExample) -> int:
        """Prompt + the longer completion, in tokens."""
        return len(self.prompt_ids(ex)) + len(self.end_of_turn_ids) + max(
            len(self.encode(ex.chosen)), len(self.encode(ex.rejected)) if ex.rejected is not None else 0)

    def dpo_row(self, ex: AlignExample) -> dict:
        return {"prompt_ids": self.prompt_ids(ex), "chosen_ids": self.encode(ex.chosen) + self.end_of_turn_ids,
                "rejected_ids": self.encode(ex.rejected) + self.end_of_turn_ids}

    def kto_rows(self, ex: AlignExample) -> list[dict]:
        """One KTO row (a prompt/completion/label record) or two (a pair: chosen desirable, rejected not)."""
        prompt = self.prompt_ids(ex)

        def row(text: str, label: bool) -> dict:
            return {"prompt_ids": prompt, "completion_ids": self.encode(text) + self.end_of_turn_ids, "label": label}

        if ex.label is not None:
            return [row(ex.chosen, ex.label)]
        return [row(ex.chosen, True), row(ex.rejected, False)]


def length_summary(examples: list[AlignExample]) -> dict:
    """Median characters of chosen and rejected answers (a preference for length shows here first)."""
    chosen = [len(e.chosen) for e in examples if e.label is not False]
    rejected = [len(e.rejected) for e in examples if e.rejected is not None] + \
               [len(e.chosen) for e in examples if e.label is False]
    return {"chosen_chars_median": statistics.median(chosen) if chosen else None,
            "rejected_chars_median": statistics.median(rejected) if rejected else None}
