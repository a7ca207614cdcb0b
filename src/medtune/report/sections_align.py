"""The Alignment section: what the align stage trained on, its curves, and whether the aligned model beat
the SFT model on the same items (benchmarks with McNemar, the judge in both orders, answer length, safety).

Reads align/{train_results.json, metrics.jsonl, data_stats.json} and the evaluate stage's files; the
aligned arm is the one whose adapter is `<run>/align`, the SFT arm the one whose adapter is the run itself.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from medtune.report.conclusions import (ALPHA, Finding, rule_alignment_check, rule_benchmark, rule_judge_pair,
                                        safety_interval)
from medtune.report.document import Bullets, Image, Para, Section
from medtune.report.format import NA, f_int, f_num, f_pct
from medtune.report.plots import Line
from medtune.report.runfiles import num, read_json, read_jsonl, text
from medtune.report.sections import Ctx, code, file_note, kv_table
from medtune.report.strings import Key

CURVES = (("loss", "plot.al.loss"), ("rewards/margins", "plot.al.margin"), ("rewards/accuracies", "plot.al.acc"),
          ("kl", "plot.al.kl"), ("reward", "plot.al.reward"), ("frac_reward_zero_std", "plot.al.zero_std"),
          ("completions/extraction_failures", "plot.al.extract"))
MARGIN_MIN = 0.0
"""The preference is said to have been learned when the last logged reward margin is above this."""
FLAT_GROUPS = 0.9
"""GRPO: above this mean share of groups with all-equal rewards, training had almost no gradient."""


def sec_alignment(c: Ctx) -> list[Section]:
    t, run = c.t, c.run
    s = Section("alignment", t("sec.alignment"))
    results = read_json(run.dir, "align/train_results.json")
    if results.state == "missing" and not (run.cfg and run.cfg.align):
        return []  # no align stage configured: no section
    if not results.ok:
        s.blocks.append(file_note(t, results, "align"))
        return [s]
    r, data = results.data, read_json(run.dir, "align/data_stats.json").data or {}
    pairs = data.get("self_pairs") if isinstance(data.get("self_pairs"), dict) else {}
    s.blocks.append(kv_table(t, [
        [t("al.algorithm"), code(text(r, "algorithm") or NA)],
        [t("al.reference"), t("al.ref." + (text(r, "reference") or "base"))],
        [t("al.steps"), f_int(num(r, "global_step"))],
        [t("al.data"), t("al.data_counts", read=f_int(num(data, "read")), kept=f_int(num(data, "kept")),
                         rows=f_int(num(data, "rows")))],
        [t("al.lengths"), t("al.length_pair", chosen=f_num(num(data, "chosen_chars_median"), 0),
                            rejected=f_num(num(data, "rejected_chars_median"), 0))],
        [t("al.loss"), f"{f_num(num(r, 'first_logged_loss'), 4)} → {f_num(num(r, 'last_logged_loss'), 4)}"],
    ] + ([[t("al.self_pairs"), t("al.self_pairs_counts", prompts=f_int(num(pairs, "prompts")),
                                 kept=f_int(num(pairs, "kept")))]] if pairs else [])))
    s.blocks += curve_blocks(c)
    findings = alignment_findings(c, r)
    s.blocks.append(Bullets([t("c.bullet", verdict=Key(f"verdict.{f.verdict}"), text=t(f.key, **f.params))
                             for f in findings]))
    return [s]


def curve_blocks(c: Ctx) -> list:
    t, pt = c.t, c.pt
    rows = read_jsonl(c.run.dir, "align/metrics.jsonl")
    points = [row for row in (rows.data or []) if isinstance(row, dict) and num(row, "step") is not None]
    out = []
    for key, label in CURVES:
        xs = [num(p, "step") for p in points if num(p, key) is not None]
        ys = [num(p, key) for p in points if num(p, key) is not None]
        if xs:
            out.append(Image(c.plotter.lines("align_" + key.replace("/", "_"), pt(label), pt("plot.step"), pt(label),
                                             [Line(pt(label), xs, ys, marker=".")]), t("plot.al.caption", metric=key)))
    return out or [Para(t("al.no_curves"), "missing")]


def arm_names(compare: dict, run_dir: Path) -> tuple[str | None, str | None]:
    """(aligned arm, SFT arm) of the comparison, by their adapters: `<run>/align` and `<run>` (thinking off)."""
    arms = [(text(a, "arm"), text(a, "adapter")) for a in compare.get("arms") or [] if isinstance(a, dict)]
    arms = [(name, adapter) for name, adapter in arms if name and adapter and not name.endswith("/think")]
    aligned = next(((n, a) for n, a in arms if Path(a).name == "align"), None)
    if aligned is None:
        return None, None
    parent = Path(aligned[1]).parent
    sft = next((n for n, a in arms if Path(a) == parent or Path(a).resolve() == run_dir.resolve()), None)
    return aligned[0], sft


def alignment_findings(c: Ctx, r: dict) -> list[Finding]:
    run = c.run
    margin = num(r, "last_rewards_margins")
    if text(r, "algorithm") == "grpo":
        out = [grpo_finding(read_jsonl(run.dir, "align/metrics.jsonl").data or [])]
    else:
        out = [Finding("no_evidence", "al.c.nomargin", {}) if margin is None else
               Finding("supported" if margin > MARGIN_MIN else "not_supported", "al.c.margin",
                       {"margin": f_num(margin, 4), "acc": f_pct(num(r, "last_rewards_accuracies"))})]
    aligned, sft = arm_names(run.compare_summary.data if run.compare_summary.ok else {}, run.dir)
    if not aligned or not sft:
        return out + [Finding("no_evidence", "al.c.noarms", {})]
    pair = {"a": aligned, "b": sft}
    tests = [t for t in (run.significance.data.get("tests") or [] if run.significance.ok else [])
             if isinstance(t, dict) and {str(t.get("a", "")).split(" (")[0], str(t.get("b", "")).split(" (")[0]}
             == {aligned, sft}]
    out += [rule_benchmark(t) for t in tests] or [Finding("no_evidence", "al.c.nobench", {**pair, "alpha": ALPHA})]
    judged = [p for p in (run.judge.data.get("pairs") or [] if run.judge.ok else [])
              if isinstance(p, dict) and {p.get("a"), p.get("b")} == {aligned, sft}]
    out += [f for p in judged for f in rule_judge_pair(p)] or [Finding("no_evidence", "al.c.nojudge", pair)]
    out.append(length_ratio(run.compare_answers.data if run.compare_answers.ok else [], aligned, sft))
    out.append(safety_regression(run.safety.data if run.safety.ok else {}, aligned, sft))
    check = read_json(run.dir, "eval/alignment_check.json")  # base, SFT and aligned side by side
    out.append(rule_alignment_check(check.data if check.ok else {}))
    return out


def grpo_finding(rows: list) -> Finding:
    """GRPO's training reward, first vs last logged step, and the mean share of groups that gave no gradient."""
    logged = [row for row in rows if isinstance(row, dict) and num(row, "reward") is not None]
    if not logged:
        return Finding("no_evidence", "al.c.noreward", {})
    flat = [num(row, "frac_reward_zero_std") for row in logged if num(row, "frac_reward_zero_std") is not None]
    share = sum(flat) / len(flat) if flat else None
    params = {"first": f_num(num(logged[0], "reward"), 3), "last": f_num(num(logged[-1], "reward"), 3),
              "zero": f_pct(share)}
    return Finding("flag" if share is not None and share > FLAT_GROUPS else "info",
                   "al.c.grpo_flat" if share is not None and share > FLAT_GROUPS else "al.c.grpo", params)


