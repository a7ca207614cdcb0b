"""Padding-free batches (train.batching: packing) compute the same step as padded ones: the same loss and the
same LoRA gradients, through the collator the trainer uses and medtune's target-only loss, on CPU with sdpa
(transformers' block-diagonal mask from the position ids) and with medtune's sdpa_varlen (attention sample by
sample from the collator's boundaries), for Qwen3 and for a second architecture (Llama). And no token attends
across a sample boundary: with the position ids not restarting per sample (sdpa) or the boundaries lost
(sdpa_varlen), the planted bugs, the same check fails."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

LENGTHS = (9, 23, 5, 16)  # one random batch of real-looking spread: the padded batch is mostly padding


def _tiny(arch: str, attn: str = "sdpa"):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3ForCausalLM

    from medtune.modeling import qwen3_config
    from medtune.attention import register

    register()
    torch.manual_seed(0)
    shape = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, max_position_embeddings=128, pad_token_id=0,
                 attn_implementation=attn)
    if arch == "qwen3":
        model = Qwen3ForCausalLM(qwen3_config(**shape))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for name, p in model.named_parameters():  # lora_B starts at zero: give it values so every gradient flows
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def _examples():
    g = torch.Generator().manual_seed(1)
    out = []
    for n in LENGTHS:
        ids = torch.randint(3, 256, (n,), generator=g).tolist()
        prompt = max(1, n // 3)  # the prompt side is not trained on, as prepare writes it
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def _loss_and_grads(model, batch: dict):
    from medtune.train.loss import target_only_loss

    model.zero_grad()
    inputs = {k: v for k, v in batch.items()}
    n_targets = int((batch["labels"][:, 1:] != -100).sum())
    loss = target_only_loss(model, inputs, n_targets, model.get_output_embeddings())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("attn", ["sdpa", "sdpa_varlen"])
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_padding_free_step_equals_the_padded_step(arch, attn):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = _tiny(arch, attn)
    assert model.config._attn_implementation == attn
    examples = _examples()
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    assert padded["input_ids"].shape == (len(LENGTHS), max(LENGTHS))
    assert flat["input_ids"].shape == (1, sum(LENGTHS)) and "attention_mask" not in flat
    # the same trained tokens: each sample's first label is prompt side in both layouts
    assert int((padded["labels"] != -100).sum()) == int((flat["labels"] != -100).sum())

    loss_padded, grads_padded = _loss_and_grads(model, padded)
    loss_flat, grads_flat = _loss_and_grads(model, flat)
    assert torch.allclose(loss_flat, loss_padded, rtol=1e-5, atol=1e-6)
    assert grads_flat.keys() == grads_padded.keys() and len(grads_flat) == 2 * 3 * 2  # A and B, 3 modules, 2 layers
    for name in grads_padded:
        assert torch.allclose(grads_flat[name], grads_padded[name], rtol=1e-4, atol=1e-6), name

    # planted: sdpa: position ids that run on across samples (no packing seen: one causal mask over the row);
    # sdpa_varlen: the boundaries lost (one segment). Either way later samples attend to earlier ones.
    if attn == "sdpa":
        leaky = dict(flat, position_ids=torch.arange(sum(LENGTHS))[None])
    else:
        whole = torch.tensor([0, sum(LENGTHS)], dtype=torch.int32)
        leaky = dict(flat, cu_seq_lens_q=whole, cu_seq_lens_k=whole)
    loss_leaky, _ = _loss_and_grads(model, leaky)
    assert not torch.allclose(loss_leaky, loss_padded, rtol=1e-4)


def test_a_trained_label_at_a_sample_start_is_not_predicted_from_the_previous_sample():
    """The collator drops the label at each sample's first position (position id 0), so the loss never asks the
    last token of one sample to predict the first token of the next, even where prepare trained on it."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert flat["labels"].tolist() == [[-100, 6, 7, -100, 9]]
