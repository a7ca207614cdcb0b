"""The contamination check: every evaluation input against the data the model was trained on.

Run as: medtune evaluate contamination CONFIG [--set ...]   (also a step of `medtune evaluate CONFIG`)

Evaluation inputs (`evaluation_files`): each `evaluate.benchmarks` file (each item's stem and options), the everyday
questions (`evaluate.questions`), the red-flag prompts (`evaluate.safety`), the consultation cases
(`evaluate.consultations`) and the rubric sets' user messages (`evaluate.rubrics`). Training data
(`training_records`): the records prepare put in the training split, read again from their source files
through prepare's own readers and validation, so every flag names the training file and line. Prepare
lists those records in data/records.parquet; a run prepared before that file existed is checked against
every valid record of data.train_files (a superset), and the output says so. When the align stage has
data (align.train_files, or the pairs it made, `<run>/align/pairs.jsonl`), its records are checked too
(every string in each record). Multi-turn consultation cases (evaluate.consultations, CMB-Clin) are
checked by their description and each question.

The tests (exact, and character 8-gram coverage >= 0.8) and why: medtune.overlap.

Output: eval/contamination.json (docs/run-directory.md). With benchmark results in eval/benchmarks/, each
is also scored on its clean items (not flagged), next to the flagged ones, with Fisher's exact test
between the two disjoint groups.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from medtune.config import Config, DataConfig
from medtune.data.overlap import THRESHOLD, EvalItem, N, OverlapIndex
from medtune.data.questions import iter_rows, text_field
from medtune.data.readers import RecordError, expand_sources, iter_raw_records, to_conversation
from medtune.errors import UserError
from medtune.rundir import read_json, write_json
from medtune.stats import wilson_interval

MAX_MATCHES = 5  # training records listed per flagged item (all are counted)
TEXT_FIELDS = {"questions": "question", "safety": "prompt"}
BENCHMARK_FORMATS = ("cmmlu", "cmexam", "cmb", "medqa")


@dataclass
class EvalFile:
    kind: str
    """questions | safety | a benchmark format."""
    path: str
    items: list[EvalItem]


@dataclass
class TrainingRecord:
    source: str
    line: int
    messages: list[str]


def load_eval_file(path: str | Path, kind: str) -> EvalFile:
    """The items of one evaluation file: benchmark stems and options with their item ids, or question/prompt rows."""
    if kind in BENCHMARK_FORMATS:
        from medtune.data.mcq import load_items

        items, _ = load_items(path, kind)  # rejected rows are never scored, so they cannot be contaminated
        return EvalFile(kind, str(path), [EvalItem(it.id, int(it.source.rsplit(":", 1)[1]), it.question,
                                                   " ".join(f"{k}. {v}" for k, v in it.options.items()))
                                          for it in items])
    if kind == "cmb-clin":
        return EvalFile(kind, str(path), _consultation_items(path))
    if kind == "rubrics":
        return EvalFile(kind, str(path), _rubric_items(path))
    if kind not in TEXT_FIELDS:
        raise UserError(f"{path}: unknown evaluation file kind '{kind}'; use one of "
                        f"{', '.join([*TEXT_FIELDS, *BENCHMARK_FORMATS, 'cmb-clin', 'rubrics'])}")
    items = []
    for lineno, row in iter_rows(path):
        rid = row.get("id")
        items.append(EvalItem(f"line{lineno}" if rid in (None, "") else str(rid), lineno,
                              text_field(path, lineno, row, TEXT_FIELDS[kind])))
    return EvalFile(kind, str(path), items)


def _consultation_items(path) -> list[EvalItem]:
    """A CMB-Clin case: its description (id = case id) and each question (id = case id/q<k>)."""
    from medtune.data.consultations import load_cases
    from medtune.data.mcq import json_records

    cases, _ = load_cases(path)
    lines = {str(obj.get("id")): line for line, obj in json_records(Path(path)) if isinstance(obj, dict)}
    items = []
    for case in cases:
        line = lines.get(case.id, 0)
        if not line and case.id.startswith("line"):  # a case without an id is named after its line
            line = int(case.id.removeprefix("line"))
        items.append(EvalItem(case.id, line, case.description))
        items += [EvalItem(f"{case.id}/q{k}", line, q) for k, q in enumerate(case.questions, 1)]
    return items


def _rubric_items(path) -> list[EvalItem]:
    """A rubric example's user messages (id = prompt_id/m<k>, k counting every message from 1)."""
    from medtune.data.rubrics import load_rubric_set

    examples, _ = load_rubric_set(path)
    return [EvalItem(f"{e.id}/m{k}", e.line, m["content"]) for e in examples
            for k, m in enumerate(e.prompt, 1) if m["role"] == "user"]


