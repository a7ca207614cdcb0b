"""Trainer callbacks shared by the training stages: metrics.jsonl with a progress bar, the non-finite guard,
the token-weighted evaluation, and checkpoint completion markers.

Imported only when a trainer is built (it imports transformers).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from medtune.train.common import NonFiniteLoss, any_rank, barrier, distributed_eval, mark_complete


class MetricsCallback(TrainerCallback):
    """metrics.jsonl with the learning rate actually used, tokens/s, and a progress bar with ETA (rank 0)."""

    def __init__(self, path: Path, extra_keys: tuple[str, ...] = ("eval_loss", "eval_perplexity", "eval_tokens"),
                 desc: str = "train"):
        """`extra_keys`: logged keys, or key prefixes, copied into metrics.jsonl too (align: rewards/, kl, ...)."""
        self.path, self.extra_keys, self.desc = path, extra_keys, desc
        self.lr_used = None
        self.last_time = self.start = None
        self.last_tokens = 0
        self.bar = None
        self.file = None

    def on_train_begin(self, args, state, control, **kw):
        self.start = self.last_time = time.perf_counter()
        self.last_tokens = state.num_input_tokens_seen
        if state.is_world_process_zero:
            self.file = open(self.path, "a", encoding="utf-8")
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step",
                            dynamic_ncols=True)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
        # After optimizer.step() and before the scheduler moves on: the rate this step used.
        self.lr_used = optimizer.param_groups[0]["lr"]

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs or "train_loss" in logs:  # skip the end-of-run summary
            return
        now = time.perf_counter()
        entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        if "loss" in logs:
            entry.update(self._train_entry(logs, state.num_input_tokens_seen, now))
        entry.update({k: v for k, v in logs.items() if k.startswith(self.extra_keys)})
        entry["elapsed_seconds"] = round(now - self.start, 3)
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def _train_entry(self, logs: dict, tokens: int, now: float) -> dict:
        rate = round((tokens - self.last_tokens) / max(now - self.last_time, 1e-9), 1)
        self.last_time, self.last_tokens = now, tokens
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{self.lr_used:.2e}", tok_s=f"{rate:.0f}")
        return {"loss": logs["loss"], "learning_rate": self.lr_used, "grad_norm": logs.get("grad_norm"),
                "tokens_per_second": rate, "num_input_tokens_seen": tokens}

    def on_train_end(self, args, state, control, **kw):
        if self.file:
            self.file.close()
        if self.bar is not None:
            self.bar.close()


def non_finite_weights(model) -> bool:
    """Whether any trainable weight this rank holds (its shard under FSDP) is NaN or inf."""
    params = [p for p in model.parameters() if p.requires_grad and p.numel()]
    return bool(params) and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


class NonFiniteGuard(TrainerCallback):
    """Stops at the first non-finite loss or weight, before that step can be saved. The decision is taken
    once for all ranks (each rank sees only its shard), so every rank stops at the same step."""

    def on_step_end(self, args, state, control, model=None, **kw):
        if any_rank(non_finite_weights(model)):
            raise NonFiniteLoss(state.global_step, "a trainable weight became NaN/inf")

    def on_log(self, args, state, control, logs=None, **kw):
        # The logged loss and grad norm are already reduced over ranks: the same on every rank.
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise NonFiniteLoss(state.global_step, f"the logged {key} is {value}")


class TokenWeightedEval(TrainerCallback):
    """Periodic eval loss, token-weighted with the training label rule (the Trainer's own averages
    per-batch means), each rank scoring a share of the validation set, summed over ranks."""

    def __init__(self, val_dataset, eval_steps: int | None, per_epoch: bool, batch_size: int):
        self.val_dataset = val_dataset if val_dataset is not None and len(val_dataset) > 0 else None
        self.eval_steps, self.per_epoch, self.batch_size = eval_steps, per_epoch, batch_size
        self.trainer = None  # set once the trainer exists: evaluations are logged through it

    def _evaluate(self, control, model):
        should_log = control.should_log  # Trainer.log clears it; this step's loss must still be logged
        self.trainer.log(distributed_eval(model, self.val_dataset, self.batch_size))
        control.should_log = should_log
        return control

    def on_step_end(self, args, state, control, model=None, **kw):
        if self.val_dataset is not None and self.eval_steps and state.global_step % self.eval_steps == 0:
            return self._evaluate(control, model)

    def on_epoch_end(self, args, state, control, model=None, **kw):
        if self.val_dataset is not None and self.per_epoch:
            return self._evaluate(control, model)


class CompleteMarker(TrainerCallback):
    """Marks each checkpoint complete once the Trainer has written all of it."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_save(self, args, state, control, **kw):
        barrier()  # every rank has written its part (rng_state_<rank>.pth, its shard) before the marker
        if state.is_world_process_zero:
            checkpoint = self.run_dir / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint)
