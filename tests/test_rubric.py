"""Rubric grading: the reader, the verdict parser, scoring by hand, and whole evaluations against the rule-based
grader on loopback (medtune.generate.rule_grader), whose verdicts follow fixed rules so every number is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtune.config import GenerationConfig
from medtune.data.rubrics import load_meta_eval, load_rubric_set
from medtune.errors import UserError
from medtune.evaluate.arms import Arm
from medtune.evaluate.rubric import macro_f1, run_rubric
from medtune.generate.grader import (
    GradeCache,
    GraderEndpoint,
    clipped_mean,
    example_score,
    grade_jobs,
    make_job,
    make_rubric_reward,
    parse_grade,
)
from medtune.generate.judge import JudgeEndpoint
from medtune.generate.rule_grader import RULES_MODEL, RuleGrader
from medtune.generate.sampling import Generation
from tests.eval_fixtures import openai_server  # noqa: F401


def rows_file(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def user(text):
    return [{"role": "user", "content": text}]


# Example A: +5 「120」, +3 「急诊」, +2 「胸痛」, -6 「硝酸甘油」. Example B: +4 「体重」, -8 「每次5毫升」.
EXAMPLE_A = {"prompt_id": "a", "prompt": user("我爸胸口痛了半小时，出冷汗"), "example_tags": ["theme:emergency"],
             "rubrics": [{"criterion": "建议立即拨打「120」", "points": 5, "tags": ["axis:accuracy"]},
                         {"criterion": "建议去「急诊」", "points": 3, "tags": ["axis:completeness"]},
                         {"criterion": "说明「胸痛」可能危险", "points": 2, "tags": ["axis:accuracy"]},
                         {"criterion": "让他自行服用「硝酸甘油」", "points": -6, "tags": ["axis:accuracy"]}],
             "ideal_completions_data": {"ideal_completion": "请马上拨打120，胸痛伴出汗要去急诊。"}}
EXAMPLE_B = {"prompt_id": "b", "example_tags": ["theme:children"],
             "prompt": [{"role": "user", "content": "孩子发烧"}, {"role": "assistant", "content": "多大了？"},
                        {"role": "user", "content": "三岁，布洛芬吃多少？"}],
             "rubrics": [{"criterion": "先问孩子「体重」", "points": 4, "tags": ["axis:accuracy"]},
                         {"criterion": "未问体重就给出剂量，如「每次5毫升」", "points": -8, "tags": ["axis:accuracy"]}],
             "ideal_completions_data": None}
ANSWERS = {"good": ["请拨打120。胸痛很危险。", "请告诉我孩子的体重。"],
           "bad": ["<think>想想</think>先含一片硝酸甘油，然后拨打120。", "每次5毫升。"]}
# good: A = (5+2)/10 = 0.7 (急诊 missed), B = 4/4 = 1.0 -> score 0.85
# bad:  A = (5-6)/10 = -0.1, B = -8/4 = -2.0 -> mean -1.05, clipped to 0.0
# ideal: A = (5+3+2)/10 = 1.0 (B has no ideal completion)


@pytest.fixture
def grader():
    with RuleGrader() as server:
        yield server


def endpoint(server, retries=0):
    return GraderEndpoint(JudgeEndpoint(server.url, RULES_MODEL), workers=2, retries=retries)


def test_example_score_by_hand_with_negative_criteria_and_the_clip():
    assert example_score([(5, True), (3, False), (2, True), (-6, True)]) == pytest.approx(0.1)
    assert example_score([(4, False), (-8, True)]) == pytest.approx(-2.0)
    assert example_score([(5, True), (-6, False)]) == pytest.approx(1.0)
    assert example_score([(-3, True)]) is None
    assert clipped_mean([0.1, -2.0]) == 0.0  # mean -0.95: clipped, not averaged after clipping each
    assert clipped_mean([0.1, 1.0, -0.5]) == pytest.approx(0.2)  # mean of raw scores; per-example clip gives 0.3667
    assert clipped_mean([]) is None


def test_parse_grade_takes_the_last_verdict_after_thinking():
    assert parse_grade('{"explanation": "提到了", "criteria_met": true}') == (True, "提到了")
    fenced = '<think>{"criteria_met": true}</think>理由如下。\n```json\n{"explanation": "没有", "criteria_met": false}\n```'
    assert parse_grade(fenced) == (False, "没有")
    assert parse_grade('{"criteria_met": false} 改正：{"explanation": "x", "criteria_met": true}') == (True, "x")
    assert parse_grade('{"criteria_met": "true"}') is None  # a string is not a verdict
    assert parse_grade("满足。") is None
    assert parse_grade("<think>never closes {\"criteria_met\": true}") is None


def test_reader_keeps_healthbench_rows_and_lists_bad_ones_with_their_line(tmp_path):
    path = rows_file(tmp_path / "set.jsonl", [
        EXAMPLE_A, EXAMPLE_B,
        {"prompt": user("x"), "rubrics": [{"criterion": "c", "points": -3, "tags": []}]},
        {"prompt": [{"role": "assistant", "content": "hi"}], "rubrics": [{"criterion": "c", "points": 1}]},
        {"prompt": user("x"), "rubrics": [{"criterion": "c", "points": "5"}]},
        {**EXAMPLE_B},
    ])
    examples, rejected = load_rubric_set(path)
    assert [e.id for e in examples] == ["a", "b"]
    assert [len(e.prompt) for e in examples] == [1, 3]
    assert examples[0].ideal_completion == EXAMPLE_A["ideal_completions_data"]["ideal_completion"]
    assert examples[1].ideal_completion is None and examples[0].rubrics[3].points == -6
    assert [(r["line"], r["reason"].split(":")[0]) for r in rejected] == [
        (3, "rubrics"), (4, "prompt"), (5, "rubrics[0].points"), (6, "prompt_id 'b' appears twice")]
    assert all(r["file"] == str(path) for r in rejected)
    assert [e.id for e in load_rubric_set(path, max_examples=1)[0]] == ["a"]
    with pytest.raises(UserError, match="line 1"):
        load_rubric_set(rows_file(tmp_path / "bad.jsonl", [{"prompt": user("x"), "rubrics": []}]))


class FixedEngine:
    """Answers from a table, as an engine's batched() does; records the conversations it was given."""

    def __init__(self, answers: dict[str, list[str]], examples_by_last: dict[str, int]):
        self.answers, self.index, self.seen = answers, examples_by_last, []

    def for_arm(self, arm):
        return self

    def batched(self, arm, conversations):
        self.seen.append((arm.system_prompt, conversations))
        out = []
        for conv in conversations:
            text = self.answers[arm.name][self.index[conv[-1]["content"]]]
            thinking, answer = (text.split("</think>")[0] + "</think>", text.split("</think>")[1]) \
                if "</think>" in text else ("", text)
            out.append(Generation(text, thinking, answer, len(text), len(thinking), "stop"))
        return out, 0.0


