"""`medtune merge`: merged model == base + adapter, tied embeddings stay tied, files, refusals, atomic writes."""

from __future__ import annotations

import json

import pytest

from medtune.cli import main
from medtune.train.merge import MERGE_TOLERANCE, MergeError, merge_adapter

pytestmark = pytest.mark.usefixtures("single_torch_thread")
PROMPTS = ["我咳嗽一周了，晚上更厉害，要紧吗？", "Is ibuprofen safe during pregnancy?"]


def _logits(model, tokenizer):
    import torch

    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=False) for p in PROMPTS]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        return model(**batch).logits[batch["attention_mask"].bool()].float()


@pytest.fixture(scope="module")
def merged_fp32(lora_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("merge") / "merged"
    record = merge_adapter(lora_run, out, dtype="fp32", log=lambda *a: None)
    return out, record


def test_merged_logits_equal_base_plus_adapter(lora_run, merged_fp32):
    from transformers import AutoModelForCausalLM

    from medtune.modeling import load_model

    out, _ = merged_fp32
    unmerged, tokenizer = load_model(str(lora_run / "base_model"), adapter=lora_run, dtype="float32", device="cpu")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    reference, got = _logits(unmerged, tokenizer), _logits(merged, tokenizer)
    with unmerged.disable_adapter():
        base = _logits(unmerged, tokenizer)
    assert (base - reference).abs().max() > 1e-2       # the adapter matters, so equality below means something
    assert (got - reference).abs().max() < 1e-4        # FINDINGS: ~1e-6 in fp32


def test_merge_writes_a_standalone_model_with_non_thinking_generation_defaults(merged_fp32):
    out, record = merged_fp32
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "medtune_merge.json"} <= names
    assert not any("adapter" in n for n in names)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [151645, 151643]
    assert (gen["do_sample"], gen["temperature"], gen["top_p"], gen["top_k"]) == (True, 0.7, 0.8, 20)
    on_disk = json.loads((out / "medtune_merge.json").read_text())
    assert on_disk["dtype"] == "fp32" and on_disk["checks"]["merge_fp32"]["passed"]
    assert on_disk["checks"]["saved"]["max_relative_diff"] <= MERGE_TOLERANCE["fp32"]
    assert on_disk["checks"]["adapter_effect"] > MERGE_TOLERANCE["fp32"]
    assert record["checks"] == on_disk["checks"]
    assert not list(out.parent.glob(".merged.tmp-*"))  # no temporary directory left behind


def test_tied_embeddings_stay_tied_and_untouched(lora_run, merged_fp32):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    out, _ = merged_fp32
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        embed = f.get_tensor("model.embed_tokens.weight")
    assert "lm_head.weight" not in keys  # one tensor on disk, not a second (possibly diverging) copy
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    base = AutoModelForCausalLM.from_pretrained(lora_run / "base_model")
    assert torch.equal(embed, base.model.embed_tokens.weight)  # LoRA never touched it, nor applied anything twice


def test_cli_refuses_non_empty_output_without_force_then_replaces_it_in_bf16(lora_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["merge", str(lora_run), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not empty; use --force" in err and "Traceback" not in err
    assert (out / "notes.txt").read_text() == "keep me"

    assert main(["merge", str(lora_run), "--output", str(out), "--dtype", "bf16", "--force"]) == 0
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").exists()
    record = json.loads((out / "medtune_merge.json").read_text())
    assert record["dtype"] == "bf16"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert 0 < record["checks"]["saved"]["max_relative_diff"] <= MERGE_TOLERANCE["bf16"]
    assert "verified on 3 prompts" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old directory and the temporary one are gone


def test_refuses_to_write_over_its_own_inputs(lora_run):
    with pytest.raises(MergeError, match="which the merge reads"):
        merge_adapter(lora_run, lora_run, force=True)
    with pytest.raises(MergeError, match="which the merge reads"):
        merge_adapter(lora_run, lora_run / "base_model", force=True)
    with pytest.raises(MergeError, match="no LoRA adapter"):
        merge_adapter(lora_run / "base_model", lora_run.parent / "x")


def test_failed_verification_writes_nothing(lora_run, tmp_path, monkeypatch):
    # The check can fail: with a zero tolerance the ~1e-7 fp32 difference is too much, and nothing is written.
    monkeypatch.setitem(MERGE_TOLERANCE, "fp32", 0.0)
    out = tmp_path / "never"
    with pytest.raises(MergeError, match="verification failed"):
        merge_adapter(lora_run, out, dtype="fp32", log=lambda *a: None)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_refuses_an_adapter_that_trains_a_tied_embedding(lora_run, tmp_path):
    # The adapter's config is what says it trains lm_head; the refusal comes before any weights are read.
    run = tmp_path / "tied"
    run.mkdir()
    config = json.loads((lora_run / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "lm_head"]
    (run / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(MergeError, match="ties its input and output embeddings"):
        merge_adapter(run, tmp_path / "out", log=lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_demo_style_adapter_with_a_trained_untied_head_merges_exactly(tmp_path):
    """configs/demo.yaml trains lm_head in full next to the LoRA (modules_to_save) on the untied builtin base:
    the merged model must carry that head, and the input embeddings must stay the base's."""
    import torch
    from transformers import AutoModelForCausalLM

    from medtune.modeling import load_model
    from tests.conftest import make_lora_run

    run = make_lora_run(tmp_path / "demo-like", tied=False, modules_to_save=["lm_head"])
    out = tmp_path / "merged"
    merge_adapter(run, out, dtype="fp32", log=lambda *a: None)
    unmerged, tokenizer = load_model(str(run / "base_model"), adapter=run, dtype="float32", device="cpu")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert (_logits(merged, tokenizer) - _logits(unmerged, tokenizer)).abs().max() < 1e-4
    base = AutoModelForCausalLM.from_pretrained(run / "base_model")
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert not torch.equal(merged.lm_head.weight, base.lm_head.weight)  # the trained head, not the base's


def test_dtype_auto_saves_in_the_base_models_dtype(lora_run, tmp_path, capsys):
    """The README promises auto for every --dtype; merge refused it (argparse: invalid choice)."""
    base_dtype = json.loads((lora_run / "base_model" / "config.json").read_text())["dtype"]
    expected = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[base_dtype]
    assert main(["merge", str(lora_run), "--output", str(tmp_path / "out"), "--dtype", "auto"]) == 0
    assert json.loads((tmp_path / "out" / "medtune_merge.json").read_text())["dtype"] == expected
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == base_dtype
