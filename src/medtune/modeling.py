"""Models: the builtin tiny Qwen3, the Qwen3-8B architecture, and loading base (+ adapter) for any stage.

`builtin:tiny-qwen3` is a 2-layer, 64-wide Qwen3-architecture model with the real Qwen3 vocabulary (untied
input and output embeddings),
random-initialised from a fixed seed and saved once into the run directory (`<output_dir>/base_model`),
so every later stage and any user loads base + adapter the standard way.
"""

from __future__ import annotations

import os
from pathlib import Path

from medtune.assets import find_qwen3_tokenizer
from medtune.config import BUILTIN_TINY_QWEN3, DTYPE_NAMES, QWEN3_SAMPLING
from medtune.errors import UserError

# The token ids of the real Qwen3 tokenizer.
QWEN3_SPECIAL_IDS = {"bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643}

TINY_QWEN3 = dict(
    vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, rope_theta=1_000_000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=False, **QWEN3_SPECIAL_IDS,
)
# Untied on purpose: with frozen random embeddings a 64-wide model cannot represent word frequencies, so the
# demo trains lm_head in full next to the LoRA (configs/demo.yaml, lora.modules_to_save), and an untied head
# can be trained and merged without touching the input embeddings.

# Qwen/Qwen3-8B config.json values (enough to build the architecture without downloading it).
QWEN3_8B = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1_000_000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False, **QWEN3_SPECIAL_IDS,
)


def torch_dtype(name: str):
    """The torch dtype for a name in the one dtype table (bf16, fp16, fp32) or for torch's own name (bfloat16,
    float16, float32). `auto` depends on the device: the caller settles it first."""
    import torch

    torch_name = DTYPE_NAMES.get(name, name)
    if torch_name == "auto" or torch_name not in DTYPE_NAMES.values():
        raise ValueError(f"dtype {name!r}: expected one of {', '.join(n for n in DTYPE_NAMES if n != 'auto')}")
    return getattr(torch, torch_name)


def load_causal_lm(name_or_path: str, **kwargs):
    """AutoModelForCausalLM.from_pretrained, with CPU huge pages on first: the one place every stage that
    trains or generates with transformers loads its model. `attn_implementation="sdpa_varlen"` is medtune's
    (medtune.attention), registered with transformers here."""
    enable_cpu_hugepages()
    from transformers import AutoModelForCausalLM

    if kwargs.get("attn_implementation") == "sdpa_varlen":
        from medtune.attention import register

        register()

    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)


def enable_cpu_hugepages() -> None:
    """Let PyTorch's CPU allocator back large tensors with transparent huge pages (2 MB pages).

    Vocabulary-sized logits are allocated and freed every step; with 4 KB pages each one costs hundreds
    of thousands of page faults (here, more system than user time). Measured 3x faster allocation on
    this 2-core machine. PyTorch reads the variable when it allocates, so setting it when the model loads
    (load_causal_lm, the one caller) is early enough; a value the user set is kept.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def qwen3_config(**values):
    from transformers import Qwen3Config

    theta = values.pop("rope_theta", 1_000_000.0)
    return Qwen3Config(rope_parameters={"rope_type": "default", "rope_theta": theta}, **values)


def build_tiny_qwen3(dest: str | Path, seed: int = 0, **overrides) -> Path:
    """Create the tiny random Qwen3 (with the real tokenizer and a generation config) in `dest`."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3ForCausalLM

    dest = Path(dest)
    tokenizer = AutoTokenizer.from_pretrained(str(find_qwen3_tokenizer()))
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(qwen3_config(**{**TINY_QWEN3, **overrides}))
    model.generation_config = GenerationConfig(
        bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643,
        do_sample=True, **QWEN3_SAMPLING[False])
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, dest)
    return dest


def resolve_base_model(name_or_path: str, run_dir: str | Path | None = None) -> str:
    """A path or hub id for from_pretrained; the builtin tiny model is created on first use."""
    if name_or_path != BUILTIN_TINY_QWEN3:
        return name_or_path
    if run_dir is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medtune"
        dest = cache / "tiny-qwen3"
    else:
        dest = Path(run_dir) / "base_model"
    if not (dest / "config.json").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        build_tiny_qwen3(dest)
    return str(dest.resolve())


