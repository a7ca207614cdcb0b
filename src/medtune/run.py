"""`medtune run`: prepare -> train -> evaluate -> report in one run directory, and `medtune demo`.

Run as: medtune run CONFIG.yaml [--set ...] [--force STAGE ...]
        medtune demo

Each stage hands off only through files and skips itself when its outputs exist for unchanged inputs,
so rerunning after a failure continues where it stopped (training resumes from its last complete
checkpoint). `--force STAGE` reruns that stage (and, since their inputs change, the ones after it).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from medtune.assets import PROJECT_ROOT
from medtune.config import Config, load_config, save_config
from medtune.errors import UserError

STAGES = ("prepare", "train", "evaluate", "report")
DEMO_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"


class StageFailed(UserError):
    """A stage stopped the run; the message names it and says how to continue."""


def run_pipeline(cfg: Config, force: tuple[str, ...] = (), config_args: list[str] | None = None, log=print) -> Path:
    """Run every stage in order; returns the path of report.html."""
    started = time.perf_counter()
    save_config(cfg, cfg.run_dir / "config.yaml")
    report = None
    for stage in STAGES:
        log(f"\n=== {stage} ===")
        try:
            if stage == "prepare":
                from medtune.prepare import prepare_dataset

                prepare_dataset(cfg, force="prepare" in force, log=log)
            elif stage == "train":
                train_stage(cfg, force="train" in force, config_args=config_args, log=log)
            elif stage == "evaluate":
                from medtune.evaluate.stage import evaluate_run

                evaluate_run(cfg, force="evaluate" in force, log=log)
            else:
                from medtune.report import write_report

                report = write_report(cfg.run_dir, lang=cfg.report.lang)
        except UserError as e:
            resume = " and training resumes from its last complete checkpoint" if stage == "train" else ""
            raise StageFailed(f"stage '{stage}' failed: {e}\nFix that and rerun the same command: finished "
                              f"stages are skipped{resume}.") from None
    log(f"\nmedtune run: all stages done in {time.perf_counter() - started:.0f} s")
    log(f"report: {report.markdown}\nreport: {report.html}")
    return Path(report.html)


def train_stage(cfg: Config, force: bool, config_args: list[str] | None, log=print) -> None:
    """Train in this process, or launch one process per GPU when several are visible."""
    import subprocess

    import torch

    from medtune.launch import launch_command

    if torch.cuda.device_count() > 1 and config_args is not None:
        cmd = launch_command(config_args + (["--force"] if force else []), nproc_per_node=torch.cuda.device_count())
        log("train: launching " + " ".join(cmd))
        if subprocess.run(cmd).returncode != 0:
            raise UserError("the training processes failed (their output is above)")
        return
    from medtune.train import train_model

    train_model(cfg, force=force, log=log)


def demo_config(output_dir: str | None = None) -> Config:
    """configs/demo.yaml with its relative paths resolved against the project, so `medtune demo` runs anywhere."""
    if not DEMO_CONFIG.exists():
        raise UserError(f"{DEMO_CONFIG} not found: `medtune demo` runs from a medtune source checkout")
    cfg = load_config(DEMO_CONFIG)
    rooted = lambda p: str(PROJECT_ROOT / p) if p and not Path(p).is_absolute() else p  # noqa: E731
    return dataclasses.replace(
        cfg, output_dir=output_dir or str(PROJECT_ROOT / cfg.output_dir),
        data=dataclasses.replace(cfg.data, train_files=[rooted(p) for p in cfg.data.train_files]),
        evaluate=dataclasses.replace(cfg.evaluate, questions=rooted(cfg.evaluate.questions),
                                     safety=rooted(cfg.evaluate.safety), references=rooted(cfg.evaluate.references),
                                     benchmarks=[dataclasses.replace(b, path=rooted(b.path), dev_path=rooted(b.dev_path))
                                                 for b in cfg.evaluate.benchmarks],
                                     consultations=[dataclasses.replace(c, path=rooted(c.path))
                                                    for c in cfg.evaluate.consultations]))
