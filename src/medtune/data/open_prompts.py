"""Open-ended training prompts for the align stage: GRPO with the red-flag reward, and self-made pairs scored
for safety. A JSONL (or CSV) file, one prompt a row:

    {"id": "t01", "category": "chest_pain", "prompt": "...", "urgent": true}

`prompt` is required; `urgent` (true/false) says whether the case needs urgent care now; without it the
red-flag rules decide (medtune.redflags.find_red_flags, what the chat page's banner uses); `keywords_any`
optionally lists what an urgent answer must name (default: redflags.URGENT_CARE). data/align-safety/ ships
a Chinese set written for the project: urgent cases and non-urgent look-alikes.

A row in HealthBench's rubric layout (`prompt`: a list of messages, `rubrics`: [{criterion, points, tags}];
medtune.data.rubrics reads it) is a prompt too: the conversation is what the model answers, and its criteria
go with it for the rubric grader's reward (`align.rewards: [rubric]`); e.g. data/rubrics/zh_consultations.jsonl.

Contamination guard: a prompt that the evaluate stage also asks (its safety prompts or everyday questions,
exactly or by the contamination check's n-gram coverage, medtune.data.overlap) is not trained on, and is
listed with the evaluation item it matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtune.data.overlap import OverlapIndex
from medtune.data.questions import InputFileError, iter_rows, text_field
from medtune.data.rubrics import RowError, rubric_example
from medtune.redflags import URGENT_CARE, find_red_flags


@dataclass(frozen=True)
class OpenPrompt:
    id: str
    prompt: str
    urgent: bool
    category: str | None = None
    keywords_any: tuple[str, ...] = URGENT_CARE
    source: str = ""
    """file:line, for the not-kept list and the pairs' provenance."""
    messages: tuple[dict, ...] = ()
    """A rubric row's whole conversation (ending with `prompt`, the user's last turn); empty for a plain prompt."""
    rubrics: tuple[tuple[str, float], ...] = ()
    """A rubric row's (criterion, points), for the rubric grader's reward."""


def load_open_prompts(path: str | Path) -> list[OpenPrompt]:
    """Every row of one prompt file (errors name the file, line and field)."""
    out, seen = [], {}
    for lineno, row in iter_rows(path):
        if "rubrics" in row:
            out.append(_rubric_prompt(path, lineno, row, seen))
            continue
        prompt = text_field(path, lineno, row, "prompt")
        urgent = row.get("urgent")
        if urgent is not None and not isinstance(urgent, bool):
            raise InputFileError(f"{path}:{lineno}: field 'urgent' must be true or false (or absent: the red-flag "
                                 f"rules decide), got {urgent!r}")
        keywords = row.get("keywords_any", list(URGENT_CARE))
        if not isinstance(keywords, list) or not keywords or not all(isinstance(k, str) and k for k in keywords):
            raise InputFileError(f"{path}:{lineno}: field 'keywords_any' must be a non-empty list of strings")
        pid = str(row.get("id") or f"line{lineno}")
        if pid in seen:
            raise InputFileError(f"{path}:{lineno}: id '{pid}' repeats line {seen[pid]}")
        seen[pid] = lineno
        out.append(OpenPrompt(pid, prompt, bool(find_red_flags(prompt)) if urgent is None else urgent,
                              text_field(path, lineno, row, "category", required=False), tuple(keywords),
                              f"{Path(path).resolve()}:{lineno}"))
    if not out:
        raise InputFileError(f"{path}: holds no prompts")
    return out


def _rubric_prompt(path, lineno: int, row: dict, seen: dict) -> OpenPrompt:
    try:
        example = rubric_example(row, lineno, Path(path).stem)
    except RowError as e:
        raise InputFileError(f"{path}:{lineno}: {e}") from None
    if example.id in seen:
        raise InputFileError(f"{path}:{lineno}: prompt_id '{example.id}' repeats line {seen[example.id]}")
    seen[example.id] = lineno
    prompt = example.prompt[-1]["content"]
    urgent = row.get("urgent")
    return OpenPrompt(example.id, prompt, bool(find_red_flags(prompt)) if not isinstance(urgent, bool) else urgent,
                      ",".join(example.example_tags) or None, source=f"{Path(path).resolve()}:{lineno}",
                      messages=tuple(example.prompt), rubrics=tuple((c.criterion, c.points) for c in example.rubrics))


def evaluation_prompts(safety: str | None, questions: str | None) -> list:
    """The evaluate stage's safety prompts and everyday questions, as the contamination check reads them."""
    from medtune.data.contamination import load_eval_file

    return [load_eval_file(path, kind) for path, kind in ((safety, "safety"), (questions, "questions")) if path]


def guard_prompts(prompts: list[OpenPrompt], eval_files: list) -> tuple[list[OpenPrompt], list[dict]]:
    """(prompts to train on, not kept: {source, line, kind: contaminated, reason}) against `eval_files`."""
    items = [(f, it) for f in eval_files for it in f.items]
    index = OverlapIndex([it for _, it in items])
    kept, dropped = [], []
    for p in prompts:
        matches = index.match([p.prompt])
        if not matches:
            kept.append(p)
            continue
        f, item = items[max(matches, key=lambda m: m.coverage).item]
        file, line = p.source.rsplit(":", 1)
        dropped.append({"source": file, "line": int(line), "kind": "contaminated",
                        "reason": f"the evaluate stage's {f.kind} item {item.id} ({f.path}:{item.line})"})
    return kept, dropped


def load_training_prompts(files: list[str | Path], eval_files: list,
                          max_prompts: int | None = None) -> tuple[list[OpenPrompt], list[dict], dict]:
    """The prompts of `files` minus the contaminated ones, the first `max_prompts`; (kept, not kept, summary)."""
    read = [p for path in files for p in load_open_prompts(path)]
    kept, not_kept = guard_prompts(read, eval_files)
    if max_prompts is not None:
        not_kept += [{"source": p.source.rsplit(":", 1)[0], "line": int(p.source.rsplit(":", 1)[1]), "kind": "unused",
                      "reason": f"unused: beyond the first {max_prompts}"} for p in kept[max_prompts:]]
        kept = kept[:max_prompts]
    summary = {"files": [str(Path(f).resolve()) for f in files], "read": len(read), "kept": len(kept),
               "contaminated": sum(r["kind"] == "contaminated" for r in not_kept),
               "unused": sum(r["kind"] == "unused" for r in not_kept),
               "urgent": sum(p.urgent for p in kept), "non_urgent": sum(not p.urgent for p in kept),
               "label_disagrees_with_rules": sum(p.urgent != bool(find_red_flags(p.prompt)) for p in kept),
               "guarded_against": [f.path for f in eval_files]}
    if not kept:
        raise InputFileError(f"no usable prompt in {', '.join(map(str, files))}: {len(read)} read, "
                             f"{summary['contaminated']} also asked by the evaluate stage")
    return kept, not_kept, summary
