"""Reading a run directory for the report: every file is optional, and a bad one is described, never fatal.

Each file becomes a `RunFile` that is ok (parsed), missing (the stage that writes it did not run) or
unreadable (the message says why), so every section can say which of the three it is looking at.
The report reads nothing outside the run directory.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medtune.config import Config, ConfigError, config_from_dict
from medtune.errors import UserError

# What the report writes itself; never listed as a run output.
REPORT_OUTPUTS = ("report.md", "report.html", "plots", "report_files.json")
# A run directory holds config.yaml and at least one of these (the manifests the stages write first or
# last, and the Trainer's state): a directory that merely has a config.yaml is not one.
STAGE_MARKERS = ("data/manifest.json", "train_manifest.json", "trainer_state.json", "align/align_manifest.json",
                 "eval/manifest.json")


def check_run_dir(run_dir: Path) -> None:
    """Raise a UserError unless run_dir is a medtune run directory (config.yaml and a stage's output)."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory; give the run directory (output_dir of the config)")
    if not (run_dir / "config.yaml").is_file() or not any((run_dir / m).is_file() for m in STAGE_MARKERS):
        raise UserError(f"{run_dir}: not a medtune run directory (it needs config.yaml and the output of a stage: "
                        f"one of {', '.join(STAGE_MARKERS)}); give the output_dir of a config that ran at least "
                        "`medtune prepare`")


@dataclass
class RunFile:
    rel: str
    """Path relative to the run directory, as the report shows it."""
    data: Any = None
    state: str = "missing"
    """ok | missing | unreadable"""
    error: str = ""
    skipped_lines: list[str] = field(default_factory=list)
    """JSONL lines that could not be used, as 'line N: why' (the rest of the file is used)."""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def num(obj: Any, key: str) -> float | None:
    """obj[key] as a finite number, or None when absent or not a number (a partial file never crashes)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def text(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _read_text(run_dir: Path, rel: str) -> tuple[RunFile, str | None]:
    """The file's text, or None with the RunFile saying missing or unreadable."""
    rf = RunFile(rel)
    path = run_dir / rel
    if not path.is_file():
        return rf, None
    try:
        return rf, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return _unreadable(rf, str(e)), None


def read_json(run_dir: Path, rel: str) -> RunFile:
    """A JSON object (every JSON file in the run-directory contract is one)."""
    rf, raw = _read_text(run_dir, rel)
    if raw is None:
        return rf
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        return _unreadable(rf, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})")
    if not isinstance(data, dict):
        return _unreadable(rf, f"expected a JSON object, got {type(data).__name__}")
    rf.data, rf.state = data, "ok"
    return rf


