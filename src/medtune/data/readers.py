"""Reading dialogue records from files or the hub, and validating each into a conversation.

Readers stream: one record at a time from JSONL (optionally .gz), JSON arrays, Parquet, CSV, or a
hub dataset id, each tagged with its source and 1-based line (JSONL, CSV) or record number (JSON
arrays, Parquet, hub). A record that cannot be read or validated is never an exception: it comes
back with the reason, so the caller can list it in rejected.jsonl and go on.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson

from medtune.config import DataConfig, TrainSource
from medtune.errors import UserError

USER, ASSISTANT, SYSTEM = "user", "assistant", "system"
SHAREGPT_ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT, "chatgpt": ASSISTANT,
                  "model": ASSISTANT, "bot": ASSISTANT, "system": SYSTEM}
MESSAGES_ROLES = {"user": USER, "assistant": ASSISTANT, "system": SYSTEM}


class InputError(UserError):
    """An input that cannot be read at all (missing, unreadable, wrong kind of file)."""


@dataclass(slots=True)
class RawRecord:
    source: str
    line: int
    """1-based line (JSONL, CSV) or 1-based record number (JSON array, Parquet, hub)."""
    data: Any = None
    error: str | None = None
    text: str | None = None
    """The raw line, kept only for records that failed to parse (for rejected.jsonl)."""


@dataclass(slots=True)
class Conversation:
    system: str | None
    turns: list[tuple[str, str]]
    """(user, assistant) pairs in order."""
    source: str
    line: int

    def key(self) -> bytes:
        """Exact-duplicate identity: the same system prompt and the same turns."""
        return orjson.dumps([self.system, self.turns])

    def messages(self, upto: int | None = None, with_last_answer: bool = True) -> list[dict]:
        """Chat-template messages for turns[:upto] (all when None); the last answer optional."""
        turns = self.turns if upto is None else self.turns[:upto]
        msgs = [{"role": SYSTEM, "content": self.system}] if self.system is not None else []
        for i, (u, a) in enumerate(turns):
            msgs.append({"role": USER, "content": u})
            if with_last_answer or i < len(turns) - 1:
                msgs.append({"role": ASSISTANT, "content": a})
        return msgs


class RecordError(ValueError):
    """A record that is readable but not a valid conversation; the message is the reason."""


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+", re.ASCII)
"""`owner/name` in the hub's alphabet (letters, digits, `-`, `_`, `.`): no drive letter, backslash, `~` or glob."""


def is_hub_id(spec: str | Path) -> bool:
    """A hub dataset id: `owner/name` (HUB_ID) that is not on this machine and does not end in a data file's
    extension (.json, .jsonl, .parquet, .csv). A local path always wins: `data/train` that exists is local."""
    text = str(spec)
    return HUB_ID.fullmatch(text) is not None and not os.path.exists(text) and _kind(text) is None


def expand_inputs(specs: list[str], key: str = "data.train_files") -> list[str]:
    """Local paths (globs expanded, sorted) and hub ids, in the order given; a missing path is an error."""
    out = []
    for spec in specs:
        if any(ch in spec for ch in "*?["):
            matches = sorted(glob.glob(os.path.expanduser(spec)))
            if not matches:
                raise InputError(f"{key}: the pattern '{spec}' matches no file")
            out.extend(matches)
        elif os.path.exists(os.path.expanduser(spec)):
            p = os.path.expanduser(spec)
            if os.path.isdir(p):
                files = sorted(str(f) for f in Path(p).iterdir() if f.is_file() and _kind(str(f)) is not None)
                if not files:
                    raise InputError(f"{key}: the directory '{spec}' holds no .jsonl/.json/.parquet/.csv file")
                out.extend(files)
            else:
                out.append(p)
        elif is_hub_id(spec):
            out.append(spec)
        else:
            raise InputError(f"{key}: '{spec}' does not exist (and is not a hub dataset id like owner/name)")
    return out


