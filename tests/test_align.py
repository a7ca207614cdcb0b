"""The align stage: the data readers' accounting, the exact ids TRL trains on, which weights the reference
holds, DPO's first loss and a planted preference, resume and the fingerprint skip.

One tiny SFT run (tests/conftest.make_lora_run: base + a non-zero LoRA, as `medtune train` leaves it) and
one 4-step DPO run are shared by the module to keep it fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from medtune.config import config_from_dict
from medtune.rundir import write_json
from tests.conftest import ROOT, copy_run

RECORDS = ROOT / "tests" / "fixtures" / "align_records.jsonl"


def align_cfg(run: Path, files, **align):
    return config_from_dict({
        "output_dir": str(run), "model": {"name_or_path": str(run / "base_model")},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "train": {"report_to": ["none"]},
        "align": {"algorithm": "dpo", "train_files": [str(f) for f in files], "max_length": 256,
                  "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2, **align}})


def planted_pairs(path: Path, n: int = 8) -> Path:
    """Every chosen answer is the same short advice, every rejected one the same other text: a preference
    the policy can learn in a few steps."""
    rows = [{"prompt": f"问题{i}：头痛{i}天了怎么办？", "chosen": "建议及时就医。", "rejected": "随便吃点药就好了吧。"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sft_run(lora_run, tmp_path_factory):
    run = copy_run(lora_run, tmp_path_factory.mktemp("align") / "run")  # dpo_run writes align/ into it
    write_json(run / "train_manifest.json", {"fingerprint": "x", "status": "completed"})
    return run


@pytest.fixture(scope="module")
def dpo_run(sft_run):
    """align_model on the planted pairs: 4 steps, checkpoints at 2 and 4."""
    from medtune.align.stage import align_model

    cfg = align_cfg(sft_run, [planted_pairs(sft_run.parent / "pairs.jsonl")], max_steps=4, learning_rate=5e-3)
    logs = []
    results = align_model(cfg, log=logs.append)
    return cfg, results, logs


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- data ----------------------------------------------------------------------------------------------


def test_reader_matrix_accounts_for_every_record(tmp_path, qwen3_tokenizer):
    from medtune.data.align import read_align_data

    cfg = align_cfg(tmp_path, [RECORDS])
    rows, summary = read_align_data(cfg, qwen3_tokenizer, [str(RECORDS)], tmp_path / "rejected.jsonl", log=print)
    # Lines 1-5 are one valid record per layout; 6 repeats 1; 7-12 are bad in six ways (hand-checked).
    assert (summary["read"], summary["kept"], summary["duplicates"], summary["rejected"]) == (12, 5, 1, 6)
    assert summary["read"] == summary["kept"] + summary["rejected"] + summary["duplicates"] + summary["too_long"] \
        + summary["unused"]
    listed = {r["line"]: r["reason"] for r in map(json.loads, (tmp_path / "rejected.jsonl").read_text().splitlines())}
    assert sorted(listed) == [6, 7, 8, 9, 10, 11, 12]
    assert listed[6].startswith("duplicate of") and "identical" in listed[7] and "kto" in listed[8]
    assert listed[9] == "missing field 'rejected'" and listed[10].startswith("invalid JSON")
    assert "control text" in listed[12]
    # The multi-turn record keeps its system prompt and earlier turns in the prompt.
    assert qwen3_tokenizer.decode(rows[1]["prompt_ids"]).startswith("<|im_start|>system\n你是医生<|im_end|>")
    assert [qwen3_tokenizer.decode(r["chosen_ids"]) for r in rows] == [
        "多休息。<|im_end|>", "建议就医。<|im_end|>", "多喝水。<|im_end|>", "规律作息。<|im_end|>", "清淡饮食。<|im_end|>"]

    kto_cfg = align_cfg(tmp_path, [RECORDS], algorithm="kto")
    rows, summary = read_align_data(kto_cfg, qwen3_tokenizer, [str(RECORDS)], tmp_path / "r2.jsonl", log=print)
    assert summary["kept"] == 6 and len(rows) == 11  # 5 pairs -> 2 rows each, plus the KTO record
    assert [r["label"] for r in rows[:2]] == [True, False]

    short = dataclasses.replace(cfg, align=dataclasses.replace(cfg.align, max_length=16, max_samples=None))
    with pytest.raises(Exception, match="no usable DPO record"):
        read_align_data(short, qwen3_tokenizer, [str(RECORDS)], tmp_path / "r3.jsonl", log=print)


def _trained_ids(tokenizer, rows, algorithm):
    """The rows the trainer medtune builds trains on (after its dataset preparation)."""
    import datasets
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig

    from medtune.align.stage import dpo_trainer_class, kto_trainer_class
    from medtune.modeling import TINY_QWEN3, qwen3_config
    from trl import DPOConfig

    model, ref = (AutoModelForCausalLM.from_config(qwen3_config(**{**TINY_QWEN3, "num_hidden_layers": 1}))
                  for _ in range(2))
    cls, config = (dpo_trainer_class(), DPOConfig) if algorithm == "dpo" else (kto_trainer_class(), KTOConfig)
    args = config(output_dir="/tmp/unused-align", use_cpu=True, bf16=False, report_to=[], max_length=None,
                    per_device_train_batch_size=8)
    trainer = cls(model=model, ref_model=ref, args=args, train_dataset=datasets.Dataset.from_list(rows),
                  processing_class=tokenizer)
    return trainer.train_dataset


@pytest.mark.parametrize("template,algorithm", [("qwen3", "dpo"), ("llama3", "dpo"), ("qwen3", "kto"),
                                                ("llama3", "kto")])
def test_trained_ids_are_the_inference_prompt_and_answer_plus_end_of_turn(tmp_path, qwen3_tokenizer, template,
                                                                          algorithm):
    import copy

    from medtune.data.align import read_align_data

    tok = copy.deepcopy(qwen3_tokenizer)
    if template == "llama3":  # a second, Llama-3-style template (no newline after the header) with a default system
        tok.chat_template = (
            "{% if messages[0]['role'] != 'system' %}<|im_start|>system: 你是医生助手<|im_end|>{% endif %}"
            "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}")
    cfg = align_cfg(tmp_path, [RECORDS], algorithm=algorithm)
    rows, _ = read_align_data(cfg, tok, [str(RECORDS)], tmp_path / "rejected.jsonl", log=print)
    trained = _trained_ids(tok, rows, algorithm)
    records = [json.loads(line) for line in RECORDS.read_text(encoding="utf-8").splitlines()[:5]]
    # Hand-written from the fixture: the history and the answers of its five valid records.
    histories = [[{"role": "user", "content": "头痛怎么办？"}], records[1]["prompt"],
                 [{"role": "user", "content": "咳嗽"}], [{"role": "user", "content": "失眠"}],
                 [{"role": "user", "content": "胃痛"}]]
    answers = [("多休息。", "不知道。"), ("建议就医。", "没事。"), ("多喝水。", "吃辣的。"), ("规律作息。", "熬夜。"),
               ("清淡饮食。", "喝酒。")]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for i, (history, (chosen, rejected)) in enumerate(zip(histories, answers)):
        prompt = enc(tok.apply_chat_template(history, add_generation_prompt=True, enable_thinking=False,
                                             tokenize=False))
        if algorithm == "dpo":
            row = trained[i]
            assert row["prompt_ids"] == prompt
            assert (row["chosen_ids"], row["rejected_ids"]) == (enc(chosen) + [im_end], enc(rejected) + [im_end])
        else:  # a pair is two KTO rows: chosen desirable, rejected not; KL completions rotated within a batch
            for row, answer, label in zip(trained.select([2 * i, 2 * i + 1]), (chosen, rejected), (True, False)):
                assert (row["prompt_ids"], row["completion_ids"], row["label"]) == (prompt, enc(answer) + [im_end],
                                                                                    label)
    if algorithm == "kto":  # TRL's KL estimate: each completion paired with its batch neighbour's prompt
        batch = trained.select(range(8))
        assert batch["KL_completion_ids"] == [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
    if template == "qwen3":  # the no-think block is on the prompt side, multi-turn included
        text = tok.decode(trained[2 if algorithm == "kto" else 1]["prompt_ids"])
        assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and "多少度？" in text


# --- the reference model -----------------------------------------------------------------------------------


def _logps(model, ids):
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()


def test_reference_is_the_sft_model_not_the_base(sft_run, dpo_run, qwen3_tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, _, _ = dpo_run
    trainer, _ = _trainer(cfg, sft_run)
    policy = trainer.model
    ids = qwen3_tokenizer("<|im_start|>user\n头痛<|im_end|>\n<|im_start|>assistant\n多休息。")["input_ids"]
    sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_run / "base_model"), str(sft_run))
    base = AutoModelForCausalLM.from_pretrained(sft_run / "base_model")
    policy.set_adapter("ref")
    ref = _logps(policy, ids)
    policy.set_adapter("default")
    assert ref == pytest.approx(_logps(sft, ids), abs=1e-4)
    assert abs(ref - _logps(base, ids)) > 1e-2
    # Frozen: no reference weight is trainable.
    assert not any(p.requires_grad for n, p in policy.named_parameters() if ".ref." in n)
    assert any(p.requires_grad for n, p in policy.named_parameters() if ".default." in n)
    assert torch.equal(*[policy.get_parameter(n.replace(".default.", x)) for x in (".default.", ".ref.")
                         for n in [next(n for n, _ in policy.named_parameters() if "lora_B.default" in n)]])


def _dataset(cfg, tok):
    import datasets

    from medtune.data.align import read_align_data

    rows, _ = read_align_data(cfg, tok, cfg.align.train_files, cfg.run_dir / "align" / "r.jsonl", log=lambda *a: None)
    return datasets.Dataset.from_list(rows)


# --- training ------------------------------------------------------------------------------------------------


def test_dpo_starts_at_ln2_and_learns_a_planted_preference(dpo_run):
    cfg, results, _ = dpo_run
    rows = [m for m in metrics(cfg.run_dir / "align") if "loss" in m]
    # Policy = reference at step 0, so every margin is 0 and the sigmoid loss is ln 2.
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-3)
    assert rows[-1]["rewards/margins"] > 0.05 and rows[-1]["loss"] < rows[0]["loss"]
    assert results["reference"] == "sft" and results["global_step"] == 4
    # on CPU the defaults train padding-free (tests/test_align_padding_free.py shows it is the padded step)
    assert (results["attn_implementation"], results["batching"]) == ("sdpa_varlen", "packing")


def _trainer(cfg, sft_run, log=lambda *a: None):
    from medtune.align.stage import build_align_trainer, load_policy, sft_adapter

    model, tok, _, backends = load_policy(cfg, sft_adapter(sft_run), log=log)
    return build_align_trainer(cfg, model, tok, _dataset(cfg, tok), backends, log=log), tok


def _own_copy(sft_run: Path, tmp_path: Path) -> Path:
    """A private copy of the module's SFT run: a trainer writes checkpoints into <run>/align/."""
    return Path(shutil.copytree(sft_run, tmp_path / "run", ignore=shutil.ignore_patterns("align")))


