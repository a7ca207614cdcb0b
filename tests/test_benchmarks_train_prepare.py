"""The prepare and training benchmark scripts run end to end at a tiny size (including the GPU script's
CPU dry path) and print their figures as one JSON object on the last line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, needs_shared


def run_script(*args: str) -> dict:
    """The script's last-line JSON, with `wall_seconds`: how long this test saw the whole process run."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_seconds": time.perf_counter() - started}


@needs_shared
def test_prepare_benchmark_smoke():
    # 1,100 records: the 1,000 samples and 100 numbered copies (the copies' path), at a smoke test's cost.
    r = run_script("benchmarks/prepare.py", "--records", "1100")
    assert r["records"] == 1100 and r["same_ids_and_labels_first_200"] is True
    assert 0 < r["samples_kept"] == r["baseline_samples_kept"] <= 1100
    # Both sides processed all 1,100 records one after the other inside the process this test timed.
    assert 0 < 1100 / r["medtune_examples_per_second"] + 1100 / r["baseline_examples_per_second"] <= r["wall_seconds"]
    assert r["medtune_examples_per_second"] == pytest.approx(1100 / r["medtune_seconds"], rel=0.02)
    # speedup is printed to 2 decimals: at this size it can be near 0.1, where rounding alone is several percent
    assert r["speedup"] == pytest.approx(r["medtune_examples_per_second"] / r["baseline_examples_per_second"],
                                         rel=0.02, abs=0.005)


@needs_shared
def test_train_throughput_benchmark_smoke():
    """Each tool's default batches on the same 4 samples (the script exits unless both arms trained on exactly
    the samples' non-padding tokens): medtune's CPU default is padding-free with sdpa_varlen."""
    r = run_script("benchmarks/train_throughput.py", "--steps", "2", "--batch", "2", "--hidden", "64", "--layers",
                   "1", "--max-length", "256", "--repeats", "1")
    assert r["batches"] == "default" and r["samples"] == 4 and "step_tokens" not in r
    assert 0 < r["non_padding_tokens"] <= 4 * 256 and r["mean_length"] == r["non_padding_tokens"] / 4
    assert (r["medtune_batching"], r["medtune_attention"]) == ("packing", "sdpa_varlen")
    # Each arm trained once, one after the other, inside the process this test timed.
    assert 0 < (r["non_padding_tokens"] / r["medtune_tokens_per_second"]
                + r["non_padding_tokens"] / r["trl_default_tokens_per_second"]) <= r["wall_seconds"]
    assert r["speedup"] == pytest.approx(r["medtune_tokens_per_second"] / r["trl_default_tokens_per_second"],
                                         rel=0.01, abs=0.005)
    # same samples, same model, one epoch: the run-average losses are both near ln(vocab) of a random model
    assert abs(r["medtune_train_loss"] - r["trl_default_train_loss"]) < 0.5
    assert len(r["round_seconds"]["trl"]) == 1
    assert r["medtune_checkpoint_every_n_layers"] is None  # a 1-layer model fits: auto checkpoints nothing
    assert r["memory_ratio"] == pytest.approx(r["medtune_peak_rss_mb"] / r["trl_default_peak_rss_mb"], rel=0.02)


@needs_shared
def test_gpu_train_benchmark_dry_run():
    r = run_script("benchmarks/gpu_train.py", "--dry-run")
    assert r["dry_run"] is True and r["device"] == "cpu"
    for arm in ("trl", "medtune", "medtune_padded"):
        assert r[arm]["tokens_per_second"] > 0 and 0 < r[arm]["mfu_6n"]
        assert r[arm]["mfu_6n"] == pytest.approx(1.5 * r[arm]["mfu_lora_4n"], rel=0.02)  # 6N vs 4N, same rate
    assert r["speedup"] == pytest.approx(r["medtune"]["tokens_per_second"] / r["trl"]["tokens_per_second"], rel=0.02)
    assert r["medtune"]["batching"] == "packing" and r["trl"]["batching"] == "padding"  # CPU dry run: sdpa_varlen
    # the padded arm is medtune with train.batching: padding only
    assert (r["medtune_padded"]["batching"], r["medtune_padded"]["attention"]) == ("padding", "sdpa_varlen")
    assert r["padding_free_speedup"] == pytest.approx(
        r["medtune"]["tokens_per_second"] / r["medtune_padded"]["tokens_per_second"], rel=0.02)


def test_gpu_check_dry_path_runs_the_cpu_parts_and_skips_the_rest_with_reasons(tmp_path):
    import importlib.util

    out = tmp_path / "check.json"
    r = run_script("benchmarks/gpu_check.py", "--dry-run", "--output", str(out),
                   "--parts", "install,packing_loss,liger_loss,qlora_step,vllm_compare,serve_vllm")
    assert {**json.loads(out.read_text(encoding="utf-8")), "wall_seconds": r["wall_seconds"]} == r  # the file is what was printed
    parts = r["parts"]
    assert list(parts) == ["install", "packing_loss", "liger_loss", "qlora_step", "vllm_compare", "serve_vllm"]
    packing = parts["packing_loss"]
    assert packing["status"] == "pass" and packing["attention"] == "sdpa"
    assert abs(packing["packed_loss"] - packing["padded_loss"]) <= 1e-5 * packing["padded_loss"]
    assert 0 <= packing["align_max_logprob_difference"] <= 1e-4  # align's padding-free path, same log-probs
    if importlib.util.find_spec("bitsandbytes"):
        assert parts["qlora_step"]["status"] == "pass" and parts["qlora_step"]["layer"] == "Linear4bit"
    else:
        assert parts["qlora_step"] == {"status": "skip", "reason": "bitsandbytes is not installed", "seconds": 0.0}
    assert parts["liger_loss"]["status"] == "skip" and "CUDA" in parts["liger_loss"]["reason"]
    assert parts["serve_vllm"]["status"] == parts["vllm_compare"]["status"] == "skip"
    assert r["passed"] is True and r["dry_run"] is True


def test_gpu_check_time_guard_skips_parts_that_would_overrun(tmp_path):
    r = run_script("benchmarks/gpu_check.py", "--dry-run", "--budget", "5", "--output", str(tmp_path / "c.json"),
                   "--parts", "packing_loss,liger_loss")
    assert r["parts"]["packing_loss"]["status"] == "skip" and "time guard" in r["parts"]["packing_loss"]["reason"]
    assert "CUDA" in r["parts"]["liger_loss"]["reason"]  # a part that cannot run says why, not "time guard"
