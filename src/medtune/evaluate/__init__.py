"""The evaluate stage: perplexity, fair model comparison, multiple-choice benchmarks, LLM judge,
reference metrics and the safety probe. Each writes under <output_dir>/eval/."""
