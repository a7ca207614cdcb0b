"""The report's checks, conclusion rules, string table and renderers, unit by unit."""

from __future__ import annotations

import math
import re
import string
from pathlib import Path

import pytest

from medtune.report import checks, conclusions as c
from medtune.report.document import Code, Document, Image, Para, Section, Table, to_html, to_markdown
from medtune.report.format import f_bytes, f_int, f_pct, f_ranges, f_sig, f_signed_pct
from medtune.report.strings import LANGS, STRINGS, Key, Text

REPORT_SRC = Path(__file__).resolve().parents[1] / "src" / "medtune" / "report"


def say(finding: c.Finding, lang: str = "en") -> str:
    return Text(lang)(finding.key, **finding.params)


# ---- effective batch -------------------------------------------------------------------------------

def test_effective_batch_reference_run_disagrees():
    b = checks.effective_batch(100_000, 2, 12_500, 4, 2, 4, samples_per_second=13.94, steps_per_second=0.871)
    assert b.derived == 16 and b.configured == 32
    assert b.expected_steps_per_epoch == (3125, 3126) and b.steps_per_epoch == 6250
    assert b.agrees is False
    assert b.throughput_derived == pytest.approx(16.0, abs=0.01)


@pytest.mark.parametrize("samples, epochs, per_device, accumulation, world", [
    (180, 3, 8, 1, 1),       # 23 steps per epoch, the last batch partial: derived 7.83, still consistent
    (100_000, 2, 4, 2, 4),   # exactly 3,125 per epoch
    (1_001, 1, 4, 2, 4),     # per-process rounding: ceil(ceil(1001/4)/4) = 63 batches -> 32 steps
    (20, 1, 8, 4, 1),        # fewer samples than one batch: 1 step
])
def test_effective_batch_consistent_runs_agree(samples, epochs, per_device, accumulation, world):
    # the step count the Trainer makes: ceil over the per-process dataloader, then over accumulation
    batches = math.ceil(math.ceil(samples / world) / per_device)
    steps = max(1, math.ceil(batches / accumulation)) * epochs
    b = checks.effective_batch(samples, epochs, steps, per_device, accumulation, world)
    assert b.agrees is True, (b.derived, b.expected_steps_per_epoch, b.steps_per_epoch)


def test_effective_batch_without_world_size_or_counts():
    b = checks.effective_batch(1000, 1, 125, 4, 2, None)
    assert b.derived == 8 and b.configured is None and b.agrees is None
    assert checks.effective_batch(None, 2, 100, 4, 2, 1) is None
    assert checks.effective_batch(1000, 1, 0, 4, 2, 1) is None


# ---- learning-rate schedule --------------------------------------------------------------------------

def test_scheduled_lr_matches_transformers():
    from transformers import optimization as o

    total, warm = 1000, 37
    for step in (0, 1, 10, 36, 37, 38, 500, 999, 1000):
        assert checks.scheduled_lr(step, 1.0, "linear", warm, total) == pytest.approx(
            o._get_linear_schedule_with_warmup_lr_lambda(step, num_warmup_steps=warm, num_training_steps=total))
        assert checks.scheduled_lr(step, 1.0, "cosine", warm, total) == pytest.approx(
            o._get_cosine_schedule_with_warmup_lr_lambda(step, num_warmup_steps=warm, num_training_steps=total,
                                                         num_cycles=0.5))
        assert checks.scheduled_lr(step, 1.0, "constant_with_warmup", warm, total) == pytest.approx(
            o._get_constant_schedule_with_warmup_lr_lambda(step, num_warmup_steps=warm))
    assert checks.warmup_steps_for(0.05, 12_500) == 625 and checks.warmup_steps_for(0.05, 101) == 6
    assert checks.warmup_steps_for(100, 12_500) == 100


def test_lr_schedule_finds_the_reference_warmup_error():
    steps = [100, 200, 600, 5000, 12_500]
    logged = [1.342e-5, 1.992e-5, 1.927e-5, 1.217e-5, 0.0]  # a 149-step warmup, not the configured 625
    lr = checks.lr_schedule(steps, logged, 2e-5, "linear", 0.05, 12_500)
    assert lr.warmup_steps == 625
    assert lr.points[0] == (100, 1.342e-5, pytest.approx(3.2e-6))
    assert [p[0] for p in lr.mismatches] == [100, 200, 5000]
    assert lr.largest[0] == 200


def test_lr_schedule_accepts_the_schedule_that_ran():
    steps = list(range(10, 1001, 10))
    logged = [checks.scheduled_lr(s, 3e-4, "cosine", 50, 1000) * (1 + 0.004) for s in steps]  # logging rounding
    lr = checks.lr_schedule(steps, logged, 3e-4, "cosine", 50, 1000)
    assert lr.mismatches == []
    assert checks.lr_schedule(steps, logged, 3e-4, "polynomial", 50, 1000) is None


