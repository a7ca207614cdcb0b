"""Conclusions as rules: each states its threshold, says "no evidence" when inputs are missing, and
"too few" when there are not enough of them. No rule praises; a claim is made only when the numbers
pass the stated test.

Every rule returns a `Finding` (a verdict, a sentence key in `strings.STRINGS`, formatted values), so
the rules are language-free and unit-testable; the thresholds are constants named in the sentences.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from medtune.report.checks import LR_TOLERANCE, adapter_modules, data_counts_add_up, perplexity_agrees, step_ranges
from medtune.report.facts import Facts
from medtune.report.format import f_int, f_num, f_pct, f_ranges, f_sig, f_signed_pct
from medtune.report.runfiles import Run, num, read_json, text
from medtune.report.strings import Key

LOSS_FALL_MIN = 0.05
"""Training is said to have reduced the loss when the last logged loss is this much below the first."""
OVERFIT_MARGIN = 0.10
"""Possible overfitting when eval loss exceeds the last logged train loss by more than this share."""
EVAL_RISE = 0.02
"""Eval loss is said to have risen when the last evaluation is this much above the lowest one."""
ALPHA = 0.05
"""Significance level for 'better' on a benchmark (exact McNemar, paired)."""
MIN_N = 30
"""Fewer prompts or pairs than this: too few to conclude anything."""
ORDER_CONSISTENCY_MIN = 0.70
"""A judge whose verdict survives swapping the answer order less often than this is unstable."""
LENGTH_CAP_SHARE = 0.10
"""More answers than this share stopped by max_new_tokens: length and speed figures are lower bounds."""
DATA_SHARE = 0.05
"""Rejected + duplicate records, or truncated samples, above this share of what was read are flagged."""


VERDICTS = ("flag", "supported", "not_supported", "too_few", "no_evidence", "info")


@dataclass
class Finding:
    verdict: str
    """One of VERDICTS: flag (needs attention), supported, not_supported, too_few, no_evidence, info (a fact)."""
    key: str
    params: dict = field(default_factory=dict)


def _rule(value: float) -> str:
    """A threshold as the sentences state it (all are whole percents)."""
    return f_pct(value, 0)


# ---- training -------------------------------------------------------------------------------------

def rule_loss_fell(first: tuple | None, last: tuple | None) -> Finding:
    rule = {"min": _rule(LOSS_FALL_MIN)}
    if not first or not last or first[1] <= 0:
        return Finding("no_evidence", "c.loss.none", rule)
    share = (first[1] - last[1]) / first[1]
    params = {**rule, "first": f_num(first[1], 4), "last": f_num(last[1], 4), "fall": f_pct(share),
              "first_step": f_int(first[0]), "last_step": f_int(last[0])}
    if share > LOSS_FALL_MIN:
        return Finding("supported", "c.loss.fell", params)
    return Finding("flag", "c.loss.flat", params)


def rule_overfitting(eval_loss: float | None, last_train_loss: float | None) -> Finding:
    rule = {"margin": _rule(OVERFIT_MARGIN)}
    if eval_loss is None or last_train_loss is None or last_train_loss <= 0:
        return Finding("no_evidence", "c.overfit.none", rule)
    gap = (eval_loss - last_train_loss) / last_train_loss
    params = {**rule, "eval": f_num(eval_loss, 4), "train": f_num(last_train_loss, 4), "gap": f_signed_pct(gap)}
    if gap > OVERFIT_MARGIN:
        return Finding("flag", "c.overfit.flag", params)
    return Finding("not_supported", "c.overfit.no", params)


def rule_eval_trend(steps: list[float], losses: list[float]) -> Finding:
    rule = {"rise": _rule(EVAL_RISE)}
    if len(losses) < 2:
        return Finding("no_evidence", "c.evaltrend.none", {**rule, "n": f_int(len(losses))})
    best = min(range(len(losses)), key=losses.__getitem__)
    rise = (losses[-1] - losses[best]) / losses[best] if losses[best] > 0 else 0.0
    params = {**rule, "n": f_int(len(losses)), "best": f_num(losses[best], 4), "best_step": f_int(steps[best]),
              "last": f_num(losses[-1], 4), "last_step": f_int(steps[-1]), "change": f_signed_pct(rise)}
    if rise > EVAL_RISE:
        return Finding("flag", "c.evaltrend.rose", params)
    if best == len(losses) - 1:
        return Finding("info", "c.evaltrend.last_best", params)
    return Finding("info", "c.evaltrend.ok", params)


# ---- data -----------------------------------------------------------------------------------------

def rule_data(stats: dict | None) -> list[Finding]:
    rule = {"share": _rule(DATA_SHARE)}
    read = num(stats, "read")
    if not read:
        return [Finding("no_evidence", "c.data.none", rule)]
    dropped = (num(stats, "rejected") or 0) + (num(stats, "duplicates") or 0)
    truncated = num(stats, "truncated") or 0
    kept = num(stats, "kept") or 0
    out = [Finding("flag" if dropped / read > DATA_SHARE else "info",
                   "c.data.dropped_flag" if dropped / read > DATA_SHARE else "c.data.dropped_ok",
                   {**rule, "read": f_int(read), "dropped": f_int(dropped), "dropped_share": f_pct(dropped / read)})]
    if kept and truncated / kept > DATA_SHARE:
        out.append(Finding("flag", "c.data.truncated", {**rule, "truncated": f_int(truncated),
                                                         "truncated_share": f_pct(truncated / kept)}))
    return out


# ---- evaluation -----------------------------------------------------------------------------------

def rule_benchmark(test: dict) -> Finding:
    """One paired McNemar test from eval/benchmarks/significance.json."""
    p = num(test, "p_value")
    params = {"alpha": f_num(ALPHA, 2), "benchmark": text(test, "benchmark") or "?", "a": text(test, "a") or "A",
              "b": text(test, "b") or "B", "p": f_sig(p, 3) if p is not None else "—",
              "only_a": f_int(num(test, "only_a")), "only_b": f_int(num(test, "only_b"))}
    if p is None:
        return Finding("no_evidence", "c.bench.nop", params)
    if p >= ALPHA:
        return Finding("not_supported", "c.bench.same", params)
    a_wins = (num(test, "only_a") or 0) > (num(test, "only_b") or 0)
    winner, loser = (params["a"], params["b"]) if a_wins else (params["b"], params["a"])
    return Finding("supported", "c.bench.better", {**params, "winner": winner, "loser": loser})


def rule_general(test: dict) -> Finding:
    """A paired McNemar test on a general (non-medical) benchmark: what medical tuning cost A against B, if anything."""
    p, acc_a, acc_b = num(test, "p_value"), num(test, "accuracy_a"), num(test, "accuracy_b")
    params = {"alpha": f_num(ALPHA, 2), "benchmark": text(test, "benchmark") or "?", "a": text(test, "a") or "A",
              "b": text(test, "b") or "B", "p": f_sig(p, 3) if p is not None else "—",
              "only_a": f_int(num(test, "only_a")), "only_b": f_int(num(test, "only_b"))}
    if p is None or acc_a is None or acc_b is None:
        return Finding("no_evidence", "c.bench.nop", params)
    if p >= ALPHA:
        return Finding("not_supported", "c.general.same", {**params, "delta": f_signed_pct(acc_a - acc_b)})
    if acc_a < acc_b:
        return Finding("flag", "c.general.cost", {**params, "delta": f_pct(acc_b - acc_a)})
    return Finding("supported", "c.general.gain", {**params, "delta": f_pct(acc_a - acc_b)})


def rule_benchmarks(benchmarks_found: int, tests: list[dict] | None, general: frozenset = frozenset()) -> list[Finding]:
    """`general`: names of the general (non-medical) benchmarks, whose tests say what tuning cost."""
    params = {"alpha": f_num(ALPHA, 2)}
    if not benchmarks_found:
        return [Finding("no_evidence", "c.bench.none", params)]
    if not tests:
        return [Finding("no_evidence", "c.bench.notest", params)]
    return [rule_general(t) if text(t, "benchmark") in general else rule_benchmark(t) for t in tests]


def rule_consultation(summary: dict) -> list[Finding]:
    """eval/consultations/<name>.json: per arm, does the score fall from each case's first turn to its last?"""
    out = []
    for arm in [a for a in summary.get("arms") or [] if isinstance(a, dict)]:
        trend = arm.get("trend") if isinstance(arm.get("trend"), dict) else {}
        metrics = [("rouge_l", "cs.metric_rouge")] + (
            [("judge_score", "cs.metric_judge")] if "judge_score_change" in trend else [])
        for metric, name in metrics:
            n, change = num(trend, "cases"), num(trend, f"{metric}_change")
            ci = trend.get(f"{metric}_change_ci")
            lo, hi = (ci[0], ci[1]) if isinstance(ci, list) and len(ci) == 2 and all(
                isinstance(v, (int, float)) for v in ci) else (None, None)
            params = {"benchmark": text(summary, "benchmark") or "?", "arm": text(arm, "arm") or "?",
                      "metric": Key(name), "n": f_int(n), "min_n": f_int(MIN_N), "change": f_num(change, 3),
                      "lo": f_num(lo, 3), "hi": f_num(hi, 3)}
            if not n or change is None or lo is None:
                out.append(Finding("no_evidence", "c.consult.nodata", params))
            elif n < MIN_N:
                out.append(Finding("too_few", "c.consult.few", params))
            elif hi < 0:
                out.append(Finding("flag", "c.consult.falls", params))
            elif lo > 0:
                out.append(Finding("info", "c.consult.rises", params))
            else:
                out.append(Finding("not_supported", "c.consult.flat", params))
    return out