def evaluation_files(cfg: Config) -> list[EvalFile]:
    """Every evaluation input the config names. A new kind of evaluation adds its files here."""
    ev = cfg.evaluate
    files = [load_eval_file(b.path, b.format) for b in ev.benchmarks]
    if ev.questions:
        files.append(load_eval_file(ev.questions, "questions"))
    if ev.safety:
        files.append(load_eval_file(ev.safety, "safety"))
    files += [load_eval_file(c.path, c.format) for c in ev.consultations]
    files += [load_eval_file(r.path, "rubrics") for r in ev.rubrics]
    return files


def exclude_files(cfg: Config) -> list[EvalFile]:
    """data.exclude resolved: a plain path takes its kind from the evaluate section that names it."""
    from medtune.config import ExcludeFile

    known = {str(Path(b.path)): b.format for b in cfg.evaluate.benchmarks}
    for key in ("questions", "safety"):
        if getattr(cfg.evaluate, key):
            known[str(Path(getattr(cfg.evaluate, key)))] = key
    known.update({str(Path(c.path)): c.format for c in cfg.evaluate.consultations})
    known.update({str(Path(r.path)): "rubrics" for r in cfg.evaluate.rubrics})
    out = []
    for entry in cfg.data.exclude:
        if isinstance(entry, ExcludeFile):
            out.append(load_eval_file(entry.path, entry.format))
        elif str(Path(entry)) in known:
            out.append(load_eval_file(entry, known[str(Path(entry))]))
        else:
            raise UserError(f"data.exclude: '{entry}' is not one of the evaluate section's files, so its layout is "
                            "unknown; write it as {path: ..., format: questions|safety|cmmlu|cmexam|cmb|medqa|cmb-clin|rubrics}")
    return out


def dialogue_texts(system: str | None, turns: list[tuple[str, str]]) -> list[str]:
    return ([system] if system else []) + [text for turn in turns for text in turn]


def training_records(cfg: Config) -> tuple[Iterator[TrainingRecord], str]:
    """The training split's records from their source files, and how they were selected (in words)."""
    data_dir = cfg.run_dir / "data"
    selected = _selected_lines(data_dir / "records.parquet")
    if selected is not None:
        named = {os.path.abspath(f) for s in expand_sources(cfg.data) if s.role == "train" for f in s.files}
        if other := sorted(set(selected) - named):
            raise UserError(f"{data_dir / 'records.parquet'}: the training split came from {', '.join(other)}, which "
                            "data.train_files no longer names; rerun `medtune prepare CONFIG` first")
    how = ("the training split listed in data/records.parquet" if selected is not None else
           "every valid record of data.train_files (data/records.parquet is missing: prepare has not run, or ran "
           "before medtune recorded its selection), a superset of what was trained on")
    return _iter_training(cfg.data, selected), how


def _selected_lines(path: Path) -> dict[str, set[int]] | None:
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["file", "line", "split"])
    out: dict[str, set[int]] = {}
    for file, line, split in zip(*(table.column(c).to_pylist() for c in ("file", "line", "split"))):
        if split == "train":
            out.setdefault(os.path.abspath(file), set()).add(line)
    return out


def _iter_training(data: DataConfig, selected: dict[str, set[int]] | None) -> Iterator[TrainingRecord]:
    for source in expand_sources(data):
        if source.role != "train":
            continue
        for file in source.files:
            lines = None if selected is None else selected.get(os.path.abspath(file), set())
            if lines is not None and not lines:
                continue
            for rec in iter_raw_records(file, source.data):
                if lines is not None and rec.line not in lines:
                    continue
                try:
                    conv = to_conversation(rec, source.data)
                except RecordError:
                    continue  # rejected by prepare: never trained on
                yield TrainingRecord(file, rec.line, dialogue_texts(conv.system, conv.turns))


