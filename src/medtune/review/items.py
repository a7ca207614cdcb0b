"""What clinicians review: the evaluate stage's answers, grouped into items of two or more models' answers.

An item is one question answered by several arms:
- `compare:<question_id>` from eval/compare/answers.jsonl (the everyday questions of the comparison);
- `consult:<name>:<case_id>:<turn>` from eval/consultations/<name>_answers.jsonl: the case and questions so
  far as `context`, and for each arm its OWN earlier answers (`history`), as the model was given them;
- `safety:<id>` from eval/safety_answers.jsonl (the red-flag prompts).
Only answer text is kept (thinking is split off again in case a stored answer still holds some), and an item
needs at least two arms with a non-empty answer. Items and arms keep the order of the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medtune.data.questions import iter_rows
from medtune.errors import UserError
from medtune.text import answer_only


@dataclass
class Answer:
    arm: str
    text: str
    history: list[str] = field(default_factory=list)
    """Consultations: this arm's own earlier answers in the case (shown with the answer)."""


@dataclass
class Item:
    id: str
    kind: str
    """compare | consult | safety"""
    question: str
    answers: list[Answer]
    context: list[str] = field(default_factory=list)
    """Consultations: the case and the earlier questions, in order (the last question is `question`)."""
    prompts: dict[str, list[dict]] = field(default_factory=dict)
    """The conversation each arm answered, as chat messages (the export's prompt)."""

    def answer(self, arm: str) -> Answer:
        return next(a for a in self.answers if a.arm == arm)


def read_rows(path: Path) -> list[dict]:
    """A JSONL file's objects; a bad line is an error naming file and line (data.questions.iter_rows)."""
    return [row for _, row in iter_rows(path)]


def load_items(run_dir: str | Path) -> list[Item]:
    """Every reviewable item of the run, comparison first, then consultations, then safety prompts."""
    run = Path(run_dir)
    items: list[Item] = []
    compare = run / "eval" / "compare" / "answers.jsonl"
    if compare.is_file():
        items += _group(read_rows(compare), "compare", lambda r: str(r["question_id"]), lambda r: r["question"])
    consult_dir = run / "eval" / "consultations"
    for path in sorted(consult_dir.glob("*_answers.jsonl")) if consult_dir.is_dir() else []:
        name = path.name.removesuffix("_answers.jsonl")
        items += _consultation_items(name, read_rows(path))
    safety = run / "eval" / "safety_answers.jsonl"
    if safety.is_file():
        items += _group(read_rows(safety), "safety", lambda r: str(r["id"]), lambda r: r["prompt"])
    return [i for i in items if len(i.answers) >= 2]


def require_items(run_dir: str | Path) -> list[Item]:
    """load_items, or a UserError saying what the run lacks (every review command starts here)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    items = load_items(run)
    if not items:
        raise UserError(f"{run}: no answers to review: the run needs eval/compare/answers.jsonl, "
                        "eval/consultations/<name>_answers.jsonl or eval/safety_answers.jsonl with two models or "
                        "more (run `medtune evaluate` with several arms)")
    return items


def _group(rows: list[dict], kind: str, key, question) -> list[Item]:
    items: dict[str, Item] = {}
    for r in rows:
        text = answer_only(r.get("answer") or "").strip()
        if not text:
            continue
        k = key(r)
        item = items.setdefault(k, Item(f"{kind}:{k}", kind, question(r), []))
        if all(a.arm != r["arm"] for a in item.answers):
            item.answers.append(Answer(r["arm"], text))
            item.prompts[r["arm"]] = [{"role": "user", "content": item.question}]
    return list(items.values())


def _consultation_items(name: str, rows: list[dict]) -> list[Item]:
    items: dict[tuple, Item] = {}
    for r in rows:
        text = answer_only(r.get("answer") or "").strip()
        messages = [m for m in r.get("messages") or [] if isinstance(m, dict)]
        if not text or not messages:
            continue
        key = (str(r["case_id"]), int(r["turn"]))
        context = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
        item = items.setdefault(key, Item(f"consult:{name}:{key[0]}:{key[1]}", "consult", context[-1], [],
                                          context=context[:-1]))
        if all(a.arm != r["arm"] for a in item.answers):
            history = [answer_only(str(m.get("content", ""))) for m in messages if m.get("role") == "assistant"]
            item.answers.append(Answer(r["arm"], text, history))
            item.prompts[r["arm"]] = messages
    return list(items.values())