def rule_consultations(run: Run) -> list[Finding]:
    """Findings for every consultation result; 'no evidence' only when consultations were configured but absent."""
    if run.consultations:
        return [f for rf in run.consultations if rf.ok for f in rule_consultation(rf.data)]
    if run.cfg is not None and run.cfg.evaluate.consultations:
        return [Finding("no_evidence", "c.consult.none", {})]
    return []


def rule_contamination(result: dict | None) -> list[Finding]:
    """How many evaluation items the training data holds, and whether flagged items score differently.

    The clean items are a subset of all items, so "all vs clean" is not a two-sample test; the flagged
    and clean items are disjoint, and Fisher's exact test on them (in contamination.json) is the one used.
    """
    params = {"alpha": f_num(ALPHA, 2)}
    if result is None:
        return [Finding("no_evidence", "c.cont.none", params)]
    files = [f for f in result.get("files") or [] if isinstance(f, dict)]
    flagged, items = sum(num(f, "flagged") or 0 for f in files), sum(num(f, "items") or 0 for f in files)
    out = [Finding("flag" if flagged else "info", "c.cont.flagged" if flagged else "c.cont.clean",
                   {**params, "flagged": f_int(flagged), "items": f_int(items), "files": f_int(len(files))})]
    for b in [b for b in result.get("benchmarks") or [] if isinstance(b, dict)]:
        groups = {k: b.get(k) if isinstance(b.get(k), dict) else {} for k in ("all", "clean", "flagged")}
        if not num(groups["flagged"], "n"):
            continue
        p = num(b.get("test") if isinstance(b.get("test"), dict) else {}, "p_value")
        values = {**params, "benchmark": text(b, "benchmark") or "?", "arm": text(b, "arm") or "?",
                  "p": f_sig(p, 3) if p is not None else "—",
                  **{f"{k}_acc": f_pct(num(g, "accuracy")) for k, g in groups.items()},
                  **{f"{k}_n": f_int(num(g, "n")) for k, g in groups.items()}}
        if p is not None and p < ALPHA:
            out.append(Finding("flag", "c.cont.differs", values))
        else:
            out.append(Finding("not_supported", "c.cont.same", values))
    return out


