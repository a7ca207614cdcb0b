"""`medtune plan`: counts, the memory estimate against independent counts and a measured CPU peak, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, small_vocab_model, write_config
from medtune.cli import main
from medtune.config import config_from_dict, load_config
from medtune.train.plan import (GIB, PlanError, count_model, estimate, model_config, parse_memory, plan_config, setup_from_config)

QWEN3_8B_DIR = ROOT / "tests" / "fixtures" / "qwen3-8b"  # Qwen/Qwen3-8B's published config.json, nothing else
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def qwen3_8b_config(**train):
    return config_from_dict({"output_dir": "unused", "model": {"name_or_path": str(QWEN3_8B_DIR)},
                             "data": {"max_length": 2048},
                             "train": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, **train}})


@pytest.fixture(scope="module")
def qwen3_8b_shape():
    cfg = qwen3_8b_config()
    return count_model(model_config(str(QWEN3_8B_DIR)), cfg, "bf16")


def test_qwen3_8b_parameters_match_the_hand_count(qwen3_8b_shape):
    h, i, q, kv, layers, r = 4096, 12288, 32 * 128, 8 * 128, 36, 16
    lora_per_layer = r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))
    base_per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h + 2 * 128  # + input/post norms, q/k norms
    base = layers * base_per_layer + 2 * 151936 * h + h  # untied embeddings and output layer, final norm
    assert lora_per_layer == 1_212_416  # docs/findings.md
    assert qwen3_8b_shape.trainable_params == layers * lora_per_layer == 43_646_976
    assert qwen3_8b_shape.total_params == base + layers * lora_per_layer == 8_234_382_336
    assert qwen3_8b_shape.quantizable_params == layers * (h * q + 2 * h * kv + q * h + 3 * h * i)
    assert qwen3_8b_shape.trainable_bytes == 4 * 43_646_976  # PEFT keeps LoRA weights in fp32 on a bf16 base


def test_weights_in_bf16_and_in_4bit(qwen3_8b_shape):
    s = setup_from_config(qwen3_8b_config(), gpus=1, gpu_memory=24 * GIB)
    frozen = 8_234_382_336 - 43_646_976
    assert estimate(qwen3_8b_shape, s).memory["weights"] == 2 * frozen
    q4 = estimate(qwen3_8b_shape, s.__class__(**{**s.__dict__, "quant_bits": 4, "double_quant": True}))
    linear = qwen3_8b_shape.quantizable_params
    # 4 bits + an 8-bit absmax per 64 weights + an fp32 constant per 256 blocks; the rest upcast to fp32.
    expected = linear * (4 + 8 / 64 + 32 / 16384) / 8 + (frozen - linear) * 4
    assert q4.memory["weights"] == int(expected)
    assert q4.memory["trainable_state"] == 43_646_976 * 2 * 4  # TRL casts a quantized model's LoRA to bf16
    assert 7.9 * GIB < expected < 8.0 * GIB  # 3.6 GB of 4-bit layers + 5.0 GB of fp32 embeddings and output layer


def test_layer_count_on_meta_equals_the_tensors_a_real_cpu_layer_saves(tmp_path):
    """The meta-device count vs the same layer run for real on CPU (fp32, SDPA's CPU kernel), counting the
    storages autograd saves by their data pointers: catches weights counted as activations, missed dropout
    copies, or a count that does not scale with the tokens."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model_dir = small_vocab_model(tmp_path / "m", vocab=256, hidden=128, layers=1)
    cfg = config_from_dict({"output_dir": str(tmp_path / "run"), "model": {"name_or_path": str(model_dir)}})
    shape = count_model(model_config(str(model_dir)), cfg, "fp32")

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
                                             task_type="CAUSAL_LM")).train()
    inner = model.get_base_model().model
    rows, tokens = 4, 64
    hidden = torch.randn(rows, tokens, 128, requires_grad=True)
    positions = torch.arange(tokens)[None]
    skip = {p.data_ptr() for p in model.parameters()} | {hidden.data_ptr()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        inner.layers[0](hidden, attention_mask=None, position_ids=positions,
                        position_embeddings=inner.rotary_emb(hidden, positions))
    real_per_token = sum(saved.values()) / (rows * tokens)
    assert shape.layer_saved_bytes_per_token == pytest.approx(real_per_token, rel=0.10)


def test_measured_cpu_peak_within_15_percent(tmp_path):
    """Real training runs of medtune's trainer (2 steps each) in a fresh process; the plan's peak minus its
    weights line against the measured peak resident memory minus the resident memory before training
    (tests/memory_probe.py says exactly what is compared). Two shapes, each dominated by one term: a 4-layer
    model without checkpointing (activations: one layer's saved tensors x 4) and the builtin tiny Qwen3 with
    checkpointing (the real 151,936-token vocabulary: the logits chunk)."""
    model_dir = small_vocab_model(tmp_path / "model", vocab=512, hidden=256, layers=4)
    configs = {
        "activations": write_config(tmp_path, f"""
output_dir: {tmp_path / 'run1'}
model: {{name_or_path: {model_dir}}}
data: {{max_length: 512}}
train: {{per_device_train_batch_size: 4, max_steps: 2, gradient_checkpointing: false, report_to: [none],
         save_steps: 1000, logging_steps: 1}}
""", "activations.yaml"),
        "logits_chunk": write_config(tmp_path, f"""
output_dir: {tmp_path / 'run2'}
data: {{max_length: 512}}
train: {{per_device_train_batch_size: 2, max_steps: 2, gradient_checkpointing: true, report_to: [none], save_steps: 1000,
         logging_steps: 1}}
""", "logits.yaml"),
    }
    predicted = {}
    for term, path in configs.items():
        plan = plan_config(load_config(path), device="cpu", samples=8)["plan"]
        predicted[term] = plan.peak - plan.memory["weights"]
        assert plan.memory[term] > 0.8 * predicted[term]  # each shape checks its own term
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "memory_probe.py"), *map(str, configs.values())],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    measured = [r["measured_bytes"] for r in json.loads(out.stdout.strip().splitlines()[-1])]
    for (term, want), got in zip(predicted.items(), measured):
        assert want == pytest.approx(got, rel=0.15), (term, want, got)