def read_jsonl(run_dir: Path, rel: str) -> RunFile:
    """One JSON object per line; bad lines are skipped and named, the good ones used."""
    rf, raw = _read_text(run_dir, rel)
    if raw is None:
        return rf
    rows = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            rf.skipped_lines.append(f"line {number}: not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            rf.skipped_lines.append(f"line {number}: not a JSON object")
            continue
        rows.append(row)
    rf.data, rf.state = rows, "ok"
    return rf


def read_config(run_dir: Path) -> RunFile:
    """config.yaml as the typed Config (what ran); unreadable when it no longer loads."""
    rf, raw = _read_text(run_dir, "config.yaml")
    if raw is None:
        return rf
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        return _unreadable(rf, f"not valid YAML: {e}")
    if not isinstance(parsed, dict):
        return _unreadable(rf, "the top level is not a mapping")
    try:
        rf.data, rf.state = config_from_dict(parsed, source=rf.rel), "ok"
    except ConfigError as e:  # e.g. a key this medtune no longer knows
        return _unreadable(rf, str(e).removeprefix(f"{rf.rel}: "))
    return rf


def read_safetensors_header(run_dir: Path, rel: str) -> RunFile:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes): no weights are read."""
    path = run_dir / rel
    rf = RunFile(rel)
    if not path.is_file():
        return rf
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                return _unreadable(rf, f"not a safetensors file (header length {size} is not plausible)")
            header = json.loads(f.read(size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        return _unreadable(rf, f"not a safetensors file ({e})")
    if not isinstance(header, dict):
        return _unreadable(rf, "the header is not a JSON object")
    header.pop("__metadata__", None)
    rf.data, rf.state = header, "ok"
    return rf


def _unreadable(rf: RunFile, why: str) -> RunFile:
    rf.state, rf.error = "unreadable", why
    return rf


@dataclass
class Run:
    """Everything the report reads, file by file."""

    dir: Path
    config: RunFile
    stats: RunFile
    manifest: RunFile
    train_results: RunFile
    eval_results: RunFile
    trainer_state: RunFile
    metrics: RunFile
    timeline: RunFile
    environment: RunFile
    adapter_config: RunFile
    adapter_header: RunFile
    perplexity: RunFile
    compare_summary: RunFile
    compare_answers: RunFile
    benchmarks: list[RunFile]
    significance: RunFile
    consultations: list[RunFile]
    judge: RunFile
    eval_metrics: RunFile
    safety: RunFile
    contamination: RunFile
    checkpoints: list[str]

    @property
    def cfg(self) -> Config | None:
        return self.config.data if self.config.ok else None


def read_run(run_dir: str | Path) -> Run:
    d = Path(run_dir)
    bench_dir = d / "eval" / "benchmarks"
    bench_files = sorted(p.name for p in bench_dir.glob("*.json") if p.name != "significance.json") \
        if bench_dir.is_dir() else []
    consult_dir = d / "eval" / "consultations"
    consult_files = sorted(p.name for p in consult_dir.glob("*.json")) if consult_dir.is_dir() else []
    checkpoints = sorted((p.name for p in d.glob("checkpoint-*") if p.is_dir()), key=_checkpoint_step)
    return Run(
        dir=d,
        config=read_config(d),
        stats=read_json(d, "data/stats.json"),
        manifest=read_json(d, "data/manifest.json"),
        train_results=read_json(d, "train_results.json"),
        eval_results=read_json(d, "eval_results.json"),
        trainer_state=read_json(d, "trainer_state.json"),
        metrics=read_jsonl(d, "metrics.jsonl"),
        timeline=read_json(d, "timeline.json"),
        environment=read_json(d, "environment.json"),
        adapter_config=read_json(d, "adapter_config.json"),
        adapter_header=read_safetensors_header(d, "adapter_model.safetensors"),
        perplexity=read_json(d, "eval/perplexity.json"),
        compare_summary=read_json(d, "eval/compare/summary.json"),
        compare_answers=read_jsonl(d, "eval/compare/answers.jsonl"),
        benchmarks=[read_json(d, f"eval/benchmarks/{name}") for name in bench_files],
        significance=read_json(d, "eval/benchmarks/significance.json"),
        consultations=[read_json(d, f"eval/consultations/{name}") for name in consult_files],
        judge=read_json(d, "eval/judge/summary.json"),
        eval_metrics=read_json(d, "eval/metrics.json"),
        safety=read_json(d, "eval/safety.json"),
        contamination=read_json(d, "eval/contamination.json"),
        checkpoints=checkpoints,
    )


def _checkpoint_step(name: str) -> int:
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


@dataclass
class Curves:
    """Logged training points: from metrics.jsonl (medtune's log) or, without it, trainer_state.json."""

    source: str
    train: list[dict]
    """Logging steps with a numeric `loss`."""
    evals: list[dict]
    """Evaluation steps with a numeric `eval_loss`."""

    def series(self, key: str, rows: str = "train") -> tuple[list[float], list[float]]:
        """(steps, values) of `key`, skipping rows where either is missing."""
        xs, ys = [], []
        for row in self.train if rows == "train" else self.evals:
            step, value = num(row, "step"), num(row, key)
            if step is not None and value is not None:
                xs.append(step)
                ys.append(value)
        return xs, ys


def training_curves(run: Run) -> Curves | None:
    rows, source = [], ""
    if run.metrics.ok and run.metrics.data:
        rows, source = run.metrics.data, run.metrics.rel
    elif run.trainer_state.ok and isinstance(run.trainer_state.data.get("log_history"), list):
        rows = [r for r in run.trainer_state.data["log_history"] if isinstance(r, dict)]
        source = run.trainer_state.rel
    train = [r for r in rows if num(r, "loss") is not None and num(r, "step") is not None]
    evals = [r for r in rows if num(r, "eval_loss") is not None and num(r, "step") is not None]
    if not train and not evals:
        return None
    return Curves(source, train, evals)