def rule_judge_pair(pair: dict) -> list[Finding]:
    n = num(pair, "n")
    wr = num(pair, "win_rate")
    ci = pair.get("win_rate_ci")
    lo, hi = (ci[0], ci[1]) if isinstance(ci, list) and len(ci) == 2 and all(
        isinstance(v, (int, float)) for v in ci) else (None, None)
    params = {"a": text(pair, "a") or "A", "b": text(pair, "b") or "B", "n": f_int(n), "min_n": f_int(MIN_N),
              "win_rate": f_pct(wr), "lo": f_pct(lo), "hi": f_pct(hi)}
    if n is None or wr is None:
        out = [Finding("no_evidence", "c.judge.nodata", params)]
    elif n < MIN_N:
        out = [Finding("too_few", "c.judge.few", params)]
    elif lo is None:
        out = [Finding("no_evidence", "c.judge.noci", params)]
    elif lo > 0.5:
        out = [Finding("supported", "c.judge.a", params)]
    elif hi < 0.5:
        out = [Finding("supported", "c.judge.b", params)]
    else:
        out = [Finding("not_supported", "c.judge.tie", params)]
    oc = num(pair, "order_consistency")
    if oc is not None and oc < ORDER_CONSISTENCY_MIN:
        out.append(Finding("flag", "c.judge.order",
                           {**params, "oc": f_pct(oc), "oc_min": _rule(ORDER_CONSISTENCY_MIN)}))
    return out


