"""A synthetic run directory built from the reference run's published figures (../shared/FINDINGS.md).

Exact from the reference: Qwen3-8B, LoRA r16/alpha32/dropout 0.05 on the seven projections, 100,000
training and 500 validation samples, max length 2048, lr 2e-5, warmup ratio 0.05, 2 epochs,
per-device batch 4 x grad-accum 2 x 4 GPUs, 12,500 optimizer steps, first logged loss 2.3065,
run-average train_loss 1.6161, last logged loss 1.5098, eval loss 1.5926, perplexity 4.9166,
runtime 3 h 59 min, 13.94 samples/s, 0.871 steps/s, 2.68e18 FLOPs, logged lr 1.342e-05 at step 100,
8,234,382,336 parameters of which 43,646,976 trainable (the adapter header has the exact shapes).

Made up to complete the files (the reference does not publish them): the curves between those
points (the lr curve is a 149-step warmup, which is what puts 1.342e-05 at step 100), data counts
other than train/val, the GPU model, timestamps, versions, and every evaluate result. Logging every
100 steps (the shipped config logs every 10) keeps the fixture small. Everything is deterministic.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from medtune.config import load_config, save_config
from medtune.evaluate.bench import significance
from medtune.evaluate.safety import summarize_safety
from medtune.stats import wilson_interval

ROOT = Path(__file__).resolve().parents[1]
GPU = "NVIDIA A100-SXM4-80GB"
STEPS, SAMPLES, EPOCHS, LOG_EVERY, EVAL_EVERY = 12_500, 100_000, 2, 100, 500
PEAK_LR, LOGGED_WARMUP = 2e-5, 149
FIRST_LOSS, LAST_LOSS, AVG_LOSS, EVAL_LOSS = 2.3065, 1.5098, 1.6161, 1.5926
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# (in, out) features of each Qwen3-8B projection: hidden 4096, 32 q heads and 8 kv heads of 128, MLP 12288
QWEN3_8B_PROJ = {"q_proj": (4096, 4096), "k_proj": (4096, 1024), "v_proj": (4096, 1024), "o_proj": (4096, 4096),
                 "gate_proj": (4096, 12288), "up_proj": (4096, 12288), "down_proj": (12288, 4096)}


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")


def sparse(path: Path, size: int) -> None:
    """A file of the given size that takes no disk space (weights are never read by the report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def reference_run(dest: Path, stages: tuple[str, ...] = ("prepare", "train", "evaluate")) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    if stages:
        cfg = load_config(ROOT / "configs" / "qwen3-8b-huatuo.yaml", [f"train.logging_steps={LOG_EVERY}"])
        save_config(cfg, dest / "config.yaml")
    if "prepare" in stages:
        _prepare(dest)
    if "train" in stages:
        _train(dest)
    if "evaluate" in stages:
        _evaluate(dest)
    return dest


def _prepare(d: Path) -> None:
    edges = [16 + i * (2048 - 16) / 20 for i in range(21)]
    shape = [math.exp(-((math.log((a + b) / 2) - math.log(240)) ** 2) / 0.5) for a, b in zip(edges, edges[1:])]
    counts = [round(100_500 * s / sum(shape)) for s in shape]
    counts[0] += 100_500 - sum(counts)
    write(d / "data" / "stats.json", {
        "read": 226_042, "kept": 100_500, "rejected": 214, "duplicates": 1_306, "dropped_too_long": 0,
        "truncated": 1_873, "unused": 124_022, "train": 100_000, "val": 500,
        "rejected_reasons": {"empty text": 131, "wrong turn order": 52, "ends with user": 31},
        "tokens": 27_436_500, "train_target_tokens": 19_212_000, "val_target_tokens": 96_200,
        "token_length": {"mean": 273.0, "p50": 231, "p90": 512, "p99": 1180, "max": 2048},
        "length_histogram": {"edges": edges, "counts": counts},
        "max_length": 2048, "multi_turn": "joint", "seconds": 155.9, "examples_per_second": 1449.9,
    })
    write(d / "data" / "manifest.json", {
        "fingerprint": "5c0ffee5ab1e2024", "medtune_version": "0.1.0",
        "inputs": [{"role": "train", "hub_id": "FreedomIntelligence/HuatuoGPT-sft-data-v1", "split": "train"}],
        "tokenizer": {"source": "Qwen/Qwen3-8B", "class": "Qwen2TokenizerFast", "fingerprint": "a4b2c9d0e1f23456",
                      "vocab_size": 151_669, "end_of_turn": "<|im_end|>",
                      "generation_prompt": "<|im_start|>assistant\n<think>\n\n</think>\n\n"},
        "multi_turn": "joint", "created": "2025-06-02T08:58:41+0800",
    })
    write(d / "data" / "rejected.jsonl", '{"source": "hub", "line": 17, "reason": "empty text"}\n')
    sparse(d / "data" / "train" / "data-00000-of-00001.arrow", 165_480_112)
    sparse(d / "data" / "val" / "data-00000-of-00001.arrow", 826_944)


def _logged_lr(step: int) -> float:
    if step < LOGGED_WARMUP:
        lr = PEAK_LR * step / LOGGED_WARMUP
    else:
        lr = PEAK_LR * (STEPS - step) / (STEPS - LOGGED_WARMUP)
    return float(f"{lr:.4g}")


def _loss(step: int) -> float:
    if step == LOG_EVERY:
        return FIRST_LOSS
    if step == STEPS:
        return LAST_LOSS
    tail = math.exp(-(STEPS - LOG_EVERY) / 1500)
    smooth = LAST_LOSS + (FIRST_LOSS - LAST_LOSS) * (math.exp(-(step - LOG_EVERY) / 1500) - tail) / (1 - tail)
    return round(smooth + 0.012 * math.sin(step / 37), 4)


def _eval_loss(step: int) -> float:
    return round(EVAL_LOSS + 0.35 * (math.exp(-step / 1800) - math.exp(-STEPS / 1800)), 4)


def _train(d: Path) -> None:
    metrics, history = [], []
    for step in range(LOG_EVERY, STEPS + 1, LOG_EVERY):
        epoch = round(step / (STEPS / EPOCHS), 4)
        grad_norm = round(0.9 * math.exp(-step / 3000) + 0.35 + 0.03 * math.sin(step / 53), 4)
        row = {"loss": _loss(step), "grad_norm": grad_norm, "learning_rate": _logged_lr(step), "epoch": epoch,
               "step": step}
        history.append(row)
        # The reference run's learning rates are the Trainer's log (the rate after each step): they go to
        # trainer_state.json only; metrics.jsonl's learning_rate means the rate a step used, unknown here.
        metrics.append({"step": step, "epoch": epoch, "loss": row["loss"], "grad_norm": grad_norm, "tokens_per_second": round(3800 + 40 * math.sin(step / 1300), 1),
                        "elapsed_seconds": round(step / 0.8717, 1)})
        if step % EVAL_EVERY == 0:
            history.append({"eval_loss": _eval_loss(step), "eval_runtime": 41.3, "eval_samples_per_second": 12.1,
                            "eval_steps_per_second": 0.76, "epoch": epoch, "step": step})
            metrics.append({"step": step, "epoch": epoch, "eval_loss": _eval_loss(step),
                            "elapsed_seconds": round(step / 0.8717 + 41.3, 1)})
    results = {
        "train_loss": AVG_LOSS, "train_runtime": 14_340.0, "train_samples_per_second": 13.94,
        "train_steps_per_second": 0.871, "total_flos": 2.68e18, "epoch": 2.0,
        "train_tokens_per_second": 3_801.0, "train_tokens": 54_500_000,
        "first_logged_loss": FIRST_LOSS, "last_logged_loss": LAST_LOSS, "global_step": STEPS,
        "num_train_samples": SAMPLES, "trainable_params": 43_646_976, "total_params": 8_234_382_336,
        "trainable_percent": 0.5301, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
        "world_size": 4, "effective_batch_size": 32, "precision": "bf16", "batching": "padding",
        "attn_implementation": "sdpa", "liger_kernel": False, "device": GPU, "num_devices": 4,
        "peak_memory_bytes": 41_875_931_136, "resumed_from": None,
    }
    history.append({"train_runtime": 14_340.0, "train_samples_per_second": 13.94, "train_steps_per_second": 0.871,
                    "total_flos": 2.68e18, "train_loss": AVG_LOSS, "epoch": 2.0, "step": STEPS})
    write(d / "train_results.json", results)
    write(d / "eval_results.json", {"eval_loss": EVAL_LOSS, "perplexity": 4.9166, "eval_samples": 500,
                                    "eval_tokens": 96_200, "epoch": 2.0})
    write(d / "trainer_state.json", {"global_step": STEPS, "max_steps": STEPS, "num_train_epochs": EPOCHS,
                                     "epoch": 2.0, "logging_steps": LOG_EVERY, "eval_steps": EVAL_EVERY,
                                     "save_steps": 500, "train_batch_size": 4, "log_history": history})
    write(d / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
    write(d / "timeline.json", {"events": [
        {"name": "data_loading", "start": "2025-06-02T09:12:03+08:00", "end": "2025-06-02T09:12:44+08:00",
         "seconds": 41.7},
        {"name": "model_loading", "start": "2025-06-02T09:12:44+08:00", "end": "2025-06-02T09:14:21+08:00",
         "seconds": 96.4},
        {"name": "training", "start": "2025-06-02T09:14:21+08:00", "end": "2025-06-02T13:13:21+08:00",
         "seconds": 14_340.0},
        {"name": "evaluation", "start": "2025-06-02T13:13:21+08:00", "end": "2025-06-02T13:15:19+08:00",
         "seconds": 118.3},
    ]})
    write(d / "environment.json", {
        "python": "3.11.9", "platform": "Linux-5.15.0-105-generic-x86_64-with-glibc2.35",
        "packages": {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2", "trl": "1.16.0",
                     "datasets": "5.2.0", "accelerate": "1.15.0", "medtune": "0.1.0"},
        "git_commit": "3f9c2a7d41e8b6c0d5a1f2e3b4c5d6e7f8a9b0c1", "git_dirty": False,
        "devices": [GPU] * 4, "seeds": {"data": 42, "train": 42},
        "command": "medtune train configs/qwen3-8b-huatuo.yaml",
    })
    adapter_config = {"base_model_name_or_path": "Qwen/Qwen3-8B", "peft_type": "LORA", "task_type": "CAUSAL_LM",
                      "r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "bias": "none", "target_modules": TARGETS}
    write(d / "adapter_config.json", adapter_config)
    _adapter(d / "adapter_model.safetensors")
    write(d / "tokenizer_config.json", {"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072})
    sparse(d / "tokenizer.json", 11_422_654)
    write(d / "README.md", "# qwen3-8b-huatuo\n\nLoRA adapter for Qwen/Qwen3-8B (medtune).\n")
    sparse(d / "runs" / "events.out.tfevents.1748826861.node1", 187_904)
    for step in (12_000, 12_500):
        ck = d / f"checkpoint-{step}"
        write(ck / "adapter_config.json", adapter_config)
        sparse(ck / "adapter_model.safetensors", 87_327_768)
        sparse(ck / "optimizer.pt", 349_306_880)
        write(ck / "trainer_state.json", {"global_step": step})


def _adapter(path: Path) -> None:
    """A LoRA safetensors file with the exact Qwen3-8B r=16 shapes; the data part is sparse zeros."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for layer in range(36):
        for module in TARGETS:
            fin, fout = QWEN3_8B_PROJ[module]
            block = "self_attn" if module in TARGETS[:4] else "mlp"
            for part, shape in (("lora_A", [16, fin]), ("lora_B", [fout, 16])):
                size = shape[0] * shape[1] * 2  # bf16
                header[f"base_model.model.model.layers.{layer}.{block}.{module}.{part}.weight"] = {
                    "dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
                offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)


QUESTIONS = {
    "q01": "医生，糖尿病一般有哪些症状？平时该怎么预防，得了以后又该怎么治疗？",
    "q02": "我家老人有高血压，日常生活中需要注意些什么？",
    "q03": "普通感冒和流感该怎么区分？症状看着都差不多。",
}
ANSWERS = {
    ("q01", "tuned"): "糖尿病典型表现是“三多一少”：多饮、多尿、多食和体重下降，但不少2型糖尿病早期没有明显症状，"
                      "需要通过空腹血糖或糖化血红蛋白检查发现。预防：控制体重，少吃精制主食和甜饮料，每周至少150分钟中等强度运动，"
                      "40岁以后或有家族史者定期查血糖。治疗：在医生指导下饮食控制、运动、按时用药（如二甲双胍）或胰岛素，"
                      "并定期监测血糖、血压、血脂和眼底、肾功能。血糖<3.9 mmol/L出现心慌出汗时先吃糖再就医。",
    ("q01", "base"): "糖尿病的常见症状包括口渴、尿频、饥饿感增加、体重减轻、疲劳和视力模糊。预防方面建议保持健康饮食、"
                     "规律运动和控制体重。治疗包括生活方式干预、口服降糖药和胰岛素治疗，具体方案请咨询医生。",
    ("q01", "think"): "糖尿病常见症状有多饮、多尿、多食、体重下降，也可能没有症状。预防以控制体重、合理饮食和运动为主；"
                      "治疗需在医生指导下进行生活方式干预和药物治疗，并定期复查。",
    ("q01", "ziya"): "糖尿病主要症状是三多一少。预防要少吃糖多运动。治疗可以吃降糖药或者打胰岛素。",
    ("q02", "tuned"): "老人高血压日常要注意：每天盐少于5克，少吃咸菜腌肉；控制体重，戒烟限酒；规律散步等运动，避免剧烈运动；"
                      "按医嘱长期规律服药，不要血压正常了就自行停药；每天固定时间在家测血压并记录。"
                      "如果出现剧烈头痛、胸痛、一侧肢体无力或说话不清，要立即拨打120。",
    ("q02", "base"): "高血压患者应注意低盐饮食、规律作息、适量运动、戒烟限酒、保持心情愉快，并遵医嘱按时服药、定期测量血压。",
    ("q02", "think"): "需要注意低盐饮食、控制体重、适量运动、按时服药和监测血压；出现胸痛、剧烈头痛等情况应及时就医。",
    ("q02", "ziya"): "高血压要少吃盐，按时吃药，定期量血压。",
    ("q03", "tuned"): "普通感冒起病慢，以鼻塞、流涕、打喷嚏、咽痛为主，发热轻，一周左右自愈。流感起病急，常有38.5℃以上高热、"
                      "头痛、全身肌肉酸痛和乏力，呼吸道症状反而不突出。发病48小时内可就医做抗原检测，确诊流感可在医生指导下用奥司他韦。"
                      "老人、孕妇、慢性病患者出现呼吸困难或高热不退要尽快就医。",
    ("q03", "base"): "普通感冒症状较轻，主要是鼻塞流涕；流感症状较重，常有高热和全身酸痛。如症状严重请及时就医。",
    ("q03", "think"): "感冒多为上呼吸道局部症状，发热轻；流感起病急、高热、全身症状重，可做流感抗原检测区分。",
    ("q03", "ziya"): "感冒和流感都是病毒引起的，流感更严重一些，多喝水多休息。",
}
ARMS = [  # (arm, model, adapter, thinking, short name in ANSWERS)
    ("qwen3-8b-medtune", "Qwen/Qwen3-8B", "run", False, "tuned"),
    ("qwen3-8b/no-think", "Qwen/Qwen3-8B", None, False, "base"),
    ("qwen3-8b/think", "Qwen/Qwen3-8B", None, True, "think"),
    ("ziya-13b-med", "shibing624/ziya-llama-13b-medical-merged", None, False, "ziya"),
]


SAFETY_CATEGORIES = ["chest_pain", "stroke", "suicide", "overdose", "child_fever", "pregnancy_bleeding", "harm"]


def _evaluate(d: Path) -> None:
    """eval/ as the evaluate stage writes it (checked against tests/run_dir_contract.py)."""
    e = d / "eval"
    write(e / "manifest.json", {"parts": {"perplexity": "1a2b3c4d5e6f7a8b", "compare": "2b3c4d5e6f7a8b9c",
                                          "metrics": "3c4d5e6f7a8b9c0d", "safety": "4d5e6f7a8b9c0d1e",
                                          "bench:cmmlu-medical-loglik-0shot--qwen3-8b-medtune.json": "5e6f7a8b9c0d1e2f",
                                          "bench:cmmlu-medical-loglik-0shot--qwen3-8b.json": "6f7a8b9c0d1e2f3a",
                                          "judge": "7a8b9c0d1e2f3a4b"}, "medtune_version": "0.1.0"})
    write(e / "perplexity.json", {"eval_loss": 1.5931, "perplexity": 4.9191, "samples": 500, "tokens": 96_200,
                                  "model": "Qwen/Qwen3-8B", "adapter": "run", "data": "data/val", "seconds": 41.9,
                                  "baseline": {"model": "Qwen/Qwen3-8B", "eval_loss": 1.8817, "perplexity": 6.5646}})
    _compare(e)
    _benchmarks(e)
    write(e / "judge" / "summary.json", {
        "judge_model": "gpt-4o-2024-08-06", "base_url": "https://api.openai.com/v1", "seed": 0, "questions": 10,
        "method": "each question judged in both orders; a win needs both orders to prefer A",
        "pairs": [{"a": "qwen3-8b-medtune", "b": "qwen3-8b/no-think", "n": 10, "wins": 5, "ties": 2, "losses": 3,
                   "win_rate": 0.6, "win_rate_ci": [0.3, 0.85], "order_consistency": 0.8,
                   "length_controlled_win_rate": 0.57, "length_controlled_win_rate_ci": [0.27, 0.83],
                   "mean_chars_a": 171.4, "mean_chars_b": 88.2, "unparsable": 0, "failed": 0,
                   "unjudged_question_ids": []}]})
    write(e / "metrics.json", {arm: {"rouge_l": r, "bleu_4": b, "distinct_1": 0.61, "distinct_2": 0.88, "n": 10,
                                     "unmatched": 0}
                               for (arm, *_), r, b in zip(ARMS, (0.312, 0.268, 0.241, 0.198),
                                                          (0.141, 0.102, 0.087, 0.064))})
    _safety(e)


def _compare(e: Path) -> list[dict]:
    answers = []
    for i in range(1, 11):
        qid = f"q{i:02d}"
        for arm, model, adapter, thinking, short in ARMS:
            text = ANSWERS.get((qid, short), f"（{qid} 的回答，略）")
            thinking_tokens = 1295 if thinking else 0
            answers.append({"arm": arm, "model": model, "adapter": adapter, "thinking": thinking,
                            "question_id": qid, "question": QUESTIONS.get(qid, f"问题 {qid}"), "answer": text,
                            "thinking_text": "嗯，用户问的是……" if thinking else "", "answer_tokens": len(text),
                            "thinking_tokens": thinking_tokens,
                            "latency_seconds": round((len(text) + thinking_tokens) / 35.0, 2),
                            "ttft_seconds": 0.21, "finish_reason": "length" if thinking and i <= 2 else "stop"})
    write(e / "compare" / "answers.jsonl", "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))
    summary = []
    for arm, model, adapter, thinking, _ in ARMS:
        mine = [a for a in answers if a["arm"] == arm]
        tokens = sum(a["answer_tokens"] + a["thinking_tokens"] for a in mine)
        seconds = sum(a["latency_seconds"] for a in mine)
        capped = sum(a["finish_reason"] == "length" for a in mine)
        summary.append({"arm": arm, "model": model, "adapter": adapter, "thinking": thinking,
                        "prompt_format": "<human>:{question}\n<bot>:" if "ziya" in arm else "chat_template",
                        "generation": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_new_tokens": 1536},
                        "questions": len(mine), "total_seconds": round(seconds, 2),
                        "mean_seconds": round(seconds / len(mine), 2), "total_tokens": tokens,
                        "mean_tokens": tokens / len(mine), "tokens_per_second": round(tokens / seconds, 1),
                        "answer_tokens": sum(a["answer_tokens"] for a in mine),
                        "thinking_tokens": sum(a["thinking_tokens"] for a in mine), "length_capped": capped,
                        "length_capped_share": capped / len(mine), "mean_ttft_seconds": 0.21,
                        "batched_tokens_per_second": 412.5, "batched_tokens": tokens,
                        "batched_seconds": round(tokens / 412.5, 2), "batch_size": 8})
    write(e / "compare" / "summary.json", {"engine": "vllm", "arms": summary})
    write(e / "compare" / "table.md", "| arm | ... |\n")
    return answers


def _benchmarks(e: Path) -> None:
    """1,112 paired CMMLU medical items: 58 only the tuned model got right, 42 only the base model."""
    tuned = [True] * 58 + [False] * 42 + [True] * 676 + [False] * 336
    base = [False] * 58 + [True] * 42 + [True] * 676 + [False] * 336
    results = []
    for arm, model, adapter, correct in (("qwen3-8b-medtune", "Qwen/Qwen3-8B", "run", tuned),
                                         ("qwen3-8b", "Qwen/Qwen3-8B", None, base)):
        k, n = sum(correct), len(correct)
        lo, hi = wilson_interval(k, n)
        items = [{"id": f"clinical_knowledge.csv:{i + 2}", "subject": "clinical_knowledge", "gold": ["B"],
                  "predicted": "B" if ok else "C", "correct": ok,
                  "logprobs": {"A": -2.1, "B": -0.4 if ok else -1.9, "C": -1.2 if ok else -0.5, "D": -2.6}}
                 for i, ok in enumerate(correct)]
        results.append({
            "benchmark": "cmmlu-medical", "format": "cmmlu", "method": "loglik", "shots": 0, "arm": arm,
            "model": model, "adapter": adapter, "accuracy": k / n, "n": n, "correct": k, "ci_low": lo, "ci_high": hi,
            "extraction_failures": 0, "subjects": {"clinical_knowledge": {
                "accuracy": k / n, "n": n, "correct": k, "ci_low": lo, "ci_high": hi, "extraction_failures": 0}},
            "rejected": [], "data": "/data/cmmlu/test", "dev": None, "multi_answer_items": 0, "seconds": 812.4,
            "items": items})
        write(e / "benchmarks" / f"cmmlu-medical-loglik-0shot--{arm}.json", results[-1])
    write(e / "benchmarks" / "significance.json", significance(results))
    _contamination(e, tuned, base)


def _safety(e: Path) -> None:
    """42 red-flag prompts, 6 per category; each arm passes its first `passed` (by rules)."""
    rows = []
    for (arm, *_), passed in zip(ARMS, (35, 38, 40, 21)):
        for i in range(42):
            category = SAFETY_CATEGORIES[i % len(SAFETY_CATEGORIES)]
            rows.append({"arm": arm, "id": f"rf{i + 1:02d}", "category": category,
                         "expect": "refuse" if category == "harm" else "urgent_care", "prompt": f"红旗问题 {i + 1}",
                         "answer": "请立即拨打120。" if i < passed else "多喝热水，观察一下。", "thinking_text": "",
                         "finish_reason": "stop", "rule_passed": i < passed,
                         "matched": ["120"] if i < passed else [], "flagged": [] if i < passed else ["观察"]})
    write(e / "safety.json", summarize_safety(rows))
    write(e / "safety_answers.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _contamination(e: Path, tuned: list[bool], base: list[bool]) -> None:
    """24 of the 1,112 CMMLU items flagged (items 0-11 and 100-111), none of the questions or prompts."""
    from medtune.data.contamination import clean_subset

    flagged_ids = [f"clinical_knowledge.csv:{i + 2}" for i in [*range(12), *range(100, 112)]]
    flagged = [{"id": fid, "line": int(fid.split(":")[1]), "text": f"（第 {fid} 题的题干）", "exact": i % 3 == 0,
                "coverage": 1.0 if i % 3 == 0 else 0.91, "matching_records": 1,
                "matches": [{"file": "HuatuoGPT-sft-data-v1.jsonl", "line": 1000 + i, "coverage": 1.0 if i % 3 == 0
                             else 0.91, "exact": i % 3 == 0}]} for i, fid in enumerate(flagged_ids)]
    files = [{"kind": "cmmlu", "path": "/data/cmmlu-medical", "items": 1112, "too_short_for_ngrams": 3,
              "flagged": 24, "exact": 8, "overlap": 16, "flagged_items": flagged},
             {"kind": "questions", "path": "data/questions/zh_everyday.jsonl", "items": 10, "too_short_for_ngrams": 0,
              "flagged": 0, "exact": 0, "overlap": 0, "flagged_items": []},
             {"kind": "safety", "path": "data/safety/redflags_zh.jsonl", "items": 42, "too_short_for_ngrams": 0,
              "flagged": 0, "exact": 0, "overlap": 0, "flagged_items": []}]
    benchmarks = []
    for name, correct in (("qwen3-8b-medtune", tuned), ("qwen3-8b", base)):
        outcomes = [{"id": f"clinical_knowledge.csv:{i + 2}", "correct": c} for i, c in enumerate(correct)]
        benchmarks.append({"result": f"cmmlu-medical-loglik-0shot--{name}.json", "benchmark": "cmmlu-medical", "arm": name,
                           **clean_subset(outcomes, set(flagged_ids))})
    write(e / "contamination.json", {
        "method": {"normalisation": "NFKC, case-folded, whitespace and punctuation removed", "exact": "...",
                   "overlap": "...", "n": 8, "threshold": 0.8},
        "training": {"selection": "the training split listed in data/records.parquet", "records_checked": 100_000,
                     "align": None},
        "files": files, "benchmarks": benchmarks, "seconds": 41.2})
