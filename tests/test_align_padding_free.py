"""Padding-free DPO and KTO batches (align.batching: packing, medtune.align.padding_free) compute the same step
as TRL's padded batches: the same loss, the same reference log-probs and the same LoRA gradients, through
medtune's DPO/KTO trainers and TRL's own collators, for Qwen3 and a second architecture (Llama), with sdpa
(transformers' block-diagonal mask from the position ids) and sdpa_varlen (attention sample by sample from the
boundaries). The model really gets one flattened row of the batch's non-padding tokens. Planted bugs that
fail here: position ids not restarting per sequence (with sdpa, whose mask comes from them; sdpa_varlen attends
within the boundaries and RoPE is shift-invariant, so there it changes nothing); a sequence's first token scored
across the boundary; per-token outputs put back one position off. And align picks packing where its attention has a varlen path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

VOCAB = 151936  # the real tokenizer's ids and pad id must fit (the rows below are real token ids)


def _policy(arch: str, attn: str):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3ForCausalLM

    from medtune.attention import register
    from medtune.modeling import qwen3_config

    register()
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, max_position_embeddings=512, attn_implementation=attn)
    model = Qwen3ForCausalLM(qwen3_config(**shape)) if arch == "qwen3" else LlamaForCausalLM(LlamaConfig(**shape))
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lora)
    for name, p in model.named_parameters():  # lora_B starts at zero: give it values so every gradient flows
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def _rows(tokenizer, algorithm: str, tmp_path):
    """Real align rows (prepare's rule, data.align) of different lengths: the padded batch is partly padding."""
    from medtune.config import config_from_dict
    from medtune.data.align import read_align_data
    from tests.conftest import ROOT

    records = ROOT / "tests" / "fixtures" / "align_records.jsonl"
    cfg = config_from_dict({"output_dir": str(tmp_path), "model": {"name_or_path": "x"},
                            "align": {"algorithm": algorithm, "train_files": [str(records)], "max_length": 256}})
    rows, _ = read_align_data(cfg, tokenizer, [str(records)], tmp_path / "rejected.jsonl", log=lambda *a: None)
    return rows[:4]


def _trainer(arch, attn, algorithm, padding_free, tokenizer, rows, tmp_path):
    import datasets
    from trl import DPOConfig, KTOConfig

    from medtune.align.stage import dpo_trainer_class, kto_trainer_class

    cls = (dpo_trainer_class if algorithm == "dpo" else kto_trainer_class)(padding_free)
    config = DPOConfig if algorithm == "dpo" else KTOConfig
    args = config(output_dir=str(tmp_path / f"out-{padding_free}"), use_cpu=True, bf16=False, report_to=[],
                  max_length=None, per_device_train_batch_size=4, precompute_ref_log_probs=False)
    return cls(model=_policy(arch, attn), args=args, train_dataset=datasets.Dataset.from_list(rows),
               processing_class=tokenizer)


def _step(trainer, batch):
    """(loss, reference log-probs, LoRA gradients of the trained adapter, token counts the backbone saw)."""
    model = trainer.model
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        model.train()
        model.zero_grad()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        with torch.no_grad():
            ref = trainer.compute_ref_log_probs(model, batch)
    finally:
        hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), torch.cat([r.flatten() for r in ref]), grads, seen


@pytest.mark.parametrize("arch,attn,algorithm", [("qwen3", "sdpa_varlen", "dpo"), ("llama", "sdpa_varlen", "dpo"),
                                                 ("qwen3", "sdpa", "dpo"), ("qwen3", "sdpa_varlen", "kto"),
                                                 ("llama", "sdpa", "kto")])
def test_padding_free_preference_step_equals_the_padded_step(arch, attn, algorithm, qwen3_tokenizer, tmp_path):
    rows = _rows(qwen3_tokenizer, algorithm, tmp_path)
    padded = _trainer(arch, attn, algorithm, False, qwen3_tokenizer, rows, tmp_path)
    flat = _trainer(arch, attn, algorithm, True, qwen3_tokenizer, rows, tmp_path)
    batch = padded.data_collator([padded.train_dataset[i] for i in range(len(rows))])
    masks = [batch["attention_mask"]] + ([batch["KL_attention_mask"]] if "KL_attention_mask" in batch else [])
    assert any(bool((m == 0).any()) for m in masks)  # there is padding to drop

    loss_p, ref_p, grads_p, seen_p = _step(padded, batch)
    loss_f, ref_f, grads_f, seen_f = _step(flat, batch)
    # Padded: every call sees the padded batch. Padding-free: the loss and the reference pass see one row of
    # exactly the non-padding tokens (TRL's per-step reference pass, used without precompute_ref_log_probs,
    # stays padded).
    assert all(shape[0] > 1 for shape in seen_p)
    assert sorted(s for s in seen_f if s[0] == 1) == sorted((1, int(m.sum())) for m in masks for _ in range(2))
    assert torch.allclose(loss_f, loss_p, rtol=1e-5, atol=1e-6), (loss_f, loss_p)
    assert torch.allclose(ref_f, ref_p, rtol=1e-5, atol=1e-4), (ref_f, ref_p)
    assert grads_p and grads_p.keys() == grads_f.keys()
    assert any(float(g.abs().max()) > 0 for g in grads_p.values())
    for name, g in grads_p.items():
        assert torch.allclose(grads_f[name], g, rtol=1e-4, atol=1e-6), name


