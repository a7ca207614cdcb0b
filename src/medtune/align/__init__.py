"""The align stage (optional, after train): DPO, KTO or GRPO on top of the SFT adapter, written to `<run>/align/`.

Entry point: `align_model(cfg)`. Modules: `stage` (the stage protocol, TRL trainers), `pairs` (self-made
preference pairs), `grpo` (verifiable rewards).
"""

from medtune.align.stage import align_model

__all__ = ["align_model"]
