"""`medtune report`: golden reports, the reference run's three errors flagged, partial and broken run
directories, both languages, no torch, self-contained HTML, the CLI.

Regenerate the goldens after an intended change with:
    MEDTUNE_REGEN_GOLDEN=1 pytest tests/test_report.py -k golden
and read the diff before committing it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from medtune.errors import UserError
from medtune.report.write import write_report
from medtune.report.plots import find_cjk_font
from tests.report_fixture import reference_run

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
GENERATED_AT = "2025-06-02 14:00"
HEAVY = ("torch", "transformers", "peft", "trl", "datasets")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The full reference run directory (prepare + train + evaluate), built once."""
    return reference_run(tmp_path_factory.mktemp("ref") / "qwen3-8b-huatuo")


@pytest.fixture(scope="module")
def reports(reference, tmp_path_factory) -> dict[str, Path]:
    """report.md for each language, written to separate output dirs with fixed time and no CJK plot font."""
    out = {}
    for lang in ("zh", "en"):
        dest = tmp_path_factory.mktemp(f"report-{lang}")
        write_report(reference, lang=lang, output_dir=dest, generated_at=GENERATED_AT, cjk_font=None)
        out[lang] = dest
    return out


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_golden_report(reports, lang):
    got = (reports[lang] / "report.md").read_text(encoding="utf-8")
    golden = GOLDEN / f"report_{lang}.md"
    if os.environ.get("MEDTUNE_REGEN_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(got, encoding="utf-8")
    assert golden.is_file(), f"{golden} missing: run with MEDTUNE_REGEN_GOLDEN=1 to create it"
    assert got == golden.read_text(encoding="utf-8"), f"report differs from {golden}; regenerate if intended"


def section(md: str, number: int) -> str:
    """The text of '## N. ...' up to the next top-level section."""
    m = re.search(rf"^## {number}\. .*?(?=^## {number + 1}\. |\Z)", md, flags=re.S | re.M)
    assert m, f"section {number} not found"
    return m.group(0)


def test_reference_report_flags_its_three_errors(reports):
    md = (reports["en"] / "report.md").read_text(encoding="utf-8")
    checks = section(md, 3)
    # 1. effective batch: derived 16 from what ran, configured 32 = 4 x 2 x world size 4
    row = next(line for line in checks.splitlines() if line.startswith("| Effective batch size"))
    assert "**disagrees**" in row and "16.0 samples per optimizer step" in row
    assert "100,000 × 2.00 / 12,500" in row and "32 was configured" in row and "3,125–3,126" in row
    config = section(md, 5)
    assert "| effective batch (samples per optimizer step) | 4 × 2 × 4 = 32 | 16.0 (derived from what ran" in config
    assert "13.94 / 0.871 = 16.0" in config
    # 2. learning rate: logged 1.342e-5 at step 100 where a 625-step linear warmup gives 3.2e-6
    row = next(line for line in checks.splitlines() if line.startswith("| Learning-rate schedule"))
    assert "**disagrees**" in row and "625 warmup steps" in row
    assert "step 100 logged 1.342e-5 where the schedule gives 3.2e-6" in row
    training = section(md, 7)
    assert "| 100 | 1.342e-5 | 3.2e-6 |" in training and "at steps 100–500, 700–9,400" in training
    # 3. the two train losses, labelled apart
    metrics = section(md, 8)
    assert "| run-average train loss `train_loss` | 1.6161 |" in metrics
    assert "| last logged train loss (step 12,500) | 1.5098 |" in metrics
    assert "| first logged train loss (step 100) | 2.3065 |" in metrics
    # conclusions say there are disagreements, and draw no claim the numbers do not support
    conclusions = section(md, 2)
    assert "2 disagreement(s): Effective batch size, Learning-rate schedule" in conclusions
    assert "neither is better" in conclusions  # McNemar p = 0.133
    assert "too few to conclude" in conclusions  # 10 judged pairs
    assert "No evidence of overfitting" in conclusions  # +5.5% < 10%


def test_reference_report_chinese_is_chinese(reports):
    md = (reports["zh"] / "report.md").read_text(encoding="utf-8")
    for heading in ("## 1. 概览", "## 2. 结论", "## 3. 自检", "## 7. 训练过程", "## 15. 可复现性"):
        assert heading in md
    assert "实际每个优化步 16.0 个样本" in md and "全程平均训练损失 `train_loss`" in md
    # no English sentence leaked into the Chinese report (identifiers and units aside)
    prose = re.sub(r"`[^`]*`|```.*?```", "", md, flags=re.S)
    for english in ("Not run", "Could not read", "samples per optimizer step", "Supported", "No evidence"):
        assert english not in prose


def test_plots_written_and_referenced(reports):
    md = (reports["zh"] / "report.md").read_text(encoding="utf-8")
    referenced = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", md)
    assert set(referenced) == {f"plots/{n}.png" for n in ("token_lengths", "loss", "learning_rate", "grad_norm",
                                                          "tokens_per_second", "benchmarks", "safety")}
    for rel in referenced:
        assert (reports["zh"] / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained(reports):
    html = (reports["en"] / "report.html").read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert refs, "expected images and in-page links"
    assert all(r.startswith("data:image/png;base64,") or r.startswith("#") for r in refs), refs
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html


def test_html_tables_match_markdown(reports):
    md = (reports["en"] / "report.md").read_text(encoding="utf-8")
    html = (reports["en"] / "report.html").read_text(encoding="utf-8")
    md_tables = len(re.findall(r"^\|( --- \|)+$", md, flags=re.M))
    assert md_tables > 15 and html.count("<table>") == md_tables
    assert html.count("<img ") == md.count("](plots/")


def test_no_heavy_imports_through_the_cli(reference, tmp_path):
    """The report runs where only the run directory is: the CLI path must not import torch & co."""
    code = ("import json, sys\nfrom medtune.cli import main\n"
            f"rc = main(['report', {str(reference)!r}, '--output', {str(tmp_path)!r}])\n"
            f"print(json.dumps([rc, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rc, heavy = json.loads(r.stdout.strip().splitlines()[-1])
    assert rc == 0 and heavy == []
    assert f"report: {tmp_path / 'report.md'}" in r.stdout and (tmp_path / "report.html").is_file()


def test_cli_errors_and_language(tmp_path, reference):
    r = subprocess.run([sys.executable, "-m", "medtune", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "report" in r.stdout and "medtune report runs/demo --lang en" in r.stdout
    r = subprocess.run([sys.executable, "-m", "medtune", "report", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "not a directory" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "medtune", "report", str(reference), "--lang", "fr"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_language_defaults_to_config_then_chinese(tmp_path):
    unreadable = reference_run(tmp_path / "unreadable", stages=("prepare",))
    config = unreadable / "config.yaml"
    config.write_text(config.read_text().replace("lang: zh", "lang: en").replace("  seed: 42\n", "  sead: 42\n", 1))
    write_report(unreadable, generated_at=GENERATED_AT)
    assert "## 1. 概览" in (unreadable / "report.md").read_text(encoding="utf-8")
    run = reference_run(tmp_path / "run", stages=("prepare",))
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("lang: zh", "lang: en"))
    write_report(run, generated_at=GENERATED_AT)
    assert "## 1. Overview" in (run / "report.md").read_text(encoding="utf-8")


def test_report_reads_what_prepare_really_writes(tmp_path):
    """The data section and its check against the prepare stage's own output (demo data, real tokenizer)."""
    from medtune.config import load_config, save_config
    from medtune.data.prepare import prepare_dataset

    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"output_dir={tmp_path / 'demo'}"])
    save_config(cfg, cfg.run_dir / "config.yaml")
    stats = prepare_dataset(cfg, log=lambda *a: None)
    md = write_report(cfg.run_dir, lang="en", generated_at=GENERATED_AT, cjk_font=None).markdown.read_text()
    assert f"| read | {stats['read']:,} | 100.0% |" in md and f"| train split | {stats['train']:,} |" in md
    assert f"| Data counts | agrees | read {stats['read']:,} = kept" in md
    assert "![Histogram of sample token lengths" in md and "| prepare | finished |" in md
    assert "`huatuo_style_dialogues.jsonl` (train)" in md  # input hash table from data/manifest.json


# ---- partial and broken run directories ------------------------------------------------------------

@pytest.mark.parametrize("stages", [("prepare",), ("prepare", "train")], ids=["prepare", "train"])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_partial_run_directories(tmp_path, stages, lang):
    run = reference_run(tmp_path / "run", stages=stages)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = write_report(run, lang=lang, generated_at=GENERATED_AT, cjk_font=None)
    md = result.markdown.read_text(encoding="utf-8")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert "could not be built" not in md and "本节无法生成" not in md
    assert len(re.findall(r"^## \d+\. ", md, flags=re.M)) == 15
    not_run = "Not run: " if lang == "en" else "未运行：找不到 "
    assert f"{not_run}`eval/compare/summary.json`" in md
    assert f"{not_run}`eval/safety.json`" in md
    if "train" not in stages:
        assert f"{not_run}`train_results.json`" in md
        assert "learning_rate.png" not in md
    else:
        assert "learning_rate.png" in md and "safety.png" not in md
    assert "token_lengths.png" in md
    if stages == ("prepare", "train"):
        assert ("| evaluate | not run |" if lang == "en" else "| evaluate | 未运行 |") in md


def test_unfinished_training_is_reported_as_incomplete(tmp_path):
    run = reference_run(tmp_path / "run", stages=("prepare", "train"))
    for name in ("train_results.json", "eval_results.json", "metrics.jsonl"):
        (run / name).unlink()
    md = write_report(run, lang="en", generated_at=GENERATED_AT, cjk_font=None).markdown.read_text()
    assert "| train | incomplete | `checkpoint-12500`, `trainer_state.json` present" in md
    assert "Curves from `trainer_state.json`" in md  # the log_history still gives the curves


def test_malformed_files_cost_only_their_section(tmp_path):
    run = reference_run(tmp_path / "run")
    (run / "train_results.json").write_text('{"train_loss": 1.6,', encoding="utf-8")
    (run / "data" / "stats.json").write_text(json.dumps({"read": "many", "token_length": [], "length_histogram": 3}))
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n[1, 2]\n")
    (run / "eval" / "safety.json").write_text("[]", encoding="utf-8")
    (run / "eval" / "judge" / "summary.json").write_text(json.dumps({"pairs": [{"a": 1, "n": "ten"}, 7]}))
    (run / "eval" / "compare" / "summary.json").write_text(json.dumps({"arms": [{"arm": "x", "questions": None}]}))
    (run / "adapter_model.safetensors").write_bytes(b"\xff" * 16)
    md = write_report(run, lang="en", generated_at=GENERATED_AT, cjk_font=None).markdown.read_text()
    assert "could not be built" not in md
    assert "Could not read `train_results.json`: not valid JSON (line 1, column 20" in md
    assert "2 line(s) of `metrics.jsonl` could not be used and were skipped: line 151: not valid JSON" in md
    assert "Could not read `eval/safety.json`: expected a JSON object, got list" in md
    assert "Could not read `adapter_model.safetensors`: not a safetensors file" in md
    assert "| train | file unreadable |" in md
    # everything that did not depend on those files still renders
    assert "learning_rate.png" in md and "| 100 | 1.342e-5 | 3.2e-6 |" in md
    assert "cmmlu-medical" in md and "## 15. Reproducibility" in md


def test_a_config_this_medtune_cannot_load(tmp_path):
    run = reference_run(tmp_path / "run", stages=("prepare", "train"))
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("  seed: 42\n", "  sead: 42\n", 1))
    md = write_report(run, lang="en", generated_at=GENERATED_AT, cjk_font=None).markdown.read_text()
    assert "Could not read `config.yaml`: unknown key 'data.sead'; did you mean data.seed?" in md
    assert "| Learning-rate schedule | cannot check |" in md  # needs the configured schedule
    assert "| Effective batch size | **disagrees** |" in md  # train_results.json records the configured batch


def test_a_section_that_fails_does_not_stop_the_report(tmp_path, monkeypatch):
    """The failing section is replaced by a note naming the error, a SectionFailed warning names it too (an
    error everywhere else in the tests), and every other section is exactly what it is without the failure."""
    import medtune.report.write as write

    def sec_data(c):
        raise KeyError("surprise")

    run = reference_run(tmp_path / "run", stages=("prepare",))
    monkeypatch.setattr(write, "SECTION_BUILDERS", (write.sec_overview, write.sec_repro))
    healthy = write_report(run, lang="en", generated_at=GENERATED_AT, output_dir=tmp_path / "healthy")
    monkeypatch.setattr(write, "SECTION_BUILDERS", (write.sec_overview, sec_data, write.sec_repro))
    with pytest.warns(write.SectionFailed, match="section 'data' could not be built: KeyError: 'surprise'"):
        result = write_report(run, lang="en", generated_at=GENERATED_AT)
    md = result.markdown.read_text(encoding="utf-8")
    before, failed, after = re.split(r"^## \d\. .*$", md, flags=re.M)[1:]
    assert failed.strip() == ("> ⚠ This section could not be built (KeyError: 'surprise'); the other sections are "
                              "unaffected. Check that its files follow docs/run-directory.md.")
    assert re.findall(r"^## .*$", md, flags=re.M) == ["## 1. Overview", "## 2. Data", "## 3. Reproducibility"]
    healthy_md = healthy.markdown.read_text(encoding="utf-8")
    assert [before, after] == re.split(r"^## \d\. .*$", healthy_md, flags=re.M)[1:]
    assert len(before) > 200 and len(after) > 200  # both with their bodies
    html = result.html.read_text(encoding="utf-8")
    assert re.search(r'<p class="warn">⚠ This section could not be built \(KeyError: (\'|&#x27;)surprise', html)


# ---- fonts -----------------------------------------------------------------------------------------

def test_chinese_plots_fall_back_to_english_labels_without_a_cjk_font(tmp_path):
    from medtune.report.plots import Plotter, label_lang

    assert label_lang("zh", None) == "en" and label_lang("zh", "Noto Sans CJK SC") == "zh"
    assert label_lang("en", "Noto Sans CJK SC") == "en"
    plotter = Plotter(tmp_path, "zh", None)
    assert plotter.plain("qwen3-8b 医疗版") == "qwen3-8b ???"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = reference_run(tmp_path / "run", stages=("prepare", "train", "evaluate"))
        (run / "eval" / "safety.json").write_text(json.dumps({"微调模型": {"n": 42, "passed": 35}}))
        write_report(run, lang="zh", generated_at=GENERATED_AT, cjk_font=None)
    assert not [w for w in caught if "missing from font" in str(w.message)], "tofu: a CJK glyph without a font"


def test_placeholder_fonts_are_not_taken_for_cjk_fonts():
    """matplotlib ships 'Last Resort', which has an index for every character but draws boxes (seen here:
    every plot label came out as boxes)."""
    from matplotlib import font_manager

    found = find_cjk_font()
    assert found is None or "last resort" not in found.lower()
    if any("last resort" in f.name.lower() for f in font_manager.fontManager.ttflist):
        assert found != "Last Resort High-Efficiency"


@pytest.mark.skipif(find_cjk_font() is None, reason="no CJK-capable font installed (e.g. fonts-noto-cjk)")
def test_chinese_plot_labels_with_a_cjk_font(tmp_path):
    run = reference_run(tmp_path / "run", stages=("prepare",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_report(run, lang="zh", generated_at=GENERATED_AT)
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_report_into_run_dir_replaces_stale_plots(tmp_path):
    run = reference_run(tmp_path / "run", stages=("prepare", "train"))
    write_report(run, lang="en", cjk_font=None)
    for name in ("train_results.json", "metrics.jsonl", "trainer_state.json"):
        (run / name).unlink()
    shutil.rmtree(run / "checkpoint-12000")
    result = write_report(run, lang="en", cjk_font=None)
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["token_lengths.png"]
    md = result.markdown.read_text()
    assert "`report.md`" not in md and "`plots/`" not in md  # the report never lists itself
    assert "`report_files.json`" not in md


def test_report_refuses_a_directory_that_is_not_a_run_directory(tmp_path):
    """`medtune report ~/project` once deleted ~/project/plots/ and overwrote ~/project/report.md."""
    project = tmp_path / "project"
    (project / "plots").mkdir(parents=True)
    (project / "plots" / "mine.png").write_bytes(b"my figure")
    (project / "report.md").write_text("my notes\n")
    (project / "config.yaml").write_text("lr: 0.1\n")  # some other tool's config: not a run directory
    r = subprocess.run([sys.executable, "-m", "medtune", "report", str(project)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "not a medtune run directory" in r.stderr and "Traceback" not in r.stderr
    assert (project / "plots" / "mine.png").read_bytes() == b"my figure"
    assert (project / "report.md").read_text() == "my notes\n"
    assert sorted(p.name for p in project.iterdir()) == ["config.yaml", "plots", "report.md"]


def test_report_output_keeps_files_it_did_not_write(tmp_path):
    run = reference_run(tmp_path / "run", stages=("prepare", "train"))
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "mine.png").write_bytes(b"my figure")
    write_report(run, lang="en", output_dir=out, cjk_font=None)
    assert (out / "plots" / "mine.png").read_bytes() == b"my figure"
    (out / "plots" / "loss.png").write_bytes(b"edited by hand")  # no longer what the report wrote: the user's now
    with pytest.raises(UserError, match=r"plots/loss.png: exists and was not written by medtune report"):
        write_report(run, lang="en", output_dir=out, cjk_font=None)
    assert (out / "plots" / "loss.png").read_bytes() == b"edited by hand"
    users = tmp_path / "users"
    users.mkdir()
    (users / "report.md").write_text("my notes\n")
    with pytest.raises(UserError, match=r"report.md: exists and was not written by medtune report"):
        write_report(run, lang="en", output_dir=users, cjk_font=None)
    assert (users / "report.md").read_text() == "my notes\n" and sorted(p.name for p in users.iterdir()) == ["report.md"]


def test_report_rerun_replaces_its_own_files(tmp_path):
    run = reference_run(tmp_path / "run", stages=("prepare", "train"))
    first = write_report(run, lang="en", cjk_font=None, generated_at="FIRST-RUN")
    assert "FIRST-RUN" in first.markdown.read_text()
    (run / "plots" / "mine.png").write_bytes(b"my figure")
    second = write_report(run, lang="zh", cjk_font=None, generated_at="SECOND-RUN")
    assert "SECOND-RUN" in second.markdown.read_text() and "SECOND-RUN" in second.html.read_text()
    assert "FIRST-RUN" not in second.markdown.read_text()
    assert (run / "plots" / "mine.png").read_bytes() == b"my figure"
    record = json.loads((run / "report_files.json").read_text())["files"]
    assert sorted(record) == sorted(["report.md", "report.html", *second.plots])
    assert "plots/mine.png" not in record and "plots/loss.png" in record


def test_the_fixture_follows_the_documented_format(tmp_path):
    """The golden reports are built from files shaped like the evaluate stage's (tests/run_dir_contract.py,
    which the stage's real output passes too: test_eval_stage, test_run)."""
    from tests.run_dir_contract import eval_problems

    assert eval_problems(reference_run(tmp_path / "run") / "eval") == []