def test_step_ranges_follow_the_logging_cadence():
    all_steps = [10, 20, 30, 40, 50, 60]
    assert checks.step_ranges([10, 20, 30, 50], all_steps) == [(10, 30), (50, 50)]
    assert f_ranges(checks.step_ranges([10, 30, 50], all_steps), limit=2) == ["10", "30", "…"]


# ---- other checks ----------------------------------------------------------------------------------

def test_loss_facts_prefer_the_log_and_fall_back_to_train_results():
    f = checks.loss_facts(1.6161, [100, 12_500], [2.3065, 1.5098], 2.3065, 1.5098)
    assert f.first == (100, 2.3065) and f.last == (12_500, 1.5098) and f.recorded_last_agrees is True
    assert f.fall == pytest.approx(0.7967) and f.fall_share == pytest.approx(0.7967 / 2.3065)
    f = checks.loss_facts(1.6161, [], [], 2.3065, 1.5098)
    assert f.first == (None, 2.3065) and f.last == (None, 1.5098) and f.recorded_last_agrees is None
    assert checks.loss_facts(1.6, [10], [1.9], None, 1.5).recorded_last_agrees is False


def test_small_checks():
    assert checks.perplexity_agrees(1.5926, 4.9166) is True
    assert checks.perplexity_agrees(1.5926, 5.2) is False
    assert checks.perplexity_agrees(None, 4.9) is None
    assert checks.data_counts_add_up({"read": 10, "kept": 5, "rejected": 1, "duplicates": 1,
                                      "dropped_too_long": 1, "unused": 2}) == (True, 10, 10)
    assert checks.data_counts_add_up({"read": 10, "kept": 5, "rejected": 1, "duplicates": 1,
                                      "dropped_too_long": 1, "unused": 1})[0] is False
    assert checks.data_counts_add_up({"read": "ten"}) is None
    assert checks.peak_tflops("NVIDIA H100 PCIe", "bf16") == 756
    assert checks.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989
    assert checks.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") is None and checks.peak_tflops("cpu", "bf16") is None


def test_adapter_modules_from_a_header():
    header = {f"base_model.model.model.layers.{i}.self_attn.{m}.lora_{p}.weight": {"dtype": "F32", "shape": s}
              for i in range(2) for m, (a, b) in {"q_proj": (64, 64), "k_proj": (64, 32)}.items()
              for p, s in (("A", [8, a]), ("B", [b, 8]))}
    mods = {m.name: m for m in checks.adapter_modules(header)}
    assert mods["q_proj"].layers == 2 and mods["q_proj"].params == 2 * (8 * 64 + 64 * 8)
    assert mods["k_proj"].shapes == {"lora_A": [8, 64], "lora_B": [32, 8]}


# ---- conclusion rules: each branch, and the wording when evidence is missing --------------------------

def test_rule_loss_fell():
    assert c.rule_loss_fell((100, 2.3065), (12_500, 1.5098)).verdict == "supported"
    flat = c.rule_loss_fell((10, 2.0), (100, 1.95))
    assert flat.verdict == "flag" and "no evidence that training reduced the loss" in say(flat)
    none = c.rule_loss_fell(None, None)
    assert none.verdict == "no_evidence" and "unknown" in say(none) and "无法判断" in say(none, "zh")


def test_rule_overfitting_states_its_margin():
    no = c.rule_overfitting(1.5926, 1.5098)
    assert no.verdict == "not_supported" and "+5.5%" in say(no) and "within 10%" in say(no)
    yes = c.rule_overfitting(1.80, 1.50)
    assert yes.verdict == "flag" and "Possible overfitting" in say(yes) and "+20.0%" in say(yes)
    none = c.rule_overfitting(None, 1.5)
    assert none.verdict == "no_evidence" and "cannot be judged" in say(none) and "10%" in say(none)
    assert "无法判断" in say(none, "zh") and "10%" in say(none, "zh")


def test_rule_eval_trend():
    assert c.rule_eval_trend([1, 2, 3], [2.0, 1.8, 1.9]).verdict == "flag"  # +5.6% above the lowest
    assert c.rule_eval_trend([1, 2, 3], [2.0, 1.8, 1.81]).key == "c.evaltrend.ok"
    assert c.rule_eval_trend([1, 2], [2.0, 1.8]).key == "c.evaltrend.last_best"
    one = c.rule_eval_trend([1], [2.0])
    assert one.verdict == "no_evidence" and "fewer than 2" in say(one)


