"""QLoRA: load the frozen base weights quantized by bitsandbytes (model.quantization) and prepare them for LoRA.

The adapter trains in higher precision on top of 4-bit (NF4/FP4) or 8-bit base weights. `medtune merge` loads
the base unquantized (fp32) and merges there; the merged model says it comes from a quantized base.
Measured here: bitsandbytes 0.50.2 quantizes, runs forward and backward in 4 bit on CPU (docs/findings.md).
"""

from __future__ import annotations

import importlib.util
import os

from medtune.config import QuantizationConfig
from medtune.errors import UserError
from medtune.modeling import torch_dtype


def describe(q: QuantizationConfig | None) -> str | None:
    """One phrase for logs, model cards and merge records, e.g. '4-bit nf4 (double quantization, bf16 compute)'."""
    if q is None:
        return None
    if q.bits == 8:
        return "8-bit (LLM.int8)"
    return f"{q.bits}-bit {q.quant_type} ({'double quantization, ' if q.double_quant else ''}{q.compute_dtype} compute)"


def load_kwargs(q: QuantizationConfig | None, device: str) -> dict:
    """Extra from_pretrained arguments that quantize the base model while it loads."""
    if q is None:
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("model.quantization needs bitsandbytes: pip install 'medtune[qlora]' (bitsandbytes 0.50, "
                        "which runs on CUDA and, measured with 0.50.2, on CPU)")
    from transformers import BitsAndBytesConfig

    if q.bits == 4:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                                 bnb_4bit_use_double_quant=q.double_quant,
                                 bnb_4bit_compute_dtype=torch_dtype(q.compute_dtype))
    else:
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    # A quantized model cannot be moved after loading: place it on this process's device now.
    device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))} if device == "cuda" else {"": "cpu"}
    return {"quantization_config": bnb, "device_map": device_map}


def prepare_for_training(model, gradient_checkpointing: bool):
    """peft's prepare_model_for_kbit_training: freeze the base, upcast its non-quantized weights (embeddings, norms,
    output layer) to fp32 for stable gradients, and turn on non-reentrant checkpointing when asked."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})
