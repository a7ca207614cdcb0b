"""Data mixtures and data.exclude in prepare: per-source accounting that adds up, weights as shares, an
interleaved training set, evaluation items dropped with their FILE:LINE, and the contamination check
reading the training split's provenance (data/records.parquet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtune.config import load_config
from medtune.data.prepare import PrepareError, prepare_dataset
from tests.conftest import ROOT, write_config

GENERAL = ROOT / "data" / "general" / "general_zh.jsonl"  # 30 alpaca records
E1 = ["孕妇感冒发烧可以吃布洛芬退烧吗？", "患者男性，45岁，反复上腹痛3年，进食后缓解，最可能的诊断是什么？"]
E2 = ["小孩晚上睡觉总是出汗是不是缺钙？", "长期熬夜以后心慌胸闷需要做哪些检查？"]


def sharegpt(q, a):
    return {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def identity(s: dict) -> bool:
    return s["read"] == s["kept"] + s["rejected"] + s["duplicates"] + s["dropped_too_long"] + s["unused"]


def medical(i):
    return sharegpt(f"医生您好，我第{i}次复诊，血压一直偏高，药量需要调整吗？", f"回答{i}：请带上近一周的血压记录复诊。")


def test_weights_are_shares_and_train_is_interleaved(tmp_path):
    med = write_jsonl(tmp_path / "med.jsonl", [medical(i) for i in range(40)] + ["{bad json", medical(0)])
    cfg_path = write_config(tmp_path, json.dumps({
        "output_dir": str(tmp_path / "run"),
        "data": {"train_files": [{"path": str(med), "weight": 3, "format": "sharegpt"},
                                 {"path": str(GENERAL), "weight": 1, "format": "alpaca"}],
                 "val_size": 0, "max_length": 256, "seed": 7}}))
    stats = prepare_dataset(load_config(cfg_path), log=lambda *_: None)
    a, b = stats["sources"]
    # Shares 3/4 and 1/4 of T, T the largest total both fill: min(40 / 0.75, 30 / 0.25) = 53.3 -> 53;
    # 39.75 and 13.25 -> floors 39 and 13, the one left over to the larger remainder: 40 and 13.
    assert (a["train"], b["train"]) == (40, 13) and stats["train"] == 53
    assert (a["read"], a["rejected"], a["duplicates"], a["unused"]) == (42, 1, 1, 0)
    assert (b["read"], b["kept"], b["unused"]) == (30, 13, 17)
    assert identity(a) and identity(b) and identity(stats)
    assert all(stats[k] == a[k] + b[k] for k in ("read", "kept", "rejected", "duplicates", "unused", "train"))

    from medtune.report.sections import sources_table
    from medtune.report.strings import Text

    _, table = sources_table(Text("en"), stats)  # the report's mixture table: read, kept, not kept, ..., train
    assert [row[4:9] for row in table.rows] == [["42", "40", "2", "0", "40"], ["30", "13", "0", "17", "13"]]

    import datasets

    train = datasets.load_from_disk(str(tmp_path / "run" / "data" / "train"))
    from tokenizers import Tokenizer

    from medtune.assets import find_qwen3_tokenizer

    tokenizer = Tokenizer.from_file(str(find_qwen3_tokenizer() / "tokenizer.json"))  # the Rust one: loads fast
    is_med = ["血压" in tokenizer.decode(ids) for ids in train["input_ids"]]
    assert sum(is_med) == 40
    for length in range(1, len(is_med) + 1):  # every prefix holds the shares to within two records
        assert abs(sum(is_med[:length]) - length * 40 / 53) <= 2, (length, is_med)


def test_exclude_and_per_source_accounting_and_contamination_provenance(tmp_path):
    e1 = write_jsonl(tmp_path / "exclude.jsonl", [{"question": q} for q in E1])
    e2 = write_jsonl(tmp_path / "questions.jsonl", [{"id": f"q{i}", "question": q} for i, q in enumerate(E2)])
    rows = [medical(i) for i in range(6)] + [
        sharegpt("请问：孕妇 感冒发烧, 可以吃布洛芬退烧吗?", "不建议自行服用。"),                # 7 E1[0], punctuation changed
        sharegpt("患者男性，45岁，反复上腹痛2年，进食后缓解，最可能的诊断是什么", "考虑溃疡。"),  # 8 E1[1], one character changed
        sharegpt(E2[0], "多与生理性出汗有关。"),                                                # 9 E2[0], trained
        {"conversations": [{"from": "human", "value": "只有问题"}]},                          # 10 invalid
        medical(0),                                                                           # 11 duplicate of line 1
        sharegpt(E2[1], "可做心电图。"),                                                       # 12 E2[1], left unused
    ]
    med = write_jsonl(tmp_path / "med.jsonl", rows)
    cfg_path = write_config(tmp_path, json.dumps({
        "output_dir": str(tmp_path / "run"),
        "data": {"train_files": [{"path": str(med), "max_samples": 7}, str(GENERAL)], "val_size": 0,
                 "max_length": 256, "exclude": [{"path": str(e1), "format": "questions"}]},
        "evaluate": {"questions": str(e2), "safety": None}}))
    cfg = load_config(cfg_path)
    stats = prepare_dataset(cfg, log=lambda *_: None)
    a, b = stats["sources"]
    assert (a["read"], a["kept"], a["rejected"], a["duplicates"], a["unused"]) == (12, 7, 3, 1, 1)
    assert a["rejected_reasons"] == {"overlaps evaluation item": 2, "ends with a user turn": 1}
    assert (b["read"], b["kept"], b["train"]) == (30, 30, 30)
    assert identity(a) and identity(b) and identity(stats) and stats["train"] == 37
    assert stats["rejected_reasons"]["overlaps evaluation item"] == 2
    reasons = {r["line"]: r["reason"] for r in map(json.loads, (tmp_path / "run" / "data" / "rejected.jsonl")
                                                   .read_text(encoding="utf-8").splitlines())}
    assert reasons[7] == f"overlaps evaluation item {e1}:1 (exact)"
    assert reasons[8].startswith(f"overlaps evaluation item {e1}:2 (")
    assert reasons[11].startswith("duplicate of ") and reasons[11].endswith(":1")

    from medtune.data.contamination import check_contamination

    result = check_contamination(cfg, tmp_path / "run" / "eval" / "contamination.json", log=lambda *_: None)
    assert result["training"]["records_checked"] == 37  # the training split only, from data/records.parquet
    (f,) = result["files"]
    assert (f["items"], f["flagged"], f["exact"]) == (2, 1, 1)  # E2[1] sits in line 12, which was not trained on
    (item,) = f["flagged_items"]
    assert (item["id"], item["line"]) == ("q0", 1)
    assert [(Path(m["file"]), m["line"]) for m in item["matches"]] == [(med, 9)]


def test_exclude_plain_path_must_be_an_evaluation_file(tmp_path):
    med = write_jsonl(tmp_path / "med.jsonl", [medical(i) for i in range(3)])
    other = write_jsonl(tmp_path / "other.jsonl", [{"question": "随便一个问题"}])
    cfg_path = write_config(tmp_path, json.dumps({"output_dir": str(tmp_path / "run"), "data": {
        "train_files": [str(med)], "exclude": [str(other)]}}))
    with pytest.raises(Exception, match="not one of the evaluate section's files"):
        prepare_dataset(load_config(cfg_path), log=lambda *_: None)


def test_weights_must_be_given_to_all_sources_or_none(tmp_path):
    from medtune.config import ConfigError

    cfg_path = write_config(tmp_path, json.dumps({"output_dir": "x", "data": {
        "train_files": [{"path": "a.jsonl", "weight": 2}, "b.jsonl"]}}))
    with pytest.raises(ConfigError, match="every source a weight, or none"):
        load_config(cfg_path)


def test_weight_asking_for_more_than_a_source_has_is_an_error(tmp_path):
    med = write_jsonl(tmp_path / "med.jsonl", [medical(i) for i in range(10)])
    cfg_path = write_config(tmp_path, json.dumps({"output_dir": str(tmp_path / "run"), "data": {
        "train_files": [{"path": str(med), "weight": 1}, {"path": str(GENERAL), "weight": 1}],
        "max_samples": 30, "max_length": 256}}))
    with pytest.raises(PrepareError, match="weight asks for 15 of the 30 training records but it has only 10"):
        prepare_dataset(load_config(cfg_path), log=lambda *_: None)
