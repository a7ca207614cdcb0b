"""Evaluation inputs: question sets, reference answers, answers and red-flag prompts, from JSONL or CSV.

Every problem is a UserError naming the file, the line and the field, so a person can fix the file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from medtune.errors import UserError


class InputFileError(UserError):
    """An evaluation input file that cannot be used as it is (the message names file, line and field)."""


@dataclass
class Question:
    id: str
    question: str
    reference: str | None = None
    topic: str | None = None


@dataclass
class SafetyPrompt:
    id: str
    category: str
    prompt: str
    expect: str
    """urgent_care (the answer must send the person to urgent care) or refuse (it must not help with harm)."""
    keywords_any: list[str] = field(default_factory=list)
    """The answer passes the rule check only if it contains at least one of these."""


SAFETY_EXPECT = ("urgent_care", "refuse")


class RowError(ValueError):
    """A row that cannot be used; the message (naming the field) is the reason recorded in `rejected`."""


def keep_rows(path, rows, read, id_key: str, what: str) -> tuple[list, list[dict]]:
    """The items `read(obj, line)` makes of (line, obj) `rows`, and the rows it rejects ({file, line, reason}:
    a RowError, or an `id` that repeats, named `id_key` in the reason); no usable item is an error naming the
    file and the first rejection."""
    items, rejected, seen = [], [], set()
    for line, obj in rows:
        try:
            item = read(obj, line)
            if item.id in seen:
                raise RowError(f"{id_key} {item.id!r} appears twice")
        except RowError as e:
            rejected.append({"file": str(path), "line": line, "reason": str(e)})
            continue
        seen.add(item.id)
        items.append(item)
    if not items:
        raise UserError(f"{path}: no usable {what} ({len(rejected)} rejected"
                        + (f"; first: line {rejected[0]['line']}: {rejected[0]['reason']})" if rejected else ")"))
    return items, rejected


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(1-based line, object) for each record of a JSONL file or a CSV file with a header row."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if any((v or "").strip() for v in row.values()):
                    yield reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}
        return
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputFileError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InputFileError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def text_field(path, lineno: int, row: dict, key: str, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InputFileError(f"{path}:{lineno}: missing or empty field '{key}'")
        return None
    if not isinstance(value, str):
        raise InputFileError(f"{path}:{lineno}: field '{key}' must be text, got {type(value).__name__}")
    return value.strip()


def _row_id(path, lineno: int, row: dict, seen: dict[str, int]) -> str:
    raw = row.get("id")
    qid = f"line{lineno}" if raw in (None, "") else str(raw)
    if qid in seen:
        raise InputFileError(f"{path}:{lineno}: id '{qid}' repeats line {seen[qid]}")
    seen[qid] = lineno
    return qid


def load_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    """Questions with `question` (required) and optional `id`, `reference`, `topic`; the first `limit`."""
    out, seen = [], {}
    for lineno, row in iter_rows(path):
        if limit is not None and len(out) == limit:
            break
        out.append(Question(_row_id(path, lineno, row, seen), text_field(path, lineno, row, "question"),
                            text_field(path, lineno, row, "reference", required=False),
                            text_field(path, lineno, row, "topic", required=False)))
    if not out:
        raise InputFileError(f"{path}: holds no questions")
    return out


def load_references(path: str | Path) -> dict[str, str]:
    """{id: reference} from rows with `id` and `reference` (a question set with references works as is)."""
    refs: dict[str, str] = {}
    seen: dict[str, int] = {}
    for lineno, row in iter_rows(path):
        if row.get("id") in (None, ""):
            raise InputFileError(f"{path}:{lineno}: missing field 'id' (matched to the answers' question_id)")
        refs[_row_id(path, lineno, row, seen)] = text_field(path, lineno, row, "reference")
    if not refs:
        raise InputFileError(f"{path}: holds no references")
    return refs


def load_answers(path: str | Path) -> list[dict]:
    """Answer records (compare/answers.jsonl): `question_id` and `answer` required, `arm` optional."""
    out = []
    for lineno, row in iter_rows(path):
        qid = row.get("question_id")
        if qid in (None, ""):
            raise InputFileError(f"{path}:{lineno}: missing field 'question_id'")
        answer = row.get("answer")
        if not isinstance(answer, str):
            raise InputFileError(f"{path}:{lineno}: field 'answer' must be text (may be empty)")
        out.append({"arm": str(row.get("arm") or "answers"), "question_id": str(qid), "answer": answer})
    return out


def load_safety_prompts(path: str | Path) -> list[SafetyPrompt]:
    out, seen = [], {}
    for lineno, row in iter_rows(path):
        expect = text_field(path, lineno, row, "expect")
        if expect not in SAFETY_EXPECT:
            raise InputFileError(f"{path}:{lineno}: field 'expect' is {expect!r}; use one of {', '.join(SAFETY_EXPECT)}")
        keywords = row.get("keywords_any")
        if not isinstance(keywords, list) or not keywords or not all(isinstance(k, str) and k for k in keywords):
            raise InputFileError(f"{path}:{lineno}: field 'keywords_any' must be a non-empty list of strings")
        out.append(SafetyPrompt(_row_id(path, lineno, row, seen), text_field(path, lineno, row, "category"),
                                text_field(path, lineno, row, "prompt"), expect, keywords))
    if not out:
        raise InputFileError(f"{path}: holds no prompts")
    return out

