"""Eval loss and perplexity of a model (+ adapter) on tokenized dialogues, token-weighted.

Run as: medtune evaluate perplexity --model M [--adapter A] --data RUN_DIR|DATASET_DIR|FILE --output F.json

eval_loss = (sum of the cross-entropy of every target token) / (number of target tokens), and
perplexity = exp(eval_loss): every target token weighs the same, however the samples are batched (a
mean of per-batch means would weigh the tokens of short batches more). Target tokens are those the
training labels mark (`medtune prepare`'s rule: each answer and its end-of-turn token). A dialogue
file is prepared with exactly that rule: it goes through `prepare_dataset` into a temporary run.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from medtune.errors import UserError
from medtune.modeling import dataset_loss
from medtune.rundir import write_json


def is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").is_file()


def load_eval_dataset(data: str | Path, model: str, adapter: str | None = None, fmt: str = "auto",
                      max_length: int = 2048, log=print):
    """Tokenized samples with labels from a run directory (its data/val), a saved dataset, or a dialogue file."""
    import datasets

    path = Path(data)
    if path.is_dir() and is_saved_dataset(path / "data" / "val"):
        return datasets.load_from_disk(str(path / "data" / "val"))
    if path.is_dir() and is_saved_dataset(path):
        return datasets.load_from_disk(str(path))
    if path.is_file():
        return _prepare_file(path, model, adapter, fmt, max_length, log)
    raise UserError(f"--data {data}: expected a run directory (with data/val), a saved dataset directory, or a "
                    "dialogue file (.jsonl/.json/.parquet/.csv)")


def _prepare_file(path: Path, model: str, adapter: str | None, fmt: str, max_length: int, log):
    import datasets

    from medtune.config import config_from_dict
    from medtune.data.prepare import prepare_dataset

    # The adapter's own tokenizer when it saved one (the train stage does), else the model's.
    tokenizer = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else None
    with tempfile.TemporaryDirectory(prefix="medtune-ppl-") as tmp:
        cfg = config_from_dict({"output_dir": tmp, "model": {"name_or_path": model, "tokenizer": tokenizer},
                                "data": {"train_files": [str(path)], "format": fmt, "max_length": max_length,
                                         "dedup": False}})
        stats = prepare_dataset(cfg, force=True, log=lambda *_: None)
        if stats["rejected"] or stats["dropped_too_long"]:
            log(f"perplexity: {stats['rejected']} record(s) of {path} rejected and {stats['dropped_too_long']} too "
                f"long (reasons: {stats['rejected_reasons']}); scoring the {stats['train']} usable samples")
        return datasets.load_from_disk(str(Path(tmp) / "data" / "train"), keep_in_memory=True)  # tmp goes away


def token_weighted_loss(model, dataset, batch_size: int = 8, pad_id: int = 0) -> dict:
    """Sum of target-token cross-entropy over all samples / number of target tokens, and its exp."""
    loss_sum, n_tokens = dataset_loss(model, dataset, batch_size, pad_id)
    if n_tokens == 0:
        raise UserError("no target tokens to score: every label is -100")
    eval_loss = loss_sum / n_tokens
    return {"eval_loss": eval_loss, "perplexity": math.exp(eval_loss), "samples": len(dataset), "tokens": n_tokens}


def evaluate_perplexity(model: str, adapter: str | None, data: str | Path, output: str | Path | None = None,
                        batch_size: int = 8, dtype: str = "auto", fmt: str = "auto", max_length: int = 2048,
                        with_base: bool = False, log=print) -> dict:
    """Perplexity of model (+ adapter) on `data`; with_base adds the base model's (adapter disabled) as `baseline`."""
    from medtune.modeling import load_model

    dataset = load_eval_dataset(data, model, adapter, fmt, max_length, log)
    if len(dataset) == 0:
        raise UserError(f"{data}: no samples to score")
    started = time.perf_counter()
    net, tokenizer = load_model(model, adapter, dtype=dtype)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result = token_weighted_loss(net, dataset, batch_size, pad_id)
    result.update(model=model, adapter=str(adapter) if adapter else None, data=str(data))
    if with_base and adapter:
        with net.disable_adapter():
            base = token_weighted_loss(net, dataset, batch_size, pad_id)
        result["baseline"] = {"model": model, "eval_loss": base["eval_loss"], "perplexity": base["perplexity"]}
    result["seconds"] = time.perf_counter() - started
    log(f"perplexity: {result['perplexity']:.3f} (eval loss {result['eval_loss']:.4f}) over {result['tokens']} "
        f"target tokens in {result['samples']} samples"
        + (f"; base model {result['baseline']['perplexity']:.3f}" if "baseline" in result else ""))
    if output is not None:
        write_json(output, result)
    return result
