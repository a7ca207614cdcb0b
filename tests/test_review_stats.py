"""The review statistics on hand-built judgments whose kappa, win rates, Bradley-Terry strengths, judge
agreement and position bias were computed by hand (in the comments), and checked against scikit-learn and
SciPy where those have the same statistic."""

from __future__ import annotations

import math

import pytest

from medtune.review.items import load_items
from medtune.review.stats import bradley_terry, cohen_kappa, fleiss_kappa, review_stats
from tests.review_fixture import review_run
from tests.review_stats_fixture import hand_judgments


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    run = review_run(tmp_path_factory.mktemp("stats") / "run", questions=6)
    from medtune.review.items import read_rows

    return review_stats(hand_judgments(), load_items(run), read_rows(run / "eval" / "judge" / "judgements.jsonl"))


def test_cohen_kappa_by_hand_and_against_scikit_learn(stats):
    # verdicts R1: sft sft base tie base sft / R2: sft sft sft tie base tie; observed 4/6,
    # chance (3*3 + 2*1 + 1*2)/36 = 13/36, kappa = (24 - 13) / (36 - 13) = 11/23
    a = stats["agreement"]["verdict"]
    assert (a["method"], a["reviewers"], a["units"]) == ("cohen", 2, 6)
    assert a["kappa"] == pytest.approx(11 / 23) and a["observed"] == pytest.approx(4 / 6)
    sklearn = pytest.importorskip("sklearn.metrics")
    r1 = ["sft", "sft", "base", "tie", "base", "sft"]
    r2 = ["sft", "sft", "sft", "tie", "base", "tie"]
    assert cohen_kappa(r1, r2) == pytest.approx(sklearn.cohen_kappa_score(r1, r2))
    # safety flags: q01/base unsafe by both, q03/sft unsafe by R1 only: observed 1/2 = chance 1/2 -> 0
    assert stats["agreement"]["safety"]["kappa"] == pytest.approx(0.0)


def test_fleiss_kappa_on_the_worked_example_and_three_reviewers():
    # Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, kappa 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)
    # three reviewers, four items: rows [3,0,0] [1,2,0] [0,3,0] [1,1,1]; P = 7/12, Pe = 62/144 -> 11/41
    from medtune.review.stats import agreement

    labels = {"i1": {"x": "a", "y": "a", "z": "a"}, "i2": {"x": "a", "y": "b", "z": "b"},
              "i3": {"x": "b", "y": "b", "z": "b"}, "i4": {"x": "a", "y": "b", "z": "tie"},
              "i5": {"x": "a", "y": "a"}}  # not judged by all three: left out
    a = agreement(labels)
    assert (a["method"], a["units"]) == ("fleiss", 4)
    assert a["kappa"] == pytest.approx(11 / 41)


def test_win_rates_and_bradley_terry(stats):
    # base vs sft from base's side: wins 3, ties 3, losses 6 of 12 -> (3 + 1.5) / 12
    base, sft = stats["models"]["base"], stats["models"]["sft"]
    assert (base["wins"], base["ties"], base["losses"], base["n"]) == (3, 3, 6, 12)
    assert base["win_rate"] == pytest.approx(0.375) and sft["win_rate"] == pytest.approx(0.625)
    assert base["win_rate_ci"][0] < 0.375 < base["win_rate_ci"][1]
    assert stats["pairs"] == [{"a": "base", "b": "sft", "n": 12, "wins": 3, "ties": 3, "losses": 6,
                               "win_rate": 0.375, "win_rate_ci": base["win_rate_ci"]}]
    # two models: P(base beats sft) = its wins / games, with the prior tie: (3 + 1.5 + 0.5) / 13
    assert stats["ranking"] == ["sft", "base"]
    assert sft["bradley_terry"] - base["bradley_terry"] == pytest.approx(math.log(8 / 5), abs=1e-9)
    assert base["bradley_terry"] + sft["bradley_terry"] == pytest.approx(0.0, abs=1e-12)


def test_bradley_terry_matches_a_direct_fit_of_the_likelihood():
    optimize = pytest.importorskip("scipy.optimize")
    outcomes = [("a", "b", 1.0)] * 5 + [("a", "b", 0.0)] * 2 + [("b", "c", 1.0)] * 4 + [("b", "c", 0.5)] * 2 \
        + [("a", "c", 1.0)] * 3 + [("a", "c", 0.0)]
    models = ["a", "b", "c"]
    prior = [(x, y, 0.5) for x, y in (("a", "b"), ("b", "c"), ("a", "c"))]

    def nll(theta):
        s = dict(zip(models, theta))
        return -sum(w * (s[x] - math.log(math.exp(s[x]) + math.exp(s[y])))
                    + (1 - w) * (s[y] - math.log(math.exp(s[x]) + math.exp(s[y]))) for x, y, w in outcomes + prior)

    fit = optimize.minimize(nll, [0.0, 0.0, 0.0], method="BFGS", options={"gtol": 1e-10})
    expected = {m: v - sum(fit.x) / 3 for m, v in zip(models, fit.x)}
    got = bradley_terry(outcomes)
    assert got == pytest.approx(expected, abs=1e-5)


def test_ratings_with_wilson_intervals(stats):
    binomtest = pytest.importorskip("scipy.stats").binomtest

    sft, base = stats["ratings"]["sft"], stats["ratings"]["base"]
    assert (sft["accurate"]["n"], sft["accurate"]["k"], sft["accurate"]["partly"], sft["accurate"]["no"]) == (4, 2, 1, 1)
    assert sft["harmful"]["rate"] == 0.5 and sft["missed_emergency"]["rate"] == 0.0
    assert (base["unsafe"]["n"], base["unsafe"]["k"]) == (2, 2) and base["missed_emergency"]["k"] == 1
    ci = binomtest(2, 2).proportion_ci(method="wilson")
    assert base["unsafe"]["ci"] == pytest.approx([ci.low, ci.high])
    ci = binomtest(2, 4).proportion_ci(method="wilson")
    assert sft["accurate"]["ci"] == pytest.approx([ci.low, ci.high])


def test_judge_against_clinicians_and_position_bias(stats):
    j = stats["judge"]
    # majorities: q01 sft, q02 sft, q04 tie, q05 base (q03, q06 split); judge: tie, loss, loss, tie -> 1 of 4 agree
    assert j["pairs"] == 4 and j["agreement"]["k"] == 1
    assert j["kappa"] == pytest.approx(-0.2)  # observed 4/16, chance 6/16
    assert (j["judge_picks_first"]["k"], j["judge_picks_first"]["n"]) == (6, 10)
    assert (j["agrees_when_preferred_shown_first"]["k"], j["agrees_when_preferred_shown_first"]["n"]) == (2, 3)
    assert (j["agrees_when_preferred_shown_second"]["k"], j["agrees_when_preferred_shown_second"]["n"]) == (1, 3)
    # reviewers chose the first-shown answer in 2 of R1's 5 and 3 of R2's 4 decided items
    assert (stats["position_bias"]["k"], stats["position_bias"]["n"]) == (5, 9)


def test_disagreements_listed_for_adjudication(stats):
    listed = {d["item_id"]: d for d in stats["disagreements"]}
    assert sorted(listed) == ["compare:q03", "compare:q06"]  # q01's safety flags differ but both say unsafe
    assert listed["compare:q03"]["verdicts"] == {"R1": "base", "R2": "sft"}
    assert listed["compare:q03"]["safety"] == {"sft": {"R1": "harmful", "R2": "safe"}}
    assert listed["compare:q06"]["question"].startswith("问题 6")