def test_steps_tokens_and_time_from_prepared_stats(tmp_path):
    cfg = qwen3_8b_config(num_train_epochs=2)
    cfg.output_dir = str(tmp_path / "run")
    (tmp_path / "run" / "data").mkdir(parents=True)
    (tmp_path / "run" / "data" / "stats.json").write_text(json.dumps({"train": 100_000, "kept": 100_500,
                                                                      "tokens": 27_436_500}))
    result = plan_config(cfg, gpus=4, gpu_memory=32 * GIB)
    # 100,000 samples / (4 GPUs x 4 per device) = 6,250 batches per rank, / 2 accumulation = 3,125 steps per epoch.
    assert result["schedule"]["steps_per_epoch"] == 3125 and result["schedule"]["total_steps"] == 6250
    assert result["schedule"]["tokens"] == 100_000 * 273 * 2  # 27,436,500 / 100,500 = 273 tokens per sample
    assert result["schedule"]["hours"] == pytest.approx(54_600_000 / 3800 / 3600)  # 950 tokens/s per GPU


def test_parse_memory():
    assert parse_memory("24GB") == parse_memory("24GiB") == parse_memory("24") == 24 * GIB
    assert parse_memory("512MB") == 512 << 20
    with pytest.raises(PlanError, match="24 gigs"):
        parse_memory("24 gigs")


def test_a_hub_id_without_a_cached_config_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PlanError, match="downloads nothing.*config.json"):
        model_config("no-such-org/no-such-model")


