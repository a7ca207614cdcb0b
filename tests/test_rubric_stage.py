"""The evaluate stage grades a rubric set through the rule-based grader it starts itself (builtin:rules), the
report shows the result, and the shipped Chinese rubric set holds what data/rubrics/README.md says."""

from __future__ import annotations

import json
import shutil
from collections import Counter

from medtune.config import load_config, save_config
from medtune.data.rubrics import load_rubric_set
from medtune.evaluate.stage import evaluate_run
from medtune.generate.rule_grader import QUOTED
from medtune.report.write import write_report
from tests.conftest import ROOT, write_config
from tests.eval_fixtures import tiny_run  # noqa: F401

RUBRICS = ROOT / "data" / "rubrics" / "zh_consultations.jsonl"


def rule_score(answer: str, rubrics: list[dict]) -> float:
    """An independent reading of the rule grader and HealthBench's score: met = a quoted phrase is in the answer."""
    met = [c["points"] for c in rubrics if any(q in answer for q in QUOTED.findall(c["criterion"]))]
    return sum(met) / sum(c["points"] for c in rubrics if c["points"] > 0)


def test_stage_grades_a_rubric_set_with_the_builtin_rule_grader_and_the_report_shows_it(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = write_config(tmp_path, json.dumps({
        "output_dir": str(run), "model": {"name_or_path": "builtin:tiny-qwen3"},
        "evaluate": {"perplexity": False, "questions": None, "safety": None, "batch_size": 4,
                     "generation": {"max_new_tokens": 3, "do_sample": False},
                     "rubrics": [{"path": str(RUBRICS), "max_examples": 3}], "grader_base_url": "builtin:rules"}}))
    logs = []
    outputs = evaluate_run(load_config(config), log=logs.append)
    assert set(outputs) == {"rubric"}
    out = run / "eval" / "rubric" / "zh_consultations"
    assert {p.name for p in out.iterdir()} == {"summary.json", "grades.jsonl", "answers.jsonl", "grader_cache.jsonl"}
    summary = json.loads((out / "summary.json").read_text())
    rows = {json.loads(x)["prompt_id"]: json.loads(x) for x in RUBRICS.read_text().splitlines()}
    answers = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["arm"] for a in summary["arms"]] == ["tiny-qwen3-medtune", "tiny-qwen3"]
    for arm in summary["arms"]:
        mine = [a for a in answers if a["arm"] == arm["arm"]]
        assert [a["example_id"] for a in mine] == ["zh-emerg-01", "zh-med-01", "zh-preg-01"]  # themes take turns
        expected = sum(rule_score(a["answer"], rows[a["example_id"]]["rubrics"]) for a in mine) / 3
        assert arm["score"] == min(1.0, max(0.0, expected))
        assert arm["grader"]["failed"] == 0 and arm["grader"]["unparsable"] == 0
    assert summary["ceiling"]["score"] == 1.0 and summary["ceiling"]["n"] == 3
    assert summary["grader"]["model"] == "medtune-rules"

    logs.clear()
    evaluate_run(load_config(config), log=logs.append)  # unchanged inputs: the part is skipped
    assert any("rubric:zh_consultations is up to date" in line for line in logs)

    save_config(load_config(config), run / "config.yaml")  # as `medtune run` leaves it
    write_report(run, lang="en", cjk_font=None, generated_at="now")
    report = (run / "report.md").read_text(encoding="utf-8")
    part = report.split("Rubric-graded consultations", 1)[1]
    assert "the loopback grader that decides by fixed rules" in part
    medtune = summary["arms"][0]
    assert f"| `tiny-qwen3-medtune` | {medtune['score']:.3f} [" in part
    assert "| Ideal completions (ceiling) | 1.000 [1.000, 1.000] | 3 / 3 | 0 / 4 (0.0%) | 0 / 0 |"  # 2+1+1 negatives in part
    assert "| `theme:emergency` |" in part and "| `theme:medication` |" in part and "| `zh-med-01` |" in part
    write_report(run, lang="zh", cjk_font=None, generated_at="now")
    assert "评分标准问诊" in (run / "report.md").read_text(encoding="utf-8")


def test_the_shipped_rubric_set_is_what_its_readme_says():
    examples, rejected = load_rubric_set(RUBRICS)
    assert rejected == [] and len(examples) >= 40
    assert sum(len(e.prompt) > 1 for e in examples) >= 4
    themes = Counter(t for e in examples for t in e.example_tags if t.startswith("theme:"))
    assert len({e.example_tags[0] for e in examples[:6]}) == 6  # the first six span the themes (the demo's six)
    assert set(themes) == {"theme:emergency", "theme:medication", "theme:pregnancy_children", "theme:chronic",
                           "theme:mental_health", "theme:everyday"} and min(themes.values()) >= 6
    for e in examples:
        assert 4 <= len(e.rubrics) <= 8 and any(c.points < 0 for c in e.rubrics), e.id
        assert all(QUOTED.findall(c.criterion) for c in e.rubrics), e.id
        ideal = e.ideal_completion or ""
        # each ideal completion meets every positive criterion and no negative one under the rule grader
        assert [any(q in ideal for q in QUOTED.findall(c.criterion)) for c in e.rubrics] == \
            [c.points > 0 for c in e.rubrics], e.id


def test_demo_config_resolves_the_rubric_set_against_the_project(tmp_path):
    from pathlib import Path

    from medtune.run import demo_config

    cfg = demo_config(str(tmp_path / "demo"))
    assert cfg.evaluate.grader_base_url == "builtin:rules"
    assert cfg.evaluate.rubrics and all(Path(r.path).is_absolute() and Path(r.path).exists()
                                        for r in cfg.evaluate.rubrics)
