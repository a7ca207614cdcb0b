"""Rubric sets in HealthBench's published JSONL layout, and its meta-evaluation layout (physician labels).

A rubric set, one example per line, read as is (HealthBench's files and medtune's own data/rubrics/*.jsonl):
    {"prompt_id": "...",                                  optional; default <file stem>-<line>
     "prompt": [{"role": "user", "content": "..."}, ...], a conversation ending with the user's turn
     "rubrics": [{"criterion": "...", "points": 5, "tags": ["axis:accuracy"]}, ...],
     "example_tags": ["theme:emergency_referrals"],       optional
     "ideal_completions_data": {"ideal_completion": "..."} optional (or null)}
Points are signed: a negative criterion is something the answer must not do. An example needs at least one
positive criterion (its score is met points over the sum of positive points).

The meta-evaluation layout (HealthBench's physician-labelled grades), one criterion per line:
    {"prompt": [...], "completion": "...", "rubric": "criterion text", "binary_labels": [true, false, ...],
     "category": "...", "prompt_id": "...", "completion_id": "..."}
Bad rows are returned as {file, line, reason}, never guessed; a file with no usable row is a UserError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medtune.data.questions import InputFileError, RowError, iter_rows, keep_rows
from medtune.errors import UserError

ROLES = ("system", "developer", "user", "assistant")


@dataclass(frozen=True)
class Criterion:
    criterion: str
    points: float
    tags: tuple[str, ...] = ()


@dataclass
class RubricExample:
    id: str
    prompt: list[dict]
    """The conversation so far, ending with the user's turn: what the answering model sees."""
    rubrics: list[Criterion]
    example_tags: list[str] = field(default_factory=list)
    ideal_completion: str | None = None
    line: int = 0


@dataclass
class MetaRow:
    """One criterion of one completion with the physicians' verdicts on it."""

    id: str
    prompt: list[dict]
    completion: str
    criterion: str
    labels: list[bool]
    category: str | None = None
    line: int = 0
    points: float = 1.0
    """Shown to the grader with the criterion; the layout has none unless a row gives `points`."""


def conversation(obj: dict, key: str = "prompt") -> list[dict]:
    messages = obj.get(key)
    if not isinstance(messages, list) or not messages:
        raise RowError(f"{key}: expected a non-empty list of messages")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RowError(f"{key}[{k}]: expected {{role: {'|'.join(ROLES)}, content: text}}")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise RowError(f"{key}: the last message must be the user's (the turn the model answers), not "
                       f"{out[-1]['role']!r}")
    return out


def _criterion(c, k: int) -> Criterion:
    if not isinstance(c, dict):
        raise RowError(f"rubrics[{k}]: expected an object with criterion, points, tags")
    text, points, tags = c.get("criterion"), c.get("points"), c.get("tags", [])
    if not isinstance(text, str) or not text.strip():
        raise RowError(f"rubrics[{k}].criterion: missing or empty")
    if isinstance(points, bool) or not isinstance(points, (int, float)) or points == 0:
        raise RowError(f"rubrics[{k}].points: expected a non-zero number, got {points!r}")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RowError(f"rubrics[{k}].tags: expected a list of strings")
    return Criterion(text.strip(), float(points), tuple(tags))


def rubric_example(obj: dict, line: int, stem: str) -> RubricExample:
    """One row of HealthBench's layout, or RowError naming the field."""
    prompt = conversation(obj)
    rubrics = obj.get("rubrics")
    if not isinstance(rubrics, list) or not rubrics:
        raise RowError("rubrics: expected a non-empty list of {criterion, points, tags}")
    criteria = [_criterion(c, k) for k, c in enumerate(rubrics)]
    if not any(c.points > 0 for c in criteria):
        raise RowError("rubrics: no criterion with positive points, so the score is undefined")
    tags = obj.get("example_tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RowError("example_tags: expected a list of strings")
    ideal = obj.get("ideal_completions_data")
    if ideal is not None and not (isinstance(ideal, dict) and isinstance(ideal.get("ideal_completion"), str)):
        raise RowError("ideal_completions_data: expected null or an object with an ideal_completion text")
    return RubricExample(str(obj.get("prompt_id") or f"{stem}-{line}"), prompt, criteria, list(tags),
                         ideal["ideal_completion"] if ideal and ideal["ideal_completion"].strip() else None, line)


def _rows(path: str | Path, read) -> tuple[list, list[dict]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"rubric file not found: {path} (JSONL in HealthBench's layout)")
    try:
        items, rejected = keep_rows(path, iter_rows(path), lambda obj, line: read(obj, line, path.stem), "prompt_id",
                                    "row")
    except InputFileError as e:  # a line that is not JSON at all: the file is not in this layout
        raise UserError(str(e)) from None
    return items, rejected


def load_rubric_set(path: str | Path, max_examples: int | None = None) -> tuple[list[RubricExample], list[dict]]:
    """The examples (the first `max_examples` usable ones) and the rejected rows ({file, line, reason})."""
    examples, rejected = _rows(path, rubric_example)
    return examples[:max_examples], rejected


def _meta_row(obj: dict, line: int, stem: str) -> MetaRow:
    prompt = conversation(obj)
    completion, criterion, labels = obj.get("completion"), obj.get("rubric"), obj.get("binary_labels")
    if not isinstance(completion, str):
        raise RowError("completion: expected the graded answer's text")
    if not isinstance(criterion, str) or not criterion.strip():
        raise RowError("rubric: expected the criterion's text")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, bool) for x in labels):
        raise RowError("binary_labels: expected a non-empty list of true/false (one per physician)")
    points = obj.get("points", 1.0)
    if isinstance(points, bool) or not isinstance(points, (int, float)) or points == 0:
        raise RowError(f"points: expected a non-zero number, got {points!r}")
    row_id = f"{obj.get('prompt_id') or stem}/{obj.get('completion_id') or line}/{line}"
    return MetaRow(row_id, prompt, completion, criterion.strip(), labels, obj.get("category"), line, float(points))


def load_meta_eval(path: str | Path, max_rows: int | None = None) -> tuple[list[MetaRow], list[dict]]:
    """Physician-labelled criteria (HealthBench's meta-evaluation layout) and the rejected rows."""
    rows, rejected = _rows(path, _meta_row)
    return rows[:max_rows], rejected