def test_cli_worked_examples(capsys):
    args = ["plan", str(ROOT / "configs" / "qwen3-8b-huatuo.yaml"), "--set", f"model.name_or_path={QWEN3_8B_DIR}"]
    assert main(args + ["--gpus", "4", "--gpu-memory", "32GB"]) == 0
    four = capsys.readouterr().out
    assert "8,234,382,336 total, 43,646,976 trainable" in four and "-> fits in 32.00 GiB" in four
    assert "16 bytes per trainable parameter" in four  # fp32 LoRA: parameter, gradient, AdamW m and v
    assert "3,125 per epoch, 6,250 in total, 32 samples per step" in four
    assert main(args + ["--gpu-memory", "24GB"]) == 3  # does not fit: a script can tell
    one = capsys.readouterr().out
    assert "DOES NOT FIT in 24.00 GiB" in one and "to fit, change one of:" in one
    assert "train.per_device_train_batch_size: 1" in one and "model.quantization" in one
    # 2 epochs x 100,000 samples x 2,048 tokens; 1 GPU: 8 per step, 12,500 x 2 steps; 4 GPUs (the reference's):
    # 32 per step, 3,125 x 2 steps, at 4 x 950 tokens/s 409,600,000 / 3,800 / 3,600 = 29.9 h
    assert "tokens: 409,600,000 = 2 epochs x 100,000 samples x 2048 per sample" in one
    assert "8 samples per step (4 per device x 2 accumulation x 1 GPU;" in one
    assert "this plan is for 1 GPU (--gpus)" in one and "4 GPUs: 32 per step, 6,250 steps, 29.9 h" in one


@pytest.mark.parametrize("gpus", ["0", "-2"])
def test_cli_refuses_fewer_than_one_gpu(gpus, capsys):
    args = ["plan", str(ROOT / "configs" / "demo.yaml"), "--gpus", gpus]
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 2 and f"--gpus: must be at least 1, not {gpus}" in capsys.readouterr().err


def test_plan_names_a_lora_target_that_matches_nothing(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\nmodel: {{name_or_path: 'builtin:tiny-qwen3'}}\n"
                      "lora: {target_modules: [q_proj, qproj]}\n")
    assert main(["plan", str(config)]) == 2
    err = capsys.readouterr().err
    assert "lora.target_modules: 'qproj' matches no module of Qwen3ForCausalLM; modules with weights are named " \
           "down_proj, embed_tokens, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj." in err


def test_plan_config_refuses_fewer_than_one_gpu():
    with pytest.raises(PlanError, match="--gpus 0: the run needs at least 1 GPU"):
        plan_config(qwen3_8b_config(), gpus=0)


def _hand_shape():
    from medtune.train.plan import ModelShape

    # 8 layers, 10 wide, 1,000 saved bytes per token in one layer, a 1,000-token vocabulary, 1e6 frozen weights.
    return ModelShape(total_params=1_010_000, trainable_params=10_000, trainable_bytes=40_000,
                      quantizable_params=1_000_000, other_params=0, layer_saved_bytes_per_token=1000.0, hidden=10,
                      layers=8, vocab=1000)


def _hand_setup(memory: int):
    from medtune.train.plan import Setup

    return Setup(gpus=1, gpu_memory=memory, device="cpu", precision="fp32", batch=2, max_length=100,
                 checkpointing=True, quant_bits=None, double_quant=False, shard_weights=False)


