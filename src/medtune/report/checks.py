"""The report's checks on itself: figures derived from what ran, compared with what was configured.

The reference report stated an effective batch of 32 for a run that made 16 samples per optimizer
step, plotted no learning rate while the logged one did not follow the configured warmup, and called
the run-average train loss "the" train loss. These functions derive each figure from the run's own
files so the report can say when inputs disagree. They return numbers, never text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LR_TOLERANCE = 0.01
"""A logged learning rate disagrees with the schedule when off by more than this share of the peak rate."""
PERPLEXITY_TOLERANCE = 0.001
"""Relative difference allowed between perplexity and exp(eval_loss) (rounding in the files)."""


@dataclass
class BatchFacts:
    samples: float
    epochs: float
    global_step: float
    derived: float
    """Samples per optimizer step = samples x epochs / global_step."""
    configured: float | None
    """per-device batch x gradient accumulation x world size."""
    steps_per_epoch: float
    expected_steps_per_epoch: tuple[int, int] | None
    """Optimizer steps per epoch the configured batch allows: floor(N/B) to ceil(N/B) + 1 (partial batches)."""
    throughput_derived: float | None
    """train_samples_per_second / train_steps_per_second: the same figure from the timings."""

    @property
    def agrees(self) -> bool | None:
        if self.expected_steps_per_epoch is None:
            return None
        low, high = self.expected_steps_per_epoch
        return low - 0.5 <= self.steps_per_epoch <= high + 0.5  # half a step of slack for rounded epochs


def effective_batch(samples: float | None, epochs: float | None, global_step: float | None,
                    per_device: float | None, accumulation: float | None, world_size: float | None,
                    samples_per_second: float | None = None, steps_per_second: float | None = None
                    ) -> BatchFacts | None:
    """Derive the effective batch from what ran; None when the run did not record enough to do it."""
    if not samples or not epochs or not global_step:
        return None
    configured = None
    expected = None
    if per_device and accumulation and world_size:
        configured = per_device * accumulation * world_size
        # Each epoch ends with at most one partial batch per process, so the Trainer makes between
        # floor(N/B) and ceil(N/B) + 1 optimizer steps per epoch (ceil over the dataloader, then over
        # gradient accumulation).
        expected = (math.floor(samples / configured), math.ceil(samples / configured) + 1)
    throughput = samples_per_second / steps_per_second if samples_per_second and steps_per_second else None
    return BatchFacts(samples=samples, epochs=epochs, global_step=global_step,
                      derived=samples * epochs / global_step, configured=configured,
                      steps_per_epoch=global_step / epochs, expected_steps_per_epoch=expected,
                      throughput_derived=throughput)


SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")


def warmup_steps_for(warmup: float, total_steps: int) -> int:
    """transformers 5 `TrainingArguments.get_warmup_steps`: whole steps when >= 1, else ceil(ratio x total)."""
    return int(warmup) if warmup >= 1 else math.ceil(total_steps * warmup)


def scheduled_lr(step: float, peak: float, scheduler: str, warmup: int, total: int) -> float:
    """The rate a transformers scheduler gives after `step` optimizer steps (the value the Trainer logs)."""
    if scheduler == "constant":
        return peak
    if step < warmup:
        return peak * step / max(1, warmup)
    if scheduler == "constant_with_warmup":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    if scheduler == "linear":
        return peak * max(0.0, (total - step) / max(1, total - warmup))
    if scheduler == "cosine":
        return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"no model of the {scheduler!r} schedule")


@dataclass
class LrFacts:
    scheduler: str
    peak: float
    warmup_steps: int
    total_steps: int
    points: list[tuple[float, float, float]]
    """(step, logged, expected) for every logged step."""
    mismatches: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def largest(self) -> tuple[float, float, float] | None:
        return max(self.mismatches, key=lambda p: abs(p[1] - p[2])) if self.mismatches else None


def lr_schedule(steps: list[float], logged: list[float], peak: float, scheduler: str, warmup: float,
                total_steps: int, steps_done_offset: int = 0) -> LrFacts | None:
    """Compare logged learning rates with the configured schedule; None for a schedule not modelled here.

    A rate logged at step s was set after s - steps_done_offset scheduler steps (1 for the rate used at
    step s, as medtune's metrics.jsonl records it; 0 for the Trainer's log_history)."""
    if scheduler not in SCHEDULES or not steps or total_steps < 1:
        return None
    warm = warmup_steps_for(warmup, total_steps)
    points = [(s, lr, scheduled_lr(s - steps_done_offset, peak, scheduler, warm, total_steps))
              for s, lr in zip(steps, logged)]
    mismatches = [p for p in points if abs(p[1] - p[2]) > LR_TOLERANCE * peak]
    return LrFacts(scheduler, peak, warm, total_steps, points, mismatches)


def step_ranges(steps: list[float], all_steps: list[float]) -> list[tuple[float, float]]:
    """Group `steps` into runs that are consecutive within `all_steps` (the logged cadence)."""
    position = {s: i for i, s in enumerate(all_steps)}
    ranges: list[list[float]] = []
    last = None
    for s in steps:
        i = position[s]
        if ranges and last is not None and i == last + 1:
            ranges[-1][1] = s
        else:
            ranges.append([s, s])
        last = i
    return [(a, b) for a, b in ranges]


@dataclass
class LossFacts:
    run_average: float | None
    """train_results.json `train_loss`: the mean over every step of the run."""
    first: tuple[float | None, float] | None
    """(step, loss) of the first logged point; step None when only train_results.json recorded it."""
    last: tuple[float | None, float] | None
    """(step, loss) of the last logged point: the loss near the end of training."""
    recorded_last: float | None
    """train_results.json `last_logged_loss`, when train wrote it."""

    @property
    def fall(self) -> float | None:
        return self.first[1] - self.last[1] if self.first and self.last else None

    @property
    def fall_share(self) -> float | None:
        return self.fall / self.first[1] if self.first and self.last and self.first[1] else None

    @property
    def recorded_last_agrees(self) -> bool | None:
        if self.recorded_last is None or self.last is None:
            return None
        return math.isclose(self.recorded_last, self.last[1], rel_tol=1e-3, abs_tol=1e-4)


def loss_facts(run_average: float | None, steps: list[float], losses: list[float],
               recorded_first: float | None, recorded_last: float | None) -> LossFacts:
    """Logged points win over train_results' copies; the copies fill in when the log is missing."""
    first = (steps[0], losses[0]) if steps else None
    last = (steps[-1], losses[-1]) if steps else None
    if first is None and recorded_first is not None:
        first = (None, recorded_first)
    if last is None and recorded_last is not None:
        last = (None, recorded_last)
    return LossFacts(run_average, first, last, recorded_last if steps else None)


