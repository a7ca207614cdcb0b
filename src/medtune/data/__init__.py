"""Every file medtune reads, and prepare.

Entry point: `prepare_dataset(cfg)`. Modules: `readers` (training dialogues: ShareGPT, OpenAI messages,
Alpaca), `template` (the chat-template label rule), `prepare`, `align` (preference/KTO/prompt files),
`mcq` (multiple-choice benchmarks: reading, posing and answer extraction), `questions` (question sets,
references, answers, safety prompts), `consultations` (CMB-Clin cases), `rubrics` (HealthBench-layout rubric sets and physician labels), `overlap` and `contamination`
(evaluation items against the training data).
"""

from medtune.data.prepare import prepare_dataset

__all__ = ["prepare_dataset"]
