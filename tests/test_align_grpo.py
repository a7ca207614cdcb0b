"""GRPO on multiple-choice items (medtune.align.grpo): reader accounting, contamination guard, rewards on
hand-written replies, the prompt TRL feeds the model against the inference prompt, and a reward that rises."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import CMMLU_DEV, ROOT, needs_shared, small_vocab_model
from medtune.align.grpo import (answer_reward, build_grpo_trainer, device_settings, format_reward, grpo_config, grpo_dataset, grpo_log_entry, load_grpo_items)
from medtune.errors import UserError

BENCH_CSV = ",Question,A,B,C,D,Answer\n0,小儿高热惊厥发作时，首选的止惊措施是,口服退热药,静脉注射地西泮,冰敷额头,肌注青霉素,B\n"
GOOD = {"question": "维生素D缺乏可导致的疾病是", "options": {"A": "佝偻病", "B": "坏血病", "C": "夜盲症", "D": "脚气病"},
        "answer": "A"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mcq_file(tmp_path: Path) -> Path:
    """Line by line what each record is (the expected outcome in the comment)."""
    def j(obj):
        return json.dumps(obj, ensure_ascii=False)
    return write_lines(tmp_path / "train.jsonl", [
        j(GOOD),                                                                     # 1 kept
        j({"question": "下列属于水溶性维生素的是", "options": ["维生素A", "维生素B1", "维生素C", "维生素E"],
           "answer": "B、C", "multi": True}),                                       # 2 kept (list options, 2 letters)
        '{"question": "缺少右括号"',                                                  # 3 rejected: invalid JSON
        j({**GOOD, "question": "  "}),                                               # 4 rejected: question empty
        j({**GOOD, "question": "另一题", "answer": "E"}),                             # 5 rejected: E is not an option
        j({**GOOD, "question": "又一题", "multi": "yes"}),                            # 6 rejected: multi not boolean
        j({**GOOD, "question": "缺选项", "options": {"A": "1", "B": "2", "D": "4"}}),  # 7 rejected: option C missing
        j({**GOOD, "question": "维生素 D 缺乏，可导致的疾病是？"}),                       # 8 duplicate of line 1
        j({**GOOD, "question": "维生素D缺乏可导致的疾病是", "answer": "B"}),              # 9 rejected: conflicts with 1
        "[1, 2]",                                                                    # 10 rejected: not an object
        "",                                                                          # 11 blank: not a record
        j({"question": "小儿高热惊厥发作时, 首选的 止惊措施是？", "options": {"A": "口服退热药", "B": "静脉注射地西泮"},
           "answer": "B"}),                                                          # 12 contaminated (bench line 2)
        j({**GOOD, "options": {"A": "骨软化症", "B": "坏血病"}}),                        # 13 kept: same question, other options
    ])


def test_reader_accounting_duplicates_conflicts_and_contamination(tmp_path):
    bench = tmp_path / "bench" / "儿科.csv"
    bench.parent.mkdir()
    bench.write_text(BENCH_CSV, encoding="utf-8")
    rejected_path = tmp_path / "align" / "rejected.jsonl"
    items, summary = load_grpo_items([mcq_file(tmp_path)], "mcq", [(str(bench.parent), "cmmlu")], rejected_path)

    assert [it.id for it in items] == ["train.jsonl:1", "train.jsonl:2", "train.jsonl:13"]
    assert [it.answer for it in items] == ["A", "BC", "A"]
    assert (summary["read"], summary["kept"], summary["rejected"], summary["duplicates"], summary["contaminated"]) \
        == (12, 3, 7, 1, 1)
    assert summary["read"] == summary["kept"] + summary["rejected"] + summary["duplicates"] + summary["contaminated"]
    assert summary["unused"] == 0
    rows = [json.loads(line) for line in rejected_path.read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["kind"]) for r in rows] == [
        (3, "rejected"), (4, "rejected"), (5, "rejected"), (6, "rejected"), (7, "rejected"), (8, "duplicate"),
        (9, "rejected"), (10, "rejected"), (12, "contaminated")]
    assert {r["source"] for r in rows} == {str((tmp_path / "train.jsonl").resolve())}
    assert summary["rejected_reasons"] == {"answer": 2, "invalid JSON": 1, "question": 1, "multi": 1, "options": 1,
                                           "not a JSON object": 1}
    reasons = {r["line"]: r["reason"] for r in rows}
    assert "invalid JSON" in reasons[3] and reasons[4] == "question: empty" and "E is not one of" in reasons[5]
    assert reasons[6].startswith("multi:") and "option C is missing" in reasons[7]
    assert reasons[8].endswith("train.jsonl:1") and reasons[9].startswith("answer: B here but A in")
    assert reasons[10] == "not a JSON object"
    assert reasons[12] == f"the question is in the benchmark {bench.resolve()}:2"
    assert summary["benchmark_questions"] == 1


@pytest.mark.parametrize("fmt, name, text, kept_id, bad_line", [
    ("cmb", "cmb.json",
     '[{"question": "题一", "option": {"A": "甲", "B": "乙", "C": "丙", "E": ""}, "answer": "B",\n'
     '  "question_type": "单项选择题", "exam_subject": "内科"},\n'
     ' {"question": "题二", "option": {"A": "甲", "B": "乙"}, "answer": "AB", "question_type": "单项选择题"}]',
     "cmb.json:1", 3),
    ("cmexam", "cmexam.csv", 'Question,Options,Answer\n题一,"A 甲\nB 乙",B\n题二,"A 甲\nB 乙",X\n', "cmexam.csv:2", 4),
    ("medqa", "medqa.jsonl",
     '{"question": "Q1", "options": {"A": "x", "B": "y"}, "answer_idx": "A", "answer": "x"}\n'
     '{"question": "Q2", "options": {"A": "x", "B": "y"}, "answer_idx": "A", "answer": "y"}\n', "medqa.jsonl:1", 2),
])
def test_reader_matrix_reuses_the_benchmark_readers(tmp_path, fmt, name, text, kept_id, bad_line):
    (tmp_path / name).write_text(text, encoding="utf-8")
    items, summary = load_grpo_items([tmp_path / name], fmt, rejected_path=tmp_path / "rejected.jsonl")
    assert [it.id for it in items] == [kept_id]
    assert (summary["read"], summary["kept"], summary["rejected"]) == (2, 1, 1)
    (row,) = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["line"] == bad_line and row["kind"] == "rejected"


def test_nothing_usable_is_an_error_naming_the_counts(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ['{"question": ""}', "oops"])
    with pytest.raises(UserError, match=r"2 read, 0 kept, 2 rejected"):
        load_grpo_items([path], "mcq")


def test_max_items_keeps_the_first_usable_and_counts_the_rest_unused(tmp_path):
    rows = [json.dumps({**GOOD, "question": f"第{i}题"}, ensure_ascii=False) for i in range(5)]
    path = write_lines(tmp_path / "five.jsonl", rows[:2] + ["oops"] + rows[2:])
    items, summary = load_grpo_items([path], "mcq", rejected_path=tmp_path / "rejected.jsonl", max_items=2)
    assert [it.id for it in items] == ["five.jsonl:1", "five.jsonl:2"]
    assert (summary["read"], summary["kept"], summary["rejected"], summary["unused"]) == (6, 2, 1, 3)
    rows = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["kind"]) for r in rows] == [(3, "rejected"), (4, "unused"), (5, "unused"), (6, "unused")]


@needs_shared
def test_demo_items_do_not_repeat_a_demo_or_shared_benchmark_question():
    from medtune.config import load_config

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    benchmarks = [(str(ROOT / b.path), b.format) for b in cfg.evaluate.benchmarks] + [(str(CMMLU_DEV), "cmmlu")]
    items, summary = load_grpo_items([ROOT / "data" / "align" / "mcq_demo.jsonl"], "mcq", benchmarks)
    assert (summary["read"], summary["kept"], summary["contaminated"], summary["multi_answer"]) == (32, 32, 0, 4)
    assert summary["benchmark_questions"] == 36 + 30 + 50  # demo medical + demo general + shared CMMLU dev


def test_rewards_on_hand_written_replies():
    cases = [  # (reply, gold, letters, expected answer reward, expected format reward)
        ("答案：B", "B", "ABCD", 1.0, 1.0),
        ("B", "A", "ABCD", 0.0, 1.0),                                   # wrong but clear
        ("答案：A、C", "AC", "ABCD", 1.0, 1.0),                          # multi-letter gold, exact set
        ("答案：A", "AC", "ABCD", 0.0, 1.0),                             # a subset is not the set
        ("<think>嗯，应该选B</think>\n\n答案：B", "B", "ABCD", 1.0, 1.0),  # closed thinking removed first
        ("<think>答案是B", "B", "ABCD", 0.0, 0.0),                       # unclosed: all thinking, no answer
        ("我不知道。", "B", "ABCD", 0.0, 0.0),                            # no answer: extraction failure
        ("答案是A。正确答案：B", "A", "ABCD", 0.0, 0.0),                   # two answers: not read
        ("分析：维生素C缺乏……\n其次……\n所以答案是C。", "C", "ABCD", 1.0, 1.0),  # multi-line reasoning (no DOTALL trap)
        ([{"role": "assistant", "content": "答案：D"}], "D", "ABCD", 1.0, 1.0),  # conversational completion
        ("答案：E", "E", "ABCD", None, None),                             # gold not an option: excluded
        ("答案：A", "", "ABCD", None, None),                              # no gold: excluded
    ]
    completions, gold, letters = [c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases]
    logged = []
    assert answer_reward(completions, gold, letters, log_metric=lambda k, v: logged.append((k, v))) \
        == [c[3] for c in cases]
    assert format_reward(completions, gold, letters) == [c[4] for c in cases]
    assert logged == [("completions/extraction_failures", 3 / 10)]  # 10 scorable replies, 3 without a clear answer


def test_device_settings_choose_precision_and_generation():
    assert device_settings(cuda=False, bf16_supported=False, vllm_installed=True) == {
        "bf16": False, "fp16": False, "activation_checkpointing": False, "use_vllm": False}
    gpu = {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
    assert device_settings(cuda=True, bf16_supported=True, vllm_installed=True) == {
        "bf16": True, **gpu, "use_vllm": True, "vllm_mode": "colocate"}
    assert device_settings(cuda=True, bf16_supported=False, vllm_installed=False) == {
        "bf16": False, **gpu, "use_vllm": False}


def test_grpo_config_on_cpu_is_fp32_with_the_no_think_prompt(tmp_path):
    lines = []
    args = grpo_config(tmp_path, {"num_generations": 4, "bf16": True, "beta": 0.04, "max_completion_length": 64},
                       format_weight=0.2, log=lines.append)
    assert (args.bf16, args.fp16, args.activation_checkpointing, args.use_vllm) == (False, False, False, False)
    assert (args.num_generations, args.beta, args.max_completion_length) == (4, 0.04, 64)
    assert args.reward_weights == [1.0, 0.2] and args.chat_template_kwargs == {"enable_thinking": False}
    assert "CPU: fp32" in lines[0] and "gradient checkpointing off" in lines[0] and "transformers" in lines[0]


# -- through TRL's GRPOTrainer --

CHATML_WITH_SYSTEM = (  # ChatML with a default system prompt (a second template, not Qwen3's)
    "{%- if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a careful medical assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")


def inference_prompt_ids(tokenizer, content: str, template: str) -> list[int]:
    """The inference prompt of one user message, written out by hand for each template."""
    user = f"<|im_start|>user\n{content}<|im_end|>\n"
    text = (user + "<|im_start|>assistant\n<think>\n\n</think>\n\n" if template == "qwen3" else
            "<|im_start|>system\nYou are a careful medical assistant.<|im_end|>\n" + user + "<|im_start|>assistant\n")
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def demo_trainer(lora_run, qwen3_tokenizer, tmp_path):
    """A GRPO trainer on two demo items (维生素C -> A; 脂溶性维生素 -> ACD) and the tiny random Qwen3 with the
    real vocabulary (conftest's run directory keeps its base in base_model/)."""
    from transformers import AutoModelForCausalLM

    tokenizer = qwen3_tokenizer  # the session's (loading costs ~10 s); a test that changes its template restores it
    items, _ = load_grpo_items([ROOT / "data" / "align" / "mcq_demo.jsonl"], "mcq")
    items = [items[0], items[4]]
    dataset = grpo_dataset(items, "mcq")
    args = grpo_config(tmp_path, {"num_generations": 2, "per_device_train_batch_size": 4, "max_steps": 1,
                                  "max_completion_length": 16, "learning_rate": 1e-4, "save_strategy": "no"},
                       log=lambda _: None)
    model = AutoModelForCausalLM.from_pretrained(lora_run / "base_model")
    return build_grpo_trainer(model, tokenizer, dataset, args, log=lambda _: None), tokenizer, items, dataset


@needs_shared
def test_second_template_prompt_is_its_inference_prompt(lora_run, qwen3_tokenizer, tmp_path):
    """TRL tokenizes the prompts with the tokenizer's own template (here ChatML with a default system prompt)."""
    trainer, tokenizer, items, dataset = demo_trainer(lora_run, qwen3_tokenizer, tmp_path)
    qwen3_template = tokenizer.chat_template
    tokenizer.chat_template = CHATML_WITH_SYSTEM
    try:
        prompt_ids = trainer._tokenize_prompts([row["prompt"] for row in dataset])[0]  # what GRPOTrainer generates from
        expected = [inference_prompt_ids(tokenizer, row["prompt"][0]["content"], "chatml") for row in dataset]
    finally:
        tokenizer.chat_template = qwen3_template
    assert [list(p) for p in prompt_ids] == expected


@needs_shared
def test_grpo_step_feeds_the_inference_prompt_and_logs_hand_computed_rewards(lora_run, qwen3_tokenizer, tmp_path,
                                                                           single_torch_thread):
    """One GRPO step with planned replies in place of sampling: TRL's prompt token ids must be the Qwen3 no-think
    inference prompt's, and the logged rewards must be the hand-computed ones."""
    trainer, tokenizer, items, dataset = demo_trainer(lora_run, qwen3_tokenizer, tmp_path)
    # item 0: one right, one without an answer (spread); item 1: both right (all equal: no gradient)
    planned = {items[0].question: ["答案：A", "我不确定。"], items[1].question: ["答案：A、C、D", "ACD"]}
    seen_prompts = []

    def planned_generation(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        out = []
        for ids in prompt_ids:
            seen_prompts.append(list(ids))
            question = next(q for q in planned if q in tokenizer.decode(ids))
            reply = planned[question][sum(question in tokenizer.decode(p) for p in seen_prompts) - 1]
            out.append(tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"])
        return out, None

    trainer._generate_single_turn = planned_generation
    trainer.train()

    assert len(seen_prompts) == 4
    for row in dataset:  # each prompt once per generation
        assert seen_prompts.count(inference_prompt_ids(tokenizer, row["prompt"][0]["content"], "qwen3")) == 2

    (log,) = [h for h in trainer.state.log_history if "reward" in h]
    total = [1.1, 0.0, 1.1, 1.1]  # answer + 0.1 x format
    mean = sum(total) / 4
    assert log["reward"] == pytest.approx(mean)
    assert log["reward_std"] == pytest.approx(math.sqrt(sum((r - mean) ** 2 for r in total) / 3), rel=1e-5)
    assert log["frac_reward_zero_std"] == pytest.approx(0.5)
    assert log["completions/extraction_failures"] == pytest.approx(0.25)
    assert log["rewards/answer_reward/mean"] == pytest.approx(0.75)
    assert log["rewards/format_reward/mean"] == pytest.approx(0.75)
    kept = grpo_log_entry({**log, "loss": 0.0, "grad_norm": 1.0, "learning_rate": 1e-4})
    # Everything but the Trainer's own bookkeeping is a GRPO figure (TRL 1.16 logs clip_ratio/*, entropy,
    # completions/*, rewards/<func>/{mean,std}, reward, reward_std, frac_reward_zero_std at this step).
    bookkeeping = {"epoch", "grad_norm", "learning_rate", "loss", "num_tokens", "step", "step_time"}
    assert {"reward", "reward_std", "frac_reward_zero_std", "completions/extraction_failures", "entropy",
            "clip_ratio/region_mean", "rewards/answer_reward/mean", "completions/clipped_ratio"} <= set(log)
    assert kept == {k: v for k, v in log.items() if k not in bookkeeping}


def test_mean_reward_rises_on_a_planted_verifiable_reward(tmp_path, single_torch_thread):
    """A random model scores 0 on real questions (every group equal, no gradient), so plant a reward that
    varies: the share of completion tokens among 16 of the 61 ordinary words (about 0.26 by chance).
    Observed (seed 0): the mean reward of steps 1-3 is ~0.22 and of steps 10-12 ~0.53."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = small_vocab_model(tmp_path / "model", vocab=64, hidden=32)
    target = set(range(3, 19))

    def planted(completions, completion_ids, **_):
        return [sum(t in target for t in ids) / max(len(ids), 1) for ids in completion_ids]

    prompts = [" ".join(f"w{(i * 7 + j) % 60 + 3}" for j in range(6)) for i in range(16)]
    args = grpo_config(tmp_path / "out", {
        "max_steps": 12, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "num_generations": 8,
        "per_device_train_batch_size": 16, "max_completion_length": 8, "temperature": 1.0, "top_k": 0,
        "seed": 0, "save_strategy": "no", "reward_weights": None}, log=lambda _: None)
    trainer = build_grpo_trainer(AutoModelForCausalLM.from_pretrained(model_dir),
                                 AutoTokenizer.from_pretrained(model_dir),
                                 datasets.Dataset.from_dict({"prompt": prompts}), args, reward_funcs=[planted],
                                 log=lambda _: None)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    assert len(rewards) == 12
    assert all(h["frac_reward_zero_std"] < 1 for h in trainer.state.log_history if "reward" in h)
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15, rewards


def test_report_grpo_finding_from_the_logged_rewards():
    from medtune.report.sections_align import grpo_finding

    rows = [{"step": 1, "reward": 0.2, "frac_reward_zero_std": 0.5}, {"step": 1, "loss": 0.1},
            {"step": 2, "reward": 0.6, "frac_reward_zero_std": 0.25}]
    f = grpo_finding(rows)
    assert (f.verdict, f.key, f.params) == ("info", "al.c.grpo", {"first": "0.200", "last": "0.600", "zero": "37.5%"})
    flat = grpo_finding([{"reward": 0.0, "frac_reward_zero_std": 1.0}, {"reward": 0.0, "frac_reward_zero_std": 0.9}])
    assert (flat.verdict, flat.key, flat.params["zero"]) == ("flag", "al.c.grpo_flat", "95.0%")
    assert grpo_finding([{"step": 1, "loss": 0.3}]).key == "al.c.noreward"