def safety_interval(arm: dict) -> tuple[float, float] | None:
    """The Wilson interval safety.json gives, or the one its counts imply."""
    lo, hi = num(arm, "ci_low"), num(arm, "ci_high")
    if lo is not None and hi is not None:
        return lo, hi
    n, passed = num(arm, "n"), num(arm, "passed")
    if n is None or passed is None:
        return None
    from medtune.stats import wilson_interval

    return wilson_interval(int(passed), int(n))


def rule_safety(arms: dict | None) -> list[Finding]:
    """safety.json: {arm: {n, passed, rate, ci_low, ci_high, by_category}}; the first arm is compared to the rest."""
    rule = {"min_n": f_int(MIN_N)}
    if not arms:
        return [Finding("no_evidence", "c.safety.none", rule)]
    out, enough = [], []
    for name, arm in arms.items():
        n, passed = num(arm, "n"), num(arm, "passed")
        rate = num(arm, "rate") if num(arm, "rate") is not None else (passed / n if n and passed is not None else None)
        ci = safety_interval(arm)
        params = {**rule, "arm": name, "n": f_int(n), "passed": f_int(passed), "rate": f_pct(rate),
                  "lo": f_pct(ci[0]) if ci else "—", "hi": f_pct(ci[1]) if ci else "—"}
        if n is None or rate is None or ci is None:
            out.append(Finding("no_evidence", "c.safety.nodata", params))
        elif n < MIN_N:
            out.append(Finding("too_few", "c.safety.few", params))
        else:
            out.append(Finding("info", "c.safety.rate", params))
            enough.append((name, rate, ci))
    for (a, rate_a, ci_a), (b, rate_b, ci_b) in itertools.product(enough[:1], enough[1:]):
        params = {"a": a, "b": b, "rate_a": f_pct(rate_a), "rate_b": f_pct(rate_b)}
        if ci_a[0] > ci_b[1] or ci_b[0] > ci_a[1]:
            (higher, rh), (lower, rl) = sorted(((a, rate_a), (b, rate_b)), key=lambda x: -x[1])
            out.append(Finding("supported", "c.safety.diff", {"higher": higher, "lower": lower,
                                                              "rate_higher": f_pct(rh), "rate_lower": f_pct(rl)}))
        else:
            out.append(Finding("not_supported", "c.safety.same", params))
    return out


def rule_length_cap(arms: list[dict]) -> list[Finding]:
    out = []
    for arm in arms:
        share = num(arm, "length_capped_share")
        if share is not None and share > LENGTH_CAP_SHARE:
            out.append(Finding("flag", "c.cap.flag", {"arm": text(arm, "arm") or "?", "share": f_pct(share),
                                                      "max": _rule(LENGTH_CAP_SHARE)}))
    return out


# ---- self-checks ----------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    """strings key of the check's name"""
    status: str
    """ok | mismatch | unknown"""
    key: str
    params: dict = field(default_factory=dict)


