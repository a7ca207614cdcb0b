"""Two parts of the benchmarks section: medical gain next to general cost, and the multi-turn consultations.

Each reads its files under eval/ (docs/run-directory.md) and adds nothing when the run has none of them.
"""

from __future__ import annotations

from medtune.report.conclusions import ALPHA
from medtune.report.document import Image, Para, Section, Table
from medtune.report.format import NA, f_int, f_num, f_pct, f_sig, f_signed_pct
from medtune.report.plots import Line
from medtune.report.runfiles import RunFile, num, text
from medtune.report.sections import Ctx, code, file_note


def general_ability(c: Ctx, significance_verdict) -> list[Section]:
    """Every paired test of a benchmark with a `kind`, medical ones first, when the run scored a general one."""
    t, run = c.t, c.run
    kinds = {text(b.data, "benchmark"): text(b.data, "kind") or "medical" for b in run.benchmarks if b.ok}
    if "general" not in kinds.values() or not run.significance.ok:
        return []
    tests = [x for x in run.significance.data.get("tests") or [] if isinstance(x, dict)
             and text(x, "benchmark") in kinds]
    tests.sort(key=lambda x: (kinds[text(x, "benchmark")] != "medical", text(x, "benchmark")))
    s = Section("general", t("sec.general"), level=3)
    s.blocks.append(Para(t("gen.intro", alpha=f_num(ALPHA, 2))))
    rows = []
    for x in tests:
        acc_a, acc_b = num(x, "accuracy_a"), num(x, "accuracy_b")
        kind = kinds[text(x, "benchmark")]
        rows.append([t("gen.general") if kind == "general" else t("gen.medical"), text(x, "benchmark") or "?",
                     text(x, "a") or "?", text(x, "b") or "?", f_int(num(x, "n")), f_pct(acc_a), f_pct(acc_b),
                     f_signed_pct(acc_a - acc_b) if acc_a is not None and acc_b is not None else NA,
                     f_sig(num(x, "p_value"), 3), significance_verdict(t, num(x, "p_value"))])
    s.blocks.append(Table([t("gen.kind"), t("bm.benchmark"), "A", "B", "n", t("gen.acc_a"), t("gen.acc_b"),
                           t("gen.delta"), t("bm.p"), t("bm.verdict")], rows))
    return [s]


def consultation_sections(c: Ctx) -> list[Section]:
    """One subsection per eval/consultations/<name>.json."""
    return [consultation(c, rf) for rf in c.run.consultations]


def _ci(value: float | None, ci, digits: int) -> str:
    if value is None:
        return NA
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"{f_num(value, digits)} [{f_num(ci[0], digits)}, {f_num(ci[1], digits)}]"
    return f_num(value, digits)


def consultation(c: Ctx, rf: RunFile) -> Section:
    t = c.t
    s = Section("consult", t("sec.consult"), level=3)
    note = file_note(t, rf, "evaluate")
    if note:
        s.blocks.append(note)
        return s
    d = rf.data
    arms = [a for a in d.get("arms") or [] if isinstance(a, dict)]
    judge = d.get("judge") if isinstance(d.get("judge"), dict) else None
    benchmark = text(d, "benchmark") or rf.rel
    s.blocks.append(Para(t("cs.intro", benchmark=benchmark, cases=f_int(num(d, "cases")),
                           questions=f_int(num(d, "questions")), file=code(rf.rel),
                           judge=t("cs.judge", model=code(text(judge, "model") or NA)) if judge else "")))
    if not arms:
        s.blocks.append(Para(t("cs.no_arms", file=code(rf.rel)), "warn"))
        return s
    overall = [a.get("overall") if isinstance(a.get("overall"), dict) else {} for a in arms]
    header = [t("cs.arm"), t("cs.rouge"), t("cs.bleu")] + ([t("cs.judge_col"), t("cs.judge_failures")] if judge else [])
    rows = [[code(text(a, "arm") or "?"), _ci(num(o, "rouge_l"), o.get("rouge_l_ci"), 3),
             _ci(num(o, "bleu_4"), o.get("bleu_4_ci"), 3)]
            + ([_ci(num(o, "judge_score"), o.get("judge_score_ci"), 2), f_int(num(o, "judge_failures"))] if judge
               else []) for a, o in zip(arms, overall)]
    s.blocks.append(Table(header + [t("cs.capped")],
                          [r + [f_int(num(o, "length_capped"))] for r, o in zip(rows, overall)]))
    s.blocks += per_turn(c, benchmark, arms, judge is not None)
    s.blocks.append(Table([t("cs.arm"), t("cs.trend_cases"), t("cs.trend_rouge")]
                          + ([t("cs.trend_judge")] if judge else []),
                          [[code(text(a, "arm") or "?"), f_int(num(a.get("trend"), "cases")),
                            _ci(num(a.get("trend"), "rouge_l_change"), (a.get("trend") or {}).get("rouge_l_change_ci"),
                                3)]
                           + ([_ci(num(a.get("trend"), "judge_score_change"),
                                   (a.get("trend") or {}).get("judge_score_change_ci"), 2)] if judge else [])
                           for a in arms]))
    return s


def per_turn(c: Ctx, benchmark: str, arms: list[dict], judged: bool) -> list:
    """The per-turn table (ROUGE-L, and the judge score in brackets) and the per-turn curve(s)."""
    t, pt = c.t, c.pt
    turns = [[x for x in a.get("per_turn") or [] if isinstance(x, dict)] for a in arms]
    width = max((len(x) for x in turns), default=0)
    if not width:
        return []
    counts = [max((num(x[k], "n") or 0) for x in turns if len(x) > k) for k in range(width)]

    def cell(x: dict) -> str:
        rouge = f_num(num(x, "rouge_l"), 3)
        return f"{rouge} ({f_num(num(x, 'judge_score'), 1)})" if judged else rouge

    blocks = [Para(t("cs.by_turn", judge=t("cs.by_turn_judge") if judged else "")),
              Table([t("cs.arm")] + [t("cs.turn", turn=f_int(k + 1), n=f_int(counts[k])) for k in range(width)],
                    [[code(text(a, "arm") or "?")] + [cell(x[k]) if len(x) > k else NA for k in range(width)]
                     for a, x in zip(arms, turns)]),
              Para(t("cs.turn_note"))]
    for key, title in [("rouge_l", "plot.cs.title")] + ([("judge_score", "plot.cs.judge_title")] if judged else []):
        lines = []
        for a, x in zip(arms, turns):
            points = [(num(p, "turn"), num(p, key)) for p in x if num(p, "turn") is not None and num(p, key) is not None]
            if points:
                lines.append(Line(text(a, "arm") or "?", [p[0] for p in points], [p[1] for p in points], marker="o"))
        if lines:
            name = f"consult_{key}_{''.join(ch if ch.isalnum() else '_' for ch in benchmark)}"
            title_text = pt(title, benchmark=c.plotter.plain(benchmark))
            path = c.plotter.lines(name, title_text, pt("plot.cs.x"), "ROUGE-L" if key == "rouge_l" else "1–10", lines,
                                   integer_x=True)
            blocks.append(Image(path, t("plot.cs.caption")))
    return blocks