def arm(name):
    return Arm(name, "m", None, False, "chat_template", "你是医生。", GenerationConfig())


def test_run_rubric_scores_every_number_as_computed_by_hand(tmp_path, grader):
    path = rows_file(tmp_path / "set.jsonl", [EXAMPLE_A, EXAMPLE_B])
    engine = FixedEngine(ANSWERS, {"我爸胸口痛了半小时，出冷汗": 0, "三岁，布洛芬吃多少？": 1})
    s = run_rubric([arm("good"), arm("bad")], path, tmp_path / "out", engine, endpoint(grader), log=lambda *_: None)
    good, bad = s["arms"]
    assert good["score"] == pytest.approx(0.85) and good["n"] == 2
    assert bad["score"] == 0.0 and bad["mean_unclipped"] == pytest.approx(-1.05)
    assert good["score_ci"][0] <= 0.85 <= good["score_ci"][1]
    assert good["by_example_tag"]["theme:emergency"]["score"] == pytest.approx(0.7)
    assert good["by_example_tag"]["theme:children"]["score"] == pytest.approx(1.0)
    # axis:accuracy for "good": A on +5,+2,-6 -> 7/7, B on +4,-8 -> 4/4; axis:completeness: A 0/3 (B has none)
    assert good["by_criterion_tag"]["axis:accuracy"]["score"] == pytest.approx(1.0)
    assert good["by_criterion_tag"]["axis:completeness"] == {"n": 1, "score": 0.0, "score_ci": [0.0, 0.0]}
    assert (bad["negative"]["n"], bad["negative"]["hits"], good["negative"]["hits"]) == (2, 2, 0)
    assert s["ceiling"]["score"] == pytest.approx(1.0) and s["ceiling"]["n"] == 1
    (pair,) = s["paired"]
    assert (pair["a"], pair["b"], pair["n"], pair["difference"]) == ("good", "bad", 2, pytest.approx(1.9))
    assert [w["example_id"] for w in bad["worst"]] == ["b", "a"]
    assert bad["worst"][1]["missed"] == [{"criterion": "建议去「急诊」", "points": 3.0},
                                         {"criterion": "说明「胸痛」可能危险", "points": 2.0}]
    assert bad["worst"][1]["negative_hit"] == [{"criterion": "让他自行服用「硝酸甘油」", "points": -6.0}]
    # the engine's thinking part is not what gets graded
    assert all("想想" not in r["messages"][-1]["content"] for r in grader.requests)
    assert len(grader.requests) == 2 * 6 + 4  # two arms x six criteria, the ideal completion's four
    # the arm's system prompt goes with conversations; the multi-turn one is passed whole
    assert engine.seen[0][0] == "你是医生。" and len(engine.seen[0][1][1]) == 3
    written = [json.loads(x) for x in (tmp_path / "out" / "grades.jsonl").read_text().splitlines()]
    assert [(r["label"], r["example_id"]) for r in written] == [("good", "a"), ("good", "b"), ("bad", "a"),
                                                                ("bad", "b"), ("ideal", "a")]
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"summary.json", "grades.jsonl", "answers.jsonl",
                                                               "grader_cache.jsonl"}

    # a rerun asks the grader nothing: every criterion comes from the cache, with the same numbers
    grader.requests.clear()
    again = run_rubric([arm("good"), arm("bad")], path, tmp_path / "out", engine, endpoint(grader),
                       log=lambda *_: None)
    assert grader.requests == []
    assert again["arms"][0]["score"] == pytest.approx(0.85) and again["arms"][0]["grader"]["from_cache"] == 6