def align_files(cfg: Config) -> list[str]:
    """The align stage's data: align.train_files, and the pairs it made itself (align/pairs.jsonl) when present."""
    files = list(cfg.align.train_files) if cfg.align else []
    pairs = cfg.run_dir / "align" / "pairs.jsonl"
    return files + ([str(pairs)] if pairs.is_file() else [])


def align_records(cfg: Config) -> Iterator[TrainingRecord]:
    """Every record of the align data, as every string it holds (prompts, chosen and rejected answers)."""
    for path in align_files(cfg):
        for rec in iter_raw_records(path, cfg.data):
            if rec.error is None:
                yield TrainingRecord(path, rec.line, list(_strings(rec.data)))


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def scan(files: list[EvalFile], records, n: int = N, threshold: float = THRESHOLD) -> tuple[list[dict], int]:
    """Stream training records once against all evaluation files: per file the flagged items, and the count."""
    items = [(fi, it) for fi, f in enumerate(files) for it in f.items]
    index = OverlapIndex([it for _, it in items], n, threshold)
    hits: dict[int, list[dict]] = {}
    checked = 0
    for rec in records:
        checked += 1
        for m in index.match(rec.messages):
            hits.setdefault(m.item, []).append({"file": rec.source, "line": rec.line,
                                                "coverage": round(m.coverage, 4), "exact": m.exact})
    out = []
    for fi, f in enumerate(files):
        own = [k for k, (j, _) in enumerate(items) if j == fi]
        flagged = [_flagged(items[k][1], hits[k]) for k in own if k in hits]
        out.append({"kind": f.kind, "path": f.path, "items": len(own),
                    "too_short_for_ngrams": sum(index.too_short(k) for k in own),
                    "flagged": len(flagged), "exact": sum(x["exact"] for x in flagged),
                    "overlap": sum(not x["exact"] for x in flagged), "flagged_items": flagged})
    return out, checked


def _flagged(item: EvalItem, matches: list[dict]) -> dict:
    exact = any(m["exact"] for m in matches)
    best = sorted(matches, key=lambda m: (not m["exact"], -m["coverage"]))
    return {"id": item.id, "line": item.line, "text": item.text[:200], "exact": exact,
            "coverage": best[0]["coverage"], "matching_records": len(matches), "matches": best[:MAX_MATCHES]}


def inputs_identity(cfg: Config) -> dict:
    """What the result depends on, for the evaluate stage's fingerprint: data, evaluation files, benchmark results."""
    from medtune.data.readers import is_hub_id
    from medtune.rundir import data_identity, file_identity

    ev, run_dir = cfg.evaluate, cfg.run_dir
    maybe = lambda p: file_identity(p) if Path(p).is_file() else None  # noqa: E731
    bench_dir = run_dir / "eval" / "benchmarks"
    sources = expand_sources(cfg.data)
    prepared = (read_json(run_dir / "data" / "manifest.json") or {}).get("fingerprint")  # covers the files' hashes
    return {"records": maybe(run_dir / "data" / "records.parquet"),
            "prepared": prepared or [maybe(f) or f for s in sources if s.role == "train" for f in s.files],
            "align": [maybe(f) or f for f in align_files(cfg)],
            "inputs": [data_identity(b.path) for b in ev.benchmarks] + [file_identity(p) for p in (ev.questions, ev.safety) if p]
            + [{"hub": c.path} if is_hub_id(c.path) else file_identity(c.path) for c in ev.consultations]
            + [file_identity(r.path) for r in ev.rubrics],
            "results": [file_identity(p) for p in sorted(bench_dir.glob("*.json"))] if bench_dir.is_dir() else [],
            "n": N, "threshold": THRESHOLD}


