"""The report's sections, each built from the run's own files; a file that is absent says "not run".

Order: overview, conclusions, self-checks, data, configuration, timeline, training, final metrics,
trainable parameters, output files, then the evaluation sections (sections_eval.py) and
reproducibility. Every builder returns Sections; `write.build_sections` guards each one so a surprise in
one file costs one section, never the report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from medtune.report.checks import LR_TOLERANCE, adapter_modules, peak_tflops, step_ranges, warmup_steps_for
from medtune.report.conclusions import Check, Finding
from medtune.report.document import Bullets, Code, Image, Para, Section, Table
from medtune.report.facts import Facts
from medtune.report.format import NA, f_bytes, f_int, f_num, f_pct, f_ranges, f_sig
from medtune.report.plots import Line, Plotter
from medtune.report.runfiles import REPORT_OUTPUTS, Run, RunFile, num, text
from medtune.report.strings import Key, Text


@dataclass
class Ctx:
    run: Run
    facts: Facts
    checks: list[Check]
    findings: list[Finding]
    t: Text
    """Report text."""
    pt: Text
    """Plot labels: the report's language, or English when no CJK font is installed."""
    plotter: Plotter
    examples: int


def file_note(t: Text, rf: RunFile, stage: str) -> Para | None:
    """'not run' for a missing file, 'could not read' for a bad one, None for a good one."""
    if rf.state == "missing" and stage == "run":
        return Para(t("file.missing_any", file=rf.rel), "missing")
    if rf.state == "missing":
        return Para(t("file.missing", file=rf.rel, stage=t(f"stage.{stage}")), "missing")
    if rf.state == "unreadable":
        return Para(t("file.unreadable", file=rf.rel, error=rf.error), "warn")
    if rf.skipped_lines:
        shown = "; ".join(rf.skipped_lines[:3]) + (" …" if len(rf.skipped_lines) > 3 else "")
        return Para(t("file.skipped", file=rf.rel, n=f_int(len(rf.skipped_lines)), lines=shown), "warn")
    return None


def kv_table(t: Text, rows: list[list[str]]) -> Table:
    return Table([t("col.item"), t("col.value")], rows)


def code(s: object) -> str:
    return f"`{s}`"


# ---- overview -------------------------------------------------------------------------------------

def sec_overview(c: Ctx) -> list[Section]:
    t, run, tr = c.t, c.run, c.facts.train
    cfg = run.cfg
    adapter = run.adapter_config.data if run.adapter_config.ok else {}
    base = cfg.model.name_or_path if cfg else text(adapter, "base_model_name_or_path")
    files = cfg.data.source_paths() if cfg else []
    s = Section("overview", t("sec.overview"))
    if base:
        s.blocks.append(Para(t("ov.goal", base=code(base), data=", ".join(code(f) for f in files) if files else NA)))
    else:
        s.blocks.append(Para(t("ov.goal_unknown"), "missing"))
    rows = [[t("ov.base"), code(base) if base else NA]]
    if cfg:
        method = t("ov.lora", r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                   targets=list(cfg.lora.target_modules))
        if cfg.lora.modules_to_save:
            method += t("ov.lora_full", modules=t.join(cfg.lora.modules_to_save))
        rows.append([t("ov.method"), method])
    stats = run.stats.data if run.stats.ok else None
    if stats:
        rows.append([t("ov.data"), t("ov.data_counts", train=f_int(num(stats, "train")), val=f_int(num(stats, "val")),
                                     max_length=f_int(num(stats, "max_length")))])
    if tr:
        rows.append([t("ov.training"), t("ov.training_value", epochs=f_num(num(tr, "epoch"), 2),
                                         steps=f_int(num(tr, "global_step")),
                                         time=t.duration(num(tr, "train_runtime")))])
    rows.append([t("ov.hardware"), hardware(c)])
    s.blocks.append(kv_table(t, rows))
    s.blocks.append(Table([t("col.stage"), t("col.status"), t("col.evidence")], stage_rows(c)))
    return [s]


def hardware(c: Ctx) -> str:
    tr = c.facts.train
    env = c.run.environment.data if c.run.environment.ok else {}
    device, n = text(tr, "device"), num(tr, "num_devices")
    if device:
        what = f"{f_int(n)} × {device}" if n and n > 1 else device
        return c.t.clauses([what, text(tr, "precision")])
    devices = env.get("devices") if isinstance(env.get("devices"), list) else None
    return count_same([str(d) for d in devices]) if devices else NA


