"""The train stage: reference parameter counts, outputs, resume after SIGKILL, NaN guard,
gradient-accumulation equivalence, packed samples kept apart, backend selection (several processes:
test_distributed.py).

Mechanics tests use a small-vocabulary Qwen3-architecture model and synthetic prepared data, so a step
takes milliseconds; one test trains the builtin tiny model on the real demo data with the real tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medtune.config import config_from_dict
from medtune.train.common import COMPLETE_MARKER, TrainingError, complete_checkpoints
from medtune.train.plan import plan_steps
from medtune.train.backends import select_backends
from medtune.train.stage import train_model
from tests.conftest import ROOT, small_vocab_model, synthetic_prepared_data

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_cfg(run_dir: Path, model_dir: Path, **train):
    base = {"max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1,
            "save_steps": 2, "save_total_limit": 5, "eval_strategy": "steps", "eval_steps": 2, "report_to": ["none"],
            "gradient_checkpointing": False}
    base.update(train)
    return config_from_dict({"output_dir": str(run_dir), "model": {"name_or_path": str(model_dir)},
                             "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": TARGETS},
                             "train": base})


def adapter_tensors(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_reference_parameter_counts_on_meta_device():
    """Qwen3-8B + the reference LoRA: 43,646,976 trainable of 8,234,382,336, with no weights (FINDINGS.md)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3ForCausalLM

    from medtune.config import load_config
    from medtune.modeling import QWEN3_8B, count_parameters, qwen3_config

    cfg = load_config(ROOT / "configs" / "qwen3-8b-huatuo.yaml")
    with torch.device("meta"):
        model = Qwen3ForCausalLM(qwen3_config(**QWEN3_8B))
    assert count_parameters(model) == (8_190_735_360, 8_190_735_360)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    trainable, total = count_parameters(get_peft_model(model, lora))
    assert (trainable, total) == (43_646_976, 8_234_382_336)
    assert f"{100 * trainable / total:.2f}" == "0.53"


def test_plan_steps_matches_reference_arithmetic():
    cfg = config_from_dict({"output_dir": "x", "train": {"num_train_epochs": 2, "per_device_train_batch_size": 4,
                                                        "gradient_accumulation_steps": 2}})
    plan = plan_steps(100_000, cfg, world=4)
    assert plan == {"effective_batch_size": 32, "steps_per_epoch": 3125, "total_steps": 6250}
    # The reference report's 12,500 steps are what 16 samples per step give (FINDINGS.md)
    assert plan_steps(100_000, cfg, world=2)["total_steps"] == 12_500


def test_backend_selection():
    cfg = config_from_dict({"output_dir": "x"})
    cpu = select_backends(cfg, cuda=False, bf16_supported=False, flash_attn=False, liger=False)
    assert (cpu.precision, cpu.attn_implementation, cpu.batching, cpu.liger_kernel) == ("fp32", "sdpa_varlen",
                                                                                        "packing", False)
    gpu = select_backends(cfg, cuda=True, bf16_supported=True, flash_attn=True, liger=True)
    assert (gpu.precision, gpu.attn_implementation, gpu.batching, gpu.liger_kernel) == ("bf16", "flash_attention_2",
                                                                                        "packing", True)
    plain_gpu = select_backends(cfg, cuda=True, bf16_supported=False, flash_attn=False, liger=False)
    assert (plain_gpu.precision, plain_gpu.attn_implementation, plain_gpu.batching) == ("fp32", "sdpa_varlen",
                                                                                       "packing")
    # plain sdpa asked for: no varlen path, so similar lengths are grouped instead of packed
    sdpa = select_backends(config_from_dict({"output_dir": "x", "model": {"attn_implementation": "sdpa"}}),
                           cuda=False, bf16_supported=False, flash_attn=False, liger=False)
    assert (sdpa.attn_implementation, sdpa.batching) == ("sdpa", "group_by_length")
    assert all(r for r in gpu.reasons) and len(gpu.reasons) == 4
    forced = config_from_dict({"output_dir": "x", "train": {"batching": "packing", "bf16": False}})
    assert select_backends(forced, cuda=False, bf16_supported=False, flash_attn=False, liger=False).batching == "packing"
    with pytest.raises(TrainingError, match="flash-attn is not installed"):
        select_backends(config_from_dict({"output_dir": "x", "model": {"attn_implementation": "flash_attention_2"}}),
                        cuda=False, bf16_supported=False, flash_attn=False, liger=False)
    with pytest.raises(TrainingError, match="liger-kernel is not installed"):
        select_backends(config_from_dict({"output_dir": "x", "train": {"use_liger_kernel": True}}),
                        cuda=False, bf16_supported=False, flash_attn=False, liger=False)


