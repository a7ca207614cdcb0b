"""The prepare and training benchmark scripts run end to end at a tiny size (including the GPU script's
CPU dry path) and print their figures as one JSON object on the last line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs_shared


def run_script(*args: str) -> dict:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_shared
def test_prepare_benchmark_smoke():
    r = run_script("benchmarks/prepare.py", "--records", "1500")
    assert r["records"] == 1500 and r["same_ids_and_labels_first_200"] is True
    assert 0 < r["samples_kept"] == r["baseline_samples_kept"] <= 1500
    assert r["medtune_examples_per_second"] == pytest.approx(1500 / r["medtune_seconds"], rel=0.02)
    assert r["speedup"] == pytest.approx(r["medtune_examples_per_second"] / r["baseline_examples_per_second"],
                                         rel=0.02)


@needs_shared
def test_train_throughput_benchmark_smoke():
    r = run_script("benchmarks/train_throughput.py", "--steps", "1", "--hidden", "64", "--layers", "1",
                   "--max-length", "256")
    assert r["trl_default_tokens_per_second"] > 0 and r["medtune_tokens_per_second"] > 0
    assert r["speedup"] == pytest.approx(r["medtune_tokens_per_second"] / r["trl_default_tokens_per_second"],
                                         rel=0.02)
    assert r["memory_ratio"] == pytest.approx(r["medtune_peak_rss_mb"] / r["trl_default_peak_rss_mb"], rel=0.02)
    assert r["medtune_batching"] == "group_by_length"


@needs_shared
def test_gpu_train_benchmark_dry_run():
    r = run_script("benchmarks/gpu_train.py", "--dry-run")
    assert r["dry_run"] is True and r["device"] == "cpu"
    for arm in ("trl", "medtune"):
        assert r[arm]["tokens_per_second"] > 0 and 0 < r[arm]["mfu_6n"]
        assert r[arm]["mfu_6n"] == pytest.approx(1.5 * r[arm]["mfu_lora_4n"], rel=0.02)  # 6N vs 4N, same rate
    assert r["speedup"] == pytest.approx(r["medtune"]["tokens_per_second"] / r["trl"]["tokens_per_second"], rel=0.02)
    assert r["medtune"]["batching"] == "group_by_length" and r["trl"]["batching"] == "padding"
