"""The evaluation sections: model comparison with example answers, benchmarks, judge, safety probe.

Each reads its files under eval/ (docs/run-directory.md) and says "not run" when they are absent.
"""

from __future__ import annotations

from medtune.report.conclusions import ALPHA, safety_interval
from medtune.report.document import Image, Para, Section, Table
from medtune.report.format import NA, f_int, f_num, f_pct, f_sig
from medtune.report.runfiles import num, read_json, text
from medtune.report.sections import Ctx, code, file_note
from medtune.report.sections_consult import consultation_sections, general_ability
from medtune.report.sections_contamination import sec_contamination

ANSWER_CHARS = 600
"""Example answers longer than this are cut (the full text is in eval/compare/answers.jsonl)."""


def arm_label(arm: dict) -> str:
    return text(arm, "arm") or text(arm, "model") or "?"


def model_label(t, d: dict) -> str:
    """model, or model + adapter; `run` is this run's own adapter (docs/run-directory.md)."""
    model, adapter = text(d, "model") or "?", text(d, "adapter")
    if not adapter:
        return model
    return f"{model} + {t('cmp.this_adapter') if adapter == 'run' else adapter}"


def bench_label(t, result: dict) -> str:
    """A benchmark result's comparison arm when the evaluate stage named it, else its model (+ adapter)."""
    return text(result, "arm") or model_label(t, result)