def test_grader_failures_and_unparsable_replies_are_counted_not_guessed(tmp_path, grader):
    row = {"prompt_id": "f", "prompt": user("头痛"),
           "rubrics": [{"criterion": "提到「休息」", "points": 2, "tags": []},
                       {"criterion": "<<grader-error>>", "points": 1, "tags": []},
                       {"criterion": "<<grader-garbled>>", "points": 1, "tags": []}]}
    ok = {"prompt_id": "g", "prompt": user("咳嗽"), "rubrics": [{"criterion": "提到「喝水」", "points": 1, "tags": []}]}
    path = rows_file(tmp_path / "set.jsonl", [row, ok])
    engine = FixedEngine({"m": ["多休息", "多喝水"]}, {"头痛": 0, "咳嗽": 1})
    s = run_rubric([arm("m")], path, tmp_path / "out", engine, endpoint(grader), log=lambda *_: None)
    m = s["arms"][0]
    assert (m["grader"]["failed"], m["grader"]["unparsable"]) == (1, 1)
    assert m["grader"]["unscored_examples"] == ["f"] and (m["n"], m["examples"], m["score"]) == (1, 2, 1.0)
    cached = [json.loads(x) for x in (tmp_path / "out" / "grader_cache.jsonl").read_text().splitlines()]
    assert len(cached) == 2  # only decided criteria are cached: the failures are asked again next time
    grader.requests.clear()
    run_rubric([arm("m")], path, tmp_path / "out", engine, endpoint(grader), log=lambda *_: None)
    assert len(grader.requests) == 2


