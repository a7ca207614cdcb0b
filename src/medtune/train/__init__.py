"""The train stage: LoRA SFT on prepared data, with the memory plan, launch and checkpoints it needs.

Entry point: `train_model(cfg)`. Modules: `stage` (the stage), `backends` (precision, attention, kernels,
checkpointing chosen once), `loss` (the target-only loss), `plan` (memory/steps/time from a config alone),
`common` (checkpoints, timeline, process-group checks), `callbacks`, `launch` (one process per GPU),
`quantize` (QLoRA), `merge` (fold the adapter into the base).
"""

from medtune.train.stage import train_model

__all__ = ["train_model"]