def test_last_hidden_state_is_after_the_final_norm(small_model):
    """The training loss projects hidden_states[-1] itself: it must be exactly what lm_head sees."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(small_model)).eval()
    ids = torch.randint(3, 512, (2, 9))
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
        hidden = model(input_ids=ids, use_cache=False, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    assert torch.equal(model.lm_head(hidden), full)


def test_target_only_loss_equals_the_full_logits_loss(small_model):
    """Chunked, target-only cross-entropy == the plain loss over full logits (value and gradients)."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from medtune.train.loss import target_only_loss

    model = AutoModelForCausalLM.from_pretrained(str(small_model))
    ids = torch.randint(3, 512, (2, 12))
    labels = ids.clone()
    labels[0, :5] = -100
    labels[1, :8] = -100
    full = model(input_ids=ids, use_cache=False).logits
    expected = F.cross_entropy(full[:, :-1].reshape(-1, 512), labels[:, 1:].reshape(-1), ignore_index=-100)
    expected.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    got = target_only_loss(model, {"input_ids": ids, "labels": labels}, None, model.get_output_embeddings(),
                           chunk_rows=3)
    got.backward()
    assert torch.allclose(got, expected, atol=1e-6)
    assert all(torch.allclose(p.grad, grads[n], atol=1e-6) for n, p in model.named_parameters())


