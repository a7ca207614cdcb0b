"""The two-arm protocol the throughput benchmarks share: each arm in a fresh process, arms alternated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def run_arm(script: str, arm: str, args: list[str]) -> dict:
    """Run `script --arm ARM *args` in a fresh process (its own peak RSS, no shared allocator state); the arm
    prints one JSON object on its last line. THP_MEM_ALLOC_ENABLE is removed so each arm keeps its own default."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, script, "--arm", arm, *args], capture_output=True, text=True,
                         env={**env, "TQDM_DISABLE": "1"})
    if out.returncode != 0:
        sys.exit(f"{arm} arm failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def alternate(script: str, args: list[str], repeats: int) -> tuple[dict, dict]:
    """(rounds, best): trl, medtune, trl, medtune, ... for `repeats` rounds; each arm keeps its fastest round
    (`seconds`), so a busy machine slows both alike."""
    rounds = {"trl": [], "medtune": []}
    for _ in range(repeats):
        for arm in rounds:
            rounds[arm].append(run_arm(script, arm, args))
    return rounds, {arm: min(runs, key=lambda r: r["seconds"]) for arm, runs in rounds.items()}
