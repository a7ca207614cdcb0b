"""Perplexity: token-weighted over target tokens, equal to a hand computation on a tiny model, and the
same for a dialogue file as for the prepared split it came from (the training label rule)."""

from __future__ import annotations

import json
import math

import pytest

from medtune.evaluate.perplexity import evaluate_perplexity, load_eval_dataset
from medtune.modeling import batches_by_length
from tests.eval_fixtures import tiny_run  # noqa: F401


def hand_loss(model, dataset) -> tuple[float, int]:
    """One sample at a time, full logits: -log p(label t | tokens < t) summed over labels != -100."""
    import torch

    total, n = 0.0, 0
    with torch.no_grad():
        for row in dataset:
            logp = torch.log_softmax(model(input_ids=torch.tensor([row["input_ids"]])).logits[0].double(), -1)
            for t, label in enumerate(row["labels"]):
                if t > 0 and label != -100:
                    total -= logp[t - 1, label].item()
                    n += 1
    return total / n, n


def test_perplexity_is_the_token_weighted_hand_computation(tiny_run, tmp_path):
    from medtune.modeling import load_model

    base = str(tiny_run / "base_model")
    out = tmp_path / "perplexity.json"
    # batch size 2 over 5 samples of different lengths: padded batches of unequal token counts.
    result = evaluate_perplexity(base, str(tiny_run), tiny_run, out, batch_size=2, with_base=True,
                                 log=lambda *_: None)
    dataset = load_eval_dataset(tiny_run, base)
    assert len(set(len(x) for x in dataset["input_ids"])) > 1
    tuned, _ = load_model(base, str(tiny_run))
    loss, n = hand_loss(tuned, dataset)
    assert result["tokens"] == n and result["samples"] == len(dataset) == 5
    assert result["eval_loss"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    base_loss, _ = hand_loss(load_model(base)[0], dataset)
    assert result["baseline"]["eval_loss"] == pytest.approx(base_loss, rel=1e-5)
    assert result["baseline"]["eval_loss"] != pytest.approx(loss, rel=1e-4)  # the adapter changes the model
    saved = json.loads(out.read_text())
    assert {"eval_loss", "perplexity", "samples", "tokens", "model", "adapter", "data"} <= set(saved)
    assert saved["adapter"] == str(tiny_run)


def test_a_dialogue_file_is_scored_with_the_training_labels(tiny_run):
    base = str(tiny_run / "base_model")
    from_split = evaluate_perplexity(base, str(tiny_run), tiny_run, batch_size=4, log=lambda *_: None)
    # data/val was prepared from val.jsonl: scoring the file itself must give the same tokens and loss.
    from_file = evaluate_perplexity(base, str(tiny_run), tiny_run.parent / "val.jsonl", batch_size=3,
                                    max_length=128, log=lambda *_: None)
    assert (from_file["samples"], from_file["tokens"]) == (from_split["samples"], from_split["tokens"])
    assert from_file["eval_loss"] == pytest.approx(from_split["eval_loss"], rel=1e-6)


def test_batches_by_length():
    lengths, targets = [5, 50, 7, 49, 6], [2, 30, 3, 30, 2]
    assert batches_by_length(lengths, targets, batch_size=2) == [[0, 4], [2, 3], [1]]
    # The target budget splits batches too; a sample over budget still gets its own batch.
    assert batches_by_length(lengths, targets, batch_size=8, max_targets=35) == [[0, 4, 2], [3], [1]]
    assert batches_by_length([9], [100], batch_size=8, max_targets=10) == [[0]]
