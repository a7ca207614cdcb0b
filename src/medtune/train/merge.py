"""Merge a run's LoRA adapter into its base model: one standalone model directory, checked before use.

Run as: medtune merge RUN_DIR --output DIR [--dtype auto|bf16|fp16|fp32] [--force]

The merge happens in fp32 and is verified twice on a few real chat prompts before anything is called a
success: (1) the merged fp32 model's logits equal base+adapter's within MERGE_TOLERANCE["fp32"];
(2) the saved model, loaded back from disk in the chosen dtype, is within MERGE_TOLERANCE[dtype] of
base+adapter. Differences are measured as max |logit difference| / max(1, max |logit|) over every
prompt position. fp32 merging differs by ~1e-6 (FINDINGS.md); the looser bf16/fp16 limits are the cost
of storing weights in those dtypes (bf16 keeps 8 bits of mantissa), not of merging.

Output: model safetensors + config.json, the tokenizer (with its chat template), generation_config.json
with Qwen3's non-thinking sampling defaults, and medtune_merge.json (what was merged and the checks).
It is written to a temporary directory next to DIR and renamed into place, so DIR is never half-written.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from medtune.config import DTYPES, OLD_DTYPES, QWEN3_SAMPLING
from medtune.errors import UserError
from medtune.generate.source import resolve_model_source
from medtune.modeling import load_causal_lm, load_model, torch_dtype
from medtune.rundir import read_json, write_json

SAVE_DTYPES = tuple(name for name in DTYPES if name != "auto")
MERGE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
"""Largest allowed max |Δlogit| / max(1, max |logit|) against base+adapter, per saved dtype."""
EMBEDDING_MODULES = ("embed_tokens", "lm_head")
CHECK_CONVERSATIONS = [
    [{"role": "user", "content": "医生您好，我最近总是头疼，晚上也睡不好，需要做什么检查吗？"}],
    [{"role": "system", "content": "You are a careful medical assistant."},
     {"role": "user", "content": "What are the warning signs of a stroke?"}],
    [{"role": "user", "content": "孩子发烧38.5度，能吃布洛芬吗？"},
     {"role": "assistant", "content": "6个月以上的孩子可以按体重使用布洛芬，注意间隔时间。"},
     {"role": "user", "content": "那多久能再吃一次？"}],
]


class MergeError(UserError):
    """The merge cannot be done as asked, or its result failed verification (nothing was written)."""


def merge_adapter(run_dir: str | Path, output: str | Path, dtype: str | None = None, force: bool = False,
                  device: str | None = None, log=print) -> dict:
    """Merge RUN_DIR's adapter into its base, verify it, and write the model to `output`; returns the record."""
    import torch

    started = time.time()
    source = resolve_model_source(run_dir)
    if source.adapter is None:
        raise MergeError(f"{run_dir} has no LoRA adapter (adapter_config.json) to merge; it is already a plain model")
    output = Path(output)
    _check_output(output, source.adapter, source.base, force)
    base_config = _read_config(source.base)
    if dtype in (None, "auto"):  # the base model's own dtype
        dtype = OLD_DTYPES.get(str(base_config.get("dtype")), "fp32")
    if dtype not in SAVE_DTYPES:
        raise MergeError(f"--dtype must be one of auto, {', '.join(SAVE_DTYPES)}, not {dtype!r}")
    tied = bool(base_config.get("tie_word_embeddings", False))
    _check_tied_targets(source.adapter, tied)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # An adapter trained on a quantized base (QLoRA) is merged into the unquantized base weights, loaded in fp32
    # here: merging into dequantized 4-bit weights would bake the quantization error into every layer.
    quantized_base = read_json(source.adapter / "train_results.json", {}).get("quantization")
    log(f"merge: loading {source.base} + adapter {source.adapter} (fp32, {device})"
        + (f"; the adapter was trained on a {_bits(quantized_base)} base, merged into the full-precision weights"
           if quantized_base else ""))
    merged, tokenizer, probe = _merge_in_memory(source, device, tied)
    record = {
        "source_run": str(Path(run_dir).resolve()), "base_model": source.base,
        "adapter": str(source.adapter.resolve()), "dtype": dtype, "tie_word_embeddings": tied,
        "device": device, "check_prompts": len(CHECK_CONVERSATIONS), "check_tokens": int(probe.mask.sum()),
        "logit_scale": probe.scale, "tolerance": MERGE_TOLERANCE, "checks": probe.checks,
        "trained_on_quantized_base": quantized_base,
    }
    tmp = _save_to_temporary(merged, tokenizer, output, dtype, log)
    del merged  # freed before the saved copy is loaded back: one model in memory at a time
    try:
        probe.checks["saved"] = _check_saved(tmp, probe, dtype, tied, device)
        record["seconds"] = round(time.time() - started, 3)
        write_json(tmp / "medtune_merge.json", record)
        _move_into_place(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log_merged(record, output, quantized_base, log)
    return record


@dataclass
class _Probe:
    """The check prompts, the base+adapter logits on them, and the checks so far."""

    batch: dict
    mask: object
    reference: object
    scale: float
    checks: dict


def _merge_in_memory(source, device: str, tied: bool):
    """base+adapter in fp32, merged; the merge checked against base+adapter on the check prompts."""
    import torch

    model, tokenizer = load_model(source.base, adapter=source.adapter, dtype="fp32", device=device)
    batch = _check_batch(tokenizer, device)
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        reference = model(**batch).logits.float()[mask]
        with model.disable_adapter():
            base_logits = model(**batch).logits.float()[mask]
        merged = model.merge_and_unload()
        merged_logits = merged(**batch).logits.float()[mask]
    scale = max(1.0, reference.abs().max().item())
    checks = {
        "adapter_effect": _relative_diff(base_logits, reference, scale),
        "merge_fp32": _check("merge_fp32", _relative_diff(merged_logits, reference, scale), MERGE_TOLERANCE["fp32"]),
    }
    if tied:
        _check_still_tied(merged, "the merged model")
    return merged, tokenizer, _Probe(batch, mask, reference, scale, checks)


def _save_to_temporary(merged, tokenizer, output: Path, dtype: str, log) -> Path:
    """The merged model in `dtype` with its tokenizer and generation config, in a directory beside `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"merge: saving {dtype} to {output}")
    try:
        merged.to(torch_dtype(dtype))
        merged.generation_config = _generation_config(tokenizer, merged.generation_config)
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _check_saved(tmp: Path, probe: _Probe, dtype: str, tied: bool, device: str) -> dict:
    """The saved model, loaded back from disk, against base+adapter on the check prompts."""
    import torch

    saved = load_causal_lm(str(tmp), dtype=torch_dtype(dtype)).to(device).eval()
    if tied:
        _check_still_tied(saved, "the saved model")
    with torch.inference_mode():
        saved_logits = saved(**probe.batch).logits.float()[probe.mask]
    return _check(f"saved_{dtype}", _relative_diff(saved_logits, probe.reference, probe.scale), MERGE_TOLERANCE[dtype])


def _log_merged(record: dict, output: Path, quantized_base, log) -> None:
    checks, dtype = record["checks"], record["dtype"]
    merge_check, saved_check = checks["merge_fp32"], checks["saved"]
    log(f"merge: verified on {record['check_prompts']} prompts ({record['check_tokens']} positions): "
        f"fp32 merge differs by {merge_check['max_relative_diff']:.1e} (limit {merge_check['limit']:.0e}), "
        f"saved {dtype} by {saved_check['max_relative_diff']:.1e} (limit {saved_check['limit']:.0e}); "
        f"the adapter itself moves the logits by {checks['adapter_effect']:.1e}")
    if checks["adapter_effect"] <= MERGE_TOLERANCE["fp32"]:
        log("merge: note: the adapter hardly changes the base model's logits (untrained LoRA?), so this check "
            "cannot tell a merged adapter from a missing one")
    if quantized_base:
        log(f"merge: note: this merged model comes from a {_bits(quantized_base)} base: training saw the quantized "
            "weights, the merged model has the full-precision ones plus the LoRA update, so its answers can differ "
            "slightly from base+adapter loaded in 4 bit")
    log(f"merge: wrote {output} (load it like any model: medtune chat {output} / medtune serve {output})")


def _bits(quantization: dict) -> str:
    return f"{quantization['bits']}-bit" + (f" {quantization['quant_type']}" if quantization["bits"] == 4 else "")


def _check_output(output: Path, adapter: Path, base: str, force: bool) -> None:
    out = output.resolve()
    protected = [adapter.resolve()] + ([Path(base).resolve()] if Path(base).exists() else [])
    for p in protected:
        if out == p or out in p.parents:
            raise MergeError(f"--output {output} would replace {p}, which the merge reads; choose another directory")
    if output.exists() and not output.is_dir():
        raise MergeError(f"--output {output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise MergeError(f"--output {output} is not empty; use --force to replace it")


def _read_config(base: str) -> dict:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base).to_dict()
    except OSError as e:
        raise MergeError(f"cannot read the base model's config.json from '{base}': {e}") from None


def _check_tied_targets(adapter: Path, tied: bool) -> None:
    """Refuse adapters that train a tied embedding: merging would change the input and output embedding together."""
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(str(adapter))
    targets = config.target_modules if isinstance(config.target_modules, (list, set, tuple)) else [config.target_modules]
    touched = sorted({m for m in [*(targets or []), *(config.modules_to_save or [])]
                      if m and str(m).split(".")[-1] in EMBEDDING_MODULES})
    if tied and touched:
        raise MergeError(f"{adapter / 'adapter_config.json'}: the adapter trains {', '.join(touched)}, but the base "
                         "model ties its input and output embeddings (tie_word_embeddings=true), so merging would "
                         "change both at once; serve the adapter unmerged (medtune serve RUN_DIR) instead")


def _check_batch(tokenizer, device: str) -> dict:
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True, enable_thinking=False)
             for c in CHECK_CONVERSATIONS]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def _relative_diff(a, b, scale: float) -> float:
    return (a - b).abs().max().item() / scale


def _check(name: str, diff: float, limit: float) -> dict:
    if not diff <= limit:  # also catches NaN
        raise MergeError(f"merge verification failed ({name}): the merged model's logits differ from base+adapter "
                         f"by {diff:.3g} (relative), more than the allowed {limit:g}; nothing was written")
    return {"max_relative_diff": diff, "limit": limit, "passed": True}


def _check_still_tied(model, what: str) -> None:
    if (model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
            or not model.config.tie_word_embeddings):
        raise MergeError(f"{what} no longer ties its input and output embeddings; nothing was written")


def _generation_config(tokenizer, base):
    """Qwen3's non-thinking sampling, and generation ends at the end of the assistant's turn."""
    from transformers import GenerationConfig

    eos = base.eos_token_id if base is not None else None
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = [i for i in [end_of_turn if end_of_turn != tokenizer.unk_token_id else None, *eos, tokenizer.eos_token_id]
           if i is not None]
    return GenerationConfig(bos_token_id=base.bos_token_id if base is not None else None,
                            eos_token_id=list(dict.fromkeys(ids)), pad_token_id=tokenizer.pad_token_id,
                            do_sample=True, **QWEN3_SAMPLING[False])


def _move_into_place(tmp: Path, output: Path) -> None:
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, output)
