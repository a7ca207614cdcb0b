"""Evaluation statistics against values computed by hand / from textbook definitions."""

import math

import pytest

from medtune.stats import bootstrap_interval, mcnemar, wilson_interval


def test_wilson_known_values():
    # 8 of 10: centre (0.8 + 1.92/10)/1.384 = 0.7168, half 1.96*sqrt(0.016+0.0096)/1.384 = 0.2266
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)


def test_mcnemar_exact():
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    r = mcnemar(a, b)
    assert (r["only_a"], r["only_b"]) == (10, 2)
    assert r["p_value"] == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12)
    assert mcnemar([True], [True])["p_value"] == 1.0


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0, 1] * 50
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert bootstrap_interval(values, mean, seed=1) == bootstrap_interval(values, mean, seed=1)
    lo, hi = bootstrap_interval(values, mean, seed=1)
    assert lo < 0.5 < hi and hi - lo < 0.3