def load_model(name_or_path: str, adapter: str | Path | None = None, dtype: str = "auto", device: str | None = None,
               attn_implementation: str | None = None, trust_remote_code: bool = False):
    """Base model (+ LoRA adapter, not merged) and its tokenizer, ready for inference. `dtype`: auto (bf16 on a
    GPU that has it, else fp32) or any name torch_dtype takes."""
    import torch
    from transformers import AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    try:
        model = load_causal_lm(name_or_path, dtype=torch_dtype(dtype), attn_implementation=attn_implementation,
                               trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UserError(f"cannot load the model '{name_or_path}': {e}") from None
    tok_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else name_or_path
    tokenizer = AutoTokenizer.from_pretrained(str(tok_source), trust_remote_code=trust_remote_code)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters, counting each shared tensor once (tied embeddings)."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def check_lora_targets(model, targets: list[str], where: str = "lora.target_modules") -> None:
    """Raise a UserError naming every entry of `targets` that matches no module of `model`, and the module names
    there are, before any training (peft would raise NoMatchingPeftModuleError deep in the trainer, or skip a
    mistyped entry when another matches). An entry matches as peft matches a list: the module's full name, or
    its last dotted parts."""
    names = [name for name, _ in model.named_modules() if name]
    unmatched = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if not unmatched:
        return
    # The names worth offering: modules holding a 2-D weight (Linear, Embedding), by their last part.
    offered = sorted({n.rpartition(".")[2] for n, m in model.named_modules()
                      if n and not any(True for _ in m.children()) and getattr(m, "weight", None) is not None
                      and getattr(m.weight, "dim", lambda: 0)() == 2})
    raise UserError(f"{where}: {', '.join(repr(t) for t in unmatched)} matches no module of "
                    f"{type(model).__name__}; modules with weights are named {', '.join(offered)}. Fix the list "
                    f"(e.g. --set {where}=[q_proj,v_proj]) before training.")


IGNORE = -100
MAX_TARGETS_PER_BATCH = 4096
"""Logits are computed only at target positions; this bounds them (4096 x 151,936 fp32 = 2.5 GB)."""


def batches_by_length(lengths: list[int], targets: list[int], batch_size: int,
                      max_targets: int = MAX_TARGETS_PER_BATCH) -> list[list[int]]:
    """Sample indices grouped by similar length (little padding), each batch within the target budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out, current, budget = [], [], 0
    for i in order:
        if current and (len(current) == batch_size or budget + targets[i] > max_targets):
            out.append(current)
            current, budget = [], 0
        current.append(i)
        budget += targets[i]
    if current:
        out.append(current)
    return out


def dataset_loss(model, dataset, batch_size: int = 8, pad_id: int = 0, rank: int = 0,
                 world: int = 1) -> tuple[float, int]:
    """(sum of the cross-entropy of every target token, number of target tokens) over a prepared dataset.

    Token-weighted, with the labels as prepared (-100 = not scored), shifted as in training; the logits
    are computed only at target positions (`logits_to_keep`), through any wrapper (PEFT). The one
    definition of eval loss: training's evaluations and `medtune evaluate perplexity` both use it.

    With world > 1 this rank scores batches rank, rank + world, ... of the one batch list, and every rank
    runs the same number of forwards: under FSDP and ZeRO-3 each forward gathers weights from all ranks,
    so a rank that skipped one would leave the others waiting forever. Rounds past the last batch repeat
    the first batch and count nothing.
    """
    import torch
    import torch.nn.functional as F

    columns = dataset.select_columns(["input_ids", "labels"])[:]
    ids_all, labels_all = columns["input_ids"], columns["labels"]
    targets = [sum(1 for t in labels[1:] if t != IGNORE) for labels in labels_all]
    batches = batches_by_length([len(x) for x in ids_all], targets, batch_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, n_tokens = 0.0, 0
    with torch.no_grad():  # not inference_mode: FSDP2 must be able to reshard the gathered weights
        for i in range(rank, -(-len(batches) // world) * world, world):
            counted = i < len(batches)
            ids, labels, mask = right_padded(ids_all, labels_all, batches[i] if counted else batches[0], pad_id)
            # The logit at position t predicts token t + 1: keep only positions whose next token is a target.
            shifted = labels[:, 1:]
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = shifted != IGNORE
            if not keep.any():
                if world == 1:
                    continue
                counted, keep[:, -1] = False, True  # the other ranks run a forward now: so must this one
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep.to(device),
                        use_cache=False)
            if counted:  # both sides flatten row by row, so logit k belongs to target k
                loss_sum += F.cross_entropy(out.logits.float(), shifted[shifted != IGNORE].to(device),
                                            reduction="sum").item()
                n_tokens += int(keep.sum())
    model.train(was_training)
    return loss_sum, n_tokens


def right_padded(ids_all: list, labels_all: list, rows: list[int], pad_id: int):
    """input_ids, labels and attention mask of these samples, right-padded (real positions unchanged)."""
    import torch

    width = max(len(ids_all[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(ids_all[i])
        ids[r, :n] = torch.tensor(ids_all[i])
        labels[r, :n] = torch.tensor(labels_all[i])
        mask[r, :n] = 1
    return ids, labels, mask
