"""The evaluate stage scores a general benchmark next to a medical one and runs the consultations; the report
built from that real stage output sets medical gain beside general cost and shows the per-turn curve."""

from __future__ import annotations

import json
import shutil

import pytest

from medtune.config import load_config, save_config
from medtune.evaluate.stage import evaluate_run
from medtune.report.write import write_report
from tests.conftest import ROOT, write_config
from tests.eval_fixtures import tiny_run  # noqa: F401

MEDICAL = ROOT / "data" / "bench" / "cmmlu_style_zh"
GENERAL = ROOT / "data" / "bench" / "cmmlu_general_zh"
CLIN = ROOT / "data" / "bench" / "cmb_clin_demo.json"


def test_stage_scores_general_next_to_medical_and_consults_and_the_report_shows_both(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = write_config(tmp_path, json.dumps({
        "output_dir": str(run), "model": {"name_or_path": "builtin:tiny-qwen3"},
        "evaluate": {"perplexity": False, "questions": None, "safety": None, "batch_size": 4,
                     "generation": {"max_new_tokens": 3, "do_sample": False},
                     "benchmarks": [{"path": str(MEDICAL), "format": "cmmlu", "subjects": ["临床基础"]},
                                    {"path": str(GENERAL), "format": "cmmlu", "kind": "general",
                                     "subjects": ["chinese_history", "computer_science"]}],
                     "consultations": [{"path": str(CLIN), "max_cases": 2}]}}))
    cfg = load_config(config)
    save_config(cfg, run / "config.yaml")  # as `medtune evaluate` writes it before the stage runs
    outputs = evaluate_run(cfg, log=lambda *_: None)
    assert set(outputs) == {"benchmarks", "consultations"}
    bench = run / "eval" / "benchmarks"
    general = json.loads((bench / "cmmlu_general_zh-loglik-0shot--tiny-qwen3-medtune.json").read_text())
    assert general["kind"] == "general" and general["n"] == 20
    assert set(general["subjects"]) == {"chinese_history", "computer_science"}
    medical = json.loads((bench / "cmmlu_style_zh-loglik-0shot--tiny-qwen3.json").read_text())
    assert medical["kind"] == "medical" and medical["n"] == 12
    tests = {t["benchmark"]: t for t in json.loads((bench / "significance.json").read_text())["tests"]}
    assert set(tests) == {"cmmlu_style_zh", "cmmlu_general_zh"}

    consult = json.loads((run / "eval" / "consultations" / "cmb_clin_demo.json").read_text())
    assert [a["arm"] for a in consult["arms"]] == ["tiny-qwen3-medtune", "tiny-qwen3"]
    assert consult["cases"] == 2 and [t["n"] for t in consult["arms"][0]["per_turn"]] == [2, 2, 2]
    answers = (run / "eval" / "consultations" / "cmb_clin_demo_answers.jsonl").read_text().splitlines()
    assert len(answers) == 2 * 6

    write_report(run, lang="en", cjk_font=None, generated_at="now")
    report = (run / "report.md").read_text(encoding="utf-8")
    gain_cost = report.split("### Medical gain and general cost", 1)[1].split("###", 1)[0]
    rows = [line for line in gain_cost.splitlines() if line.startswith("| medical") or line.startswith("| general")]
    g, m = tests["cmmlu_general_zh"], tests["cmmlu_style_zh"]

    def delta(t):
        return f"{100 * (t['accuracy_a'] - t['accuracy_b']):+.1f}%"

    assert rows[0].startswith("| medical | cmmlu_style_zh |") and f"| {delta(m)} |" in rows[0]
    assert rows[1].startswith("| general | cmmlu_general_zh |") and f"| {delta(g)} |" in rows[1]
    assert "(general):" in report.split("## 2. Conclusions", 1)[1].split("## 3.", 1)[0]
    consult_part = report.split("### Multi-turn consultations", 1)[1]
    assert "| `tiny-qwen3-medtune` |" in consult_part and "plots/consult_rouge_l_cmb_clin_demo.png" in consult_part
    assert (run / "plots" / "consult_rouge_l_cmb_clin_demo.png").is_file()
    turn1 = consult["arms"][1]["per_turn"][0]["rouge_l"]
    assert f"| `tiny-qwen3` | {turn1:.3f} |" in consult_part  # the per-turn table reads the stage's numbers


# ---- the rules and the subject filter, unit by unit ------------------------------------------------

def say(finding) -> str:
    from medtune.report.strings import Text

    return Text("en")(finding.key, **finding.params)


@pytest.mark.parametrize("acc_a,acc_b,p,verdict,words", [
    (0.40, 0.50, 0.01, "flag", "10.0% below"), (0.55, 0.50, 0.01, "supported", "5.0% above"),
    (0.40, 0.50, 0.20, "not_supported", "no evidence that general ability changed")])
def test_rule_general_names_a_cost_only_when_significant(acc_a, acc_b, p, verdict, words):
    from medtune.report.conclusions import rule_general

    f = rule_general({"benchmark": "g", "a": "tuned", "b": "base", "accuracy_a": acc_a, "accuracy_b": acc_b,
                      "p_value": p, "only_a": 3, "only_b": 9})
    assert f.verdict == verdict and words in say(f)


@pytest.mark.parametrize("cases,ci,verdict", [
    (40, [-0.2, -0.05], "flag"), (40, [-0.1, 0.05], "not_supported"), (40, [0.01, 0.2], "info"),
    (5, [-0.2, -0.05], "too_few"), (40, None, "no_evidence")])
def test_rule_consultation_says_quality_falls_only_when_the_interval_is_below_zero(cases, ci, verdict):
    from medtune.report.conclusions import rule_consultation

    summary = {"benchmark": "clin", "arms": [{"arm": "m", "trend": {
        "cases": cases, "rouge_l_change": -0.1, "rouge_l_change_ci": ci}}]}
    (f,) = rule_consultation(summary)
    assert f.verdict == verdict and "clin, m" in say(f)


def test_a_subject_filter_naming_an_absent_subject_is_an_error():
    from medtune.errors import UserError
    from medtune.evaluate.bench import only_subjects
    from medtune.data.mcq import load_items

    items, _ = load_items(GENERAL, "cmmlu")
    assert {it.subject for it in only_subjects(items, ["computer_science"], GENERAL)} == {"computer_science"}
    with pytest.raises(UserError, match=r"no subject 'geography'; it has chinese_history, computer_science"):
        only_subjects(items, ["geography"], GENERAL)
