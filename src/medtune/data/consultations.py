"""Multi-turn consultation cases in the CMB-Clin layout, from a local file or the hub (`clin` config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtune.data.mcq import json_records
from medtune.data.questions import RowError, keep_rows
from medtune.data.readers import is_hub_id
from medtune.errors import UserError


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    description: str
    questions: tuple[str, ...]
    references: tuple[str, ...]


HUB_CONFIG = "clin"  # load_dataset("FreedomIntelligence/CMB", "clin"), as CMB's README loads CMB-Clin


def _hub_records(dataset_id: str):
    """(row number, record) for every row of every split of the hub dataset's CMB-Clin config."""
    from datasets import load_dataset

    try:
        splits = load_dataset(dataset_id, HUB_CONFIG)
    except Exception as e:  # noqa: BLE001  (offline, unknown id, no such config: say which)
        raise UserError(f"consultation cases: could not load the hub dataset {dataset_id!r} (config "
                        f"{HUB_CONFIG!r}): {e}") from None
    line = 0
    for split in splits.values():
        for row in split:
            line += 1
            yield line, dict(row)


def load_cases(path: str | Path, max_cases: int | None = None) -> tuple[list[Case], list[dict]]:
    """Cases and rejected records ({file, line, reason}) from a CMB-Clin JSON list or JSONL file, or from a
    hub dataset id (its `clin` config; `line` is then the row number over its splits)."""
    hub = is_hub_id(path)
    path = Path(path) if not hub else str(path)
    if not hub and not path.is_file():
        raise UserError(f"consultation cases not found: {path} (a CMB-Clin JSON file, or a hub id such as "
                        "FreedomIntelligence/CMB)")
    cases, rejected = keep_rows(path, _hub_records(path) if hub else json_records(path), _case, "id:", "case")
    return cases[:max_cases], rejected


def _text(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"{where}{key}: missing or empty")
    return value.strip()


def _case(obj, line: int) -> Case:
    if isinstance(obj, RowError):
        raise obj
    if not isinstance(obj, dict):
        raise RowError("not a JSON object")
    pairs = obj.get("QA_pairs")
    if not isinstance(pairs, list) or not pairs:
        raise RowError("QA_pairs: missing or empty (a list of {question, answer})")
    questions, references = [], []
    for k, pair in enumerate(pairs, 1):
        if not isinstance(pair, dict):
            raise RowError(f"QA_pairs[{k}]: not an object")
        key = "solution" if "solution" in pair and "answer" not in pair else "answer"  # the README says `solution`
        questions.append(_text(pair, "question", f"QA_pairs[{k}]."))
        references.append(_text(pair, key, f"QA_pairs[{k}]."))
    raw_id = obj.get("id")
    return Case(id=str(raw_id) if raw_id is not None else f"line{line}", title=str(obj.get("title") or ""),
                description=_text(obj, "description", ""), questions=tuple(questions), references=tuple(references))
