"""QLoRA (model.quantization): typed config, a real 4-bit training run on CPU, and its merge."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import synthetic_prepared_data, write_config
from medtune.config import ConfigError, config_from_dict, load_config

has_bnb = importlib.util.find_spec("bitsandbytes") is not None


def test_quantization_config_is_typed_and_checked():
    cfg = config_from_dict({"output_dir": "x", "model": {"quantization": {"bits": 4}}})
    q = cfg.model.quantization
    assert (q.bits, q.quant_type, q.double_quant, q.compute_dtype) == (4, "nf4", True, "bf16")
    assert config_from_dict({"output_dir": "x"}).model.quantization is None
    with pytest.raises(ConfigError, match="model.quantization.bits must be 4 or 8"):
        config_from_dict({"output_dir": "x", "model": {"quantization": {"bits": 3}}})
    with pytest.raises(ConfigError, match="'model.quantization.quant_type' = 'int4' is not one of nf4, fp4"):
        config_from_dict({"output_dir": "x", "model": {"quantization": {"quant_type": "int4"}}})
    with pytest.raises(ConfigError, match="unknown key 'model.quantization.double_quantization'"):
        config_from_dict({"output_dir": "x", "model": {"quantization": {"double_quantization": True}}})


@pytest.mark.skipif(not has_bnb, reason="bitsandbytes is not installed")
def test_load_kwargs_build_the_bitsandbytes_config():
    import torch

    from medtune.config import QuantizationConfig
    from medtune.train.quantize import load_kwargs

    kw = load_kwargs(QuantizationConfig(bits=4, quant_type="fp4", double_quant=False, compute_dtype="fp32"), "cpu")
    bnb = kw["quantization_config"]
    assert bnb.load_in_4bit and not bnb.load_in_8bit
    assert (bnb.bnb_4bit_quant_type, bnb.bnb_4bit_use_double_quant, bnb.bnb_4bit_compute_dtype) == \
        ("fp4", False, torch.float32)
    assert kw["device_map"] == {"": "cpu"}
    assert load_kwargs(None, "cpu") == {}


@pytest.mark.slow
@pytest.mark.skipif(not has_bnb, reason="bitsandbytes is not installed")
def test_qlora_trains_in_4bit_on_cpu_and_merges_into_the_full_precision_base(tmp_path, monkeypatch):
    """bitsandbytes 0.50 runs 4-bit forward and backward on CPU (docs/findings.md), so this is a real QLoRA run."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from medtune.train import quantize
    from medtune.train.merge import merge_adapter
    from medtune.train.stage import train_model

    seen = {}
    prepare = quantize.prepare_for_training

    def spy(model, gradient_checkpointing):
        seen["q_proj"] = type(model.model.layers[0].self_attn.q_proj).__name__
        seen["weight_dtype"] = model.model.layers[0].self_attn.q_proj.weight.dtype
        return prepare(model, gradient_checkpointing)

    monkeypatch.setattr(quantize, "prepare_for_training", spy)
    run = tmp_path / "run"
    synthetic_prepared_data(run, n_train=8, n_val=4)
    config = write_config(tmp_path, f"""
output_dir: {run}
model: {{quantization: {{bits: 4, quant_type: nf4, double_quant: true, compute_dtype: fp32}}}}
lora: {{r: 8, alpha: 16, dropout: 0.0}}
train: {{max_steps: 2, per_device_train_batch_size: 4, learning_rate: 1.0e-2, report_to: [none], logging_steps: 1,
         save_steps: 100}}
""")
    results = train_model(load_config(config), log=lambda *a: None)
    assert seen == {"q_proj": "Linear4bit", "weight_dtype": torch.uint8}  # the base really was 4-bit
    assert results["quantization"] == {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "fp32"}

    messages = []
    record = merge_adapter(run, tmp_path / "merged", dtype="fp32", log=messages.append)
    assert record["trained_on_quantized_base"]["bits"] == 4
    assert any("comes from a 4-bit nf4 base" in m for m in messages)
    assert json.loads((tmp_path / "merged" / "medtune_merge.json").read_text())["trained_on_quantized_base"]
    # Merged into the full-precision base: W = W_base + (alpha / r) B A exactly, not dequantized 4-bit weights.
    base = AutoModelForCausalLM.from_pretrained(run / "base_model", dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    adapter = load_file(run / "adapter_model.safetensors")
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    delta = 2.0 * adapter[f"{prefix}.lora_B.weight"].float() @ adapter[f"{prefix}.lora_A.weight"].float()
    assert delta.abs().max() > 1e-4  # the adapter learned something
    expected = base.model.layers[0].self_attn.q_proj.weight + delta
    assert torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, expected, atol=1e-5)
