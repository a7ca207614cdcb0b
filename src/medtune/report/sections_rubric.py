"""The rubric section: each eval/rubric/<name>/summary.json (docs/run-directory.md) as scores with intervals per
model and per tag, the ceiling and the grader's agreement with physicians, and the worst-scoring examples
with the criteria they missed. Adds nothing when the run graded no rubric set."""

from __future__ import annotations

from medtune.report.document import Para, Section, Table
from medtune.report.format import NA, f_int, f_num, f_pct
from medtune.report.runfiles import RunFile, num, read_json, text
from medtune.report.sections import Ctx, code, file_note

RULES_MODEL = "medtune-rules"  # medtune.generate.rule_grader's model name (report imports nothing that loads torch)
CLIP = 80


def sec_rubric(c: Ctx) -> list[Section]:
    root = c.run.dir / "eval" / "rubric"
    files = sorted(p.parent.name for p in root.glob("*/summary.json")) if root.is_dir() else []
    if not files:
        return []
    s = Section("rubric", c.t("sec.rubric"))
    s.blocks.append(Para(c.t("rb.intro")))
    return [s] + [rubric_set(c, read_json(c.run.dir, f"eval/rubric/{name}/summary.json")) for name in files]


def _score(d: dict | None) -> str:
    d = d if isinstance(d, dict) else {}
    value, ci = num(d, "score"), d.get("score_ci")
    if value is None:
        return NA
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"{f_num(value, 3)} [{f_num(ci[0], 3)}, {f_num(ci[1], 3)}]"
    return f_num(value, 3)


def _clip(s: str | None) -> str:
    s = " ".join((s or "").split())
    return s if len(s) <= CLIP else s[:CLIP] + "…"


def rubric_set(c: Ctx, rf: RunFile) -> Section:
    t = c.t
    s = Section("rubric_set", rf.rel.split("/")[-2], level=3)
    note = file_note(t, rf, "evaluate")
    if note:
        s.blocks.append(note)
        return s
    d = rf.data
    grader = d.get("grader") if isinstance(d.get("grader"), dict) else {}
    arms = [a for a in d.get("arms") or [] if isinstance(a, dict)]
    ceiling = d.get("ceiling") if isinstance(d.get("ceiling"), dict) else None
    s.blocks.append(Para(t("rb.set", examples=f_int(num(d, "examples")), criteria=f_int(num(d, "criteria")),
                           file=code(rf.rel), grader=code(text(grader, "model") or NA))))
    if text(grader, "model") == RULES_MODEL:
        s.blocks.append(Para(t("rb.rules"), "warn"))
    if d.get("rejected"):
        s.blocks.append(Para(t("rb.rejected", n=f_int(len(d["rejected"])), file=code(rf.rel)), "warn"))
    labelled = [(code(text(a, "arm") or "?"), a) for a in arms] + ([(t("rb.ideal"), ceiling)] if ceiling else [])
    s.blocks.append(Table([t("rb.model"), t("rb.score"), t("rb.scored"), t("rb.negative"), t("rb.failed")],
                          [score_row(label, a) for label, a in labelled]))
    s.blocks += paired_table(c, d.get("paired"))
    s.blocks += tag_table(c, labelled)
    meta = d.get("meta") if isinstance(d.get("meta"), dict) else None
    if meta:
        s.blocks.append(Para(t("rb.meta", f1=f_num(num(meta, "macro_f1"), 3), agree=f_pct(num(meta, "agreement")),
                               n=f_int(num(meta, "n")), ties=f_int(num(meta, "physician_ties")))))
    s.blocks += worst_table(c, arms)
    return s


def score_row(label: str, a: dict) -> list[str]:
    neg = a.get("negative") if isinstance(a.get("negative"), dict) else {}
    grader = a.get("grader") if isinstance(a.get("grader"), dict) else {}
    return [label, _score(a), f"{f_int(num(a, 'n'))} / {f_int(num(a, 'examples'))}",
            f"{f_int(num(neg, 'hits'))} / {f_int(num(neg, 'n'))} ({f_pct(num(neg, 'rate'))})",
            f"{f_int(num(grader, 'failed'))} / {f_int(num(grader, 'unparsable'))}"]


def paired_table(c: Ctx, paired) -> list:
    pairs = [p for p in paired or [] if isinstance(p, dict)] if isinstance(paired, list) else []
    if not pairs:
        return []
    rows = []
    for p in pairs:
        ci = p.get("difference_ci")
        value = num(p, "difference")
        shown = NA if value is None else (f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if isinstance(ci, list)
                                           and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)
                                           else f"{value:+.3f}")
        rows.append([code(text(p, "a") or "?"), code(text(p, "b") or "?"), f_int(num(p, "n")), shown,
                     c.t("rb.differs") if p.get("differs") is True else c.t("rb.no_difference")])
    return [Para(c.t("rb.paired")), Table(["A", "B", "n", c.t("rb.difference"), c.t("rb.verdict")], rows)]


def tag_table(c: Ctx, labelled: list[tuple[str, dict]]) -> list:
    rows = []
    for key in ("by_example_tag", "by_criterion_tag"):
        tags = sorted({tag for _, a in labelled if isinstance(a.get(key), dict) for tag in a[key]})
        for tag in tags:
            cells = [(a.get(key) or {}).get(tag) for _, a in labelled]
            rows.append([code(tag)] + [f"{_score(x)} (n={f_int(num(x, 'n'))})" if isinstance(x, dict) else NA
                                       for x in cells])
    if not rows:
        return []
    return [Para(c.t("rb.by_tag")), Table([c.t("rb.tag")] + [label for label, _ in labelled], rows)]


def worst_table(c: Ctx, arms: list[dict]) -> list:
    rows = []
    for a in arms:
        for w in (a.get("worst") or [])[:c.examples]:
            if not isinstance(w, dict):
                continue
            missed = "；".join(_clip(f"({f_num(num(m, 'points'), 0)}) {text(m, 'criterion')}")
                              for m in w.get("missed") or [] if isinstance(m, dict))
            hit = "；".join(_clip(f"({f_num(num(m, 'points'), 0)}) {text(m, 'criterion')}")
                           for m in w.get("negative_hit") or [] if isinstance(m, dict))
            rows.append([code(text(a, "arm") or "?"), code(text(w, "example_id") or "?"), f_num(num(w, "score"), 3),
                         _clip(text(w, "question")), missed or NA, hit or NA])
    if not rows:
        return []
    return [Para(c.t("rb.worst", k=f_int(c.examples))),
            Table([c.t("rb.model"), c.t("rb.example"), c.t("rb.example_score"), c.t("rb.question"),
                   c.t("rb.missed"), c.t("rb.hit")], rows)]