@dataclass
class Source:
    """One data.train_files (or data.val_files) entry: its files and the reading settings that apply to them."""

    index: int
    """Position among the sources: the train_files entries in order, then the val_files entries."""
    spec: str
    """The entry as written (path, glob or hub id)."""
    files: list[str]
    data: DataConfig
    """data.* with this source's own format, columns, encoding and system_prompt applied."""
    role: str = "train"
    weight: float | None = None
    max_samples: int | None = None


def expand_sources(data: DataConfig) -> list[Source]:
    """Every train_files entry, then every val_files entry, expanded to files and with its own reading settings."""
    sources = []
    for entry in data.train_files:
        if isinstance(entry, str):
            entry = TrainSource(path=entry)
        own = {k: getattr(entry, k) for k in ("format", "columns", "encoding", "system_prompt")
               if getattr(entry, k) is not None}
        sources.append(Source(len(sources), entry.path, expand_inputs([entry.path], "data.train_files"),
                              dataclasses.replace(data, **own), "train", entry.weight, entry.max_samples))
    for spec in data.val_files:
        sources.append(Source(len(sources), spec, expand_inputs([spec], "data.val_files"), data, "val"))
    return sources


def _kind(path: str) -> str | None:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet"),
                      (".csv", "csv")):
        if name.endswith(ext):
            return kind
    return None


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def iter_raw_records(spec: str, cfg: DataConfig) -> Iterator[RawRecord]:
    """Every record of one input, in order; blank lines are skipped (they are not records)."""
    if not os.path.exists(spec):
        yield from _iter_hub(spec, cfg)
        return
    kind = "csv" if cfg.format == "csv" else _kind(spec)
    if kind is None:
        raise InputError(f"{spec}: unknown file type; use .jsonl, .json, .parquet or .csv (optionally .gz)")
    try:
        if kind == "jsonl":
            yield from _iter_jsonl(spec, cfg.encoding)
        elif kind == "json":
            yield from _iter_json(spec, cfg.encoding)
        elif kind == "parquet":
            yield from _iter_parquet(spec)
        else:
            yield from _iter_csv(spec, cfg)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"{spec}: cannot be read: {e}") from None


def _decode(raw: bytes, encoding: str) -> str:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise RecordError(f"undecodable bytes: not valid {encoding} at byte {e.start} of the line") from None
    return text


def _iter_jsonl(path: str, encoding: str) -> Iterator[RawRecord]:
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # UTF-8 byte order mark
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw) if utf8 else orjson.loads(_decode(raw, encoding))
            except RecordError as e:
                yield RawRecord(path, lineno, error=str(e), text=raw[:200].decode(encoding, "replace"))
                continue
            except orjson.JSONDecodeError as e:
                if utf8:
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError as de:
                        yield RawRecord(path, lineno, error=f"undecodable bytes: not valid UTF-8 at byte {de.start} "
                                        "of the line", text=raw[:200].decode("utf-8", "replace"))
                        continue
                yield RawRecord(path, lineno, error=f"invalid JSON: {e}", text=raw[:200].decode(encoding, "replace"))
                continue
            yield RawRecord(path, lineno, data=data)


