"""`medtune run` end to end on the builtin tiny model: every stage's files, skipping on rerun, a failing
stage that stops the run with a clear message, and a rerun that continues from there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.run_dir_contract import eval_problems


def small_config(tmp_path: Path, questions: str) -> Path:
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": {"train_files": [str(ROOT / "data" / "demo" / "huatuo_style_dialogues.jsonl")], "max_samples": 32,
                 "val_size": 4, "max_length": 256},
        "lora": {"modules_to_save": ["lm_head"]},
        "train": {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1,
                  "save_steps": 3, "report_to": ["none"], "gradient_checkpointing": False},
        "evaluate": {"questions": questions, "max_questions": 2, "batch_size": 2,
                     "generation": {"max_new_tokens": 4},
                     "benchmarks": [{"path": str(ROOT / "data" / "bench" / "cmmlu_style_zh"), "format": "cmmlu"}]},
        "report": {"lang": "en"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def medtune(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtune", *args], capture_output=True, text=True, timeout=900)


def test_run_stops_at_a_failing_stage_and_continues_after_the_fix(tmp_path):
    safety_subset = tmp_path / "safety.jsonl"
    lines = (ROOT / "data" / "safety" / "redflags_zh.jsonl").read_text(encoding="utf-8").splitlines()
    safety_subset.write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    config = small_config(tmp_path, questions=str(tmp_path / "missing-questions.jsonl"))
    body = yaml.safe_load(config.read_text(encoding="utf-8"))
    body["evaluate"]["safety"] = str(safety_subset)
    config.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    run = tmp_path / "run"

    failed = medtune("run", str(config))
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "stage 'evaluate' failed" in failed.stderr and "missing-questions.jsonl" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (run / "adapter_model.safetensors").exists() and not (run / "report.html").exists()

    body["evaluate"]["questions"] = str(ROOT / "data" / "questions" / "zh_everyday.jsonl")
    config.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    done = medtune("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    # Exactly what the failed run finished is skipped: prepare, train and the evaluate part done before the
    # missing questions stopped it; compare and every later part run now (their skipping: test_eval_stage).
    skipped = [line.split(" (fingerprint")[0] for line in done.stdout.splitlines() if "skipping" in line]
    assert skipped == [f"prepare: {run / 'data'} is up to date",
                       f"train: {run} already holds the adapter for this config and data",
                       "evaluate: perplexity is up to date"], skipped
    for name in ("config.yaml", "data/stats.json", "data/train", "adapter_model.safetensors", "train_results.json",
                 "eval_results.json", "metrics.jsonl", "timeline.json", "eval/perplexity.json",
                 "eval/compare/answers.jsonl", "eval/compare/summary.json", "eval/metrics.json", "eval/safety.json",
                 "eval/benchmarks/significance.json", "report.md", "report.html"):
        assert (run / name).exists(), name
    summary = json.loads((run / "eval" / "compare" / "summary.json").read_text())
    assert [a["arm"] for a in summary["arms"]] and all(a["questions"] == 2 for a in summary["arms"])
    assert len(list((run / "eval" / "benchmarks").glob("cmmlu_style_zh-*.json"))) == 2
    assert eval_problems(run / "eval") == []  # the format the report's fixture is checked against
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "# Training report" in report and "not run" not in report.split("## 2.")[0]
    assert str(run / "report.html") in done.stdout


def test_run_cli_rejects_unknown_stage_for_force(tmp_path):
    r = medtune("run", str(small_config(tmp_path, "x.jsonl")), "--force", "everything")
    assert r.returncode == 2 and "invalid choice: 'everything'" in r.stderr


def test_demo_config_is_resolved_against_the_project(tmp_path):
    from medtune.run import demo_config

    cfg = demo_config(str(tmp_path / "demo"))
    assert cfg.output_dir == str(tmp_path / "demo")
    assert all(Path(p).is_absolute() and Path(p).exists() for p in cfg.data.train_files)
    assert Path(cfg.evaluate.questions).exists() and Path(cfg.evaluate.safety).exists()
    assert all(Path(b.path).exists() for b in cfg.evaluate.benchmarks)
    assert cfg.evaluate.consultations and all(Path(c.path).is_absolute() and Path(c.path).exists()
                                              for c in cfg.evaluate.consultations)