def count_same(items: list[str]) -> str:
    """['A100', 'A100', 'cpu'] -> '2 × A100, cpu' (a node's devices are usually all alike)."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{n} × {item}" if n > 1 else item for item, n in counts.items())


def stage_rows(c: Ctx) -> list[list[str]]:
    t, run = c.t, c.run
    rows = []
    rows.append(["prepare", t("status.done") if run.stats.ok else t(f"status.{run.stats.state}"),
                 code(run.stats.rel)])
    if run.train_results.ok:
        rows.append(["train", t("status.done"), code(run.train_results.rel)])
    elif run.train_results.state == "unreadable":
        rows.append(["train", t("status.unreadable"), code(run.train_results.rel)])
    else:
        # No results, but a crashed or running train leaves checkpoints and logs behind.
        found = [code(name) for name in run.checkpoints[-1:]]
        if run.trainer_state.ok:
            found.append(code(run.trainer_state.rel))
        if run.metrics.ok and run.metrics.data:
            found.append(code(run.metrics.rel))
        if found:
            rows.append(["train", t("status.incomplete"), t("status.incomplete_why", found=", ".join(found))])
        else:
            rows.append(["train", t("status.missing"), code(run.train_results.rel)])
    parts = [(run.perplexity, "ev.perplexity"), (run.compare_summary, "ev.compare"),
             (run.judge, "ev.judge"), (run.eval_metrics, "ev.metrics"), (run.safety, "ev.safety")]
    done = [t(key) for rf, key in parts if rf.state != "missing"]
    if run.benchmarks:
        done.insert(2, t("ev.benchmarks", n=len(run.benchmarks)))
    rows.append(["evaluate", t("status.done_parts", parts=t.join(done)) if done else t("status.missing"),
                 code("eval/")])
    return rows


# ---- conclusions and self-checks ------------------------------------------------------------------

def sec_conclusions(c: Ctx) -> list[Section]:
    t = c.t
    s = Section("conclusions", t("sec.conclusions"), [Para(t("c.intro"))])
    s.blocks.append(Bullets([t("c.bullet", verdict=Key(f"verdict.{f.verdict}"), text=t(f.key, **f.params))
                             for f in c.findings]))
    return [s]


def sec_checks(c: Ctx) -> list[Section]:
    t = c.t
    s = Section("checks", t("sec.checks"), [Para(t("chk.intro"))])
    rows = [[t(ch.name), f"**{t('chk.status.' + ch.status)}**" if ch.status == "mismatch"
             else t("chk.status." + ch.status), t(ch.key, **ch.params)] for ch in c.checks]
    s.blocks.append(Table([t("col.check"), t("col.result"), t("col.detail")], rows))
    return [s]


# ---- data -----------------------------------------------------------------------------------------

def sec_data(c: Ctx) -> list[Section]:
    t, run = c.t, c.run
    s = Section("data", t("sec.data"))
    note = file_note(t, run.stats, "prepare")
    if note:
        s.blocks.append(note)
        return [s]
    st = run.stats.data
    sources = data_sources(c)
    if sources:
        s.blocks.append(Para(t("data.source", sources=", ".join(sources))))
    read, kept = num(st, "read"), num(st, "kept")
    rows = []
    for key in ("read", "kept", "rejected", "duplicates", "dropped_too_long", "unused", "truncated", "train", "val"):
        value = num(st, key)
        base = kept if key == "truncated" else read
        share = f_pct(value / base) if value is not None and base else NA
        rows.append([t(f"data.{key}"), f_int(value), t("data.of_kept", share=share) if key == "truncated"
                     else share])
    s.blocks.append(Table([t("col.item"), t("col.count"), t("col.share_of_read")], rows))
    s.blocks += sources_table(t, st)
    reasons = st.get("rejected_reasons")
    if isinstance(reasons, dict) and reasons:
        counted = sorted(((str(k), num(reasons, k)) for k in reasons), key=lambda kv: -(kv[1] or 0))
        s.blocks.append(Table([t("data.reason"), t("col.count")], [[k, f_int(v)] for k, v in counted]))
    tl = st.get("token_length") if isinstance(st.get("token_length"), dict) else {}
    s.blocks.append(Table([t("data.tokens"), t("col.value")], [
        [t("data.len_mean"), f_num(num(tl, "mean"), 1)],
        [t("data.len_pct"), " / ".join(f_int(num(tl, k)) for k in ("p50", "p90", "p99", "max"))],
        [t("data.max_length"), f_int(num(st, "max_length"))],
        [t("data.total_tokens"), f_int(num(st, "tokens"))],
        [t("data.target_tokens"), t("data.target_value", train=f_int(num(st, "train_target_tokens")),
                                    val=f_int(num(st, "val_target_tokens")))],
    ]))
    hist = st.get("length_histogram") if isinstance(st.get("length_histogram"), dict) else {}
    edges, counts = hist.get("edges"), hist.get("counts")
    numbers = isinstance(edges, list) and isinstance(counts, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in edges + counts)
    if numbers and len(edges) == len(counts) + 1 and counts:
        pt = c.pt
        max_length = num(st, "max_length")
        path = c.plotter.histogram("token_lengths", pt("plot.len.title"), pt("plot.len.x"), pt("plot.len.y"),
                                   edges, counts, (max_length, pt("plot.len.max")) if max_length else None)
        s.blocks.append(Image(path, t("plot.len.caption")))
    s.blocks.append(Para(t("data.speed", seconds=f_num(num(st, "seconds"), 1),
                           rate=f_int(num(st, "examples_per_second")))))
    return [s]


def sources_table(t, stats: dict) -> list:
    """The mixture: per source read, kept, not kept, train samples and their share (only for 2+ sources)."""
    sources = [x for x in stats.get("sources") or [] if isinstance(x, dict)]
    if len(sources) < 2:
        return []
    rows = []
    for x in sources:
        weight = num(x, "weight")
        dropped = sum(num(x, k) or 0 for k in ("rejected", "duplicates", "dropped_too_long"))
        rows.append([code(text(x, "path") or "?"), text(x, "role") or NA, text(x, "format") or NA,
                     f_num(weight, 2) if weight is not None else NA, f_int(num(x, "read")), f_int(num(x, "kept")),
                     f_int(dropped), f_int(num(x, "unused")), f_int(num(x, "train")), f_pct(num(x, "train_share"))])
    return [Para(t("mix.intro")),
            Table([t("mix.source"), t("mix.role"), t("mix.format"), t("mix.weight"), t("data.read"), t("data.kept"),
                   t("mix.dropped"), t("data.unused"), t("data.train"), t("mix.share")], rows)]


def data_sources(c: Ctx) -> list[str]:
    if c.run.cfg:
        return [code(f) for f in c.run.cfg.data.source_paths()]
    inputs = c.run.manifest.data.get("inputs") if c.run.manifest.ok else None
    return [code(text(i, "hub_id") or Path(text(i, "path") or "?").name) for i in inputs or [] if isinstance(i, dict)]


# ---- configuration --------------------------------------------------------------------------------

def sec_config(c: Ctx) -> list[Section]:
    t, run = c.t, c.run
    s = Section("config", t("sec.config"))
    note = file_note(t, run.config, "run")
    if note:
        s.blocks.append(note)
    if run.cfg:
        s.blocks.append(Table([t("col.param"), t("col.configured"), t("col.ran")], _config_rows(c, run.cfg)))
    return [s, _batch_subsection(c)]


def _warmup_text(c: Ctx, tc) -> str:
    if tc.warmup_steps >= 1:
        return f_int(tc.warmup_steps)
    if c.facts.total_steps:
        return c.t("cfg.warmup_ratio", ratio=tc.warmup_steps,
                   steps=f_int(warmup_steps_for(tc.warmup_steps, int(c.facts.total_steps))))
    return str(tc.warmup_steps)


def _config_rows(c: Ctx, cfg) -> list[list[str]]:
    """One row per setting that shapes the run: the configured value next to what ran."""
    t, tr, b, tc = c.t, c.facts.train, c.facts.batch, cfg.train
    ran_lr = c.facts.lr_rates
    configured = t("cfg.batch_configured", a=tc.per_device_train_batch_size, b=tc.gradient_accumulation_steps,
                   w=f_int(num(tr, "world_size")), batch=f_int(b.configured)) if b and b.configured else NA
    return [
        [code("model.name_or_path"), code(cfg.model.name_or_path), ""],
        [code("model.torch_dtype"), cfg.model.torch_dtype, text(tr, "precision") or ""],
        [code("model.attn_implementation"), cfg.model.attn_implementation, text(tr, "attn_implementation") or ""],
        [code("data.max_length"), f_int(cfg.data.max_length), ""],
        [code("data.multi_turn"), cfg.data.multi_turn, ""],
        [code("lora.r") + " / " + code("lora.alpha") + " / " + code("lora.dropout"),
         f"{cfg.lora.r} / {cfg.lora.alpha} / {cfg.lora.dropout}", ""],
        [code("lora.target_modules"), t.join(cfg.lora.target_modules), ""],
        [code("lora.modules_to_save"), t.join(cfg.lora.modules_to_save) or "—", ""],
        [code("train.num_train_epochs"), f_num(tc.num_train_epochs, 2), f_num(num(tr, "epoch"), 2)],
        [code("train.max_steps"), str(tc.max_steps), t("cfg.steps_ran", steps=f_int(c.facts.global_step))],
        [code("train.per_device_train_batch_size"), str(tc.per_device_train_batch_size),
         f_int(num(tr, "per_device_train_batch_size"))],
        [code("train.gradient_accumulation_steps"), str(tc.gradient_accumulation_steps),
         f_int(num(tr, "gradient_accumulation_steps"))],
        [t("cfg.world_size"), "", f_int(num(tr, "world_size"))],
        [t("cfg.effective_batch"), configured,
         t("cfg.batch_derived", batch=f_num(b.derived, 1)) if b else NA],
        [code("train.learning_rate"), f_sig(tc.learning_rate),
         t("cfg.lr_max_logged", lr=f_sig(max(ran_lr))) if ran_lr else ""],
        [code("train.lr_scheduler_type"), tc.lr_scheduler_type, ""],
        [code("train.warmup_steps"), _warmup_text(c, tc), ""],
        [code("train.weight_decay") + " / " + code("train.max_grad_norm"),
         f"{tc.weight_decay} / {tc.max_grad_norm}", ""],
        [code("train.optim"), tc.optim, ""],
        [code("train.bf16"), str(tc.bf16).lower() if tc.bf16 is not None else "null (auto)",
         text(tr, "precision") or ""],
        [code("train.gradient_checkpointing"), str(tc.gradient_checkpointing).lower(), ""],
        [code("train.batching"), tc.batching, text(tr, "batching") or ""],
        [code("train.use_liger_kernel"), "null (auto)" if tc.use_liger_kernel is None
         else str(tc.use_liger_kernel).lower(), str(tr["liger_kernel"]).lower() if "liger_kernel" in tr else ""],
        [code("train.logging_steps"), str(tc.logging_steps), ""],
        [code("train.eval_strategy") + " / " + code("train.eval_steps"),
         f"{tc.eval_strategy} / {tc.eval_steps if tc.eval_steps is not None else NA}", ""],
        [code("train.seed") + " / " + code("data.seed"), f"{tc.seed} / {cfg.data.seed}", ""],
    ]


def _batch_subsection(c: Ctx) -> Section:
    """The effective batch derived from what ran, and whether it agrees with the configured one."""
    t, tr, b = c.t, c.facts.train, c.facts.batch
    sub = Section("batch", t("sec.batch"), level=3)
    if b is None:
        sub.blocks.append(Para(t("cfg.batch_none"), "missing"))
    else:
        sub.blocks.append(Para(t("cfg.batch_formula", samples=f_int(b.samples), epochs=f_num(b.epochs, 2),
                                 steps=f_int(b.global_step), batch=f_num(b.derived, 1))))
        if b.throughput_derived is not None:
            sub.blocks.append(Para(t("cfg.batch_throughput", sps=f_num(num(tr, "train_samples_per_second"), 2),
                                     steps=f_num(num(tr, "train_steps_per_second"), 3),
                                     batch=f_num(b.throughput_derived, 1))))
        if b.configured is not None:
            params = dict(configured=f_int(b.configured), low=f_int(b.expected_steps_per_epoch[0]),
                          high=f_int(b.expected_steps_per_epoch[1]), ran=f_int(round(b.steps_per_epoch)),
                          batch=f_num(b.derived, 1))
            sub.blocks.append(Para(t("cfg.batch_agree", **params)) if b.agrees
                              else Para(t("cfg.batch_disagree", **params), "warn"))
        recorded = num(tr, "effective_batch_size")
        if recorded is not None and b.configured is not None and recorded != b.configured:
            sub.blocks.append(Para(t("cfg.batch_recorded", recorded=f_int(recorded), configured=f_int(b.configured)),
                                   "warn"))
    return sub


# ---- timeline -------------------------------------------------------------------------------------

def sec_timeline(c: Ctx) -> list[Section]:
    t, run = c.t, c.run
    s = Section("timeline", t("sec.timeline"))
    rows = []
    if run.stats.ok and num(run.stats.data, "seconds") is not None:
        created = text(run.manifest.data, "created") if run.manifest.ok else None
        rows.append([t("tl.prepare"), NA, created.replace("T", " ") if created else NA,
                     t.duration(num(run.stats.data, "seconds"))])
    note = file_note(t, run.timeline, "train")
    events = run.timeline.data.get("events") if run.timeline.ok else None
    if isinstance(events, list):
        for e in events:
            if not isinstance(e, dict):
                continue
            name = text(e, "name") or "?"
            label = t(f"tl.{name}") if name in ("data_loading", "model_loading", "training", "evaluation") else name
            rows.append([label, (text(e, "start") or NA).replace("T", " "), (text(e, "end") or NA).replace("T", " "),
                         t.duration(num(e, "seconds"))])
    if note:
        s.blocks.append(note)
    if rows:
        total = sum(num(e, "seconds") or 0 for e in events if isinstance(e, dict)) if isinstance(events, list) else 0
        s.blocks.append(Table([t("col.phase"), t("col.start"), t("col.end"), t("col.duration")], rows))
        if total:
            s.blocks.append(Para(t("tl.total", time=t.duration(total))))
    return [s]


# ---- training curves ------------------------------------------------------------------------------

def sec_training(c: Ctx) -> list[Section]:
    t, pt, curves, f = c.t, c.pt, c.facts.curves, c.facts
    s = Section("training", t("sec.training"))
    if curves is None:
        note = file_note(t, c.run.metrics, "train") or file_note(t, c.run.trainer_state, "train")
        s.blocks.append(note or Para(t("tr.no_points"), "missing"))
        return [s]
    steps, losses = curves.series("loss")
    esteps, elosses = curves.series("eval_loss", rows="evals")
    s.blocks.append(Para(t("tr.source", file=curves.source, n=f_int(len(steps)),
                           first=f_int(steps[0]) if steps else NA, last=f_int(steps[-1]) if steps else NA,
                           evals=f_int(len(esteps)))))
    skipped = file_note(t, c.run.metrics, "train")
    if skipped and curves.source == c.run.metrics.rel:
        s.blocks.append(skipped)
    lines = [Line(pt("plot.loss.train"), steps, losses, marker="." if len(steps) < 60 else "")]
    if esteps:
        lines.append(Line(pt("plot.loss.eval"), esteps, elosses, marker="o", color="#e45756"))
    hl = [(f.loss.run_average, pt("plot.loss.avg", v=f_num(f.loss.run_average, 4)))] \
        if f.loss.run_average is not None else []
    s.blocks.append(Image(c.plotter.lines("loss", pt("plot.loss.title"), pt("plot.step"), pt("plot.loss.y"), lines, hl),
                          t("plot.loss.caption")))
    if f.loss.run_average is not None and f.loss.last is not None:
        s.blocks.append(Para(t("tr.loss_labels", avg=f_num(f.loss.run_average, 4), last=f_num(f.loss.last[1], 4),
                               step=f_int(f.loss.last[0]))))

    lsteps, rates = f.lr_steps, f.lr_rates
    if lsteps:
        lines = [Line(pt("plot.lr.logged"), lsteps, rates, marker="." if len(lsteps) < 60 else "")]
        if f.lr:
            lines.append(Line(pt("plot.lr.expected"), [p[0] for p in f.lr.points], [p[2] for p in f.lr.points],
                              style="--", color="#7f7f7f"))
        s.blocks.append(Image(c.plotter.lines("learning_rate", pt("plot.lr.title"), pt("plot.step"), pt("plot.lr.y"),
                                              lines), t("plot.lr.caption")))
        s.blocks += lr_blocks(c)
    else:
        s.blocks.append(Para(t("tr.no_lr"), "missing"))

    gsteps, norms = curves.series("grad_norm")
    if gsteps:
        s.blocks.append(Image(c.plotter.lines("grad_norm", pt("plot.gn.title"), pt("plot.step"), pt("plot.gn.y"),
                                              [Line(pt("plot.gn.y"), gsteps, norms)]), t("plot.gn.caption")))
    tsteps, tps = curves.series("tokens_per_second")
    if tsteps:
        s.blocks.append(Image(c.plotter.lines("tokens_per_second", pt("plot.tps.title"), pt("plot.step"),
                                              pt("plot.tps.y"), [Line(pt("plot.tps.y"), tsteps, tps)]),
                              t("plot.tps.caption")))
    missing = [k for k, xs in (("grad_norm", gsteps), ("tokens_per_second", tsteps)) if not xs]
    if missing:
        s.blocks.append(Para(t("tr.not_logged", keys=", ".join(code(k) for k in missing), file=curves.source),
                             "missing"))
    return [s]


def lr_blocks(c: Ctx) -> list:
    t, lr, cfg = c.t, c.facts.lr, c.run.cfg
    if lr is None:
        if cfg:
            return [Para(t("tr.lr_unmodelled", scheduler=cfg.train.lr_scheduler_type), "missing")]
        return [Para(t("tr.lr_noconfig"), "missing")]
    warm = cfg.train.warmup_steps
    how = t("tr.warmup_ratio", ratio=warm, total=f_int(lr.total_steps), steps=f_int(lr.warmup_steps)) if warm < 1 \
        else t("tr.warmup_steps", steps=f_int(lr.warmup_steps))
    out = [Para(t("tr.lr_schedule", scheduler=code(lr.scheduler), peak=f_sig(lr.peak), how=how))]
    if not lr.mismatches:
        out.append(Para(t("tr.lr_agree", n=f_int(len(lr.points)), tol=f_pct(LR_TOLERANCE, 0))))
        return out
    ranges = step_ranges([p[0] for p in lr.mismatches], [p[0] for p in lr.points])
    out.append(Para(t("tr.lr_disagree", bad=f_int(len(lr.mismatches)), n=f_int(len(lr.points)),
                      tol=f_pct(LR_TOLERANCE, 0), ranges=f_ranges(ranges)), "warn"))
    shown = sorted({*lr.mismatches[:3], lr.largest, lr.mismatches[-1]}, key=lambda p: p[0])
    out.append(Table([t("col.step"), t("tr.lr_logged"), t("tr.lr_expected"), t("tr.lr_diff")],
                     [[f_int(s), f_sig(a), f_sig(e), f_pct((a - e) / lr.peak)] for s, a, e in shown]))
    return out


# ---- final metrics --------------------------------------------------------------------------------

def sec_metrics(c: Ctx) -> list[Section]:
    t, f, tr, run = c.t, c.facts, c.facts.train, c.run
    s = Section("metrics", t("sec.metrics"))
    note = file_note(t, run.train_results, "train")
    if note:
        s.blocks.append(note)
    log = f.curves.source if f.curves else run.train_results.rel
    src_tr, src_ev = code(run.train_results.rel), code(f.eval_loss_source)
    rows = []
    if f.loss.run_average is not None:
        rows.append([t("m.train_loss_avg"), f_num(f.loss.run_average, 4), src_tr])
    if f.loss.last:
        rows.append([t("m.last_loss", step=f_int(f.loss.last[0])), f_num(f.loss.last[1], 4), code(log)])
    if f.loss.first:
        rows.append([t("m.first_loss", step=f_int(f.loss.first[0])), f_num(f.loss.first[1], 4), code(log)])
    if f.loss.fall is not None:
        rows.append([t("m.fall"), t("paren", a=f_num(-f.loss.fall, 4), b=f_pct(-f.loss.fall_share)), ""])
    if f.eval_loss is not None:
        rows.append([t("m.eval_loss"), f_num(f.eval_loss, 4), src_ev])
        rows.append([t("m.perplexity"), f_num(f.perplexity, 4), src_ev])
    ev = run.eval_results.data if run.eval_results.ok else {}
    if ev:
        rows.append([t("m.eval_size"), f"{f_int(num(ev, 'eval_samples'))} / {f_int(num(ev, 'eval_tokens'))}",
                     code(run.eval_results.rel)])
    if run.perplexity.ok and f.eval_loss_source != run.perplexity.rel:
        p = run.perplexity.data
        rows.append([t("m.eval_stage"), t("m.eval_stage_value", loss=f_num(num(p, "eval_loss"), 4),
                                          ppl=f_num(num(p, "perplexity"), 4), n=f_int(num(p, "samples")),
                                          tokens=f_int(num(p, "tokens"))), code(run.perplexity.rel)])
    if tr:
        runtime, flos = num(tr, "train_runtime"), num(tr, "total_flos")
        rows += [
            [t("m.runtime"), t.duration(runtime), src_tr],
            [t("m.samples_per_second"), f_num(num(tr, "train_samples_per_second"), 2), src_tr],
            [t("m.steps_per_second"), f_num(num(tr, "train_steps_per_second"), 3), src_tr],
            [t("m.tokens_per_second"), f_int(num(tr, "train_tokens_per_second")), src_tr],
            [t("m.tokens"), f_int(num(tr, "train_tokens")), src_tr],
            [t("m.flos"), f_sig(flos, 3), src_tr],
        ]
        n_dev = num(tr, "num_devices") or 1
        if flos and runtime:
            achieved = flos / runtime / 1e12
            rows.append([t("m.achieved"), t("m.achieved_value", total=f_num(achieved, 1),
                                            per=f_num(achieved / n_dev, 1)), t("m.from_flos")])
            peak = peak_tflops(text(tr, "device"), text(tr, "precision"))
            rows.append([t("m.mfu"), t("m.mfu_value", mfu=f_pct(achieved / n_dev / peak), peak=f_int(peak),
                                       device=text(tr, "device"), precision=text(tr, "precision"))
                         if peak else t("m.mfu_unknown", device=text(tr, "device") or NA,
                                        precision=text(tr, "precision") or NA), ""])
        rows.append([t("m.peak_memory"), f_bytes(num(tr, "peak_memory_bytes")), src_tr])
        resumed = text(tr, "resumed_from")
        rows.append([t("m.resumed"), code(resumed) if resumed else t("m.not_resumed"), src_tr])
    if rows:
        s.blocks.append(Table([t("col.metric"), t("col.value"), t("col.source")], rows))
    elif not note:
        s.blocks.append(Para(t("m.none"), "missing"))
    return [s]


# ---- trainable parameters -------------------------------------------------------------------------

def sec_params(c: Ctx) -> list[Section]:
    t, tr, run = c.t, c.facts.train, c.run
    s = Section("params", t("sec.params"))
    trainable, total = num(tr, "trainable_params"), num(tr, "total_params")
    if trainable is not None and total is not None:
        s.blocks.append(kv_table(t, [[t("p.trainable"), f_int(trainable)], [t("p.frozen"), f_int(total - trainable)],
                                     [t("p.total"), f_int(total)],
                                     [t("p.share"), f_pct(trainable / total, 2) if total else NA]]))
    else:
        s.blocks.append(file_note(t, run.train_results, "train") or Para(t("p.none"), "missing"))
    ac = run.adapter_config.data if run.adapter_config.ok else None
    if ac:
        r, alpha = num(ac, "r"), num(ac, "lora_alpha")
        targets = ac.get("target_modules")
        s.blocks.append(Para(t("p.adapter", r=f_int(r), alpha=f_int(alpha),
                               scale=f_num(alpha / r, 2) if r and alpha is not None else NA,
                               dropout=text(ac, "lora_dropout") or NA,
                               targets=[str(x) for x in targets] if isinstance(targets, list) else str(targets),
                               base=code(text(ac, "base_model_name_or_path") or NA))))
    if run.adapter_header.ok:
        modules = adapter_modules(run.adapter_header.data)
        rows = [[code(m.name), f_int(m.layers), f_int(m.params / max(1, m.layers)), f_int(m.params),
                 " / ".join("×".join(str(d) for d in shape) for _, shape in sorted(m.shapes.items()))]
                for m in modules]
        rows.append([f"**{t('p.sum')}**", "", "", f"**{f_int(sum(m.params for m in modules))}**", ""])
        s.blocks.append(Para(t("p.from_header", file=code(run.adapter_header.rel))))
        s.blocks.append(Table([t("p.module"), t("p.layers"), t("p.per_layer"), t("p.params"), t("p.shapes")], rows))
    else:
        note = file_note(t, run.adapter_header, "train")
        if note:
            s.blocks.append(note)
    return [s]


# ---- output files ---------------------------------------------------------------------------------

OUTPUT_DESCRIPTIONS = {
    "config.yaml": "out.config", "data": "out.data", "base_model": "out.base_model",
    "adapter_model.safetensors": "out.adapter", "adapter_config.json": "out.adapter_config",
    "tokenizer.json": "out.tokenizer", "tokenizer_config.json": "out.tokenizer", "chat_template.jinja": "out.tokenizer",
    "README.md": "out.card", "trainer_state.json": "out.trainer_state", "train_results.json": "out.train_results",
    "eval_results.json": "out.eval_results", "metrics.jsonl": "out.metrics", "timeline.json": "out.timeline",
    "environment.json": "out.environment", "runs": "out.tensorboard", "eval": "out.eval",
}


def sec_outputs(c: Ctx) -> list[Section]:
    t, d = c.t, c.run.dir
    s = Section("outputs", t("sec.outputs"))
    entries = sorted(p for p in d.iterdir() if p.name not in REPORT_OUTPUTS and not p.name.startswith(".")) \
        if d.is_dir() else []
    if not entries:
        s.blocks.append(Para(t("out.none"), "missing"))
        return [s]
    rows, total = [], 0
    for p in entries:
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            name = f"{p.name}/"
            count = t("out.file") if len(files) == 1 else t("out.files", n=f_int(len(files)))
        else:
            size, name, count = p.stat().st_size, p.name, ""
        total += size
        key = "out.checkpoint" if p.name.startswith("checkpoint-") else OUTPUT_DESCRIPTIONS.get(p.name)
        rows.append([code(name), f_bytes(size), t.clauses([t(key) if key else None, count])])
    rows.append([f"**{t('out.total')}**", f"**{f_bytes(total)}**", ""])
    s.blocks.append(Table([t("col.file"), t("col.size"), t("col.what")], rows))
    return [s]


# ---- reproducibility ------------------------------------------------------------------------------

def sec_repro(c: Ctx) -> list[Section]:
    t, run = c.t, c.run
    s = Section("repro", t("sec.repro"))
    note = file_note(t, run.environment, "train")
    if note:
        s.blocks.append(note)
    env = run.environment.data if run.environment.ok else {}
    if env:
        commit = text(env, "git_commit")
        dirty = env.get("git_dirty")
        rows = [[t("r.commit"), (code(commit) + (t("r.dirty") if dirty is True else "")) if commit else t("r.no_git")],
                [t("r.command"), code(text(env, "command")) if text(env, "command") else NA],
                [t("r.python"), text(env, "python") or NA], [t("r.platform"), text(env, "platform") or NA]]
        devices = env.get("devices")
        if isinstance(devices, list):
            rows.append([t("r.devices"), count_same([str(d) for d in devices]) or NA])
        seeds = env.get("seeds")
        if isinstance(seeds, dict):
            rows.append([t("r.seeds"), ", ".join(f"{k} = {v}" for k, v in seeds.items())])
        packages = env.get("packages")
        if isinstance(packages, dict):
            rows.append([t("r.packages"), ", ".join(f"{k} {v}" for k, v in packages.items())])
        s.blocks.append(kv_table(t, rows))
    manifest = run.manifest.data if run.manifest.ok else None
    if manifest:
        rows = []
        for i in manifest.get("inputs") or []:
            if not isinstance(i, dict):
                continue
            where = text(i, "hub_id") or Path(text(i, "path") or "?").name
            what = code(text(i, "sha256")) if text(i, "sha256") else t("r.hub", split=text(i, "split") or NA)
            rows.append([t("paren", a=code(where), b=text(i, "role") or "?"), what, f_bytes(num(i, "bytes"))])
        tok = manifest.get("tokenizer") if isinstance(manifest.get("tokenizer"), dict) else {}
        if tok:
            rows.append([t("r.tokenizer", cls=text(tok, "class") or "?", vocab=f_int(num(tok, "vocab_size"))),
                         code(text(tok, "fingerprint")), ""])
        rows.append([t("r.data_fingerprint"), code(text(manifest, "fingerprint")), ""])
        s.blocks.append(Table([t("r.input"), t("r.hash"), t("col.size")], rows))
    elif run.manifest.state == "unreadable":
        s.blocks.append(file_note(t, run.manifest, "prepare"))
    config_path = run.dir / "config.yaml"
    if config_path.is_file():
        raw = config_path.read_bytes()
        s.blocks.append(Para(t("r.config", sha=code(hashlib.sha256(raw).hexdigest()[:16]))))
        s.blocks.append(Code(raw.decode("utf-8", errors="replace"), "yaml"))
    else:
        s.blocks.append(file_note(t, run.config, "run"))
    return [s]
