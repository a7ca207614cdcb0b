"""Config loading: every shipped config loads, unknown keys and bad values fail with the key and file."""

from __future__ import annotations

import subprocess
import sys
import pytest
import yaml

from medtune.config import ConfigError, load_config, save_config
from tests.conftest import ROOT, write_config

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "qwen3-8b-huatuo.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.output_dir


def test_reference_config_is_the_reference_run():
    cfg = load_config(ROOT / "configs" / "qwen3-8b-huatuo.yaml")
    assert cfg.model.name_or_path == "Qwen/Qwen3-8B"
    assert cfg.data.train_files == ["FreedomIntelligence/HuatuoGPT-sft-data-v1"]
    assert (cfg.data.max_samples, cfg.data.select, cfg.data.val_size, cfg.data.max_length) == (100000, "first", 500,
                                                                                              2048)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32, 0.05)
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    t = cfg.train
    assert (t.learning_rate, t.warmup_steps, t.num_train_epochs) == (2e-5, 0.05, 2)
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (4, 2)
    assert t.bf16 is True and t.gradient_checkpointing is True


def test_unknown_key_names_key_and_file(tmp_path):
    path = write_config(tmp_path, "output_dir: x\ntrain:\n  learnin_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value)
    assert "train.learnin_rate" in str(e.value)
    assert "train.learning_rate" in str(e.value)  # the suggestion


def test_errors_give_the_yaml_line(tmp_path):
    text = ("output_dir: x\n"            # 1
            "data:\n"                    # 2
            "  max_length: 2048\n"       # 3
            "  sead: 42\n")              # 4
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:4: unknown key 'data.sead'; did you mean data.seed?"
    path = write_config(tmp_path, "output_dir: x\nlora:\n  alpha: 8\n  r: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}:4: lora.r must be")  # a cross-field check, on its key's line
    text = ("output_dir: x\n"             # 1
            "evaluate:\n"                 # 2
            "  compare:\n"                # 3
            "    - name: a\n"             # 4
            "    - name: b\n"             # 5
            "      thinking: maybe\n")    # 6
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}:6: 'evaluate.compare[1].thinking'")


def test_a_bad_set_is_blamed_on_the_set_not_the_file(tmp_path):
    path = write_config(tmp_path, "output_dir: x\ndata:\n  max_length: 2048\nlora:\n  r: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, ["data.max_length=abc"])
    assert str(e.value) == "--set data.max_length=abc: 'data.max_length' must be a whole number, got 'abc'"
    with pytest.raises(ConfigError) as e:
        load_config(path, ["lora.r=0"])
    assert str(e.value).startswith("--set lora.r=0: lora.r must be")
    with pytest.raises(ConfigError) as e:
        load_config(path, ["trian.max_steps=3"])
    assert str(e.value) == "--set trian.max_steps=3: unknown key 'trian'; did you mean train?"


def test_unknown_section(tmp_path):
    path = write_config(tmp_path, "output_dir: x\ntrainer: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'trainer'"):
        load_config(path)


def test_renamed_key_gets_a_hint(tmp_path):
    path = write_config(tmp_path, "output_dir: x\ntrain:\n  warmup_ratio: 0.05\n")
    with pytest.raises(ConfigError, match="warmup_steps"):
        load_config(path)


def test_wrong_type_and_bad_value(tmp_path):
    with pytest.raises(ConfigError, match="data.max_length' must be a whole number"):
        load_config(write_config(tmp_path, "output_dir: x\ndata:\n  max_length: long\n"))
    with pytest.raises(ConfigError, match="data.format' = 'xml' is not one of"):
        load_config(write_config(tmp_path, "output_dir: x\ndata:\n  format: xml\n"))
    with pytest.raises(ConfigError, match="lora.r must be >= 1"):
        load_config(write_config(tmp_path, "output_dir: x\nlora:\n  r: 0\n"))
    with pytest.raises(ConfigError, match="missing required key 'output_dir'"):
        load_config(write_config(tmp_path, "data: {}\n"))


def test_yaml_11_exponent_floats_and_overrides(tmp_path):
    path = write_config(tmp_path, "output_dir: x\ntrain:\n  learning_rate: 1e-4\n")
    cfg = load_config(path, ["train.learning_rate=3e-5", "data.max_samples=7", "data.train_files=a.jsonl",
                             "evaluate.compare=[{name: a, thinking: [true, false]}]"])
    assert cfg.train.learning_rate == 3e-5
    assert cfg.data.max_samples == 7
    assert cfg.data.train_files == ["a.jsonl"]
    assert cfg.evaluate.compare[0].name == "a" and cfg.evaluate.compare[0].thinking == [True, False]
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        load_config(path, ["train.nope=1"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(path, ["train.learning_rate"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs" / "qwen3-8b-huatuo.yaml", ["train.learning_rate=1e-4"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["learning_rate"] == 1e-4


def test_cli_reports_config_errors_without_traceback(tmp_path):
    path = write_config(tmp_path, "output_dir: x\ndata:\n  bogus: 1\n")
    r = subprocess.run([sys.executable, "-m", "medtune", "prepare", str(path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown key 'data.bogus'" in r.stderr and str(path) in r.stderr
    assert "Traceback" not in r.stderr


def test_help_lists_stages():
    r = subprocess.run([sys.executable, "-m", "medtune", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for stage in ("prepare",):
        assert stage in r.stdout



def test_one_dtype_table_names_every_dtype_medtune_takes(tmp_path):
    """Each name -> the torch dtype and byte size (by hand); the config's dtype fields offer exactly those names;
    torch's own names are the old spellings; load_model takes the table's names as well as torch's."""
    import typing

    import torch

    from medtune.config import DTYPES, OLD_DTYPES, ModelConfig, QuantizationConfig
    from medtune.modeling import load_model, torch_dtype
    from tests.conftest import small_vocab_model

    expected = {"bf16": (torch.bfloat16, 2), "fp16": (torch.float16, 2), "fp32": (torch.float32, 4)}
    assert {n: (torch_dtype(n), torch_dtype(n).itemsize) for n in DTYPES if n != "auto"} == expected
    assert [torch_dtype(old) for old in ("bfloat16", "float16", "float32")] == [torch.bfloat16, torch.float16,
                                                                                 torch.float32]
    assert OLD_DTYPES == {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
    with pytest.raises(ValueError, match="'auto'"):
        torch_dtype("auto")
    hints = typing.get_type_hints(ModelConfig)
    assert typing.get_args(hints["torch_dtype"]) == DTYPES
    assert typing.get_args(typing.get_type_hints(QuantizationConfig)["compute_dtype"]) == DTYPES[1:]
    model, _ = load_model(str(small_vocab_model(tmp_path / "m")), dtype="fp16", device="cpu")
    assert model.dtype == torch.float16


def test_the_memory_plan_counts_weight_bytes_of_each_dtype():
    """Frozen weights: 2 bytes a parameter in bf16 and fp16, 4 in fp32 (the tiny model: counted on meta)."""
    from dataclasses import replace

    from medtune.config import config_from_dict
    from medtune.train import plan

    cfg = config_from_dict({"output_dir": "x"})
    shape = plan.count_model(plan.model_config(cfg.model.name_or_path), cfg, "fp32")
    setup = plan.setup_from_config(cfg, 1, None, "cpu")
    frozen = shape.quantizable_params + shape.other_params
    weights = {p: plan.estimate(shape, replace(setup, precision=p)).memory["weights"] for p in ("bf16", "fp16", "fp32")}
    assert weights == {"bf16": 2 * frozen, "fp16": 2 * frozen, "fp32": 4 * frozen}