def test_rule_data():
    ok = c.rule_data({"read": 1000, "kept": 900, "rejected": 10, "duplicates": 10, "truncated": 5})
    assert [f.verdict for f in ok] == ["info"]
    bad = c.rule_data({"read": 1000, "kept": 500, "rejected": 40, "duplicates": 20, "truncated": 100})
    assert [f.key for f in bad] == ["c.data.dropped_flag", "c.data.truncated"] and "20.0%" in say(bad[1])
    assert c.rule_data(None)[0].verdict == "no_evidence"


def test_rule_benchmark_needs_a_paired_test():
    better = c.rule_benchmark({"benchmark": "cmmlu", "a": "tuned", "b": "base", "only_a": 30, "only_b": 10,
                               "p_value": 0.0022})
    assert better.verdict == "supported" and "tuned is better than base" in say(better)
    worse = c.rule_benchmark({"benchmark": "cmmlu", "a": "tuned", "b": "base", "only_a": 10, "only_b": 30,
                              "p_value": 0.0022})
    assert "base is better than tuned" in say(worse)
    same = c.rule_benchmark({"benchmark": "cmmlu", "a": "tuned", "b": "base", "only_a": 58, "only_b": 42,
                             "p_value": 0.133})
    assert same.verdict == "not_supported" and "neither is better" in say(same) and "≥ 0.05" in say(same)
    assert c.rule_benchmarks(0, None)[0].key == "c.bench.none"
    notest = c.rule_benchmarks(2, None)[0]
    assert notest.verdict == "no_evidence" and "no model is called better" in say(notest)
    assert "不说哪个模型更好" in say(notest, "zh")


def test_rule_judge_pair():
    few = c.rule_judge_pair({"a": "A", "b": "B", "n": 10, "win_rate": 0.6, "win_rate_ci": [0.3, 0.85]})
    assert [f.verdict for f in few] == ["too_few"] and "fewer than 30" in say(few[0])
    a = c.rule_judge_pair({"a": "A", "b": "B", "n": 200, "win_rate": 0.62, "win_rate_ci": [0.55, 0.69],
                           "order_consistency": 0.9})
    assert [f.key for f in a] == ["c.judge.a"]
    b = c.rule_judge_pair({"a": "A", "b": "B", "n": 200, "win_rate": 0.38, "win_rate_ci": [0.31, 0.45]})
    assert b[0].key == "c.judge.b"
    tie = c.rule_judge_pair({"a": "A", "b": "B", "n": 200, "win_rate": 0.52, "win_rate_ci": [0.45, 0.59],
                             "order_consistency": 0.5})
    assert [f.key for f in tie] == ["c.judge.tie", "c.judge.order"] and "below 70%" in say(tie[1])
    assert c.rule_judge_pair({"a": "A", "b": "B", "n": 50, "win_rate": 0.6})[0].key == "c.judge.noci"
    assert c.rule_judge_pair({"a": "A"})[0].verdict == "no_evidence"


def test_rule_safety():
    findings = c.rule_safety({"tuned": {"n": 42, "passed": 35}, "base": {"n": 42, "passed": 38},
                              "other": {"n": 42, "passed": 21}, "tiny": {"n": 12, "passed": 12}})
    keys = [f.key for f in findings]
    assert keys == ["c.safety.rate", "c.safety.rate", "c.safety.rate", "c.safety.few", "c.safety.same",
                    "c.safety.diff"]
    assert "83.3%" in say(findings[0]) and "69.4%–91.7%" in say(findings[0])  # Wilson from the counts
    assert "fewer than 30: too few to conclude" in say(findings[3])
    assert "tuned passes more often than other" in say(findings[5])
    none = c.rule_safety(None)
    assert none[0].verdict == "no_evidence" and "not assessed" in say(none[0]) and "无法评价" in say(none[0], "zh")


def test_rule_length_cap():
    assert c.rule_length_cap([{"arm": "a", "length_capped_share": 0.05}]) == []
    [f] = c.rule_length_cap([{"arm": "think", "length_capped_share": 0.2}])
    assert f.verdict == "flag" and "lower bounds" in say(f)


# ---- strings ---------------------------------------------------------------------------------------

def test_every_string_has_both_languages_with_the_same_placeholders():
    fields = lambda s: {f for _, f, _, _ in string.Formatter().parse(s) if f}  # noqa: E731
    for key, pair in STRINGS.items():
        assert len(pair) == len(LANGS) and all(p.strip() or key == "r.dirty" for p in pair), key
        assert fields(pair[0]) == fields(pair[1]), key