def test_packed_samples_do_not_attend_to_each_other(small_model):
    """Padding-free packing on sdpa: the packed logits equal each sample's own logits (FINDINGS: use_cache=False)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(small_model), attn_implementation="sdpa").eval()
    seqs = [torch.randint(3, 512, (n,)) for n in (7, 12, 5)]
    with torch.no_grad():
        alone = [model(input_ids=s[None], use_cache=False).logits[0] for s in seqs]
        packed = model(input_ids=torch.cat(seqs)[None], position_ids=torch.cat([torch.arange(len(s)) for s in seqs])[None],
                       use_cache=False).logits[0]
    assert torch.allclose(packed, torch.cat(alone), atol=1e-5)


def plain_val_loss(run: Path, base: Path) -> tuple[float, int]:
    """The saved adapter's token-weighted cross-entropy on data/val, one unpadded sample per forward pass."""
    import datasets
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), run).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in datasets.load_from_disk(str(run / "data" / "val")):
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(row["labels"][1:])
            total += F.cross_entropy(logits.double(), labels, ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    return total / count, count


def test_outputs_adapter_changes_base_does_not(tmp_path, small_model, monkeypatch):
    import hashlib

    import torch
    import trl.trainer.sft_trainer
    from safetensors.torch import load_file

    run = tmp_path / "run"
    synthetic_prepared_data(run)
    base_before = load_file(str(small_model / "model.safetensors"))
    files_before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in small_model.iterdir()}
    trained = []  # the model SFTTrainer trains, to look at its base weights after training
    wrap = trl.trainer.sft_trainer.get_peft_model
    monkeypatch.setattr(trl.trainer.sft_trainer, "get_peft_model", lambda *a, **k: trained.append(wrap(*a, **k))
                        or trained[-1])
    results = train_model(make_cfg(run, small_model), log=lambda *a: None)
    names = {p.name for p in run.iterdir()}
    assert names == {"data", "adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                     "tokenizer_config.json", "README.md", "checkpoint-2", "checkpoint-4", "trainer_state.json",
                     "train_results.json", "eval_results.json", "metrics.jsonl", "timeline.json",
                     "environment.json", "train_manifest.json"}
    assert {p.name for p in (run / "checkpoint-4").iterdir()} >= {"adapter_model.safetensors", "optimizer.pt",
                                                                  "scheduler.pt", "rng_state.pth",
                                                                  "trainer_state.json", COMPLETE_MARKER}
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(small_model) and config["r"] == 4
    # LoRA B starts at zero: every B matrix trained away from it, the base is untouched on disk and in memory
    adapter = adapter_tensors(run)
    assert any(k.endswith("lora_B.weight") for k in adapter)
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if k.endswith("lora_B.weight"))
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in small_model.iterdir()} == files_before
    (model,) = trained
    in_memory = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v
                 for k, v in model.state_dict().items() if "lora_" not in k}
    assert base_before.keys() <= in_memory.keys()
    changed = [k for k, v in base_before.items() if not torch.equal(v, in_memory[k].to(v.device, v.dtype))]
    assert not changed, changed
    ev = json.loads((run / "eval_results.json").read_text())
    loss, tokens = plain_val_loss(run, small_model)
    assert ev["eval_loss"] == pytest.approx(loss, rel=1e-4) and ev["eval_tokens"] == tokens
    assert ev["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert ev["eval_samples"] == 16
    assert results["global_step"] == 4 and results["effective_batch_size"] == 4 and results["world_size"] == 1
    assert results["trainable_params"] > 0 and results["total_params"] > results["trainable_params"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x for x in lines if "loss" in x]
    assert [x["step"] for x in losses] == [1, 2, 3, 4]
    assert all(x["learning_rate"] is not None and x["tokens_per_second"] > 0 for x in losses)
    # linear decay without warmup: the rate used at step s is lr * (1 - (s-1)/4)
    assert [x["learning_rate"] for x in losses] == pytest.approx([1e-2, 7.5e-3, 5e-3, 2.5e-3])
    assert [x["step"] for x in lines if "eval_loss" in x] == [2, 4]
    timeline = json.loads((run / "timeline.json").read_text())["events"]
    assert [e["name"] for e in timeline] == ["data_loading", "model_loading", "training", "evaluation"]
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["torch"] and env["seeds"] == {"data": 42, "train": 42}
    # a rerun with the same config is skipped
    logs = []
    train_model(make_cfg(run, small_model), log=logs.append)
    assert any("skipping" in m for m in logs)
    # a changed config starts over: the first run's checkpoints and metrics are gone, a user's file stays
    (run / "notes.txt").write_text("mine")
    train_model(make_cfg(run, small_model, max_steps=2), log=lambda *a: None)
    assert not (run / "checkpoint-4").exists() and (run / "notes.txt").read_text() == "mine"
    assert [x["step"] for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in x] \
        == [1, 2]
    manifest = json.loads((run / "train_manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["started"] <= manifest["finished"]


def test_a_lora_target_that_matches_nothing_is_a_user_error_before_training(tmp_path, small_model):
    """peft raised NoMatchingPeftModuleError from inside SFTTrainer (all entries wrong), or skipped a mistyped
    entry silently (some right): both are a UserError naming the entry and the modules there are."""
    from medtune.errors import UserError

    run = tmp_path / "run"
    synthetic_prepared_data(run)
    for targets in (["q_proj", "qkv_proj"], ["attn"]):
        cfg = make_cfg(run, small_model)
        cfg.lora.target_modules = targets
        with pytest.raises(UserError) as caught:
            train_model(cfg, log=lambda *a: None)
        bad = targets[-1]
        assert str(caught.value).startswith(f"lora.target_modules: '{bad}' matches no module of Qwen3ForCausalLM; "
                                            "modules with weights are named down_proj, embed_tokens, gate_proj, "
                                            "k_proj, lm_head, o_proj, q_proj, up_proj, v_proj.")
        assert sorted(p.name for p in run.iterdir()) == ["data"]  # nothing written, nothing trained


def test_auto_checkpointing_recomputes_only_the_layers_the_memory_plan_needs(tmp_path, monkeypatch):
    """train.gradient_checkpointing: auto on a 4-layer model, with the machine's memory set so that one
    checkpointed layer does not fit and two do: transformers' every_n_layers=3 checkpoints layers 0 and 3,
    and those are the layers the trained model recomputes; with plenty of memory nothing is checkpointed."""
    from dataclasses import replace

    from medtune.train import backends, plan, stage

    model_dir = small_vocab_model(tmp_path / "model4", layers=4)
    run = tmp_path / "run"
    synthetic_prepared_data(run, n_train=8, n_val=4)
    cfg = make_cfg(run, model_dir, max_steps=1, eval_strategy="no", gradient_checkpointing="auto")
    shape = plan.count_model(plan.model_config(str(model_dir)), cfg, "fp32")
    setup = plan.setup_from_config(cfg, 1, None, "cpu")
    peak = {every: plan.estimate(shape, replace(setup, checkpoint_every=every)).peak for every in (3, 4)}
    assert peak[3] < peak[4]  # 2 recomputed layers keep less than 1
    memory = int((peak[3] + peak[4]) / 2 / (1 - plan.MARGIN))
    trainers = []
    build = stage.build_trainer
    monkeypatch.setattr(stage, "build_trainer", lambda *a, **k: trainers.append(build(*a, **k)) or trainers[-1])
    monkeypatch.setattr(backends, "device_memory", lambda device: memory)
    results = train_model(cfg, log=lambda *a: None)
    layers = trainers[0].model.get_base_model().model.layers
    assert results["checkpoint_every_n_layers"] == 3
    assert [layer.gradient_checkpointing for layer in layers] == [True, False, False, True]
    monkeypatch.setattr(backends, "device_memory", lambda device: 1 << 40)
    results = train_model(cfg, force=True, log=lambda *a: None)
    assert results["checkpoint_every_n_layers"] is None
    assert not any(layer.gradient_checkpointing for layer in trainers[1].model.get_base_model().model.layers)


def test_auto_checkpointing_plans_for_the_longest_prepared_sample(tmp_path, small_model):
    """The worst batch is every sample as long as the longest one prepare kept, not data.max_length (2048)."""
    from dataclasses import replace

    from medtune.train import plan
    from medtune.train.backends import Backends, choose_checkpointing

    cfg = make_cfg(tmp_path, small_model, gradient_checkpointing="auto")
    config = plan.model_config(str(small_model))
    shape = plan.count_model(config, cfg, "fp32")
    off = replace(plan.setup_from_config(cfg, 1, None, "cpu"), checkpointing=False)
    at_80, at_2048 = (plan.estimate(shape, replace(off, max_length=n)).peak for n in (80, 2048))
    memory = int(at_80 / (1 - plan.MARGIN)) + 1
    assert at_2048 > (1 - plan.MARGIN) * memory
    chosen = {}
    for longest in (80, None):
        backends = Backends("cpu", "fp32", "sdpa", "group_by_length", False)
        choose_checkpointing(cfg, config, backends, memory=memory, longest=longest)
        chosen[longest] = backends.checkpoint_every
    assert chosen == {80: None, None: 1}


def test_gradient_accumulation_equivalence(tmp_path, small_model):
    """Batch 4 x accumulation 2 gives the same update as batch 8 (SGD, so the loss scale matters), for padded
    and for packed batches."""
    import torch

    for batching in ("padding", "packing"):
        weights = []
        for bs, acc in ((8, 1), (4, 2)):
            run = tmp_path / f"{batching}-{bs}x{acc}"
            synthetic_prepared_data(run)
            train_model(make_cfg(run, small_model, max_steps=1, per_device_train_batch_size=bs,
                                 gradient_accumulation_steps=acc, optim="sgd", learning_rate=1.0, batching=batching,
                                 eval_strategy="no", save_steps=100), log=lambda *a: None)
            weights.append(adapter_tensors(run))
        for k in weights[0]:
            assert torch.allclose(weights[0][k], weights[1][k], atol=1e-6), (batching, k)
        assert any(w.abs().sum() > 0 for k, w in weights[0].items() if "lora_B" in k)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path, small_model, monkeypatch):
    import torch

    import medtune.train.loss as train_module

    calls = {"n": 0}
    real = train_module._ce_sum

    def poisoned(head, hidden, targets):
        calls["n"] += 1
        out = real(head, hidden, targets)
        # two calls a step (the forward, and its recomputation in backward): call 5 is step 3's forward
        return out * float("nan") if calls["n"] >= 5 else out

    monkeypatch.setattr(train_module, "_ce_sum", poisoned)
    run = tmp_path / "run"
    synthetic_prepared_data(run)
    with pytest.raises(TrainingError, match=r"step 3: .*NaN.*last good checkpoint is .*checkpoint-2"):
        train_model(make_cfg(run, small_model, max_steps=6, eval_strategy="no"), log=lambda *a: None)
    assert [c.name for c in complete_checkpoints(run)] == ["checkpoint-2"]
    assert not (run / "adapter_model.safetensors").exists()
    assert all(torch.isfinite(v).all() for v in adapter_tensors(run / "checkpoint-2").values())
    assert json.loads((run / "train_manifest.json").read_text())["status"] == "failed"


def test_half_written_checkpoint_is_never_picked(tmp_path):
    run = tmp_path / "run"
    good, half = run / "checkpoint-2", run / "checkpoint-4"
    good.mkdir(parents=True)
    half.mkdir()
    (good / "adapter_model.safetensors").write_bytes(b"x" * 10)
    (good / COMPLETE_MARKER).write_text(json.dumps({"files": {"adapter_model.safetensors": 10}}))
    (half / "adapter_model.safetensors").write_bytes(b"x" * 3)  # killed while saving: no marker
    assert complete_checkpoints(run) == [good]
    (half / COMPLETE_MARKER).write_text(json.dumps({"files": {"adapter_model.safetensors": 10}}))  # truncated file
    assert complete_checkpoints(run) == [good]


def _medtune(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "medtune", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _write_yaml(path: Path, cfg) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True))
    return path


def test_sigkill_and_resume_equals_uninterrupted_run(tmp_path, small_model):
    """Tolerance: 1e-6 absolute on every adapter weight (fp32 CPU; data order, RNG and optimizer state restored)."""
    import torch

    kw = dict(max_steps=24, save_steps=3, eval_strategy="no", per_device_train_batch_size=8, batching="group_by_length")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    for run in (straight, broken):
        synthetic_prepared_data(run, n_train=200, max_len=200)
    train_model(make_cfg(straight, small_model, **kw), log=lambda *a: None)

    config = _write_yaml(tmp_path / "broken.yaml", make_cfg(broken, small_model, **kw))
    proc = _medtune("train", str(config))
    deadline = time.time() + 120
    while not (broken / "checkpoint-6" / COMPLETE_MARKER).exists():
        assert proc.poll() is None, "training ended before it could be killed:\n" + proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (broken / "adapter_model.safetensors").exists()
    resumed = _medtune("train", str(config))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resuming from the latest complete checkpoint" in out
    a, b = adapter_tensors(straight), adapter_tensors(broken)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    results = json.loads((broken / "train_results.json").read_text())
    assert results["resumed_from"] and results["global_step"] == 24


def test_demo_data_loss_falls_with_real_tokenizer(tmp_path):
    """The builtin tiny Qwen3 with the real Qwen3 tokenizer, on data/demo: the loss visibly falls."""
    from medtune.data.prepare import prepare_dataset

    cfg = config_from_dict({
        "output_dir": str(tmp_path / "run"),
        "data": {"train_files": [str(ROOT / "data" / "demo" / "huatuo_style_dialogues.jsonl")], "val_size": 8,
                 "max_length": 256, "max_samples": 96},
        "lora": {"modules_to_save": ["lm_head"]},  # as configs/demo.yaml: the random base's head must learn too
        "train": {"max_steps": 12, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 2,
                  "save_steps": 100, "report_to": ["none"], "gradient_checkpointing": False},
    })
    prepare_dataset(cfg, log=lambda *a: None)
    results = train_model(cfg, log=lambda *a: None)
    assert results["first_logged_loss"] > 11.5  # ln(151936) = 11.93 at random init
    assert results["last_logged_loss"] < results["first_logged_loss"] - 2.0  # seen: 11.96 -> 8.94 (12 steps)
    assert (tmp_path / "run" / "base_model" / "config.json").exists()
    assert json.loads((tmp_path / "run" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        (tmp_path / "run" / "base_model").resolve())


def test_launch_commands():
    from medtune.train.launch import launch_command

    cmd = launch_command(["c.yaml", "--set", "train.max_steps=5"], nproc_per_node=4, master_port=29555)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in cmd and "--master_port=29555" in cmd
    assert cmd[-6:] == ["-m", "medtune", "train", "c.yaml", "--set", "train.max_steps=5"]
    multi = launch_command(["c.yaml"], nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.0.0.1")
    assert {"--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29500"} <= set(multi)
    acc = launch_command(["c.yaml"], nproc_per_node=4, nnodes=2, accelerate_config="configs/accelerate/fsdp.yaml")
    assert acc[1:3] == ["-m", "accelerate.commands.launch"]
    assert acc[acc.index("--num_processes") + 1] == "8" and acc[acc.index("--num_machines") + 1] == "2"
    assert acc[-4:] == ["-m", "medtune", "train", "c.yaml"]


# --- one decision, one builder, one formula (train and align share them) -------------------------------------


def test_lora_config_is_the_lora_section():
    from medtune.train.common import lora_config

    cfg = config_from_dict({"output_dir": "x", "lora": {"r": 8, "alpha": 32, "dropout": 0.1, "bias": "lora_only",
                                                        "target_modules": ["q_proj", "v_proj"],
                                                        "modules_to_save": ["lm_head"]}})
    lora = lora_config(cfg.lora)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias, sorted(lora.target_modules),
            lora.modules_to_save, lora.task_type) == (8, 32, 0.1, "lora_only", ["q_proj", "v_proj"], ["lm_head"],
                                                      "CAUSAL_LM")
    assert lora_config(config_from_dict({"output_dir": "x"}).lora).modules_to_save is None  # [] means none


def test_the_loss_projects_the_rows_the_memory_plan_counts(monkeypatch):
    """151,936-word vocabulary: 256 MiB of fp32 logits is 268,435,456 // (4 x 151,936) = 441 rows a chunk, so
    1,000 trained positions are chunks of 441, 441 and 118 (by hand)."""
    import types

    import torch
    import torch.utils.checkpoint

    from medtune.train.loss import target_only_loss
    from medtune.train.plan import logits_chunk_rows

    chunks = []
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint",
                        lambda fn, head, h, targets, use_reentrant: chunks.append(len(h)) or h.new_zeros(()))
    hidden = torch.zeros(1, 1001, 4)
    model = lambda **inputs: types.SimpleNamespace(hidden_states=[hidden])  # noqa: E731
    head = types.SimpleNamespace(weight=torch.empty(151936, 4))
    target_only_loss(model, {"input_ids": torch.zeros(1, 1001, dtype=torch.long),
                             "labels": torch.ones(1, 1001, dtype=torch.long)}, None, head)
    assert chunks == [441, 441, 118] and logits_chunk_rows(151936) == 441


def align_and_train_cfg(run_dir: Path, model_dir: Path, bf16, checkpointing):
    """The same precision and checkpointing settings for both stages, and the same rows per forward: DPO runs
    a batch of 2 pairs as 4 rows (chosen and rejected), train a batch of 4 samples."""
    return config_from_dict({
        "output_dir": str(run_dir), "model": {"name_or_path": str(model_dir)}, "data": {"max_length": 64},
        "train": {"bf16": bf16, "gradient_checkpointing": "auto" if checkpointing is None else checkpointing,
                  "per_device_train_batch_size": 4},
        "align": {"algorithm": "dpo", "train_files": ["pairs.jsonl"], "bf16": bf16, "max_length": 64,
                  "gradient_checkpointing": checkpointing, "per_device_train_batch_size": 2}})


@pytest.mark.parametrize("bf16", [None, True, False])
@pytest.mark.parametrize("checkpointing", [None, True, False])
def test_align_chooses_precision_and_checkpointing_as_train_does(tmp_path, small_model, bf16, checkpointing):
    from medtune.train import plan
    from medtune.train.backends import align_backends, align_plan_config, choose_checkpointing

    from dataclasses import replace

    cfg = align_and_train_cfg(tmp_path, small_model, bf16, checkpointing)
    config = plan.model_config(str(small_model))
    precision = "bf16" if bf16 else "fp32"
    off = replace(plan.setup_from_config(cfg, 1, None, "cpu"), precision=precision, checkpointing=False)
    # 1 byte: nothing fits, auto checkpoints every layer; 1 TiB: everything fits, none; `tight`: 4 rows just
    # miss fitting without checkpointing (2 rows would fit: DPO's pairs must count twice).
    tight = int(plan.estimate(plan.count_model(config, cfg, precision), off).peak / (1 - plan.MARGIN)) - 1
    for memory, auto in ((1, 1), (1 << 40, None), (tight, "some")):
        train = select_backends(cfg, cuda=False, bf16_supported=False, flash_attn=False, liger=False)
        choose_checkpointing(cfg, config, train, memory=memory)
        align = align_backends(cfg, cuda=False, bf16_supported=False)
        if checkpointing is None:
            choose_checkpointing(align_plan_config(cfg), config, align, memory=memory)
        assert (align.precision, align.checkpoint_every) == (train.precision, train.checkpoint_every)
        assert align.precision == precision
        expected = {None: auto, True: 1, False: None}[checkpointing]
        assert align.checkpoint_every is not None if expected == "some" else align.checkpoint_every == expected


def test_bf16_on_a_gpu_without_it_stops_both_stages_naming_the_key(tmp_path, small_model):
    from medtune.train.backends import align_backends

    cfg = align_and_train_cfg(tmp_path, small_model, True, None)
    with pytest.raises(TrainingError, match="train.bf16 is true but this GPU has no bf16"):
        select_backends(cfg, cuda=True, bf16_supported=False, flash_attn=False, liger=False)
    with pytest.raises(TrainingError, match="align.bf16 is true but this GPU has no bf16"):
        align_backends(cfg, cuda=True, bf16_supported=False)
    gpu = align_backends(align_and_train_cfg(tmp_path, small_model, None, None), cuda=True, bf16_supported=True)
    assert gpu.precision == "bf16"


def test_model_loading_turns_on_cpu_huge_pages_and_keeps_a_users_choice(tmp_path, small_model, monkeypatch):
    from medtune.modeling import load_model
    from medtune.train.backends import Backends
    from medtune.train.stage import load_base

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    load_base(make_cfg(tmp_path, small_model), Backends("cpu", "fp32", "sdpa", "padding", False), True)
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    load_model(str(small_model), dtype="fp32", device="cpu")
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
