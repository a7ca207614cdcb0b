"""Figures derived once from the run's files and shared by the sections, the self-checks and the conclusions."""

from __future__ import annotations

from dataclasses import dataclass, field

from medtune.report.checks import BatchFacts, LossFacts, LrFacts, effective_batch, loss_facts, lr_schedule
from medtune.report.runfiles import Curves, Run, num, training_curves


@dataclass
class Facts:
    train: dict
    """train_results.json, or {} when train did not finish."""
    curves: Curves | None
    batch: BatchFacts | None
    lr: LrFacts | None
    loss: LossFacts
    eval_loss: float | None
    eval_loss_source: str
    perplexity: float | None
    global_step: float | None
    total_steps: float | None
    lr_steps: list[float] = field(default_factory=list)
    lr_rates: list[float] = field(default_factory=list)
    """Logged learning rates: metrics.jsonl's (the rate each step used) or, without them, trainer_state.json's."""


def derive(run: Run) -> Facts:
    tr = run.train_results.data if run.train_results.ok else {}
    state = run.trainer_state.data if run.trainer_state.ok else {}
    cfg = run.cfg
    curves = training_curves(run)

    global_step = num(tr, "global_step") or num(state, "global_step")
    epochs = num(tr, "epoch") or num(state, "epoch")
    samples = num(tr, "num_train_samples") or num(run.stats.data, "train")
    # Configured = what config.yaml asked for; world size is only known from what ran.
    per_device = cfg.train.per_device_train_batch_size if cfg else num(tr, "per_device_train_batch_size")
    accumulation = cfg.train.gradient_accumulation_steps if cfg else num(tr, "gradient_accumulation_steps")
    batch = effective_batch(samples, epochs, global_step, per_device, accumulation, num(tr, "world_size"),
                            num(tr, "train_samples_per_second"), num(tr, "train_steps_per_second"))

    total_steps = num(state, "max_steps") or (cfg.train.max_steps if cfg and cfg.train.max_steps > 0 else None) \
        or global_step
    # metrics.jsonl records the rate the optimizer used for step s, which the scheduler set after s - 1
    # steps; the Trainer's own log_history records the rate after step s (the next step's).
    lr_steps, lr_rates = curves.series("learning_rate") if curves else ([], [])
    offset = 1 if curves and curves.source.endswith("metrics.jsonl") else 0
    if not lr_steps and isinstance(state.get("log_history"), list):
        rows = [r for r in state["log_history"] if isinstance(r, dict) and "loss" in r]
        lr_steps = [num(r, "step") for r in rows if num(r, "step") is not None and num(r, "learning_rate") is not None]
        lr_rates = [num(r, "learning_rate") for r in rows
                    if num(r, "step") is not None and num(r, "learning_rate") is not None]
        offset = 0
    lr = None
    if lr_steps and cfg and total_steps:
        lr = lr_schedule(lr_steps, lr_rates, cfg.train.learning_rate, cfg.train.lr_scheduler_type,
                         cfg.train.warmup_steps, int(total_steps), steps_done_offset=offset)

    steps, losses = curves.series("loss") if curves else ([], [])
    loss = loss_facts(num(tr, "train_loss"), steps, losses, num(tr, "first_logged_loss"), num(tr, "last_logged_loss"))

    ev = run.eval_results.data if run.eval_results.ok else {}
    eval_loss, perplexity, source = num(ev, "eval_loss"), num(ev, "perplexity"), run.eval_results.rel
    if eval_loss is None and run.perplexity.ok:
        eval_loss, perplexity, source = (num(run.perplexity.data, "eval_loss"), num(run.perplexity.data, "perplexity"),
                                         run.perplexity.rel)
    return Facts(train=tr, curves=curves, batch=batch, lr=lr, loss=loss, eval_loss=eval_loss,
                 eval_loss_source=source, perplexity=perplexity, global_step=global_step, total_steps=total_steps,
                 lr_steps=lr_steps, lr_rates=lr_rates)
