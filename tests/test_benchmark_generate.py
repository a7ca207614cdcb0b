"""benchmarks/generate.py runs end to end at a tiny size and reports the same greedy outputs both ways."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from tests.conftest import ROOT
from tests.eval_fixtures import tiny_run  # noqa: F401


def test_generate_benchmark_smoke(tiny_run, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_generate", ROOT / "benchmarks" / "generate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    started = time.perf_counter()
    result = bench.main(["--model", str(tiny_run / "base_model"), "--questions", "3", "--max-new-tokens", "3",
                         "--batch-size", "2", "--repeats", "1", "--vllm"])
    wall = time.perf_counter() - started
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["same_outputs"] is True and result["questions"] == 3
    assert 0 < result["loop_tokens"] == result["batched_tokens"] <= 3 * 3  # 3 questions, at most 3 tokens each
    # The two timed sides ran one after the other inside the call this test timed (seconds, not ms or a sum of
    # repeats), each for a real duration.
    assert 0 < result["loop_seconds"] and 0 < result["batched_seconds"]
    assert result["loop_seconds"] + result["batched_seconds"] <= wall
    # each figure is the quotient of what was measured in this run
    assert result["loop_tokens_per_second"] == pytest.approx(result["loop_tokens"] / result["loop_seconds"], rel=0.02)
    assert result["batched_tokens_per_second"] == pytest.approx(result["batched_tokens"] / result["batched_seconds"],
                                                                rel=0.02)
    assert result["speedup"] == pytest.approx(result["loop_seconds"] / result["batched_seconds"], rel=0.05, abs=0.01)
    vllm = result["vllm"]  # timed only where vllm and CUDA exist
    assert vllm.startswith("skipped") if isinstance(vllm, str) else vllm["tokens_per_second"] > 0
