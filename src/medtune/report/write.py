"""The report stage: read the run directory, derive, check, conclude, and write report.md and report.html.

Run as: medtune report RUN_DIR [--lang zh|en] [--output DIR]

Reads only files under RUN_DIR and imports no torch (nor transformers, peft, trl, datasets): a report
can be written anywhere the run directory is copied to.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from medtune.errors import UserError
from medtune.report.conclusions import conclude, self_checks
from medtune.report.document import Document, Image, Para, Section, Table, to_html, to_markdown
from medtune.report.facts import derive
from medtune.report.plots import Plotter, find_cjk_font
from medtune.report.owned import OwnedFiles
from medtune.report.runfiles import check_run_dir, read_run
from medtune.report.sections import (
    Ctx,
    sec_checks,
    sec_conclusions,
    sec_config,
    sec_data,
    sec_metrics,
    sec_outputs,
    sec_overview,
    sec_params,
    sec_repro,
    sec_timeline,
    sec_training,
)
from medtune.report.sections_align import sec_alignment
from medtune.report.sections_eval import sec_benchmarks, sec_compare, sec_judge, sec_safety
from medtune.report.sections_review import sec_review
from medtune.report.sections_rubric import sec_rubric
from medtune.report.strings import LANGS, Text

SECTION_BUILDERS = (sec_overview, sec_conclusions, sec_checks, sec_data, sec_config, sec_timeline, sec_training,
                    sec_metrics, sec_params, sec_outputs, sec_alignment, sec_compare, sec_benchmarks, sec_judge,
                    sec_rubric, sec_safety, sec_review, sec_repro)


class SectionFailed(UserWarning):
    """A report section raised; the report says so in its place. The tests turn it into an error."""


@dataclass
class ReportResult:
    markdown: Path
    html: Path
    plots: list[str]
    tables: int
    images: int


def build_sections(c: Ctx) -> list[Section]:
    sections, number = [], 0
    for build in SECTION_BUILDERS:
        try:
            built = build(c)
        except UserError:  # a plot that would overwrite a file medtune did not write: stop, write nothing more
            raise
        except Exception as e:  # a file shaped unlike the contract costs its section, never the report
            name = build.__name__.removeprefix("sec_")
            warnings.warn(f"medtune report: section {name!r} could not be built: {type(e).__name__}: {e}",
                          SectionFailed, stacklevel=2)
            built = [Section(name, c.t(f"sec.{name}"),
                             [Para(c.t("sec.failed", error=f"{type(e).__name__}: {e}"), "warn")])]
        if not built:  # a section for an optional stage the run does not have
            continue
        number += 1
        built[0].title = f"{number}. {built[0].title}"
        sections += built
    return sections


def write_report(run_dir: str | Path, lang: str | None = None, output_dir: str | Path | None = None,
                 generated_at: str | None = None, cjk_font: str | None | bool = True) -> ReportResult:
    """Write report.md, report.html and plots/*.png for a run directory (into output_dir, default the run dir).

    Replaces only files an earlier report wrote (report_files.json records them); refuses to overwrite any
    other file, and refuses a directory that is not a run directory (runfiles.check_run_dir).

    lang: zh or en; None takes `report.lang` from the run's config.yaml (zh without one).
    generated_at: the time printed in the report (tests fix it); default now.
    cjk_font: True finds an installed CJK font for Chinese plot labels; None forces English labels.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    run = read_run(run_dir)
    cfg = run.cfg
    lang = lang or (cfg.report.lang if cfg else "zh")
    if lang not in LANGS:
        raise UserError(f"--lang {lang!r}: use one of {', '.join(LANGS)}")
    out = Path(output_dir) if output_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    owned = OwnedFiles(out)
    md_path, html_path = owned.claim("report.md"), owned.claim("report.html")  # refuse before writing anything
    try:
        doc = _document(run, lang, Plotter(out, lang, _font(cjk_font), owned), generated_at)
        md_path.write_text(to_markdown(doc), encoding="utf-8")
        owned.wrote("report.md")
        html_path.write_text(to_html(doc, out), encoding="utf-8")
        owned.wrote("report.html")
    except BaseException:
        owned.save()
        raise
    owned.finish()  # removes the earlier report's plots this one did not draw
    plots = [rel for rel in owned.written if rel.startswith("plots/")]
    return ReportResult(md_path, html_path, plots, doc.count(Table), doc.count(Image))


def _font(cjk_font: str | None | bool) -> str | None:
    return find_cjk_font() if cjk_font is True else cjk_font or None


def _document(run, lang: str, plotter: Plotter, generated_at: str | None) -> Document:
    cfg, run_dir = run.cfg, run.dir
    t = Text(lang)
    facts = derive(run)
    checks = self_checks(run, facts)
    ctx = Ctx(run=run, facts=facts, checks=checks, findings=conclude(run, facts, checks), t=t,
              pt=Text(plotter.lang), plotter=plotter, examples=cfg.report.examples if cfg else 3)
    title = (cfg.report.title if cfg and cfg.report.title else None) or t("title", name=run_dir.resolve().name)
    when = generated_at or datetime.now().strftime("%Y-%m-%d %H:%M")
    return Document(title, t("subtitle", name=run_dir.resolve().name, time=when), build_sections(ctx), lang)