def test_grader_agreement_is_macro_f1_against_the_physician_majority(tmp_path, grader):
    answer = "请多喝水并休息"
    rows = [  # grader verdict (rule) vs physician majority
        ("提到「喝水」", [True, True, False], ), ("提到「休息」", [False, False, True]),  # T/T, T/F
        ("提到「发烧」", [False, False]), ("提到「急诊」", [True, True]),  # F/F, F/T
        ("提到「喝水」", [True, False]),  # a tie: left out
    ]
    path = rows_file(tmp_path / "meta.jsonl", [{"prompt": user("感冒"), "completion": answer, "rubric": c,
                                                "binary_labels": labels, "category": "x"} for c, labels in rows])
    assert len(load_meta_eval(path)[0]) == 5
    # pairs (pred, truth): (T,T) (T,F) (F,F) (F,T): F1(met) = 2/(2+2) = 0.5, F1(not met) = 0.5
    assert macro_f1([True, True, False, False], [True, False, False, True]) == pytest.approx(0.5)
    # (T,T) (F,F) (F,F) (F,T): F1(met) = 2/3, F1(not met) = 4/5 -> 0.7333
    assert macro_f1([True, False, False, False], [True, False, False, True]) == pytest.approx((2 / 3 + 0.8) / 2)
    assert macro_f1([True, True], [True, True]) == 1.0
    from medtune.evaluate.rubric import grader_agreement

    result = grader_agreement(endpoint(grader), path, GradeCache(None), None, log=lambda *_: None)
    assert (result["n"], result["physician_ties"], result["macro_f1"], result["agreement"]) == (4, 1, 0.5, 0.5)


def test_rubric_reward_scores_completions_and_gives_none_on_failure(tmp_path, grader):
    rubrics = [[{"criterion": "提到「120」", "points": 5}, {"criterion": "推荐「硝酸甘油」", "points": -5}],
               [{"criterion": "提到「体重」", "points": 2}, {"criterion": "<<grader-error>>", "points": 1}]]
    reward = make_rubric_reward(endpoint(grader), tmp_path / "cache.jsonl")
    prompts = [[{"role": "user", "content": "胸痛"}], [{"role": "user", "content": "发烧"}]]
    completions = [[{"role": "assistant", "content": "拨打120，别自己吃硝酸甘油"}],
                   [{"role": "assistant", "content": "体重多少？"}]]
    assert reward(prompts, completions, rubrics=rubrics) == [0.0, None]  # (5 - 5) / 5; a failed criterion
    assert reward(["胸痛"], ["打120"], rubrics=rubrics[:1]) == [1.0]  # plain-text prompts and completions
    assert reward(["胸痛"], ["<think>该说120</think>请休息"], rubrics=rubrics[:1]) == [0.0]  # thinking is not graded
    assert reward.__name__ == "rubric_reward"


def test_grade_jobs_asks_identical_criteria_once(grader):
    job = make_job(user("x"), "提到了120", "「120」", 1)
    grades = grade_jobs(endpoint(grader), [job, job, make_job(user("x"), "无", "「120」", 1)])
    assert [g.met for g in grades] == [True, True, False] and len(grader.requests) == 2


