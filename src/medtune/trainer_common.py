"""What every Trainer-based stage (train, align) shares: checkpoint completion markers, the choice of the
checkpoint to resume from, the NaN/inf guard, metrics.jsonl with a progress bar, and the timeline.

Callbacks are built lazily (`trainer_callbacks`) so that importing this module does not import
transformers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

from medtune.errors import UserError
from medtune.rundir import read_json, write_json

COMPLETE_MARKER = "medtune-complete.json"


class NonFiniteLoss(Exception):
    def __init__(self, step: int, what: str):
        super().__init__(f"step {step}: {what}")
        self.step, self.what = step, what


class Timeline:
    def __init__(self):
        self.events = []

    @contextmanager
    def __call__(self, name: str):
        start, t0 = dt.datetime.now().astimezone(), time.perf_counter()
        yield
        self.events.append({"name": name, "start": start.isoformat(timespec="seconds"),
                            "end": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "seconds": round(time.perf_counter() - t0, 3)})


# --- checkpoints -------------------------------------------------------------------------------------


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints whose completion marker lists files that are all present, oldest first."""
    found = []
    for d in run_dir.glob("checkpoint-*"):
        if not d.is_dir() or not d.name.split("-")[-1].isdigit():
            continue
        marker = read_json(d / COMPLETE_MARKER)
        if not marker:
            continue
        if all((d / name).is_file() and (d / name).stat().st_size == size for name, size in marker["files"].items()):
            found.append(d)
    return sorted(found, key=lambda d: int(d.name.split("-")[-1]))


def mark_complete(checkpoint: Path) -> None:
    files = {str(p.relative_to(checkpoint)): p.stat().st_size for p in checkpoint.rglob("*")
             if p.is_file() and p.name != COMPLETE_MARKER}
    write_json(checkpoint / COMPLETE_MARKER, {"files": files})


def choose_checkpoint(out_dir: Path, recorded: dict, fp: str, resume: str | None, force: bool, say,
                      stage: str = "train", error: type[UserError] = UserError) -> Path | None:
    """The checkpoint to resume from: the one named by --resume, else the latest complete one of an
    unfinished run with the same fingerprint; None starts fresh. Checkpoints of another config are an error."""
    if resume:
        path = Path(resume).resolve()
        if path not in {c.resolve() for c in complete_checkpoints(path.parent)}:
            raise error(f"--resume {resume}: not a complete checkpoint directory (it has no "
                        f"{COMPLETE_MARKER}, or files listed there are missing)")
        return path
    if force:
        return None
    checkpoints = complete_checkpoints(out_dir)
    if not checkpoints or recorded.get("status") == "completed":
        return None
    if recorded.get("fingerprint") != fp:
        raise error(f"{out_dir} has checkpoints from a different config or data (fingerprint "
                    f"{recorded.get('fingerprint')} vs {fp}); rerun with --force to start over "
                    "(it deletes them) or use another output_dir")
    say(f"{stage}: resuming from the latest complete checkpoint {checkpoints[-1]}")
    return checkpoints[-1]


# --- callbacks ---------------------------------------------------------------------------------------


def trainer_callbacks(out_dir: Path, extra_keys: tuple[str, ...] = (), desc: str = "train"):
    """(MetricsCallback, NonFiniteGuard, CompleteMarker) writing into `out_dir`.

    metrics.jsonl gets step, epoch, loss, the learning rate actually used, grad norm, tokens/s, and every
    logged key that starts with one of `extra_keys` (eval loss for train; rewards, margins, KL for align).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """metrics.jsonl with the learning rate actually used, tokens/s, and a progress bar with ETA."""

        def __init__(self):
            self.lr_used = None
            self.last_time = self.start = None
            self.last_tokens = 0
            self.bar = None
            self.file = None

        def on_train_begin(self, args, state, control, **kw):
            self.start = self.last_time = time.perf_counter()
            self.last_tokens = state.num_input_tokens_seen
            if state.is_world_process_zero:
                self.file = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=desc, unit="step",
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
                tokens = state.num_input_tokens_seen
                entry.update(loss=logs["loss"], learning_rate=self.lr_used, grad_norm=logs.get("grad_norm"),
                             tokens_per_second=round((tokens - self.last_tokens) / max(now - self.last_time, 1e-9), 1),
                             num_input_tokens_seen=tokens)
                self.last_time, self.last_tokens = now, tokens
                if self.bar is not None:
                    self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{self.lr_used:.2e}",
                                         tok_s=f"{entry['tokens_per_second']:.0f}")
            entry.update({k: v for k, v in logs.items() if extra_keys and k.startswith(extra_keys)})
            entry["elapsed_seconds"] = round(now - self.start, 3)
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()

        def on_train_end(self, args, state, control, **kw):
            if self.file:
                self.file.close()
            if self.bar is not None:
                self.bar.close()

    class NonFiniteGuard(TrainerCallback):
        """Stops at the first non-finite loss or weight, before that step can be saved."""

        def on_step_end(self, args, state, control, model=None, **kw):
            params = [p for p in model.parameters() if p.requires_grad]
            if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
                raise NonFiniteLoss(state.global_step, "a trainable weight became NaN/inf")

        def on_log(self, args, state, control, logs=None, **kw):
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if value is not None and not math.isfinite(value):
                    raise NonFiniteLoss(state.global_step, f"the logged {key} is {value}")

    class CompleteMarker(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                ckpt = out_dir / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    mark_complete(ckpt)

    return MetricsCallback(), NonFiniteGuard(), CompleteMarker()