def _iter_json(path: str, encoding: str) -> Iterator[RawRecord]:
    with _open_binary(path) as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    head = raw.lstrip()[:1]
    if head != b"[":
        # Many ".json" files are JSON lines; read them as such.
        yield from _iter_jsonl(path, encoding)
        return
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: undecodable bytes: not valid {encoding} at byte {e.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    for i, item in enumerate(data, 1):
        yield RawRecord(path, i, data=item)


def _iter_parquet(path: str) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise InputError(f"{path}: not a readable Parquet file: {e}") from None
    n = 0
    for batch in pf.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            n += 1
            yield RawRecord(path, n, data=row)


def _iter_csv(path: str, cfg: DataConfig) -> Iterator[RawRecord]:
    # surrogateescape keeps undecodable bytes visible as lone surrogates, so one bad row is rejected
    # instead of the whole file failing.
    with _open_binary(path) as fb:
        f = io.TextIOWrapper(fb, encoding=cfg.encoding, errors="surrogateescape", newline="")
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        header = [h.strip() for h in header]
        wanted = {role: col for role, col in cfg.columns.items()}
        missing = [f"{role}->'{col}'" for role, col in wanted.items() if col not in header]
        if missing:
            raise InputError(f"{path}: CSV header {header} lacks the column(s) named in data.columns: "
                             f"{', '.join(missing)}")
        index = {role: header.index(col) for role, col in wanted.items()}
        start = reader.line_num + 1
        for row in reader:
            lineno, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            bad = next((c for c in row if _has_surrogate(c)), None)
            if bad is not None:
                yield RawRecord(path, lineno, error=f"undecodable bytes: not valid {cfg.encoding}",
                                text=bad.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "replace"))
                continue
            if len(row) != len(header):
                yield RawRecord(path, lineno, error=f"CSV row has {len(row)} fields, the header has {len(header)}",
                                text=",".join(row)[:200])
                continue
            yield RawRecord(path, lineno, data={"__csv__": {role: row[i] for role, i in index.items()}})


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _iter_hub(spec: str, cfg: DataConfig) -> Iterator[RawRecord]:
    import datasets

    try:
        ds = datasets.load_dataset(spec, split=cfg.hub_split, streaming=True)
        for i, row in enumerate(ds, 1):
            yield RawRecord(spec, i, data=row)
    except Exception as e:  # network, auth, missing dataset: one message naming the input
        raise InputError(f"{spec}: cannot stream this hub dataset (split '{cfg.hub_split}'): "
                         f"{type(e).__name__}: {e}") from None


# --- validation -------------------------------------------------------------------------------------


def record_object(rec: RawRecord) -> dict:
    """The record's JSON object, or RecordError when the line did not parse or holds something else."""
    if rec.error:
        raise RecordError(rec.error)
    if not isinstance(rec.data, dict):
        raise RecordError(f"record is a JSON {type(rec.data).__name__}, not an object")
    return rec.data


def to_conversation(rec: RawRecord, cfg: DataConfig, forbidden: tuple[str, ...] = ()) -> Conversation:
    """Validate one raw record into a Conversation, or raise RecordError with the reason and field."""
    data = record_object(rec)
    if "__csv__" in data:
        row = data["__csv__"]
        messages = []
        if row.get(SYSTEM, "").strip():
            messages.append((SYSTEM, row[SYSTEM], f"column '{cfg.columns[SYSTEM]}'"))
        messages.append((USER, row[USER], f"column '{cfg.columns[USER]}'"))
        messages.append((ASSISTANT, row[ASSISTANT], f"column '{cfg.columns[ASSISTANT]}'"))
    else:
        fmt = cfg.format if cfg.format != "auto" else _detect(data)
        messages = {"sharegpt": _sharegpt, "messages": _messages, "alpaca": _alpaca}[fmt](data)
    return _check(messages, cfg, forbidden, rec)


def _detect(data: dict) -> str:
    if "conversations" in data:
        return "sharegpt"
    if "messages" in data:
        return "messages"
    if "instruction" in data and "output" in data:
        return "alpaca"
    raise RecordError("missing field: expected 'conversations' (ShareGPT), 'messages' (OpenAI) or "
                      f"'instruction'+'output' (Alpaca); found keys {sorted(data)[:8]}")


def _turn_list(data: dict, key: str) -> list:
    if key not in data:
        raise RecordError(f"missing field '{key}'")
    turns = data[key]
    if not isinstance(turns, list):
        raise RecordError(f"field '{key}' is not a list (got {type(turns).__name__})")
    return turns


def _sharegpt(data: dict) -> list[tuple[str, Any, str]]:
    system = [(SYSTEM, data["system"], "system")] if data.get("system") not in (None, "") else []
    return system + _role_turns(data, "conversations", "from", "value", SHAREGPT_ROLES, "human, gpt or system")


def _messages(data: dict) -> list[tuple[str, Any, str]]:
    return _role_turns(data, "messages", "role", "content", MESSAGES_ROLES, "user, assistant or system")