def perplexity_agrees(eval_loss: float | None, perplexity: float | None) -> bool | None:
    if eval_loss is None or perplexity is None:
        return None
    return math.isclose(math.exp(eval_loss), perplexity, rel_tol=PERPLEXITY_TOLERANCE)


def data_counts_add_up(stats: dict) -> tuple[bool, int, int] | None:
    """read == kept + rejected + duplicates + dropped_too_long + unused (prepare's own invariant)."""
    keys = ("read", "kept", "rejected", "duplicates", "dropped_too_long", "unused")
    values = [stats.get(k) for k in keys]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    accounted = sum(values[1:])
    return accounted == values[0], values[0], accounted


@dataclass
class AdapterModule:
    name: str
    layers: int
    params: int
    shapes: dict[str, list[int]]
    """lora_A / lora_B shape of one layer."""


def adapter_modules(header: dict) -> list[AdapterModule]:
    """Group a LoRA safetensors header by target module (q_proj, ...): layers, parameters, shapes."""
    groups: dict[str, dict] = {}
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list):
            continue
        parts = name.split(".")  # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
        i = next((i for i, p in enumerate(parts) if p.startswith("lora_")), 0)
        module = parts[i - 1] if i else parts[max(0, len(parts) - 2)]
        layer = parts[parts.index("layers") + 1] if "layers" in parts[:-1] else ""
        g = groups.setdefault(module, {"layers": set(), "params": 0, "shapes": {}})
        g["layers"].add(layer)
        g["params"] += math.prod(int(d) for d in shape)
        g["shapes"].setdefault(parts[i] if i else parts[-1], shape)
    return [AdapterModule(m, len(g["layers"]), g["params"], g["shapes"]) for m, g in groups.items()]


# Dense bf16/fp16 tensor-core peak per device, TFLOP/s, from the vendors' data sheets; matched by
# substring of the device name, most specific first. Utilisation is only stated for these.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("H800", 989.0), ("H20", 148.0),
    ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0),
    ("RTX 4090", 165.0), ("V100", 125.0),
)


def peak_tflops(device: str | None, precision: str | None) -> float | None:
    if not device or precision not in ("bf16", "fp16"):
        return None
    for name, tflops in PEAK_TFLOPS:
        if name.lower() in device.lower():
            return tflops
    return None
