"""benchmarks/align_throughput.py runs end to end at the smallest size and its figures are what it measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs_shared


@needs_shared
def test_align_throughput_benchmark_smoke():
    out = subprocess.run([sys.executable, "benchmarks/align_throughput.py", "--steps", "1", "--batch", "1",
                          "--max-length", "192", "--repeats", "1",
                          "--epochs", "2"], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # Both arms trained two epochs of one step on the same pair (the script exits when an arm saw other rows).
    assert r["pairs"] == 1 and r["epochs"] == 2 and r["medtune_pairs_trained"] == r["trl_default_pairs_trained"] == 2
    # The same pairs: TRL renders each completion with the template's "\n" after <|im_end|>, at most 1 token more.
    assert 0 <= r["trl_default_tokens_per_pair"] - r["medtune_tokens_per_pair"] <= 2
    assert r["medtune_pairs_per_second"] == pytest.approx(2 / r["medtune_seconds"], rel=2e-3)
    assert r["trl_default_pairs_per_second"] == pytest.approx(2 / r["trl_default_seconds"], rel=2e-3)
    assert r["speedup"] == pytest.approx(r["trl_default_seconds"] / r["medtune_seconds"], rel=2e-3)
    assert r["memory_ratio"] == pytest.approx(r["medtune_peak_rss_mb"] / r["trl_default_peak_rss_mb"], rel=2e-3)
    assert r["round_seconds"] == {"trl": [r["trl_default_seconds"]], "medtune": [r["medtune_seconds"]]}