def check_contamination(cfg: Config, output: Path, log=print) -> dict:
    """Scan the run's training (and align) data for the config's evaluation inputs; write and return the result."""
    started = time.perf_counter()
    files = evaluation_files(cfg)
    if not files:
        raise UserError("the config names no evaluation input (evaluate.benchmarks, questions, safety): nothing "
                        "to check")
    records, how = training_records(cfg)
    def all_records():
        yield from records
        yield from align_records(cfg)

    per_file, checked = scan(files, all_records())
    result = {
        "method": {"normalisation": "NFKC, case-folded, whitespace and punctuation removed (medtune.text)",
                   "exact": "the item's normalised text (a benchmark item: stem and options, or a stem of at "
                            "least n characters) inside one normalised message, or equal to a whole message",
                   "overlap": f"at least {THRESHOLD:.0%} of the item's characters (a benchmark item: of its stem) "
                              f"lie in character {N}-grams of the item (stem then options) that also occur in one "
                              "training record",
                   "n": N, "threshold": THRESHOLD},
        "training": {"selection": how, "records_checked": checked,
                     "align": align_files(cfg)},
        "files": per_file,
        "benchmarks": clean_subsets(per_file, cfg.run_dir / "eval" / "benchmarks"),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(output, result)
    for f in per_file:
        log(f"contamination: {f['path']}: {f['flagged']} of {f['items']} items flagged ({f['exact']} exact, "
            f"{f['overlap']} overlap)")
    log(f"contamination: {checked} training records checked in {result['seconds']:.1f} s -> {output}")
    return result


# -- benchmark accuracy on the clean items --

def clean_subsets(per_file: list[dict], bench_dir: Path) -> list[dict]:
    """Each benchmark result in bench_dir re-scored on its clean and its flagged items."""
    flagged_by_data = {str(Path(f["path"]).resolve()): {x["id"] for x in f["flagged_items"]}
                       for f in per_file if f["kind"] in BENCHMARK_FORMATS}
    out = []
    for path in sorted(bench_dir.glob("*.json")) if bench_dir.is_dir() else []:
        result = read_json(path)
        if not isinstance(result, dict) or "items" not in result or result.get("data") not in flagged_by_data:
            continue  # significance.json, or a benchmark this config does not name
        out.append({"result": path.name, "benchmark": result.get("benchmark"), "arm": result.get("arm"),
                    **clean_subset(result["items"], flagged_by_data[result["data"]])})
    return out


def clean_subset(outcomes: list[dict], flagged_ids: set[str]) -> dict:
    """Accuracy on all, clean and flagged items, and Fisher's exact test of clean against flagged."""
    groups = {"all": outcomes, "clean": [o for o in outcomes if o["id"] not in flagged_ids],
              "flagged": [o for o in outcomes if o["id"] in flagged_ids]}
    out = {}
    for name, group in groups.items():
        correct = sum(bool(o["correct"]) for o in group)
        lo, hi = wilson_interval(correct, len(group))
        out[name] = {"n": len(group), "correct": correct,
                     "accuracy": correct / len(group) if group else None, "ci_low": lo, "ci_high": hi}
    c, f = out["clean"], out["flagged"]
    # The clean items are a subset of all items, so all-vs-clean is not a test of two samples; the
    # flagged and clean groups are disjoint, so compare those two.
    out["test"] = {"name": "Fisher's exact test, two-sided: clean vs flagged items",
                   "p_value": fisher_exact(c["correct"], c["n"] - c["correct"], f["correct"], f["n"] - f["correct"])}
    return out


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of Fisher's exact test on the 2x2 table [[a, b], [c, d]] (tables no likelier than observed)."""
    row1, col1, n = a + b, a + c, a + b + c + d
    if n == 0 or row1 in (0, n) or col1 in (0, n):
        return 1.0
    denom = math.comb(n, col1)

    def prob(x: int) -> float:
        return math.comb(row1, x) * math.comb(n - row1, col1 - x) / denom

    observed = prob(a)
    lo, hi = max(0, col1 - (n - row1)), min(row1, col1)
    # a relative tolerance, as scipy uses, so tables equally likely up to rounding count as "as extreme"
    return min(1.0, sum(p for p in map(prob, range(lo, hi + 1)) if p <= observed * (1 + 1e-7)))
