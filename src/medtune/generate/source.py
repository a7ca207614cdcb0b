"""What a model name or path is: a run directory (adapter + its base), a model directory, a hub id or
`builtin:tiny-qwen3`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medtune.errors import UserError


@dataclass(frozen=True)
class ModelSource:
    base: str
    """Path or hub id for from_pretrained."""
    adapter: Path | None
    """The LoRA adapter directory (a run directory), or None for a plain model."""
    model_id: str
    """The name clients see: the run directory's name, the model directory's name, or the hub id."""


def resolve_model_source(name_or_path: str | Path) -> ModelSource:
    """A run directory (adapter + base from adapter_config.json), a model directory, a hub id or builtin:tiny-qwen3."""
    from medtune.modeling import resolve_base_model

    path = Path(name_or_path)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return ModelSource(_adapter_base(path), path, path.resolve().name)
        if (path / "config.json").is_file():
            return ModelSource(str(path), None, path.resolve().name)
        raise UserError(f"{path} is neither a run directory (no adapter_config.json: has `medtune train` finished?) "
                        "nor a model directory (no config.json)")
    if path.is_absolute() or str(name_or_path).startswith((".", "~")) or path.exists():
        raise UserError(f"{path} does not exist (expected a run directory, a model directory or a hub model id)")
    return ModelSource(resolve_base_model(str(name_or_path)), None, str(name_or_path))


def read_adapter_config(adapter: str | Path) -> dict:
    config_path = Path(adapter) / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{config_path}, line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: expected a JSON object")
    return config


def _adapter_base(run_dir: Path) -> str:
    from medtune.config import BUILTIN_TINY_QWEN3
    from medtune.modeling import resolve_base_model

    config_path = run_dir / "adapter_config.json"
    base = read_adapter_config(run_dir).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise UserError(f"{config_path}: field 'base_model_name_or_path' is missing or empty; it must name the base "
                        "model (a hub id or a directory)")
    if base == BUILTIN_TINY_QWEN3:  # saved in the run directory
        return resolve_base_model(base, run_dir)
    if Path(base).is_absolute():
        if not Path(base).exists():
            raise UserError(f"{config_path}: field 'base_model_name_or_path' names {base}, which does not exist")
        return base
    # A relative path is taken relative to the run directory first (a moved run keeps working), else as given
    # (relative to the working directory, or a hub id).
    return str(run_dir / base) if (run_dir / base).exists() else base
