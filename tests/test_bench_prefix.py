"""Log-likelihood scoring on a shared few-shot prefix: inputs that start with the same description and examples
run that prefix once and only their tails on its cache; every score must equal a plain full forward pass of
its own request, on two architectures (and a LoRA adapter) and two tokenizer settings, across several prefix
groups and batches."""

from __future__ import annotations

import pytest

from medtune.data.mcq import build_prompt, load_items
from medtune.evaluate.bench import continuation_logprobs, encode_requests, shared_prefix_groups
from tests.conftest import CMMLU_DEV, SHARED_ASSETS, needs_shared

pytestmark = needs_shared
QWEN3_TOKENIZER = SHARED_ASSETS / "qwen3-tokenizer"
TINY = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, initializer_range=0.2)


def tiny_model(arch: str, **overrides):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3ForCausalLM

    from medtune.modeling import qwen3_config

    torch.manual_seed(0)
    if arch == "qwen3+lora":  # as `run_benchmark` scores an adapter: a PeftModel, LoRA weights non-zero
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        return get_peft_model(tiny_model("qwen3"), lora).eval()
    if arch == "qwen3":
        return Qwen3ForCausalLM(qwen3_config(**{**TINY, **overrides})).eval()
    return LlamaForCausalLM(LlamaConfig(**TINY, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})).eval()


def tokenizer(add_bos: bool):
    """The real Qwen3 tokenizer; with `add_bos` it starts every text with a BOS token, as Llama's tokenizers do
    (then every input of a group shares it, and the pad id is the BOS id)."""
    from transformers import AutoTokenizer

    if not add_bos:
        return AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER))
    return AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER), bos_token="<|endoftext|>", add_bos_token=True)


def mcq_requests() -> list[tuple[str, str]]:
    """2-shot CMMLU prompts from three subjects (three prefix groups of three questions), the four letters each,
    and its answer text (several tokens) on each anatomy question, and two short requests that share no prefix."""
    items, _ = load_items(CMMLU_DEV, "cmmlu")
    requests = []
    for subject in ("anatomy", "genetics", "virology"):
        of_subject = [it for it in items if it.subject == subject]
        for it in of_subject[2:]:
            prompt = build_prompt(it, of_subject[:2], "cmmlu")
            requests += [(prompt, f" {letter}") for letter in "ABCD"]
            if subject == "anatomy":
                requests.append((prompt, f" {it.answer}. {it.options[it.answer]}"))
    return requests + [("短", " A"), ("上下文以空格结尾 ", "B")]


def plain_forward_scores(model, tok, requests) -> list[float]:
    """Each request alone through the model, no padding, no cache, lm-eval's tokenization."""
    import torch

    scores = []
    with torch.no_grad():
        for context, continuation in requests:
            if context.endswith(" "):
                context, continuation = context[:-1], " " + continuation
            ctx = tok(context)["input_ids"]
            whole = ctx + tok(context + continuation)["input_ids"][len(ctx):]
            logprobs = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
            scores.append(sum(float(logprobs[i - 1, whole[i]]) for i in range(len(ctx), len(whole))))
    return scores


@pytest.mark.parametrize("arch,add_bos", [("qwen3", False), ("llama", True), ("qwen3+lora", False)])
def test_shared_prefix_scores_equal_a_plain_forward_pass(arch, add_bos):
    model, tok = tiny_model(arch), tokenizer(add_bos)
    requests = mcq_requests()
    _, rows, keep = encode_requests(tok, requests)
    groups = shared_prefix_groups(rows, keep)
    # The path under test is taken: one group per subject, each longer than a batch, tails of several lengths.
    assert sorted(len(group) for _, group in groups) == [3, 3, 6]  # anatomy: + its answer-text inputs
    assert all(len({len(rows[i]) - n for i in group}) > 1 for n, group in groups)
    expected = plain_forward_scores(model, tok, requests)
    for batch_size in (2, 8):
        assert continuation_logprobs(model, tok, requests, batch_size=batch_size) == pytest.approx(expected, abs=1e-4)


def test_models_without_a_plain_cache_take_the_full_path():
    """Sliding-window layers keep a cache the prefix path cannot copy as plain keys/values: full inputs instead."""
    model = tiny_model("qwen3", use_sliding_window=True, sliding_window=64, max_window_layers=0)
    tok, requests = tokenizer(False), mcq_requests()
    assert continuation_logprobs(model, tok, requests, batch_size=2) == pytest.approx(
        plain_forward_scores(model, tok, requests), abs=1e-4)


def test_prefix_groups_follow_the_rule():
    """Rows sharing >= 16 tokens and at least half of the longest row group; a prefix stops before a scored
    position; a lone row, or rows sharing a short prefix, are not grouped."""
    shared = tuple(range(100, 130))  # 30 tokens
    rows = [shared + (1, 2), shared + (3,), shared[:20] + (9,) * 30, (7,) * 40, shared[:10] + (5,), shared + (1, 2, 4)]
    keep = [1, 1, 1, 1, 1, 4]
    # rows 0, 1, 5 share 30 tokens, but row 5 (33 tokens) scores its last 4 positions, from 29 on: the prefix is
    # 29 long; row 2 shares 20 tokens with them, fewer than half of its 50; row 4 only 10.
    assert shared_prefix_groups(rows, keep) == [(29, [0, 5, 1])]
    assert shared_prefix_groups(rows[:1], keep[:1]) == []
