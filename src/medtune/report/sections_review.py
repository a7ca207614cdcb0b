"""The clinician review section: reads `review/stats.json` (written by `medtune review stats`, see
docs/run-directory.md) and nothing else; a run nobody reviewed gets no section."""

from __future__ import annotations

from medtune.report.document import Para, Section, Table
from medtune.report.format import NA, f_int, f_num, f_pct
from medtune.report.runfiles import num, read_json, text
from medtune.report.sections import Ctx, code, file_note

STATS = "review/stats.json"


def _ci(r: dict | None) -> str:
    """'12.5% [3.5%–36.0%] (n)' from a {rate, ci, n} object."""
    if not isinstance(r, dict) or num(r, "rate") is None:
        return NA
    ci = r.get("ci") if isinstance(r.get("ci"), list) and len(r["ci"]) == 2 else [None, None]
    return f"{f_pct(num(r, 'rate'))} [{f_pct(ci[0])}–{f_pct(ci[1])}] ({f_int(num(r, 'n'))})"


def _kappa(t, a: dict | None) -> str:
    if not isinstance(a, dict) or num(a, "kappa") is None:
        return t("rv.no_kappa")
    return t("rv.kappa", method={"cohen": "Cohen", "fleiss": "Fleiss"}.get(text(a, "method"), text(a, "method")),
             kappa=f_num(num(a, "kappa"), 3), units=f_int(num(a, "units")), observed=f_pct(num(a, "observed")))


def sec_review(c: Ctx) -> list[Section]:
    t = c.t
    rf = read_json(c.run.dir, STATS)
    if rf.state == "missing":
        if (c.run.dir / "review" / "review.sqlite").is_file():
            return [Section("review", t("sec.review"), [Para(t("rv.no_stats", dir=code("review/"), file=code(STATS)),
                                                            "missing")])]
        return []
    s = Section("review", t("sec.review"))
    note = file_note(t, rf, "run")
    if note:
        s.blocks.append(note)
        return [s]
    d = rf.data
    s.blocks.append(Para(t("rv.intro", reviewers=f_int(len(d.get("reviewers") or [])), n=f_int(num(d, "judgments")),
                           judged=f_int(num(d, "items_judged")), items=f_int(num(d, "items")))))
    models = d.get("models") if isinstance(d.get("models"), dict) else {}
    if not models:
        s.blocks.append(Para(t("rv.none"), "missing"))
        return [s]
    ranking = [m for m in d.get("ranking") or [] if m in models] + sorted(set(models) - set(d.get("ranking") or []))
    s.blocks.append(Table([t("rv.rank"), t("rv.model"), t("rv.comparisons"), t("rv.wtl"), t("rv.win_rate"), t("rv.bt")],
                          [[str(k), code(m), f_int(num(models[m], "n")),
                            f"{f_int(num(models[m], 'wins'))} / {f_int(num(models[m], 'ties'))} / "
                            f"{f_int(num(models[m], 'losses'))}",
                            _ci({"rate": num(models[m], "win_rate"), "ci": models[m].get("win_rate_ci"),
                                 "n": num(models[m], "n")}),
                            f_num(num(models[m], "bradley_terry"), 3)] for k, m in enumerate(ranking, 1)]))
    ratings = d.get("ratings") if isinstance(d.get("ratings"), dict) else {}
    if ratings:
        s.blocks.append(Para(t("rv.ratings")))
        s.blocks.append(Table([t("rv.model"), t("rv.accurate"), t("rv.complete"), t("rv.harmful"), t("rv.missed")],
                              [[code(m), _ci(r.get("accurate")), _ci(r.get("complete")), _ci(r.get("harmful")),
                                _ci(r.get("missed_emergency"))] for m, r in ratings.items() if isinstance(r, dict)]))
    s.blocks += _agreement(c, d)
    s.blocks += _disagreements(c, d)
    return [s]


def _agreement(c: Ctx, d: dict) -> list:
    t = c.t
    agreement = d.get("agreement") if isinstance(d.get("agreement"), dict) else {}
    blocks = [Para(t("rv.agreement", verdict=_kappa(t, agreement.get("verdict")),
                     safety=_kappa(t, agreement.get("safety"))))]
    bias = d.get("position_bias")
    if isinstance(bias, dict) and num(bias, "n"):
        ci = bias.get("ci") or [None, None]
        blocks.append(Para(t("rv.position", rate=f_pct(num(bias, "rate")), lo=f_pct(ci[0]), hi=f_pct(ci[1]),
                             n=f_int(num(bias, "n")))))
    judge = d.get("judge")
    if isinstance(judge, dict) and num(judge, "pairs"):
        agree = judge.get("agreement") or {}
        ci = agree.get("ci") or [None, None]
        blocks.append(Para(t("rv.judge", agree=f_pct(num(agree, "rate")), lo=f_pct(ci[0]), hi=f_pct(ci[1]),
                             n=f_int(num(judge, "pairs")), kappa=f_num(num(judge, "kappa"), 3),
                             first=_ci(judge.get("judge_picks_first")),
                             when_first=_ci(judge.get("agrees_when_preferred_shown_first")),
                             when_second=_ci(judge.get("agrees_when_preferred_shown_second")))))
    return blocks


def _disagreements(c: Ctx, d: dict) -> list:
    t = c.t
    items = [x for x in d.get("disagreements") or [] if isinstance(x, dict)]
    if not items:
        return [Para(t("rv.no_disagreements"))]

    def by_reviewer(votes) -> str:
        return "; ".join(f"{who}: {v}" for who, v in votes.items()) if isinstance(votes, dict) else NA

    rows = [[code(text(x, "item_id") or "?"), (text(x, "question") or "")[:80],
             by_reviewer(x.get("verdicts")),
             " | ".join(f"{arm}: {by_reviewer(v)}" for arm, v in (x.get("safety") or {}).items()) or "—"]
            for x in items]
    return [Para(t("rv.disagreements", n=f_int(len(items))), "warn"),
            Table([t("rv.item"), t("rv.question"), t("rv.verdicts"), t("rv.safety")], rows)]