def _role_turns(data: dict, key: str, role_key: str, text_key: str, roles: dict, expected: str):
    """(role, text, where) for each turn of a list of {role_key: ..., text_key: ...} objects."""
    out = []
    for i, turn in enumerate(_turn_list(data, key)):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RecordError(f"{where} is not an object")
        for k in (role_key, text_key):
            if k not in turn:
                raise RecordError(f"missing field '{where}.{k}'")
        role = roles.get(turn[role_key]) if isinstance(turn[role_key], str) else None
        if role is None:
            raise RecordError(f"unknown role {turn[role_key]!r} in '{where}.{role_key}' (expected {expected})")
        out.append((role, turn[text_key], f"{where}.{text_key}"))
    return out


def _alpaca(data: dict) -> list[tuple[str, Any, str]]:
    out = []
    if data.get("system") not in (None, ""):
        out.append((SYSTEM, data["system"], "system"))
    history = data.get("history") or []
    if not isinstance(history, list):
        raise RecordError("field 'history' is not a list of [question, answer] pairs")
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RecordError(f"history[{i}] is not a [question, answer] pair")
        out.append((USER, pair[0], f"history[{i}][0]"))
        out.append((ASSISTANT, pair[1], f"history[{i}][1]"))
    for k in ("instruction", "output"):
        if k not in data:
            raise RecordError(f"missing field '{k}'")
    instruction, extra = data["instruction"], data.get("input")
    if isinstance(instruction, str) and isinstance(extra, str) and extra.strip():
        instruction = f"{instruction}\n{extra}"
    out.append((USER, instruction, "instruction"))
    out.append((ASSISTANT, data["output"], "output"))
    return out


def control_texts(tokenizer) -> tuple[str, ...]:
    """The tokenizer's added tokens (longest first): text that must not appear inside a message."""
    return tuple(sorted({t.content for t in tokenizer.added_tokens_decoder.values()}, key=len, reverse=True))


def role_turns(data: dict, key: str, layout: str) -> list[tuple[str, Any, str]]:
    """(role, text, where) for the turns under `key`, in the ShareGPT (`from`/`value`) or OpenAI messages layout."""
    if layout == "sharegpt":
        return _role_turns(data, key, "from", "value", SHAREGPT_ROLES, "human, gpt or system")
    return _role_turns(data, key, "role", "content", MESSAGES_ROLES, "user, assistant or system")


def check_conversation(messages: list[tuple[str, Any, str]], cfg: DataConfig, forbidden: tuple[str, ...],
                       rec: RawRecord) -> Conversation:
    """(role, text, where) triples validated into a Conversation by prepare's rules, or RecordError."""
    return _check(messages, cfg, forbidden, rec)


def _check(messages: list[tuple[str, Any, str]], cfg: DataConfig, forbidden: tuple[str, ...],
           rec: RawRecord) -> Conversation:
    system = None
    turns: list[tuple[str, str]] = []
    pending_user = None
    for i, (role, content, where) in enumerate(messages):
        if not isinstance(content, str):
            raise RecordError(f"field '{where}' is not text (got {type(content).__name__})")
        content = content.strip()
        if not content:
            raise RecordError(f"empty text in '{where}'")
        for token in forbidden:
            if token in content:
                raise RecordError(f"field '{where}' contains the tokenizer's control text {token!r}")
        if role == SYSTEM:
            if i != 0:
                raise RecordError(f"wrong turn order: system turn at '{where}' (only the first turn may be system)")
            system = content
        elif role == USER:
            if pending_user is not None:
                raise RecordError(f"wrong turn order: two user turns in a row at '{where}'")
            pending_user = content
        else:
            if pending_user is None:
                raise RecordError(f"wrong turn order: assistant turn at '{where}' does not follow a user turn")
            turns.append((pending_user, content))
            pending_user = None
    if pending_user is not None:
        raise RecordError("ends with a user turn: there is no answer to train on")
    if not turns:
        raise RecordError("no user/assistant turn pair")
    if system is None and cfg.system_prompt:
        system = cfg.system_prompt
    return Conversation(system, turns, rec.source, rec.line)