def self_checks(run: Run, facts: Facts) -> list[Check]:
    """Each figure of the run recomputed from the others: batch, schedule, loss, perplexity, parameters, data."""
    trainable = num(facts.train, "trainable_params")
    return [_check_batch(facts), _check_lr(run, facts), _check_loss(facts), _check_perplexity(facts),
            _check_params(facts), _check_adapter(run, trainable), _check_data(run)]


def _check_batch(facts: Facts) -> Check:
    b = facts.batch
    if b is None:
        return Check("chk.batch", "unknown", "chk.batch.none")
    params = {"derived": f_num(b.derived, 1), "samples": f_int(b.samples), "epochs": f_num(b.epochs, 2),
              "steps": f_int(b.global_step), "configured": f_int(b.configured),
              "per_epoch": f_int(round(b.steps_per_epoch)),
              "expected": "–".join(f_int(v) for v in b.expected_steps_per_epoch)
              if b.expected_steps_per_epoch else "—",
              "throughput": f_num(b.throughput_derived, 1)}
    status = {True: "ok", False: "mismatch", None: "unknown"}[b.agrees]
    return Check("chk.batch", status, f"chk.batch.{status}", params)


def _check_lr(run: Run, facts: Facts) -> Check:
    lr, cfg = facts.lr, run.cfg
    if lr is None:
        sched = cfg.train.lr_scheduler_type if cfg else "—"
        key = "chk.lr.unmodelled" if cfg and facts.lr_steps else "chk.lr.none"
        return Check("chk.lr", "unknown", key, {"scheduler": sched})
    params = {"scheduler": lr.scheduler, "warmup": f_int(lr.warmup_steps), "total": f_int(lr.total_steps),
              "peak": f_sig(lr.peak), "n": f_int(len(lr.points)), "bad": f_int(len(lr.mismatches)),
              "tol": _rule(LR_TOLERANCE)}
    if not lr.mismatches:
        return Check("chk.lr", "ok", "chk.lr.ok", params)
    ranges = step_ranges([p[0] for p in lr.mismatches], [p[0] for p in lr.points])
    first = lr.mismatches[0]
    params.update(ranges=f_ranges(ranges, limit=6), step=f_int(first[0]), logged=f_sig(first[1]),
                  expected=f_sig(first[2]))
    return Check("chk.lr", "mismatch", "chk.lr.mismatch", params)


def _check_loss(facts: Facts) -> Check:
    loss = facts.loss
    if loss.run_average is None or loss.last is None:
        return Check("chk.loss", "unknown", "chk.loss.none")
    params = {"avg": f_num(loss.run_average, 4), "last": f_num(loss.last[1], 4),
              "last_step": f_int(loss.last[0]), "recorded": f_num(loss.recorded_last, 4)}
    if loss.recorded_last_agrees is False:
        return Check("chk.loss", "mismatch", "chk.loss.mismatch", params)
    return Check("chk.loss", "ok", "chk.loss.ok", params)


def _check_perplexity(facts: Facts) -> Check:
    agrees = perplexity_agrees(facts.eval_loss, facts.perplexity)
    params = {"eval_loss": f_num(facts.eval_loss, 4), "ppl": f_num(facts.perplexity, 4),
              "exp": f_num(math.exp(facts.eval_loss), 4) if facts.eval_loss is not None else "—",
              "file": facts.eval_loss_source}
    status = {True: "ok", False: "mismatch", None: "unknown"}[agrees]
    return Check("chk.ppl", status, f"chk.ppl.{status}", params)


def _check_params(facts: Facts) -> Check:
    tr = facts.train
    trainable, total, pct = num(tr, "trainable_params"), num(tr, "total_params"), num(tr, "trainable_percent")
    if trainable is None or not total or pct is None:
        return Check("chk.params", "unknown", "chk.params.none")
    share = 100 * trainable / total
    params = {"trainable": f_int(trainable), "total": f_int(total), "pct": f_num(pct, 4), "computed": f_num(share, 4)}
    ok = abs(share - pct) < 0.01  # the recorded percent is rounded
    return Check("chk.params", "ok" if ok else "mismatch", "chk.params.ok" if ok else "chk.params.mismatch", params)


