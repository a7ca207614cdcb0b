"""`medtune align` with `algorithm: grpo` end to end on the tiny SFT run: the stage loads the multiple-choice
items through medtune.align.grpo (contamination guard against evaluate.benchmarks), trains, and writes the
GRPO figures into align/metrics.jsonl."""

from __future__ import annotations

import json

from conftest import ROOT, copy_run, needs_shared
from medtune.rundir import write_json



@needs_shared
def test_medtune_align_grpo_on_a_tiny_run(lora_run, tmp_path, single_torch_thread):
    from medtune.align.stage import align_model
    from medtune.config import config_from_dict

    run = copy_run(lora_run, tmp_path / "run")
    write_json(run / "train_manifest.json", {"fingerprint": "x", "status": "completed"})
    bench = tmp_path / "bench.csv"  # repeats demo item 1 with other punctuation: the guard drops it
    bench.write_text(",Question,A,B,C,D,Answer\n0,\"维生素C严重缺乏, 可引起的 疾病是？\",坏血病,佝偻病,脚气病,夜盲症,A\n",
                     encoding="utf-8")
    cfg = config_from_dict({
        "output_dir": str(run), "model": {"name_or_path": str(run / "base_model")},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "train": {"report_to": ["none"]},
        "evaluate": {"benchmarks": [{"path": str(bench), "format": "cmmlu"}]},
        "align": {"algorithm": "grpo", "train_files": [str(ROOT / "data" / "align" / "mcq_demo.jsonl")],
                  "mcq_format": "mcq", "max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2,
                  "max_completion_length": 8, "logging_steps": 1, "save_steps": 2, "learning_rate": 1e-4}})
    logs = []
    results = align_model(cfg, log=logs.append)
    out = run / "align"
    stats = json.loads((out / "data_stats.json").read_text(encoding="utf-8"))
    assert (stats["read"], stats["kept"], stats["contaminated"]) == (32, 31, 1)
    (row,) = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["kind"] == "contaminated" and row["line"] == 1 and row["reason"].endswith(f"{bench.resolve()}:2")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stepped = [m for m in lines if "reward" in m]
    assert [m["step"] for m in stepped] == [1, 2]
    for m in stepped:
        assert {"reward_std", "frac_reward_zero_std", "completions/extraction_failures", "completions/mean_length",
                "completions/clipped_ratio"} <= set(m)
        assert 0.0 <= m["completions/extraction_failures"] <= 1.0
    assert results["algorithm"] == "grpo" and results["global_step"] == 2
    assert (out / "adapter_model.safetensors").is_file() and (out / "checkpoint-2" / "medtune-complete.json").is_file()
    assert any("GRPO on CPU: fp32" in line for line in logs)


def test_medtune_align_grpo_on_open_red_flag_prompts(lora_run, tmp_path, single_torch_thread):
    """`grpo_data: open`: the red-flag training prompts (guarded against evaluate.safety and questions) and a
    rubric-layout file through the stage with the `redflag` and `rubric` rewards (the rule-based grader started
    for the stage by `builtin:rules`); metrics.jsonl carries each reward's mean/std, the urgent/over-triage
    shares and the grader failures; the grades are cached in align/grader_cache.jsonl."""
    from medtune.align.stage import align_model
    from medtune.config import config_from_dict

    from tests.test_align_safety import RUBRIC_ROWS

    run = copy_run(lora_run, tmp_path / "run")
    write_json(run / "train_manifest.json", {"fingerprint": "x", "status": "completed"})
    rubric_file = tmp_path / "rubrics.jsonl"
    rubric_file.write_text("\n".join(json.dumps({**RUBRIC_ROWS[0], "prompt_id": f"r{k}"}, ensure_ascii=False)
                                     for k in range(4)) + "\n", encoding="utf-8")
    cfg = config_from_dict({
        "output_dir": str(run), "model": {"name_or_path": str(run / "base_model")},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "train": {"report_to": ["none"]},
        "evaluate": {"safety": str(ROOT / "data" / "safety" / "redflags_zh.jsonl"),
                     "questions": str(ROOT / "data" / "questions" / "zh_everyday.jsonl"),
                     "grader_base_url": "builtin:rules"},
        "align": {"algorithm": "grpo", "grpo_data": "open", "rewards": ["redflag", "rubric"],
                  "train_files": [str(rubric_file), str(ROOT / "data" / "align-safety" / "redflags_train_zh.jsonl")],
                  "max_samples": 4, "max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2,
                  "max_completion_length": 8, "logging_steps": 1, "save_steps": 2, "learning_rate": 1e-4}})
    logs = []
    results = align_model(cfg, log=logs.append)
    out = run / "align"
    stats = json.loads((out / "data_stats.json").read_text(encoding="utf-8"))
    # align.max_samples keeps the first 4: the rubric rows (not urgent by the red-flag rules), so the step's
    # replies are all graded; the 44 red-flag prompts are read and guarded, and listed as unused
    assert (stats["read"], stats["kept"], stats["contaminated"], stats["unused"], stats["urgent"]) == (48, 4, 0, 44, 0)
    (m,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if "reward" in json.loads(line)]
    assert {"reward_std", "rewards/redflag_reward/mean", "rewards/redflag_reward/std", "rewards/rubric/mean",
            "completions/grader_failures"} <= set(m)
    assert {"completions/urgent_missed", "completions/over_triage"} & set(m)
    assert results["global_step"] == 1
    assert any("1 x redflag_reward, 1 x rubric" in line for line in logs)
    # 2 prompts x 2 replies x 3 criteria, identical jobs asked once: at least 3 grades cached, none failed
    grades = (out / "grader_cache.jsonl").read_text().splitlines()
    assert 3 <= len(grades) <= 12 and m["completions/grader_failures"] == 0