def test_partial_checkpointing_estimate_by_hand():
    """200 tokens: a layer's input is 200 x 10 x 4 = 8,000 bytes, its saved tensors 200,000. Fixed: weights
    4,000,000 + LoRA state 160,000 + logits chunk 200 x 1,000 x 12 = 2,400,000 = 6,560,000."""
    from dataclasses import replace

    shape, s = _hand_shape(), _hand_setup(10**9)
    peak = lambda **kw: estimate(shape, replace(s, **kw)).peak  # noqa: E731
    assert peak(checkpointing=False) == 6_560_000 + 8 * 200_000 + 4 * 8_000
    assert peak(checkpoint_every=1) == 6_560_000 + 8 * 8_000 + 200_000 + 4 * 8_000
    # every 3rd layer: layers 0, 3, 6 recompute (3 inputs kept), the other 5 keep their activations
    assert peak(checkpoint_every=3) == 6_560_000 + 3 * 8_000 + 5 * 200_000 + 200_000 + 4 * 8_000 == 7_816_000
    assert peak(checkpoint_every=4) == 6_560_000 + 2 * 8_000 + 6 * 200_000 + 200_000 + 4 * 8_000 == 8_008_000


@pytest.mark.parametrize("memory,every", [(10**9, None), (8_300_000, 3), (1_000_000, 1)])
def test_auto_checkpointing_recomputes_the_fewest_layers_that_fit(memory, every):
    """8,300,000 bytes keep 5% = 415,000 free, so the peak must be <= 7,885,000: no checkpointing (8,192,000)
    and two checkpointed layers (8,008,000) do not fit, three (every 3rd layer: 7,816,000) do. When even every
    layer does not fit, every layer it is (the plan says it does not fit)."""
    from medtune.train.plan import least_checkpointing

    chosen, plan = least_checkpointing(_hand_shape(), _hand_setup(memory))
    assert (chosen.checkpoint_every if chosen.checkpointing else None) == every
    assert plan.fits is (memory != 1_000_000)


def test_a_plan_prints_no_library_notice_that_reads_as_a_failure(tmp_path):
    """Every plan/train/align printed bitsandbytes' "Failed to load CPU gemm_4bit_forward" (peft imports
    bitsandbytes whenever it is installed) and transformers' is_gradient_checkpointing FutureWarning."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "default"}
    r = subprocess.run([sys.executable, "-m", "medtune", "plan", str(ROOT / "configs" / "demo.yaml"), "--set",
                        f"output_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "gemm_4bit_forward" not in r.stderr and "is_gradient_checkpointing" not in r.stderr, r.stderr
    # Both notices, emitted as the libraries emit them (the first only shows on CPUs with AVX512-BF16):
    code = ("import logging, warnings, medtune\n"
            "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('Failed to load CPU gemm_4bit_forward from "
            "kernels-community: %s. Please make sure', 'no kernels')\n"
            "warnings.warn('`is_gradient_checkpointing` is deprecated and will be removed in v6. Use "
            "`is_activation_checkpointing` instead.', FutureWarning)\n"
            "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('another notice')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stderr == "another notice\n"  # only those two are dropped


def test_the_sdpa_mask_of_a_padding_free_row_is_counted_by_hand():
    """_hand_setup: batch 2 x length 100. sdpa's boolean mask (1 byte an entry): padded, 2 x 100 x 100 = 20,000
    bytes; padding-free, one block-diagonal mask over the 200-token row, 200 x 200 = 40,000; flash-attention
    none. The CPU default (sdpa_varlen, packing) plans the packed mask; plain sdpa with auto batching groups by
    length (padded); a GPU plans flash-attention."""
    from dataclasses import replace

    from medtune.config import config_from_dict
    from medtune.train.plan import attention_mask_kind

    shape, s = _hand_shape(), _hand_setup(10**9)
    base = estimate(shape, replace(s, mask="none")).peak
    assert estimate(shape, replace(s, mask="padded")).peak - base == 2 * 100 * 100
    assert estimate(shape, replace(s, mask="packed")).peak - base == 200 * 200
    cfg = lambda **model: config_from_dict({"output_dir": "x", "model": model})  # noqa: E731
    assert attention_mask_kind(cfg(), "cpu") == "packed" and attention_mask_kind(cfg(), "cuda") == "none"
    assert attention_mask_kind(cfg(attn_implementation="sdpa"), "cpu") == "padded"