def test_chinese_strings_use_full_width_punctuation():
    for key, (zh, _) in STRINGS.items():
        prose = re.sub(r"`[^`]*`|\{[^}]*\}|exp\(|ceil\(", "", zh)
        assert not re.search(r"[\u4e00-\u9fff][,;:?]|[,;:?][\u4e00-\u9fff]", prose), (key, zh)


def test_every_key_the_code_uses_exists():
    used = set()
    for path in REPORT_SRC.glob("*.py"):
        src = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\b(?:t|pt|c\.t|c\.pt)\(\s*["']([a-z_.]+)["']""", src))
        used |= set(re.findall(r"""Finding\(\s*"[a-z_]+",\s*"([a-z_.]+)["]""", src))
        used |= set(re.findall(r"""Check\("[a-z.]+",\s*"[a-z]+",\s*"([a-z_.]+)"\)""", src))
    dynamic = {k for k in used if k.endswith(".")}  # t("chk.status." + status) and the like
    assert len(used) > 150 and dynamic == {"chk.status.", "al.ref."}
    assert sorted(used - dynamic - set(STRINGS)) == []
    families = {"chk.status.": ("ok", "mismatch", "unknown"), "verdict.": c.VERDICTS, "al.ref.": ("sft", "base"),
                "chk.batch.": ("ok", "mismatch", "unknown"), "chk.ppl.": ("ok", "mismatch", "unknown"),
                "chk.adapter.": ("ok", "mismatch"), "chk.data.": ("ok", "mismatch"),
                "stage.": ("prepare", "train", "evaluate"), "status.": ("missing", "unreadable"),
                "tl.": ("data_loading", "model_loading", "training", "evaluation"),
                "data.": ("read", "kept", "rejected", "duplicates", "dropped_too_long", "unused", "truncated",
                          "train", "val"),
                "sec.": ("overview", "conclusions", "checks", "data", "config", "timeline", "training", "metrics",
                         "params", "outputs", "compare", "benchmarks", "judge", "safety", "repro")}
    assert [f"{p}{k}" for p, ks in families.items() for k in ks if f"{p}{k}" not in STRINGS] == []


def test_text_translates_keys_and_lists_and_durations():
    zh, en = Text("zh"), Text("en")
    assert en("c.checks.flag", n="2", names=[Key("chk.batch"), Key("chk.lr")]).startswith(
        "The self-checks found 2 disagreement(s): Effective batch size, Learning-rate schedule")
    assert "有效批大小、学习率调度" in zh("c.checks.flag", n="2", names=[Key("chk.batch"), Key("chk.lr")])
    assert en.duration(14_340) == "3 h 59 min" and zh.duration(14_340) == "3 小时 59 分"
    assert en.duration(95.4) == "1 min 35 s" and zh.duration(41.7) == "41.7 秒" and en.duration(None) == "—"
    with pytest.raises(ValueError):
        Text("fr")


def test_formatters():
    assert f_int(8_234_382_336) == "8,234,382,336" and f_int(None) == "—"
    assert f_sig(1.342e-05) == "1.342e-5" and f_sig(2.68e18, 3) == "2.68e18" and f_sig(0.133, 3) == "0.133"
    assert f_pct(0.0530) == "5.3%" and f_signed_pct(0.055) == "+5.5%" and f_signed_pct(-0.02) == "-2.0%"
    assert f_bytes(87_327_768) == "83.3 MiB" and f_bytes(61) == "61 B"


# ---- renderers -------------------------------------------------------------------------------------

def test_markdown_and_html_escape_what_they_must(tmp_path):
    from PIL import Image as PILImage

    PILImage.new("RGB", (4, 3), "white").save(tmp_path / "p.png")
    evil = "a | b\n<script>alert(1)</script> 血糖<7 `x|y`"
    doc = Document("T <1>", "sub", [Section("s", "S", [
        Para("**bold** and `code <b>`"), Para(evil, "warn"), Table(["h|1", "h2"], [[evil, "ok"]]),
        Image("p.png", "cap"), Code("x = '<tag>'\n```\n", "yaml")])], "en")
    md = to_markdown(doc)
    assert "| a \\| b<br>&lt;script>alert(1)&lt;/script> 血糖&lt;7 `x\\|y` | ok |" in md  # GFM escapes | in code too
    assert "> ⚠ a | b" in md and "![cap](p.png)" in md and "~~~~yaml" in md
    html = to_html(doc, tmp_path)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<strong>bold</strong> and <code>code &lt;b&gt;</code>" in html
    assert 'src="data:image/png;base64,iVBOR' in html and "<title>T &lt;1&gt;</title>" in html
    assert html.count("<table>") == 1 == doc.count(Table)
