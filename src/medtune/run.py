"""`medtune run`: prepare -> train [-> align] -> evaluate -> report in one run directory, and `medtune demo`.

Run as: medtune run CONFIG.yaml [--set ...] [--force STAGE ...] [--nproc-per-node N ...]
        medtune demo

Each stage hands off only through files and skips itself when its outputs exist for unchanged inputs,
so rerunning after a failure continues where it stopped (training resumes from its last complete
checkpoint). `--force STAGE` reruns that stage (and, since their inputs change, the ones after it).

Adding a stage: one `_stage(...)` line in run_pipeline, at its place, and its name in STAGES (which
`--force` accepts; a test checks the two agree).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from medtune.assets import PROJECT_ROOT
from medtune.config import Config, load_config, save_config
from medtune.errors import UserError
from medtune.train.launch import LaunchOptions

STAGES = ("prepare", "train", "align", "evaluate", "report")
DEMO_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"


class StageFailed(UserError):
    """A stage stopped the run; the message names it and says how to continue."""


def run_pipeline(cfg: Config, force: tuple[str, ...] = (), launch: LaunchOptions = LaunchOptions(),
                 log=print) -> Path:
    """Run every stage in order; returns the path of report.html."""
    from medtune.data import prepare_dataset
    from medtune.evaluate import evaluate_run
    from medtune.report import write_report

    started = time.perf_counter()
    config = cfg.run_dir / "config.yaml"
    save_config(cfg, config)  # launched training processes read the config from here
    _stage("prepare", log, lambda: prepare_dataset(cfg, force="prepare" in force, log=log))
    _stage("train", log, lambda: train_stage(cfg, config, launch, force="train" in force, log=log))
    if cfg.align is not None:  # optional: only with an align: section
        from medtune.align import align_model

        _stage("align", log, lambda: align_model(cfg, force="align" in force, log=log))
    _stage("evaluate", log, lambda: evaluate_run(cfg, force="evaluate" in force, log=log))
    report = _stage("report", log, lambda: write_report(cfg.run_dir, lang=cfg.report.lang))
    log(f"\nmedtune run: all stages done in {time.perf_counter() - started:.0f} s")
    log(f"report: {report.markdown}\nreport: {report.html}")
    return Path(report.html)


def _stage(name: str, log, call):
    """Run one stage; a UserError becomes StageFailed, which names the stage and says how to continue."""
    log(f"\n=== {name} ===")
    try:
        return call()
    except UserError as e:
        resume = " and training resumes from its last complete checkpoint" if name in ("train", "align") else ""
        raise StageFailed(f"stage '{name}' failed: {e}\nFix that and rerun the same command: finished "
                          f"stages are skipped{resume}.") from None


def train_stage(cfg: Config, config: Path, launch: LaunchOptions, force: bool, log=print) -> None:
    """Train in this process, or launch `medtune train` on the run's saved config on several."""
    from medtune.train.launch import train_or_launch

    if train_or_launch(cfg, [str(config)], launch, force=force, log=log) != 0:
        raise UserError("the training processes failed (their output is above)")


def demo_config(output_dir: str | None = None) -> Config:
    """configs/demo.yaml with its relative paths resolved against the project, so `medtune demo` runs anywhere."""
    if not DEMO_CONFIG.exists():
        raise UserError(f"{DEMO_CONFIG} not found: `medtune demo` runs from a medtune source checkout")
    cfg = load_config(DEMO_CONFIG)
    rooted = lambda p: str(PROJECT_ROOT / p) if p and not Path(p).is_absolute() else p  # noqa: E731
    return dataclasses.replace(
        cfg, output_dir=output_dir or str(PROJECT_ROOT / cfg.output_dir),
        data=dataclasses.replace(cfg.data, train_files=[rooted(p) if isinstance(p, str) else dataclasses.replace(
            p, path=rooted(p.path)) for p in cfg.data.train_files]),
        evaluate=dataclasses.replace(cfg.evaluate, questions=rooted(cfg.evaluate.questions),
                                     safety=rooted(cfg.evaluate.safety), references=rooted(cfg.evaluate.references),
                                     benchmarks=[dataclasses.replace(b, path=rooted(b.path), dev_path=rooted(b.dev_path))
                                                 for b in cfg.evaluate.benchmarks],
                                     consultations=[dataclasses.replace(c, path=rooted(c.path))
                                                    for c in cfg.evaluate.consultations],
                                     rubrics=[dataclasses.replace(r, path=rooted(r.path), meta=rooted(r.meta))
                                              for r in cfg.evaluate.rubrics]))