def length_ratio(answers: list, aligned: str, sft: str) -> Finding:
    """Median answer tokens of the aligned arm over the SFT arm's (DPO is known to lengthen answers)."""
    med = {}
    for name in (aligned, sft):
        tokens = [num(a, "answer_tokens") for a in answers if isinstance(a, dict) and text(a, "arm") == name
                  and num(a, "answer_tokens") is not None]
        med[name] = statistics.median(tokens) if tokens else None
    if not med[aligned] or not med[sft]:
        return Finding("no_evidence", "al.c.nolength", {"a": aligned, "b": sft})
    return Finding("info", "al.c.length", {"a": aligned, "b": sft, "ratio": f_num(med[aligned] / med[sft], 2),
                                           "ma": f_num(med[aligned], 0), "mb": f_num(med[sft], 0)})


def safety_regression(arms: dict, aligned: str, sft: str) -> Finding:
    """Flag a regression only when the aligned interval lies wholly below the SFT one."""
    a, b = arms.get(aligned), arms.get(sft)
    ca, cb = (safety_interval(a) if isinstance(a, dict) else None), (safety_interval(b) if isinstance(b, dict) else None)
    if ca is None or cb is None:
        return Finding("no_evidence", "al.c.nosafety", {"a": aligned, "b": sft})
    params = {"a": aligned, "b": sft, "ra": f_pct(num(a, "rate")), "rb": f_pct(num(b, "rate"))}
    return Finding("flag", "al.c.safety_worse", params) if ca[1] < cb[0] else Finding("info", "al.c.safety_ok", params)
