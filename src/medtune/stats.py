"""Small, exact statistics for evaluation results: intervals and paired tests, no scipy needed."""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The bounds are exactly 0 and 1 at the extremes; rounding would otherwise leave them a hair inside.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """Exact two-sided McNemar test on paired outcomes (binomial on the discordant pairs)."""
    if len(a_correct) != len(b_correct):
        raise ValueError("paired outcomes must have the same length")
    b = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)  # only A right
    c = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)  # only B right
    n = b + c
    if n == 0:
        p = 1.0
    else:
        k = min(b, c)
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"n": len(a_correct), "only_a": b, "only_b": c, "p_value": p}


def bootstrap_interval(values: Sequence, statistic: Callable[[Sequence], float], resamples: int = 2000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over `values` (resampled with replacement, seeded).

    A resample whose statistic is None (undefined on it, e.g. a mean of no scored items) is left out.
    """
    if not values:
        return 0.0, 0.0
    rng = random.Random(seed)
    n = len(values)
    drawn = (statistic([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    stats = sorted(s for s in drawn if s is not None)
    if not stats:
        return 0.0, 0.0
    lo = stats[int((1 - level) / 2 * len(stats))]
    hi = stats[min(len(stats) - 1, int((1 + level) / 2 * len(stats)))]
    return lo, hi
