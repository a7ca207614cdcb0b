"""The contamination subsection of the benchmarks section: eval/contamination.json (docs/run-directory.md).

The conclusion rule lives in conclusions.py (rule_contamination).
"""

from __future__ import annotations

from pathlib import Path

from medtune.report.document import Para, Section, Table
from medtune.report.format import NA, f_int, f_pct, f_sig
from medtune.report.runfiles import num, text
from medtune.report.sections import Ctx, code, file_note

FLAGGED_SHOWN = 10
"""Flagged items listed per evaluation file (all are in eval/contamination.json)."""


def sec_contamination(c: Ctx) -> list[Section]:
    t, rf = c.t, c.run.contamination
    s = Section("contamination", t("sec.contamination"), level=3)
    note = file_note(t, rf, "evaluate")
    if note:
        s.blocks.append(note)
        return [s]
    d = rf.data
    method = d.get("method") if isinstance(d.get("method"), dict) else {}
    training = d.get("training") if isinstance(d.get("training"), dict) else {}
    s.blocks.append(Para(t("ct.intro", n=f_int(num(method, "n")), threshold=f_pct(num(method, "threshold"), 0),
                           records=f_int(num(training, "records_checked")),
                           selection=text(training, "selection") or NA)))
    files = [f for f in d.get("files") or [] if isinstance(f, dict)]
    s.blocks.append(Table([t("ct.file"), t("ct.kind"), t("ct.items"), t("ct.flagged"), t("ct.exact"),
                           t("ct.overlap"), t("ct.short")],
                          [[code(Path(text(f, "path") or "?").name), text(f, "kind") or NA, f_int(num(f, "items")),
                            f_int(num(f, "flagged")), f_int(num(f, "exact")), f_int(num(f, "overlap")),
                            f_int(num(f, "too_short_for_ngrams"))] for f in files]))
    rows = []
    for f in files:
        for item in [x for x in f.get("flagged_items") or [] if isinstance(x, dict)][:FLAGGED_SHOWN]:
            match = (item.get("matches") or [{}])[0]
            where = f"{Path(text(match, 'file') or '?').name}:{line_no(match)}"
            # a benchmark item's id is already "<file>:<line>"; other files are named here
            label = text(item, "id") if ":" in (text(item, "id") or "") else \
                f"{Path(text(f, 'path') or '?').name}:{line_no(item)}"
            rows.append([label, text(item, "text") or "",
                         t("ct.exact") if item.get("exact") else f_pct(num(item, "coverage")), code(where),
                         f_int(num(item, "matching_records"))])
    if rows:
        s.blocks.append(Table([t("ct.item"), t("ct.text"), t("ct.how"), t("ct.where"), t("ct.records")], rows))
    bench = [b for b in d.get("benchmarks") or [] if isinstance(b, dict)]
    if bench:
        s.blocks.append(Para(t("ct.clean_intro")))
        s.blocks.append(Table([t("bm.benchmark"), t("bm.model"), t("ct.all"), t("ct.clean"), t("ct.flagged_acc"),
                               t("ct.p")], [clean_row(b) for b in bench]))
    return [s]


def line_no(d: dict) -> str:
    line = num(d, "line")
    return str(int(line)) if line is not None else "?"


def clean_row(b: dict) -> list[str]:
    def acc(group: str) -> str:
        g = b.get(group) if isinstance(b.get(group), dict) else {}
        return f"{f_pct(num(g, 'accuracy'))} ({f_int(num(g, 'correct'))}/{f_int(num(g, 'n'))})"

    test = b.get("test") if isinstance(b.get("test"), dict) else {}
    p = num(test, "p_value")
    return [text(b, "benchmark") or "?", text(b, "arm") or text(b, "result") or "?", acc("all"), acc("clean"),
            acc("flagged"), f_sig(p, 3) if p is not None else NA]