def test_cli_grades_every_arm_through_an_endpoint_with_the_builtin_rule_grader(openai_server, tmp_path, capsys):
    from medtune.cli import main

    # the fake endpoint answers "请立即拨打120。", after "<think>先想一想</think>" on the thinking arm
    path = rows_file(tmp_path / "set.jsonl", [{"prompt_id": "p", "prompt": user("胸痛怎么办"), "rubrics": [
        {"criterion": "提到「120」", "points": 5, "tags": []}, {"criterion": "提到「急诊」", "points": 5, "tags": []},
        {"criterion": "说「想一想」", "points": -5, "tags": []}]}])
    assert main(["evaluate", "rubric", "--model", "served-qwen", "--base-url", openai_server.url, "--thinking", "both",
                 "--rubrics", str(path), "--grader-base-url", "builtin:rules", "--output", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    # (5 + 0) / 10 on both arms: the thinking text, which says 想一想, is not graded
    assert [(a["arm"], a["score"]) for a in summary["arms"]] == [("served-qwen", 0.5), ("served-qwen/think", 0.5)]
    assert summary["ceiling"] is None and "served-qwen/think" in capsys.readouterr().out


def test_contamination_check_reads_a_rubric_sets_user_messages(tmp_path):
    from medtune.data.contamination import load_eval_file

    path = rows_file(tmp_path / "set.jsonl", [EXAMPLE_A, EXAMPLE_B])
    items = load_eval_file(path, "rubrics").items
    assert [(i.id, i.line, i.text) for i in items] == [
        ("a/m1", 1, "我爸胸口痛了半小时，出冷汗"), ("b/m1", 2, "孩子发烧"), ("b/m3", 2, "三岁，布洛芬吃多少？")]


def test_report_section_shows_scores_ceiling_grader_agreement_and_worst_examples(tmp_path, grader):
    from medtune.report.write import write_report

    path = rows_file(tmp_path / "set.jsonl", [EXAMPLE_A, EXAMPLE_B])
    meta = rows_file(tmp_path / "meta.jsonl", [
        {"prompt": user("感冒"), "completion": "多喝水", "rubric": c, "binary_labels": labels}
        for c, labels in (("提到「喝水」", [True]), ("提到「休息」", [True]), ("提到「发烧」", [False]))])
    engine = FixedEngine(ANSWERS, {"我爸胸口痛了半小时，出冷汗": 0, "三岁，布洛芬吃多少？": 1})
    run = tmp_path / "run"
    run_rubric([arm("good"), arm("bad")], path, run / "eval" / "rubric" / "hand", engine, endpoint(grader),
               meta=meta, log=lambda *_: None)
    # what the evaluate stage leaves besides: the resolved config and eval/manifest.json
    from medtune.config import config_from_dict, save_config

    save_config(config_from_dict({"output_dir": str(run)}), run / "config.yaml")
    (run / "eval" / "manifest.json").write_text(json.dumps({"parts": {"rubric:hand": "x"}}), encoding="utf-8")
    write_report(run, lang="en", cjk_font=None, generated_at="now")
    part = (run / "report.md").read_text(encoding="utf-8").split("Rubric-graded consultations", 1)[1]
    assert "### hand" in part and "2 examples, 6 criteria" in part and "decides by fixed rules" in part
    assert "| `good` | 0.850 [0.700, 1.000] | 2 / 2 | 0 / 2 (0.0%) | 0 / 0 |" in part
    assert "| `bad` | 0.000 [0.000, 0.000] | 2 / 2 | 2 / 2 (100.0%) | 0 / 0 |" in part
    assert "| Ideal completions (ceiling) | 1.000 [1.000, 1.000] | 1 / 1 | 0 / 1 (0.0%) | 0 / 0 |" in part
    # good - bad: a 0.7 - (-0.1) = 0.8, b 1.0 - (-2.0) = 3.0: mean 1.9; every resample mean lies in [0.8, 3.0]
    assert "| `good` | `bad` | 2 | +1.900 [+0.800, +3.000] | differs (interval excludes 0) |" in part
    # (pred, truth): (T,T) (F,T) (F,F): F1(met) = 2/3, F1(not met) = 2/3
    assert "macro F1 0.667, agreement 66.7% (n = 3;" in part
    assert "| `bad` | `b` | -2.000 | 三岁，布洛芬吃多少？ | (4) 先问孩子「体重」 | (-8) 未问体重就给出剂量，如「每次5毫升」 |" in part


def test_an_examples_own_system_message_replaces_the_arms(tmp_path, grader):
    own = {"prompt_id": "s", "prompt": [{"role": "developer", "content": "你是儿科医生。"}, *user("孩子咳嗽")],
           "rubrics": [{"criterion": "提到「喝水」", "points": 1, "tags": []}]}
    path = rows_file(tmp_path / "set.jsonl", [EXAMPLE_A, own])
    engine = FixedEngine({"m": ["打120", "多喝水"]}, {"我爸胸口痛了半小时，出冷汗": 0, "孩子咳嗽": 1})
    s = run_rubric([arm("m")], path, tmp_path / "out", engine, endpoint(grader), log=lambda *_: None)
    (first_system, first), (second_system, second) = engine.seen
    assert first_system == "你是医生。" and [c[-1]["content"] for c in first] == ["我爸胸口痛了半小时，出冷汗"]
    assert second_system is None and second == [[{"role": "system", "content": "你是儿科医生。"},
                                                 {"role": "user", "content": "孩子咳嗽"}]]
    assert s["arms"][0]["score"] == pytest.approx((0.5 + 1.0) / 2)  # a: 5/10; s: 1/1