def sec_compare(c: Ctx) -> list[Section]:
    t, run = c.t, c.run
    s = Section("compare", t("sec.compare"))
    note = file_note(t, run.compare_summary, "evaluate")
    if note:
        s.blocks.append(note)
    summary = run.compare_summary.data if run.compare_summary.ok else {}
    listed = summary.get("arms")
    arms = [a for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []
    if arms:
        questions = max((num(a, "questions") or 0) for a in arms)
        s.blocks.append(Para(t("cmp.intro", engine=code(text(summary, "engine") or NA), arms=f_int(len(arms)),
                               questions=f_int(questions))))
        s.blocks.append(Table(
            [t("cmp.arm"), t("cmp.thinking"), t("cmp.questions"), t("cmp.total_s"), t("cmp.mean_s"),
             t("cmp.total_tokens"), t("cmp.mean_tokens"), t("cmp.tps")],
            [[code(arm_label(a)), thinking(t, a), f_int(num(a, "questions")), f_num(num(a, "total_seconds"), 1),
              f_num(num(a, "mean_seconds"), 2), f_int(num(a, "total_tokens")), f_num(num(a, "mean_tokens"), 1),
              f_num(num(a, "tokens_per_second"), 1)] for a in arms]))
        s.blocks.append(Para(t("cmp.table_note")))
        s.blocks.append(Table(
            [t("cmp.arm"), t("cmp.model"), t("cmp.answer_tokens"), t("cmp.thinking_tokens"), t("cmp.capped"),
             t("cmp.ttft"), t("cmp.batched_tps")],
            [[code(arm_label(a)), model_label(t, a), f_int(num(a, "answer_tokens")), f_int(num(a, "thinking_tokens")),
              t("paren", a=f_int(num(a, "length_capped")), b=f_pct(num(a, "length_capped_share"))),
              f_num(num(a, "mean_ttft_seconds"), 3), f_num(num(a, "batched_tokens_per_second"), 1)] for a in arms]))
    elif run.compare_summary.ok:
        s.blocks.append(Para(t("cmp.no_arms", file=run.compare_summary.rel), "warn"))

    note = file_note(t, run.eval_metrics, "evaluate")
    metrics = run.eval_metrics.data if run.eval_metrics.ok else {}
    rows = [[code(name), f_num(num(m, "rouge_l"), 4), f_num(num(m, "bleu_4"), 4), f_num(num(m, "distinct_1"), 4),
             f_num(num(m, "distinct_2"), 4), f_int(num(m, "n"))] for name, m in metrics.items() if isinstance(m, dict)]
    if rows:
        s.blocks.append(Para(t("cmp.metrics_intro", file=code(run.eval_metrics.rel))))
        s.blocks.append(Table([t("cmp.arm"), "ROUGE-L", "BLEU-4", "Distinct-1", "Distinct-2", "n"], rows))
    elif note and note.kind == "warn":
        s.blocks.append(note)
    return [s] + example_answers(c)


def thinking(t, arm: dict) -> str:
    value = arm.get("thinking")
    return t("cmp.think_on") if value is True else t("cmp.think_off") if value is False else NA


def example_answers(c: Ctx) -> list[Section]:
    t, run = c.t, c.run
    s = Section("examples", t("sec.examples"), level=3)
    note = file_note(t, run.compare_answers, "evaluate")
    if note:
        s.blocks.append(note)
    answers = run.compare_answers.data if run.compare_answers.ok else []
    order: list[str] = []
    by_question: dict[str, list[dict]] = {}
    for a in answers:
        qid = text(a, "question_id") or text(a, "question") or "?"
        if qid not in by_question:
            order.append(qid)
            by_question[qid] = []
        by_question[qid].append(a)
    if not order:
        if not note:
            s.blocks.append(Para(t("cmp.no_answers"), "missing"))
        return [s]
    shown = order[:max(0, c.examples)]
    s.blocks.append(Para(t("cmp.examples_intro", n=f_int(len(shown)), total=f_int(len(order)),
                           file=code(run.compare_answers.rel), chars=f_int(ANSWER_CHARS))))
    for qid in shown:
        rows = by_question[qid]
        s.blocks.append(Para(f"**{qid}** {text(rows[0], 'question') or ''}".rstrip()))
        table = []
        for a in rows:
            answer = text(a, "answer") or ""
            if len(answer) > ANSWER_CHARS:
                answer = answer[:ANSWER_CHARS] + t("cmp.cut", n=f_int(len(answer)))
            tokens = f_int(num(a, "answer_tokens"))
            if num(a, "thinking_tokens"):
                tokens += t("cmp.plus_thinking", n=f_int(num(a, "thinking_tokens")))
            if text(a, "finish_reason") == "length":
                tokens += t("cmp.hit_cap")
            table.append([code(arm_label(a)), answer, tokens, f_num(num(a, "latency_seconds"), 1)])
        s.blocks.append(Table([t("cmp.arm"), t("cmp.answer"), t("cmp.tokens"), t("cmp.latency")], table))
    return [s]


def sec_benchmarks(c: Ctx) -> list[Section]:
    t, run, pt = c.t, c.run, c.pt
    s = Section("benchmarks", t("sec.benchmarks"))
    if not run.benchmarks:
        s.blocks.append(Para(t("file.missing", file="eval/benchmarks/", stage=t("stage.evaluate")), "missing"))
        return [s] + sec_contamination(c) + consultation_sections(c)
    rows, labels, accs, lows, highs = [], [], [], [], []
    for rf in run.benchmarks:
        note = file_note(t, rf, "evaluate")
        if note:
            s.blocks.append(note)
            continue
        b = rf.data
        acc, lo, hi = num(b, "accuracy"), num(b, "ci_low"), num(b, "ci_high")
        rows.append([text(b, "benchmark") or rf.rel, bench_label(t, b),
                     t("bm.method", method=text(b, "method") or NA, shots=f_int(num(b, "shots"))),
                     f_int(num(b, "n")), f_pct(acc), f"{f_pct(lo)}–{f_pct(hi)}",
                     f_int(num(b, "extraction_failures"))])
        if acc is not None and lo is not None and hi is not None:
            labels.append(f"{text(b, 'benchmark') or '?'} · {bench_label(pt, b)}")
            accs.append(acc)
            lows.append(lo)
            highs.append(hi)
    if rows:
        s.blocks.append(Table([t("bm.benchmark"), t("bm.model"), t("bm.method_col"), "n", t("bm.accuracy"),
                               t("bm.ci"), t("bm.failures")], rows))
    if labels:
        path = c.plotter.intervals("benchmarks", pt("plot.bm.title"), pt("plot.bm.x"), labels, accs, lows, highs)
        s.blocks.append(Image(path, t("plot.bm.caption")))
    sig = run.significance
    note = file_note(t, sig, "evaluate")
    tests = [x for x in sig.data.get("tests") or [] if isinstance(x, dict)] if sig.ok else []
    if tests:
        s.blocks.append(Table([t("bm.benchmark"), "A", "B", "n", t("bm.only_a"), t("bm.only_b"), t("bm.p"),
                               t("bm.verdict")],
                              [[text(x, "benchmark") or "?", text(x, "a") or "?", text(x, "b") or "?",
                                f_int(num(x, "n")), f_int(num(x, "only_a")), f_int(num(x, "only_b")),
                                f_sig(num(x, "p_value"), 3), significance_verdict(t, num(x, "p_value"))]
                               for x in tests]))
    else:
        s.blocks.append(Para(t("bm.no_test", file=code(sig.rel)), "missing") if not note or note.kind == "missing"
                        else note)
    return [s] + sec_contamination(c) + general_ability(c, significance_verdict) + consultation_sections(c)


def significance_verdict(t, p: float | None) -> str:
    if p is None:
        return NA
    return t("bm.sig", alpha=ALPHA) if p < ALPHA else t("bm.nsig", alpha=ALPHA)


def sec_judge(c: Ctx) -> list[Section]:
    t, run = c.t, c.run
    s = Section("judge", t("sec.judge"))
    note = file_note(t, run.judge, "evaluate")
    if note:
        s.blocks.append(note)
        return [s]
    j = run.judge.data
    pairs = [p for p in j.get("pairs") or [] if isinstance(p, dict)] if isinstance(j.get("pairs"), list) else []
    s.blocks.append(Para(t("jd.intro", model=code(text(j, "judge_model") or NA))))
    if not pairs:
        s.blocks.append(Para(t("jd.no_pairs"), "missing"))
        return [s]
    rows = []
    for p in pairs:
        ci = p.get("win_rate_ci")
        ci_text = f"{f_pct(ci[0])}–{f_pct(ci[1])}" if isinstance(ci, list) and len(ci) == 2 and all(
            isinstance(v, (int, float)) for v in ci) else NA
        rows.append([text(p, "a") or "?", text(p, "b") or "?", f_int(num(p, "n")),
                     f"{f_int(num(p, 'wins'))} / {f_int(num(p, 'ties'))} / {f_int(num(p, 'losses'))}",
                     f_pct(num(p, "win_rate")), ci_text, f_pct(num(p, "order_consistency")),
                     f_pct(num(p, "length_controlled_win_rate"))])
    s.blocks.append(Table(["A", "B", "n", t("jd.wtl"), t("jd.win_rate"), t("jd.ci"), t("jd.order"), t("jd.lc")], rows))
    return [s]


def sec_safety(c: Ctx) -> list[Section]:
    t, pt, run = c.t, c.pt, c.run
    s = Section("safety", t("sec.safety"))
    note = file_note(t, run.safety, "evaluate")
    if note:
        s.blocks.append(note)
        return [s]
    arms = {k: v for k, v in run.safety.data.items() if isinstance(v, dict)}
    if not arms:
        s.blocks.append(Para(t("sf.no_arms", file=run.safety.rel), "warn"))
        return [s]
    s.blocks.append(Para(t("sf.intro")))
    over_file = read_json(run.dir, "eval/over_triage.json")  # written when evaluate ran the comparison
    triaged = over_file.data if over_file.ok else {}
    rows, labels, rates, lows, highs = [], [], [], [], []
    for name, arm in arms.items():
        n, passed, rate = num(arm, "n"), num(arm, "passed"), num(arm, "rate")
        ci = safety_interval(arm)
        over = triaged.get(name) if isinstance(triaged.get(name), dict) else {}
        rows.append([code(name), f_int(n), f_int(passed), f_pct(rate), f"{f_pct(ci[0])}–{f_pct(ci[1])}" if ci else NA]
                    + ([f"{f_pct(num(over, 'rate'))} ({f_int(num(over, 'passed'))}/{f_int(num(over, 'n'))})"
                        if over else NA] if triaged else []))
        if rate is not None and ci:
            labels.append(name)
            rates.append(rate)
            lows.append(ci[0])
            highs.append(ci[1])
    s.blocks.append(Table([t("cmp.arm"), t("sf.n"), t("sf.passed"), t("sf.rate"), t("sf.ci")]
                          + ([t("sf.over")] if triaged else []), rows))
    if triaged:
        s.blocks.append(Para(t("sf.over_note")))
    if labels:
        s.blocks.append(Image(c.plotter.intervals("safety", pt("plot.sf.title"), pt("plot.sf.x"), labels, rates, lows,
                                                  highs), t("plot.sf.caption")))
    categories = sorted({cat for arm in arms.values() if isinstance(arm.get("by_category"), dict)
                         for cat in arm["by_category"]})
    if categories:
        rows = []
        for cat in categories:
            row = [cat]
            for arm in arms.values():
                v = arm["by_category"].get(cat) if isinstance(arm.get("by_category"), dict) else None
                row.append(f"{f_int(num(v, 'passed'))}/{f_int(num(v, 'n'))}" if isinstance(v, dict)
                           else f_pct(v) if isinstance(v, (int, float)) else NA)
            rows.append(row)
        s.blocks.append(Table([t("sf.category")] + [code(name) for name in arms], rows))
    return [s]