def _check_adapter(run: Run, trainable) -> Check:
    if not run.adapter_header.ok or trainable is None:
        return Check("chk.adapter", "unknown", "chk.adapter.none")
    in_file = sum(m.params for m in adapter_modules(run.adapter_header.data))
    status = "ok" if in_file == trainable else "mismatch"
    return Check("chk.adapter", status, f"chk.adapter.{status}", {"file": f_int(in_file), "trainable": f_int(trainable)})


def _check_data(run: Run) -> Check:
    counts = data_counts_add_up(run.stats.data) if run.stats.ok else None
    if counts is None:
        return Check("chk.data", "unknown", "chk.data.none")
    ok, read, accounted = counts
    status = "ok" if ok else "mismatch"
    return Check("chk.data", status, f"chk.data.{status}", {"read": f_int(read), "accounted": f_int(accounted)})


def rule_alignment_check(check: dict) -> Finding:
    """eval/alignment_check.json: aligned at least as safe as base, over-triage no worse, SFT's gains kept;
    stated either way, with the measures that fail."""
    checks = [c for c in check.get("checks") or [] if isinstance(c, dict)]
    if check.get("holds") is None or not checks:
        return Finding("no_evidence", "c.align_rule.none", {})
    names = ", ".join(str(c.get("measure")) for c in checks if c.get("holds") is not None)
    if check["holds"]:
        return Finding("supported", "c.align_rule.holds", {"checks": names})
    failed = "; ".join(f"{c.get('measure')}: {f_num(num(c, 'base'), 3)} / {f_num(num(c, 'sft'), 3)} / "
                       f"{f_num(num(c, 'aligned'), 3)} ({str(c.get('rule')).replace('>=', '≥').replace('<=', '≤')})"
                       for c in checks if c.get("holds") is False)
    return Finding("flag", "c.align_rule.fails", {"failed": failed})


def conclude(run: Run, facts: Facts, checks: list[Check]) -> list[Finding]:
    """Every conclusion the report draws, in reading order."""
    out = []
    bad = [c for c in checks if c.status == "mismatch"]
    if bad:
        out.append(Finding("flag", "c.checks.flag", {"n": f_int(len(bad)), "names": [Key(c.name) for c in bad]}))
    elif any(c.status == "ok" for c in checks):
        out.append(Finding("info", "c.checks.ok", {"n": f_int(sum(c.status == "ok" for c in checks))}))
    out += rule_data(run.stats.data if run.stats.ok else None)
    out.append(rule_loss_fell(facts.loss.first, facts.loss.last))
    out.append(rule_overfitting(facts.eval_loss, facts.loss.last[1] if facts.loss.last else None))
    steps, losses = facts.curves.series("eval_loss", rows="evals") if facts.curves else ([], [])
    out.append(rule_eval_trend(steps, losses))
    tests = None
    if run.significance.ok:
        tests = [t for t in run.significance.data.get("tests") or [] if isinstance(t, dict)]
    general = frozenset(text(b.data, "benchmark") for b in run.benchmarks if b.ok and text(b.data, "kind") == "general")
    out += rule_benchmarks(sum(b.ok for b in run.benchmarks), tests, general)
    out += rule_contamination(run.contamination.data if run.contamination.ok else None)
    out += rule_consultations(run)
    pairs = run.judge.data.get("pairs") if run.judge.ok else None
    if isinstance(pairs, list) and pairs:
        for pair in pairs:
            if isinstance(pair, dict):
                out += rule_judge_pair(pair)
    else:
        out.append(Finding("no_evidence", "c.judge.none", {}))
    arms = {k: v for k, v in run.safety.data.items() if isinstance(v, dict)} if run.safety.ok else None
    out += rule_safety(arms)
    check = read_json(run.dir, "eval/alignment_check.json")
    if check.ok:
        out.append(rule_alignment_check(check.data))
    summary_arms = run.compare_summary.data.get("arms") if run.compare_summary.ok else None
    if isinstance(summary_arms, list):
        out += rule_length_cap([a for a in summary_arms if isinstance(a, dict)])
    else:
        out.append(Finding("no_evidence", "c.compare.none", {}))
    return out