def test_lm_head_projects_only_completion_positions_to_the_same_log_probs(sft_run, tmp_path, monkeypatch):
    """TRL's head on CPU scores every position; medtune's scores the completion's and gets the same values."""
    import torch
    from trl.trainer import utils as trl_utils

    from medtune.align.stage import compact_lm_head

    run = _own_copy(sft_run, tmp_path)
    cfg = align_cfg(run, [planted_pairs(tmp_path / "pairs.jsonl", n=4)], max_steps=1)
    trainer, _ = _trainer(cfg, run)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model = trainer.model.eval()
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    rows = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *a: rows.append(hidden.shape[0]) or apply(hidden, *a))
    with torch.no_grad():
        with compact_lm_head():
            compact = model(**kwargs, labels=labels, fused_lm_head=True).log_probs
        full = model(**kwargs, labels=labels, fused_lm_head=True).log_probs
        logits = model(**kwargs).logits[:, :-1]  # the plain forward: an independent log-softmax
    completion = int((labels[:, 1:] != -100).sum())
    batch_size, length = batch["input_ids"].shape
    assert rows == [completion, batch_size * (length - 1)] and completion < batch_size * (length - 1) / 3
    target = labels[:, 1:]
    plain = torch.log_softmax(logits.float(), -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    plain = plain.masked_fill(target == -100, 0)
    assert torch.allclose(compact, plain, atol=1e-5) and torch.allclose(full, plain, atol=1e-5)


def test_reference_log_probs_are_computed_once_and_are_the_sft_models(sft_run, tmp_path, monkeypatch):
    """Two epochs, one reference pass over the pairs before training; the stored values are the SFT model's
    log-probs of each completion (computed here from the saved adapter, not from the trainer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    calls = []
    ref = DPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs",
                        lambda self, model, inputs: calls.append(len(inputs["input_ids"])) or ref(self, model, inputs))
    run = _own_copy(sft_run, tmp_path)
    cfg = align_cfg(run, [planted_pairs(tmp_path / "pairs.jsonl", n=4)], num_train_epochs=2,
                    per_device_train_batch_size=2, learning_rate=5e-3)
    trainer, tok = _trainer(cfg, run)
    trainer.train()
    assert trainer.state.global_step == 4 and sum(calls) == 2 * 4  # chosen + rejected of 4 pairs, once
    sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_run / "base_model"), str(sft_run))
    row = trainer.train_dataset[0]
    prompt = row["prompt_ids"]
    for key in ("chosen", "rejected"):
        whole = _logps(sft, prompt + row[f"{key}_ids"])
        assert row[f"ref_{key}_logps"] == pytest.approx(whole - _logps(sft, prompt), abs=1e-3)


def test_align_writes_the_trainer_layout_and_skips_when_current(dpo_run):
    from medtune.align.stage import align_model

    cfg, _, _ = dpo_run
    out = cfg.run_dir / "align"
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json", "README.md",
            "trainer_state.json", "train_results.json", "metrics.jsonl", "timeline.json", "data_stats.json",
            "rejected.jsonl", "align_manifest.json", "checkpoint-2", "checkpoint-4"} <= names
    assert "ref" not in names and "training_args.bin" not in names
    assert (out / "checkpoint-2" / "medtune-complete.json").is_file()
    # merge, chat and serve take the aligned adapter directory as they take a run directory
    from medtune.generate.source import resolve_model_source

    source = resolve_model_source(out)
    assert source.adapter == out and Path(source.base).resolve() == (cfg.run_dir / "base_model").resolve()
    before = (out / "adapter_model.safetensors").stat().st_mtime_ns
    logs = []
    align_model(cfg, log=logs.append)
    assert "skipping" in logs[-1] and (out / "adapter_model.safetensors").stat().st_mtime_ns == before


def test_resume_after_a_stop_gives_the_same_adapter(dpo_run, tmp_path):
    """A run stopped after checkpoint-2 and resumed equals the unbroken 4-step run."""
    from safetensors.torch import load_file

    from medtune.align.stage import align_model

    cfg, _, _ = dpo_run
    run = tmp_path / "run"
    shutil.copytree(cfg.run_dir, run, ignore=shutil.ignore_patterns("checkpoint-4"))
    out = run / "align"
    for name in ("adapter_model.safetensors", "train_results.json"):
        (out / name).unlink()
    manifest = json.loads((out / "align_manifest.json").read_text())
    write_json(out / "align_manifest.json", {**manifest, "status": "running"})  # as a killed run leaves it
    cfg2 = dataclasses.replace(cfg, output_dir=str(run))  # same base model, data and SFT adapter bytes
    logs = []
    results = align_model(cfg2, log=logs.append)
    assert results["resumed_from"].endswith("checkpoint-2")
    a, b = load_file(cfg.run_dir / "align" / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-6, k


# --- the TRL version guard ----------------------------------------------------------------------------------


def test_tested_trl_is_the_pinned_one_and_gets_medtunes_trainers(sft_run, tmp_path):
    import re

    from medtune.align.stage import TESTED_TRL

    pin = re.search(r'"trl==([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8")).group(1)
    assert pin == TESTED_TRL
    run = _own_copy(sft_run, tmp_path)
    logs = []
    trainer, _ = _trainer(align_cfg(run, [planted_pairs(tmp_path / "pairs.jsonl", n=4)], max_steps=1), run,
                          log=logs.append)
    assert type(trainer).__name__ == "MedtuneDPOTrainer" and not any("TRL's own" in line for line in logs)


@pytest.mark.parametrize("algorithm", ["dpo", "kto"])
def test_another_trl_version_trains_with_trls_own_trainers(sft_run, tmp_path, monkeypatch, algorithm):
    """No private override and no _use_triton swap: TRL's plain trainer, on the rows as text it tokenizes itself
    (here to the same ids as medtune's, the end-of-turn token being the tokenizer's eos), said once in the log."""
    import trl

    from medtune.align import stage

    run = _own_copy(sft_run, tmp_path)
    cfg = align_cfg(run, [planted_pairs(tmp_path / "pairs.jsonl", n=4)], max_steps=1, algorithm=algorithm,
                    per_device_train_batch_size=2)
    monkeypatch.setattr(trl, "__version__", "9.9.9")
    monkeypatch.setattr(stage, "compact_lm_head", lambda: pytest.fail("medtune's fused-head switch was used"))
    logs = []
    trainer, tok = _trainer(cfg, run, log=logs.append)
    assert type(trainer) is (trl.DPOTrainer if algorithm == "dpo" else trl.KTOTrainer)
    assert sum("TRL 9.9.9 is installed, not 1.16.0" in line for line in logs) == 1
    ours = _dataset(cfg, tok)
    keys = ("prompt_ids", "chosen_ids", "rejected_ids") if algorithm == "dpo" else ("prompt_ids", "completion_ids")
    assert [[trainer.train_dataset[i][k] for k in keys] for i in range(len(ours))] == \
        [[ours[i][k] for k in keys] for i in range(len(ours))]
    trainer.train()
    assert trainer.state.global_step == 1


# --- configs -------------------------------------------------------------------------------------------------


def test_reference_config_documents_valid_dpo_and_grpo_setups():
    """The commented `align:` blocks of configs/qwen3-8b-huatuo.yaml load once uncommented."""
    import yaml

    lines = (ROOT / "configs" / "qwen3-8b-huatuo.yaml").read_text(encoding="utf-8").splitlines()
    blocks, current = [], None
    for line in lines:
        if line == "# align:":
            current = [line[2:]]
            blocks.append(current)
        elif current is not None and line.startswith("#   "):
            current.append(line[2:])
        else:
            current = None
    setups = []
    for block in blocks:
        raw = {"output_dir": "runs/x", **yaml.safe_load("\n".join(block))}
        a = config_from_dict(raw, source="qwen3-8b-huatuo.yaml (commented)").align
        setups.append((a.algorithm, a.self_pairs.scorer if a.pairs == "self" else a.grpo_data))
    # reference self-pairs, safety-scored self-pairs, GRPO on the red-flag prompts, multiple-choice GRPO
    assert setups == [("dpo", "reference"), ("dpo", "safety"), ("grpo", "open"), ("grpo", "mcq")]


def test_align_config_errors_name_the_key():
    from medtune.config import ConfigError

    base = {"output_dir": "x", "align": {"algorithm": "dpo", "pairs": "self"}}
    for change, message in [({"bogus": 1}, "unknown key 'align.bogus'"),
                            ({"loss_weights": [1.0]}, "align.loss_weights"),
                            ({"trl": {"output_dir": "y"}}, "align.trl.output_dir"),
                            ({"pairs": "files"}, "align.train_files is empty"),
                            ({"algorithm": "grpo"}, "GRPO needs multiple-choice items")]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**base, "align": {**base["align"], **change}}, source="c.yaml")


def test_unknown_trl_setting_is_named(tmp_path):
    from medtune.align.stage import AlignError, trl_args
    from medtune.train.backends import align_backends

    cfg = align_cfg(tmp_path, [RECORDS], trl={"precompute_ref_log_prob": True})
    cpu = align_backends(cfg, cuda=False, bf16_supported=False)
    with pytest.raises(AlignError, match="align.trl.precompute_ref_log_prob: .*did you mean precompute_ref_log_probs"):
        trl_args(cfg, cpu)
    cpu.checkpoint_every = None  # as the memory plan leaves it for the tiny model on CPU
    args = trl_args(align_cfg(tmp_path, [RECORDS], trl={"precompute_ref_log_probs": True},
                              loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.2], beta=0.2), cpu)
    assert (args.precompute_ref_log_probs, args.loss_type, args.loss_weights, args.beta, args.bf16) == \
        (True, ["sigmoid", "sft"], [1.0, 0.2], 0.2, False)
    assert args.activation_checkpointing is False  # the backends' choice reaches TRL


# --- the report ----------------------------------------------------------------------------------------------


def test_report_alignment_section_compares_aligned_with_sft(dpo_run, tmp_path):
    """The section reads what align_model wrote, plus evaluate files in their documented shape."""
    from medtune.config import save_config
    from medtune.evaluate.bench import significance
    from medtune.report.write import write_report
    from medtune.rundir import write_jsonl

    cfg, _, _ = dpo_run
    run = tmp_path / "run"
    shutil.copytree(cfg.run_dir, run, ignore=shutil.ignore_patterns("checkpoint-*"))
    save_config(dataclasses.replace(cfg, output_dir=str(run)), run / "config.yaml")
    arms = [("m-medtune-aligned", str(run / "align")), ("m-medtune", str(run)), ("m", None)]
    write_json(run / "eval" / "compare" / "summary.json",
               {"engine": "transformers", "arms": [{"arm": a, "model": "base", "adapter": d, "thinking": False}
                                                   for a, d in arms]})
    # Aligned answers are 30 tokens, SFT answers 20 (median ratio 1.5 by hand).
    write_jsonl(run / "eval" / "compare" / "answers.jsonl",
                [{"arm": a, "question_id": f"q{i}", "question": "?", "answer": "x", "answer_tokens": n}
                 for a, n in (("m-medtune-aligned", 30), ("m-medtune", 20)) for i in range(3)])
    # 40 items: the aligned model alone right on 12, SFT alone right on 0 -> McNemar p = 2 * 0.5**12 < 0.05.
    items = lambda correct: [{"id": str(i), "correct": c} for i, c in enumerate(correct)]  # noqa: E731
    results = [{"benchmark": "b", "format": "cmmlu", "data": "d", "method": "loglik", "shots": 0, "arm": arm,
                "model": "base", "items": items(correct)}
               for arm, correct in (("m-medtune-aligned", [True] * 20 + [False] * 20),
                                    ("m-medtune", [True] * 8 + [False] * 32))]
    write_json(run / "eval" / "benchmarks" / "significance.json", significance(results))
    # Safety: aligned 10/40 (Wilson upper ~0.40) below SFT 38/40 (lower ~0.83): a regression.
    write_json(run / "eval" / "safety.json", {"m-medtune-aligned": {"n": 40, "passed": 10, "rate": 0.25},
                                              "m-medtune": {"n": 40, "passed": 38, "rate": 0.95}})
    for lang, heading, ratio, better in (("en", "Alignment (preference / RL)", "1.50x as long", "is better than"),
                                         ("zh", "对齐（偏好 / 强化学习）", "的 1.50 倍", "优于")):
        write_report(run, lang=lang, cjk_font=None)
        md = (run / "report.md").read_text(encoding="utf-8")
        section = md.split(heading, 1)[1].split("\n## ", 1)[0]
        assert "`dpo`" in section and "align_rewards_margins" in section
        assert ratio in section and f"m-medtune-aligned (loglik, 0-shot) {better}" in section.replace("：", ": ")
    write_report(run, lang="en", cjk_font=None)
    section = (run / "report.md").read_text(encoding="utf-8").split("Alignment (preference / RL)", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert "Supported" in section.split("the last logged reward margin", 1)[0].splitlines()[-1]
    assert "safety regressed" in section and "no LLM-judge result" in section


# --- pairs from the SFT run itself ---------------------------------------------------------------------------


def test_self_pairs_drop_near_duplicates_empty_samples_and_judge_losses(tmp_path, qwen3_tokenizer):
    from medtune.align.pairs import build_self_pairs, training_prompts

    data = tmp_path / "dialogues.jsonl"
    dialogues = [[("头痛怎么办？", "多休息，必要时就医。")], [("发烧", "多少度？"), ("39度", "建议尽快就医。")],
                 [("咳嗽", "多喝水。")], [("失眠", "规律作息。")]]
    data.write_text("".join(json.dumps({"conversations": [t for u, a in d for t in
                                                           ({"from": "human", "value": u}, {"from": "gpt", "value": a})]},
                                       ensure_ascii=False) + "\n" for d in dialogues), encoding="utf-8")
    cfg = config_from_dict({"output_dir": str(tmp_path / "run"), "data": {"train_files": [str(data)]},
                            "align": {"algorithm": "dpo", "pairs": "self", "self_pairs": {"max_prompts": 4}}})
    prompts = []

    def generate(batch):
        prompts.extend(batch)
        return [("多休息，必要时就医！", "stop"),  # ROUGE-L vs the reference ~0.9: near-duplicate
                ("不用管。", "length"), ("", "stop"), ("随便吃药。", "stop")]

    judge = lambda q, reference, sample: "loss" if sample == "随便吃药。" else "win"  # noqa: E731
    summary = build_self_pairs(cfg, qwen3_tokenizer, generate, tmp_path / "align", judge=judge, log=print)
    assert prompts[1] == [{"role": "user", "content": "发烧"}, {"role": "assistant", "content": "多少度？"},
                          {"role": "user", "content": "39度"}]  # the history up to the last question
    assert summary["prompts"] == 4 and summary["kept"] == 1 and summary["rejected_cut_off"] == 1
    assert summary["dropped"] == {"near-duplicate (ROUGE-L > 0.7)": 1, "empty sample": 1,
                                  "judge prefers the sample": 1}
    (pair,) = [json.loads(line) for line in (tmp_path / "align" / "pairs.jsonl").read_text().splitlines()]
    assert (pair["chosen"], pair["rejected"], pair["line"]) == ("建议尽快就医。", "不用管。", 2)
    assert len(training_prompts(cfg, qwen3_tokenizer, 2)) == 2


def test_batched_sampling_equals_one_prompt_at_a_time(sft_run):
    """Left padding must not change what the SFT model answers (greedy, so the outputs are comparable)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medtune.align.pairs import SampleAnswers
    from medtune.config import GenerationConfig

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_run / "base_model"), str(sft_run))
    tok = AutoTokenizer.from_pretrained(sft_run)
    greedy = GenerationConfig(max_new_tokens=5, do_sample=False)
    prompts = [[{"role": "user", "content": "头痛"}],
               [{"role": "user", "content": "发烧三天了，还咳嗽，晚上睡不着，应该怎么办？"}]]
    batched = SampleAnswers(model, tok, greedy, batch_size=2, enable_thinking=False)(prompts)
    alone = [SampleAnswers(model, tok, greedy, batch_size=1, enable_thinking=False)([p])[0] for p in prompts]
    assert batched == alone
