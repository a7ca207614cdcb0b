"""`medtune review stats` writes review/stats.json; the report's "Clinician review" section shows it (zh/en),
and a run nobody reviewed gets no such section."""

from __future__ import annotations

import json

import pytest

from medtune.cli import main
from medtune.report.write import write_report
from medtune.review.store import ReviewStore
from tests.review_fixture import review_run
from tests.review_stats_fixture import hand_judgments


@pytest.fixture(scope="module")
def reviewed_run(tmp_path_factory):
    run = review_run(tmp_path_factory.mktemp("reviewed") / "run", questions=6)
    store = ReviewStore(run)
    for j in hand_judgments():
        reviewer = store.reviewer_named(j["reviewer"], create=True)
        store.save(reviewer, j["item_id"], j["arm_order"], j["preferred"], j["ranking"], j["answers"])
    assert main(["review", "stats", str(run)]) == 0
    return run


def test_stats_file_and_judgments_jsonl(reviewed_run):
    stats = json.loads((reviewed_run / "review" / "stats.json").read_text(encoding="utf-8"))
    assert stats["judgments"] == 12 and stats["reviewers"] == ["R1", "R2"]
    assert stats["models"]["sft"]["win_rate"] == pytest.approx(0.625)
    lines = (reviewed_run / "review" / "judgments.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 12 and {json.loads(x)["reviewer"] for x in lines} == {"R1", "R2"}


@pytest.mark.parametrize("lang,title,kappa_word", [("en", "Clinician review", "Cohen's kappa = 0.478"),
                                                   ("zh", "医生评审", "Cohen kappa = 0.478")])
def test_report_section(reviewed_run, tmp_path, lang, title, kappa_word):
    result = write_report(reviewed_run, lang=lang, output_dir=tmp_path, generated_at="2026-01-01", cjk_font=False)
    md = result.markdown.read_text(encoding="utf-8")
    section = md.split(title, 1)[1]
    assert "| 1 | `sft` | 12 | 6 / 3 / 3 | 62.5%" in section and "| 2 | `base` | 12 | 3 / 3 / 6 | 37.5%" in section
    assert kappa_word in section
    assert "`compare:q03`" in section and "`compare:q06`" in section  # the items to adjudicate
    assert "25.0%" in section  # the judge agrees with the clinicians on 1 of 4 pairs


def test_no_section_without_review(tmp_path):
    run = review_run(tmp_path / "run", questions=2)
    md = write_report(run, lang="en", output_dir=tmp_path / "out", generated_at="2026-01-01",
                      cjk_font=False).markdown.read_text(encoding="utf-8")
    assert "Clinician review" not in md
    ReviewStore(run)  # reviewing started, no stats yet: the section says what to run
    md = write_report(run, lang="en", output_dir=tmp_path / "out2", generated_at="2026-01-01",
                      cjk_font=False).markdown.read_text(encoding="utf-8")
    assert "medtune review stats RUN_DIR" in md.split("Clinician review", 1)[1]
