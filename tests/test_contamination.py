"""The contamination check: exact and n-gram detection on hand-made near-copies, a true negative, file:line
provenance, clean-subset accuracy and Fisher's test computed by hand, and streaming."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

from medtune.config import config_from_dict
from medtune.data.contamination import (check_contamination, clean_subset, fisher_exact, load_eval_file, scan, TrainingRecord)
from medtune.data.overlap import EvalItem, OverlapIndex
from tests.conftest import ROOT

# 28 characters once normalised: 患者男性45岁反复上腹痛3年进食后缓解最可能的诊断是什么
STEM = "患者男性，45岁，反复上腹痛3年，进食后缓解，最可能的诊断是什么？"
SHORT = "孕妇感冒发烧可以吃布洛芬退烧吗？"  # 15 characters normalised


def test_exact_after_normalisation_full_width_and_spaces():
    index = OverlapIndex([EvalItem("q1", 1, STEM)])
    copy = "医生您好。患者 男性, 45 岁, 反复上腹痛 3 年; 进食后缓解. 最可能的诊断是什么?谢谢"  # ASCII punctuation, spaces
    (m,) = index.match(["你好", copy])
    assert (m.item, m.exact, m.coverage) == (0, True, 1.0)


def test_one_changed_character_is_an_overlap_not_an_exact_match():
    index = OverlapIndex([EvalItem("q1", 1, STEM)])
    near = STEM.replace("3年", "2年")
    (m,) = index.match([near])
    # Only the changed character (position 12, with >= 8 characters on each side) is uncovered: 27/28.
    assert not m.exact and abs(m.coverage - 27 / 28) < 1e-12


def test_true_negative_shares_only_common_medical_words():
    index = OverlapIndex([EvalItem("q1", 1, SHORT), EvalItem("q2", 2, STEM)])
    unrelated = ["我是孕妇，最近有点感冒，请问发烧了该怎么办？", "多喝水，发烧超过三天请就医。布洛芬是常用的退烧药。",
                 "请问最可能的诊断是什么呢？"]  # a stock phrase: 9 of the stem's 28 characters, 32% < 80%
    assert index.match(unrelated) == []
    # The stock phrase is seen, just below the threshold: 9 of 28 characters covered.
    (m,) = OverlapIndex([EvalItem("q2", 2, STEM)], threshold=0.3).match(unrelated)
    assert abs(m.coverage - 9 / 28) < 1e-12


def test_short_items_need_a_whole_message():
    index = OverlapIndex([EvalItem("s", 1, "头痛怎么办")])
    assert index.too_short(0)
    assert index.match(["我头痛怎么办才好，已经三天了"]) == []
    (m,) = index.match(["头痛 怎么办？"])
    assert m.exact


# A CMExam item whose stem (5 characters) is shorter than the 8-gram window.
CMEXAM_CSV = "Question,Options,Answer\n川芎可用于,A 活血\\nB 行气\\nC 祛风\\nD 止痛\\nE 以上均是,E\n"


def test_short_stem_item_is_found_with_its_options_in_a_training_dialogue(tmp_path):
    (tmp_path / "cmexam.csv").write_text(CMEXAM_CSV, encoding="utf-8")
    (item,) = load_eval_file(tmp_path / "cmexam.csv", "cmexam").items
    assert (item.id, item.line, item.text) == ("cmexam.csv:2", 2, "川芎可用于")
    dialogue = ["请做这道题：川芎可用于（　）\nA．活血 B．行气 C．祛风 D．止痛 E．以上均是", "答案是E。"]
    (m,) = OverlapIndex([item]).match(dialogue)
    # The whole item (stem then options, normalised) lies inside the first message.
    assert (m.item, m.coverage, m.exact) == (0, 1.0, True)
    # The same question with other options, or the stem inside a longer sentence, is not this item.
    assert OverlapIndex([item]).match(["川芎可用于治疗哪些病？A．头痛 B．失眠", "活血行气，祛风止痛。"]) == []


def test_options_alone_never_flag_an_item():
    # Stem 10 characters, options 42 once normalised: the options are 81% of the item but cover none of its stem.
    stem = "高血压的常见并发症是"
    options = "A. 冠状动脉粥样硬化性心脏病 B. 2型糖尿病 C. 缺血性脑卒中 D. 慢性肾脏病 E. 高血压性视网膜病变"
    item = EvalItem("x", 1, stem, options)
    unrelated = ["糖尿病患者应警惕哪些疾病？" + options.replace(". ", "．")]
    assert OverlapIndex([item]).match(unrelated) == []
    # The stem with its first character changed, then the same options: 9 of its 10 characters are covered.
    (m,) = OverlapIndex([item]).match(["低血压的常见并发症是" + options])
    assert not m.exact and abs(m.coverage - 9 / 10) < 1e-12


def test_a_long_stem_alone_still_flags_its_item():
    item = EvalItem("q", 1, STEM, "A. 胃溃疡 B. 十二指肠溃疡 C. 胃癌 D. 胆囊炎")
    (m,) = OverlapIndex([item]).match([STEM])
    assert (m.coverage, m.exact) == (1.0, True)


def test_scan_reports_file_and_line_of_each_overlapping_record(tmp_path):
    bench = tmp_path / "questions.jsonl"
    bench.write_text("\n".join(json.dumps({"id": i, "question": q}, ensure_ascii=False) for i, q in
                               [("a", STEM), ("b", SHORT), ("c", "今天北京的天气怎么样呢请告诉我")]) + "\n",
                     encoding="utf-8")
    files = [load_eval_file(bench, "questions")]
    records = [TrainingRecord("train.jsonl", 3, ["无关的问题", "无关的回答"]),
               TrainingRecord("train.jsonl", 7, [STEM.replace("3年", "2年"), "答"]),
               TrainingRecord("other.jsonl", 12, ["请问" + SHORT, "不建议自行用药"])]
    (result,), checked = scan(files, iter(records))
    assert checked == 3
    assert (result["items"], result["flagged"], result["exact"], result["overlap"]) == (3, 2, 1, 1)
    by_id = {x["id"]: x for x in result["flagged_items"]}
    assert by_id["a"]["line"] == 1 and by_id["a"]["matches"] == [
        {"file": "train.jsonl", "line": 7, "coverage": round(27 / 28, 4), "exact": False}]
    assert by_id["b"]["line"] == 2 and by_id["b"]["exact"]
    assert by_id["b"]["matches"][0]["file"] == "other.jsonl" and by_id["b"]["matches"][0]["line"] == 12


def test_benchmark_items_keep_their_ids_and_lines(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    (d / "anatomy.csv").write_text(",Question,A,B,C,D,Answer\n0,人体最大的器官是什么器官呢,皮肤,肝,肺,心,A\n"
                                   "1,成人正常体温大约是多少摄氏度,35,37,39,41,B\n", encoding="utf-8")
    f = load_eval_file(d, "cmmlu")
    assert [(it.id, it.line, it.text) for it in f.items] == [
        ("anatomy.csv:2", 2, "人体最大的器官是什么器官呢"), ("anatomy.csv:3", 3, "成人正常体温大约是多少摄氏度")]


def test_clean_subset_accuracy_by_hand():
    outcomes = [{"id": f"x:{i}", "correct": c} for i, c in enumerate([1, 1, 1, 0, 1, 0, 0, 1, 1, 1])]
    r = clean_subset(outcomes, {"x:0", "x:1", "x:2"})
    # all 7/10; flagged x:0-2 all right (3/3); clean x:3-9: 0,1,0,0,1,1,1 -> 4/7
    assert (r["all"]["correct"], r["all"]["n"]) == (7, 10)
    assert (r["flagged"]["correct"], r["flagged"]["n"]) == (3, 3)
    assert (r["clean"]["correct"], r["clean"]["n"], r["clean"]["accuracy"]) == (4, 7, 4 / 7)
    # Fisher on [[4, 3], [3, 0]]: row sums 7, 3; column of "right" = 7 of 10. P(a) = C(7,a)C(3,7-a)/C(10,7):
    # a=4: 35/120, a=5: 63/120, a=6: 21/120, a=7: 1/120. Tables no likelier than a=4 (35): 4, 6, 7 -> 57/120.
    assert abs(r["test"]["p_value"] - 57 / 120) < 1e-12


def test_fisher_exact_known_value():
    # The tea-tasting table [[3, 1], [1, 3]]: two-sided p = 34/70 (Fisher 1935).
    assert abs(fisher_exact(3, 1, 1, 3) - 34 / 70) < 1e-12
    assert fisher_exact(0, 0, 5, 5) == 1.0


def test_streaming_memory_does_not_grow_with_training_size():
    index_files = [load_eval_file_like([STEM, SHORT])]

    def records(n):
        for i in range(n):
            yield TrainingRecord("t.jsonl", i + 1, [f"第{i}号病人咨询：最近睡眠不好，白天没有精神，该怎么调理？" * 3, "规律作息。"])

    def peak(n):
        tracemalloc.start()
        scan(index_files, records(n))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(200), peak(4000)
    assert large < small * 1.5 + 50_000  # 20x the records, about the same peak


def load_eval_file_like(texts):
    from medtune.data.contamination import EvalFile

    return EvalFile("questions", "inline", [EvalItem(f"q{i}", i + 1, t) for i, t in enumerate(texts)])


def test_check_contamination_without_records_file_reads_every_valid_record(tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [{"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好"}]},
            {"conversations": [{"from": "human", "value": STEM}]},  # invalid (no answer): never trained on
            {"conversations": [{"from": "human", "value": "请问：" + STEM}, {"from": "gpt", "value": "考虑十二指肠溃疡。"}]}]
    train.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": STEM}, ensure_ascii=False) + "\n", encoding="utf-8")
    cfg = config_from_dict({"output_dir": str(tmp_path / "run"), "data": {"train_files": [str(train)]},
                            "evaluate": {"questions": str(questions), "safety": None}})
    out = tmp_path / "run" / "eval" / "contamination.json"
    result = check_contamination(cfg, out, log=lambda *_: None)
    assert json.loads(out.read_text(encoding="utf-8")) == result
    assert "superset" in result["training"]["selection"] and result["training"]["records_checked"] == 2
    (f,) = result["files"]
    assert f["flagged_items"][0]["matches"][0]["line"] == 3 and f["flagged_items"][0]["exact"]
    assert Path(f["flagged_items"][0]["matches"][0]["file"]) == train


def test_benchmark_script_smoke():
    from tests.test_benchmarks_train_prepare import run_script

    r = run_script("benchmarks/contamination.py", "--records", "600", "--items", "30", "--naive-records", "40")
    assert r["records"] == 600 and r["items"] == 30
    assert r["same_pairs_on_subsample"] is True  # index and naive per-pair check flag the same pairs
    assert r["fresh_flagged"] == 0 and r["planted_found_at_their_line"] >= r["planted"] * 0.8
    assert r["naive_seconds_extrapolated"] > r["seconds"]


def test_records_of_files_the_config_no_longer_names_is_an_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from medtune.errors import UserError

    train = tmp_path / "new.jsonl"
    train.write_text(json.dumps({"instruction": "问", "output": "答"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "run" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"file": [str(tmp_path / "old.jsonl")], "line": [1], "source": [0], "split": ["train"]}),
                   tmp_path / "run" / "data" / "records.parquet")
    cfg = config_from_dict({"output_dir": str(tmp_path / "run"), "data": {"train_files": [str(train)]},
                            "evaluate": {"safety": None}})
    with pytest.raises(UserError, match="old.jsonl, which data.train_files no longer names"):
        check_contamination(cfg, tmp_path / "out.json", log=lambda *_: None)


def test_consultation_cases_and_align_data_are_checked(tmp_path):
    clin = ROOT / "data" / "bench" / "cmb_clin_demo.json"
    cases = json.loads(clin.read_text(encoding="utf-8"))
    question = cases[1]["QA_pairs"][0]["question"]
    pairs = tmp_path / "pairs.jsonl"  # DPO-style preference records
    pairs.write_text(json.dumps({"prompt": [{"role": "user", "content": "你好"}], "chosen": "好", "rejected": "坏"},
                                ensure_ascii=False) + "\n"
                     + json.dumps({"prompt": "医生：" + question, "chosen": "甲", "rejected": "乙"}, ensure_ascii=False)
                     + "\n", encoding="utf-8")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"instruction": "今天天气怎么样", "output": "晴"}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    cfg = config_from_dict({"output_dir": str(tmp_path / "run"), "data": {"train_files": [str(train)]},
                            "align": {"algorithm": "dpo", "train_files": [str(pairs)]},
                            "evaluate": {"questions": None, "safety": None,
                                         "consultations": [{"path": str(clin)}]}})
    result = check_contamination(cfg, tmp_path / "out.json", log=lambda *_: None)
    (f,) = result["files"]
    n_items = sum(1 + len(c["QA_pairs"]) for c in cases)  # each description and each question
    assert (f["kind"], f["items"], f["flagged"]) == ("cmb-clin", n_items, 1)
    (item,) = f["flagged_items"]
    assert item["id"] == f"{cases[1]['id']}/q1" and item["exact"]
    assert item["matches"][0]["file"] == str(pairs) and item["matches"][0]["line"] == 2
    assert result["training"]["records_checked"] == 3 and result["training"]["align"] == [str(pairs)]
