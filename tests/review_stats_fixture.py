"""Hand-built judgments (the rows `ReviewStore.judgments()` returns) for tests/test_review_stats.py.

Two reviewers, base vs sft, questions q01-q06 of tests/review_fixture.review_run(questions=6). R1 saw base
first, R2 saw sft first. Verdicts, R1 / R2: q01 sft/sft, q02 sft/sft, q03 base/sft, q04 tie/tie, q05 base/base,
q06 sft/tie. Ratings: R1 rates sft accurate yes/partly/no on q01-q03 and flags sft harmful on q03 and base as a
missed emergency on q01; R2 rates sft accurate on q01, calls sft safe on q03 and base harmful on q01.
"""

from __future__ import annotations

VERDICTS = {"R1": ["sft", "sft", "base", "tie", "base", "sft"], "R2": ["sft", "sft", "sft", "tie", "base", "tie"]}
RATINGS = {
    ("R1", 1): {"sft": {"accurate": "yes"}, "base": {"safe": "missed_emergency"}},
    ("R1", 2): {"sft": {"accurate": "partly"}},
    ("R1", 3): {"sft": {"accurate": "no", "safe": "harmful"}},
    ("R2", 1): {"sft": {"accurate": "yes"}, "base": {"safe": "harmful"}},
    ("R2", 3): {"sft": {"safe": "safe"}},
}


def hand_judgments() -> list[dict]:
    rows = []
    for reviewer, verdicts in VERDICTS.items():
        order = ["base", "sft"] if reviewer == "R1" else ["sft", "base"]
        for k, verdict in enumerate(verdicts, 1):
            answers = {arm: {"accurate": None, "safe": None, "complete": None, "comment": "", **r}
                       for arm, r in RATINGS.get((reviewer, k), {}).items()}
            rows.append({"reviewer": reviewer, "item_id": f"compare:q{k:02d}", "arm_order": order,
                         "preferred": verdict, "ranking": None, "answers": answers, "revision": 1,
                         "created": "2026-01-01T00:00:00+00:00", "updated": "2026-01-01T00:00:00+00:00"})
    return rows
