"""Generation: load a model (+ LoRA adapter), prompt it with its own chat template, and generate with the
transformers or the vLLM engine, batched or streamed. The evaluate stage (comparison, safety probe,
benchmarks), `medtune chat` and `medtune serve` all generate through this package.

    gen = load_generator("runs/demo")        # a run directory, a model directory, a hub id or builtin:tiny-qwen3
    (out,) = gen.generate([[{"role": "user", "content": "头疼怎么办？"}]], sampling_for(False, 256))
    out.answer, out.thinking, out.tokens, out.finish_reason

What it owns:
- prompts: the tokenizer's own chat template; `enable_thinking` is always passed explicitly (a template's
  default cannot be changed by generation_config.json), and thinking is off unless asked for.
- stop ids: the model's generation_config end-of-sequence ids plus the tokenizer's end-of-turn token.
- sampling: Qwen3's recommended values (model card): 0.7/0.8/20 (temperature/top_p/top_k) without thinking,
  0.6/0.95/20 with it; temperature 0 means greedy.
- the thinking split (`medtune.text.split_thinking`, one rule for whole texts and streams, see THINKING_RULE).
- engines: transformers (any device; batched with left padding, or one prompt streamed through transformers'
  own streamers) and vLLM (CUDA; LoRA adapters unmerged through LoRARequest). vLLM cannot load an adapter
  that trains whole modules (`modules_to_save`, e.g. lm_head): `choose_engine` says so and falls back.

Modules: `source` (what a name or path is), `sampling` (settings, prompts, stop ids, the Generation record),
`transformers_engine`, `vllm_engine`, `loading` (engine choice and loading; entry point `load_generator`),
`judge` (the one client for OpenAI-compatible judges and graders), `grader` (rubric grading criterion by
criterion: prompt, verdicts, scores, cache, the GRPO reward), `rule_grader` (a loopback grader deciding by
fixed rules, for tests and the demo). The thinking split is `medtune.text`'s:
data readers (answer extraction) use it too.
"""

from medtune.generate.loading import load_generator

__all__ = ["load_generator"]
