"""The evaluate stage: perplexity, fair model comparison, multiple-choice benchmarks, LLM judge,
reference metrics, the safety probe, consultations, rubric grading and the contamination check. Each writes under
<output_dir>/eval/.

Entry point: `evaluate_run(cfg)`; `medtune evaluate NAME ...` runs one evaluation ad hoc (`evaluate.cli`).
"""

from medtune.evaluate.stage import evaluate_run

__all__ = ["evaluate_run"]