def test_a_batch_that_is_not_right_padded_goes_through_unchanged():
    from medtune.align.padding_free import PaddedAsFlat

    calls = []

    def model(**kwargs):
        calls.append(kwargs)
        return "out"

    ids = torch.tensor([[5, 6, 7], [0, 8, 9]])
    left = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert PaddedAsFlat(model)(input_ids=ids, attention_mask=left, labels=ids) == "out"
    assert calls[0]["input_ids"] is ids and "position_ids" not in calls[0]
    types = torch.zeros_like(ids)  # another per-token input the flattening would not carry
    PaddedAsFlat(model)(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, token_type_ids=types)
    assert calls[1]["input_ids"] is ids


def test_align_picks_packing_where_attention_keeps_sequences_apart(tmp_path):
    from medtune.config import config_from_dict
    from medtune.train.backends import align_backends, align_plan_config
    from medtune.train.plan import attention_mask_kind

    def pick(cuda=False, flash=False, **changes):
        align = {"algorithm": "dpo", "train_files": ["x.jsonl"], **changes.pop("align", {})}
        cfg = config_from_dict({"output_dir": str(tmp_path), "align": align, **changes})
        b = align_backends(cfg, cuda=cuda, bf16_supported=cuda, flash_attn=flash)
        return b.attn_implementation, b.batching, attention_mask_kind(align_plan_config(cfg), "cpu")

    assert pick() == ("sdpa_varlen", "packing", "packed")
    assert pick(align={"algorithm": "kto"}) == ("sdpa_varlen", "packing", "packed")
    assert pick(cuda=True, flash=True)[:2] == ("flash_attention_2", "packing")
    assert pick(align={"batching": "padding"}) == ("sdpa_varlen", "padding", "padded")
    assert pick(model={"attn_implementation": "sdpa"})[:2] == ("sdpa", "padding")  # no varlen path
    assert pick(model={"attn_implementation": "sdpa"}, align={"batching": "packing"})[:2] == ("sdpa", "packing")
    grpo = pick(align={"algorithm": "grpo", "grpo_data": "open", "batching": "packing"})
    assert grpo[1:] == ("padding", "padded")  # GRPO's batches are TRL's


def test_flattening_by_hand():
    """Two right-padded sequences, lengths 3 and 2, every token labelled: what the model gets and what comes back."""
    from types import SimpleNamespace

    from medtune.align.padding_free import PaddedAsFlat

    got = {}

    def model(**kwargs):
        got.update(kwargs)
        flat = torch.tensor([[10.0, 11.0, 12.0, 13.0]])  # row positions 0..3 predict row tokens 1..4
        return SimpleNamespace(log_probs=flat, entropy=None, label_mask=flat > 0)

    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = PaddedAsFlat(model)(input_ids=ids, attention_mask=mask, labels=ids.clone(), use_cache=False)
    assert got["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert got["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert got["cu_seq_lens_q"].tolist() == got["cu_seq_lens_k"].tolist() == [0, 3, 5]
    assert got["max_length_q"] == got["max_length_k"] == 3 and got["use_cache"] is False
    assert got["labels"].tolist() == [[-100, 6, 7, -100, 9]]  # no prediction of a first token across a boundary
    # Padded (r, j) predicts token j+1 of sequence r: row positions 0, 1 for the first, 3 for the second.
    assert out.log_probs.tolist() == [[10.0, 11.0], [13.0, 0.0]]
    assert out.label_mask.tolist() == [[True, True], [True, False]] and out.entropy is None


def test_align_plans_checkpointing_for_the_longest_row_of_its_data():
    import datasets

    from medtune.align.stage import longest_sequence

    dpo = datasets.Dataset.from_list([{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6, 7, 8, 9]},
                                      {"prompt_ids": [1, 2, 3, 4, 5], "chosen_ids": [6], "rejected_ids": [7]}])
    assert longest_sequence(dpo) == 7  # 3 + the longer answer (4); the second row holds 6
    kto = datasets.Dataset.from_list([{"prompt_ids": [1, 2, 3], "completion_ids": [4, 5], "label": True},
                                      {"prompt_ids": [1, 2, 3, 4, 5], "completion_ids": [6], "label": False}])
    assert longest_sequence(kto) == 7  # its KL rows pair the longest prompt (5) with any completion (at most 2)
    assert longest_sequence(datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "x"}]}])) is None
