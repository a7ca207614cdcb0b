"""Smoke test: benchmarks/serve_decode.py runs at a tiny size and reports what it promises."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_serve_decode_benchmark_smoke(lora_run, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("serve_decode", ROOT / "benchmarks" / "serve_decode.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calls, decode = [], bench.decode

    def recorded(model, prompts, tokens):  # what each decoding pass produced and how long it took
        calls.append(decode(model, prompts, tokens))
        return calls[-1]

    monkeypatch.setattr(bench, "decode", recorded)
    started = time.perf_counter()
    result = bench.main(["--run", str(lora_run), "--prompts", "2", "--tokens", "3"])
    wall = time.perf_counter() - started
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["same_tokens"] is True  # merging changes the speed, not the tokens
    assert result["prompts"] == 2 and result["tokens_per_prompt"] == 3
    assert result["unmerged_tokens_per_second"] > 0 and result["merged_tokens_per_second"] > 0
    # The rates are the tokens this test counts in each arm's outputs over that pass's seconds.
    (_, (unmerged, unmerged_s), (merged, merged_s)) = calls  # warm-up, unmerged, merged
    assert [len(ids) for ids in unmerged] == [len(ids) for ids in merged] == [3, 3]
    assert result["same_tokens"] is (merged == unmerged)
    assert result["unmerged_tokens_per_second"] == pytest.approx(6 / unmerged_s, rel=1e-3, abs=0.01)
    assert result["merged_tokens_per_second"] == pytest.approx(6 / merged_s, rel=1e-3, abs=0.01)
    # Each arm decoded 2 prompts x 3 tokens, one arm after the other, inside the call this test timed: the
    # seconds the two rates imply fit in that wall time (a rate over too few tokens, or in ms, does not).
    assert 6 / result["unmerged_tokens_per_second"] + 6 / result["merged_tokens_per_second"] <= wall
    # the ratio is the quotient of the two rates measured in this run
    assert result["merged_speedup"] == pytest.approx(
        result["merged_tokens_per_second"] / result["unmerged_tokens_per_second"], rel=0.02)
