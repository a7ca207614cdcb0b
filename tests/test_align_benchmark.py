"""benchmarks/align_throughput.py runs end to end at the smallest size and its figures are what it measured."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from tests.conftest import DEMO_DIALOGUES, ROOT, needs_shared

ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def first_pair_tokens(tokenizer, max_length: int) -> int:
    """Tokens of the first demo pair (chosen = its answer, rejected = the next dialogue's) that fits max_length,
    counted here from the chat template: prompt + chosen and prompt + rejected, each completion + <|im_end|>."""
    dialogues = [json.loads(line)["conversations"] for line in DEMO_DIALOGUES.read_text(encoding="utf-8").splitlines()]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for i, turns in enumerate(dialogues):
        prompt = [{"role": ROLES[t["from"]], "content": t["value"]} for t in turns[:-1]]
        p = len(encode(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False,
                                                     enable_thinking=False)))
        c, r = len(encode(turns[-1]["value"])) + 1, len(encode(dialogues[(i + 1) % len(dialogues)][-1]["value"])) + 1
        if p + max(c, r) <= max_length:
            return 2 * p + c + r
    raise AssertionError("no demo pair fits")


@needs_shared
def test_align_throughput_benchmark_smoke(qwen3_tokenizer):
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "benchmarks/align_throughput.py", "--steps", "1", "--batch", "1",
                          "--max-length", "192", "--repeats", "1",
                          "--epochs", "2"], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    wall = time.perf_counter() - started
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # Both arms trained two epochs of one step on the same pair (the script exits when an arm saw other rows).
    assert r["pairs"] == 1 and r["epochs"] == 2 and r["medtune_pairs_trained"] == r["trl_default_pairs_trained"] == 2
    assert r["medtune_tokens_per_pair"] == first_pair_tokens(qwen3_tokenizer, 192)
    # The same pairs: TRL renders each completion with the template's "\n" after <|im_end|>, at most 1 token more.
    assert 0 <= r["trl_default_tokens_per_pair"] - r["medtune_tokens_per_pair"] <= 2
    # Each arm ran once, one after the other, inside the process this test timed: the seconds each rate implies
    # for its 2 pairs fit in that wall time.
    assert 0 < 2 / r["medtune_pairs_per_second"] + 2 / r["trl_default_pairs_per_second"] <= wall
    assert r["medtune_pairs_per_second"] == pytest.approx(2 / r["medtune_seconds"], rel=2e-3)
    assert r["trl_default_pairs_per_second"] == pytest.approx(2 / r["trl_default_seconds"], rel=2e-3)
    assert r["speedup"] == pytest.approx(r["trl_default_seconds"] / r["medtune_seconds"], rel=2e-3)
    assert r["memory_ratio"] == pytest.approx(r["medtune_peak_rss_mb"] / r["trl_default_peak_rss_mb"], rel=2e-3)
    assert r["round_seconds"] == {"trl": [r["trl_default_seconds"]], "medtune": [r["medtune_seconds"]]}
    # medtune's CPU defaults ran (padding-free, sdpa_varlen); the pair's two sequences make its tokens
    assert (r["medtune_batching"], r["medtune_attention"]) == ("packing", "sdpa_varlen")
    assert r["sequence_tokens_mean"] * 2 == r["medtune_tokens_per_pair"] and r["sequence_tokens_max"] <= 192
    # both policies start as the reference (a new LoRA's B is zero): DPO's first loss is ln 2 in both arms, and
    # two steps at the align learning rate move it little
    assert r["medtune_train_loss"] == pytest.approx(math.log(2), abs=0.02)
    assert r["trl_default_train_loss"] == pytest.approx(math.log(2), abs=0.02)
