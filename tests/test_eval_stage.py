"""`medtune evaluate`: the stage on a hand-made run directory writes the documented files and skips what is
up to date; the ad hoc evaluations run from the command line and bad input exits 2 naming file and line."""

from __future__ import annotations

import json
import shutil

import pytest

from medtune.cli import main
from medtune.config import load_config
from medtune.errors import UserError
from medtune.evaluate.stage import evaluate_run
from tests.conftest import ROOT, write_config
from tests.eval_fixtures import ANSWER, openai_server, tiny_run  # noqa: F401
from tests.run_dir_contract import eval_problems

QUESTIONS = ROOT / "data" / "questions" / "zh_everyday.jsonl"
REDFLAGS = ROOT / "data" / "safety" / "redflags_zh.jsonl"


def eval_files(run) -> set[str]:
    return {str(p.relative_to(run / "eval")) for p in (run / "eval").rglob("*") if p.is_file()}


def test_stage_writes_the_documented_files_and_skips_a_rerun(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    safety = tmp_path / "redflags.jsonl"
    safety.write_text("".join(REDFLAGS.read_text(encoding="utf-8").splitlines(keepends=True)[:3]), encoding="utf-8")
    # Training data holding one everyday question with spaces around it; without data/records.parquet
    # (prepare has not run on it) every valid record of data.train_files is checked.
    (run / "data" / "records.parquet").unlink(missing_ok=True)
    train = tmp_path / "train.jsonl"
    question = json.loads(QUESTIONS.read_text(encoding="utf-8").splitlines()[1])
    train.write_text(json.dumps({"conversations": [{"from": "human", "value": " " + question["question"] + " "},
                                                   {"from": "gpt", "value": "答"}]}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    config = write_config(tmp_path, json.dumps({
        "output_dir": str(run), "model": {"name_or_path": "builtin:tiny-qwen3"}, "data": {"train_files": [str(train)]},
        "evaluate": {"questions": str(QUESTIONS), "max_questions": 2, "batch_size": 2, "safety": str(safety),
                     "generation": {"max_new_tokens": 4, "do_sample": False}}}))
    logs: list[str] = []
    outputs = evaluate_run(load_config(config), log=logs.append)
    assert eval_files(run) == {"manifest.json", "perplexity.json", "compare/answers.jsonl", "compare/summary.json",
                               "compare/table.md", "metrics.json", "safety.json", "safety_answers.jsonl",
                               "over_triage.json", "contamination.json"}
    assert set(outputs) == {"perplexity", "compare", "metrics", "safety", "over_triage", "contamination"}
    contamination = json.loads((run / "eval" / "contamination.json").read_text())
    assert [(f["kind"], f["items"], f["flagged"]) for f in contamination["files"]] == [("questions", 38, 1),
                                                                                        ("safety", 3, 0)]
    assert contamination["files"][0]["flagged_items"][0]["matches"][0] == {"file": str(train), "line": 1,
                                                                           "coverage": 1.0, "exact": True}
    perplexity = json.loads((run / "eval" / "perplexity.json").read_text())
    assert perplexity["samples"] == 5 and perplexity["adapter"] == str(run) and "baseline" in perplexity
    summary = json.loads((run / "eval" / "compare" / "summary.json").read_text())
    arms = [a["arm"] for a in summary["arms"]]
    assert arms == ["tiny-qwen3-medtune", "tiny-qwen3"] and summary["engine"] == "transformers"
    assert [a["adapter"] for a in summary["arms"]] == [str(run), None]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert list(metrics) == arms and all(m["n"] == 2 for m in metrics.values())
    safety_result = json.loads((run / "eval" / "safety.json").read_text())
    assert list(safety_result) == arms and all(s["n"] == 3 for s in safety_result.values())
    over = json.loads((run / "eval" / "over_triage.json").read_text())  # both everyday questions, no red flag
    assert {arm: (r["n"], r["excluded_red_flag_questions"]) for arm, r in over.items()} == {a: (2, 0) for a in arms}
    assert "| | tiny-qwen3-medtune | tiny-qwen3 |" in logs[-1]  # the table is printed
    assert eval_problems(run / "eval") == []  # the format the report's fixture is checked against

    stamps = {p: p.stat().st_mtime_ns for p in (run / "eval").rglob("*") if p.is_file()}
    logs.clear()
    evaluate_run(load_config(config), log=logs.append)
    assert sum("up to date" in line for line in logs) == 6
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # A changed question count reruns the comparison and the metrics on its answers, nothing else.
    capsys.readouterr()
    assert main(["evaluate", str(config), "--set", "evaluate.max_questions=1"]) == 0
    printed = capsys.readouterr().out
    assert "perplexity is up to date" in printed and "safety is up to date" in printed
    assert "compare is up to date" not in printed and "metrics is up to date" not in printed
    assert "over_triage is up to date" not in printed  # it reads the comparison's answers
    answers = (run / "eval" / "compare" / "answers.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(answers) == 2
    assert json.loads((run / "eval" / "metrics.json").read_text())["tiny-qwen3"]["n"] == 1
    assert (run / "config.yaml").is_file()  # the resolved config of what ran


def test_stage_without_validation_samples_skips_perplexity(tiny_run, tmp_path):
    from medtune.data.prepare import prepare_dataset

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = write_config(tmp_path, json.dumps({
        "output_dir": str(run), "data": {"train_files": [str(tiny_run.parent / "train.jsonl")], "max_length": 128},
        "evaluate": {"questions": None, "safety": None}}))
    prepare_dataset(load_config(config), force=True, log=lambda *_: None)  # val_size 0: an empty data/val
    logs: list[str] = []
    assert evaluate_run(load_config(config), log=logs.append) == {}
    assert any("no validation samples" in line for line in logs)


def test_stage_without_a_trained_adapter(tiny_run, tmp_path):
    config = write_config(tmp_path, json.dumps({"output_dir": str(tmp_path / "empty"),
                                                "model": {"name_or_path": str(tiny_run / "base_model")}}))
    with pytest.raises(UserError, match=r"no LoRA adapter in .*run `medtune train CONFIG` first"):
        evaluate_run(load_config(config), log=lambda *_: None)


def test_cli_perplexity(tiny_run, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    assert main(["evaluate", "perplexity", "--model", str(tiny_run / "base_model"), "--adapter", str(tiny_run),
                 "--data", str(tiny_run), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["samples"] == 5 and f"wrote {out}" in capsys.readouterr().out


def test_cli_compare_metrics_and_safety_on_an_endpoint(openai_server, tmp_path, capsys):
    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"id": "q01", "reference": ANSWER}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(["evaluate", "compare", "--model", "served-qwen", "--base-url", openai_server.url, "--thinking",
                 "both", "--questions", str(QUESTIONS), "--max-questions", "1", "--max-new-tokens", "64",
                 "--output", str(tmp_path / "cmp")]) == 0
    assert "| | served-qwen | served-qwen/think |" in capsys.readouterr().out
    assert main(["evaluate", "metrics", "--answers", str(tmp_path / "cmp" / "answers.jsonl"), "--references",
                 str(refs), "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["served-qwen"]["rouge_l"] == 1.0 and metrics["served-qwen/think"]["rouge_l"] == 1.0
    assert main(["evaluate", "safety", "--model", "served-qwen", "--base-url", openai_server.url, "--prompts",
                 str(REDFLAGS), "--judge-base-url", openai_server.url, "--judge-model", "j", "--greedy",
                 "--max-new-tokens", "64", "--output", str(tmp_path / "s.json")]) == 0
    safety = json.loads((tmp_path / "s.json").read_text())["served-qwen"]
    assert safety["n"] == 42 and safety["judge"]["n"] == 42
    assert (tmp_path / "s_answers.jsonl").is_file()


def test_cli_bad_input_exits_2_naming_file_and_line(tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "q1", "answer": "好"}) + "\n", encoding="utf-8")
    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"id": "q1", "reference": "好"}) + "\n" + json.dumps({"id": "q2"}) + "\n",
                    encoding="utf-8")
    assert main(["evaluate", "metrics", "--answers", str(answers), "--references", str(refs),
                 "--output", str(tmp_path / "m.json")]) == 2
    assert f"{refs}:2: missing or empty field 'reference'" in capsys.readouterr().err
    assert main(["evaluate", "compare", "--output", str(tmp_path / "c")]) == 2
    assert "give --model" in capsys.readouterr().err
    assert main(["evaluate", "comapre", "--model", "m"]) == 2
    assert "no config file 'comapre'; give a YAML config, or one of the evaluations: perplexity, compare" \
        in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml'; give a YAML config" in capsys.readouterr().err


def test_cli_help_lists_the_evaluations(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "medtune evaluate CONFIG" in out
    for name in ("perplexity", "compare", "metrics", "safety"):
        assert f"  {name} " in out
    with pytest.raises(SystemExit):
        main(["evaluate", "compare", "--help"])
    assert "--thinking {off,on,both}" in capsys.readouterr().out


def test_stage_judges_the_first_arm_against_the_others(openai_server, tmp_path):
    """With a judge configured, the stage judges arm 0 against each other arm on the comparison's answers.
    The loopback judge never writes a verdict tag, so every question is counted unparsable, never guessed."""
    config = write_config(tmp_path, json.dumps({
        "output_dir": str(tmp_path / "run"),
        "evaluate": {"perplexity": False, "safety": None, "questions": str(QUESTIONS), "max_questions": 2,
                     "judge_base_url": openai_server.url, "judge_model": "j",
                     "compare": [{"name": "a", "model": "served-qwen", "base_url": openai_server.url},
                                 {"name": "b", "model": "served-qwen", "base_url": openai_server.url}],
                     "generation": {"max_new_tokens": 16}}}))
    outputs = evaluate_run(load_config(config), log=lambda *_: None)
    assert eval_problems(tmp_path / "run" / "eval") == []
    summary = json.loads((tmp_path / "run" / "eval" / "judge" / "summary.json").read_text())
    assert outputs["judge"] == tmp_path / "run" / "eval" / "judge"
    (pair,) = summary["pairs"]
    assert (pair["a"], pair["b"]) == ("a", "b") and pair["unparsable"] == 4 and pair["n"] == 0
    assert len((tmp_path / "run" / "eval" / "judge" / "judgements.jsonl").read_text().splitlines()) == 2


def test_the_judge_is_built_once_and_its_key_goes_only_to_the_endpoint(openai_server, tmp_path, monkeypatch):
    """The configured judge endpoint is built once for the whole stage (the safety judge and the pairwise judge
    use it). Its key is sent to the judge and nowhere else: no output file holds it, and a new key leaves every
    part's fingerprint as it was (a rerun skips them all)."""
    import medtune.generate.judge as judge_module

    built = []
    real = judge_module.judge_endpoint
    monkeypatch.setattr(judge_module, "judge_endpoint", lambda *a: built.append(a) or real(*a))
    monkeypatch.setenv("MEDTUNE_TEST_JUDGE_KEY", "sk-medtune-test-4f9a")
    safety = tmp_path / "redflags.jsonl"
    safety.write_text("".join(REDFLAGS.read_text(encoding="utf-8").splitlines(keepends=True)[:3]), encoding="utf-8")
    config = write_config(tmp_path, json.dumps({
        "output_dir": str(tmp_path / "run"),
        "evaluate": {"perplexity": False, "safety": str(safety), "questions": str(QUESTIONS), "max_questions": 2,
                     "judge_base_url": openai_server.url, "judge_model": "j",
                     "judge_api_key_env": "MEDTUNE_TEST_JUDGE_KEY",
                     "compare": [{"name": "a", "model": "served-qwen", "base_url": openai_server.url},
                                 {"name": "b", "model": "served-qwen", "base_url": openai_server.url}],
                     "generation": {"max_new_tokens": 16}}}))
    evaluate_run(load_config(config), log=lambda *_: None)
    assert len(built) == 1
    assert openai_server.keys["j"] == {"Bearer sk-medtune-test-4f9a"}  # the safety and pairwise judge requests
    assert "Bearer sk-medtune-test-4f9a" not in openai_server.keys["served-qwen"]
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert not [p for p in written if b"sk-medtune-test-4f9a" in p.read_bytes()]
    parts = json.loads((tmp_path / "run" / "eval" / "manifest.json").read_text())["parts"]
    assert {"safety", "judge"} <= parts.keys()

    monkeypatch.setenv("MEDTUNE_TEST_JUDGE_KEY", "sk-rotated")
    logs, sent = [], len(openai_server.requests)
    evaluate_run(load_config(config), log=logs.append)
    assert len(openai_server.requests) == sent and sum("up to date" in m for m in logs) == len(parts)
    monkeypatch.delenv("MEDTUNE_TEST_JUDGE_KEY")
    with pytest.raises(UserError, match="evaluate.judge_api_key_env MEDTUNE_TEST_JUDGE_KEY: that environment "
                                        "variable is not set"):
        evaluate_run(load_config(config), force=True, log=lambda *_: None)
    assert len(openai_server.requests) == sent  # found before any request


# -- one model in memory at a time (vLLM takes 90% of the GPU's memory per engine) --

class FakeTokenizer:
    chat_template, name_or_path, eos_token_id = "fake", "fake", 0

    def apply_chat_template(self, messages, **kwargs):
        return messages[-1]["content"]

    def __call__(self, text, **kwargs):
        return {"input_ids": [1] * len(text)}


class FakeGenerator:
    """Counts the generators alive; loading one while another is alive fails the test."""

    alive: list[str] = []
    loaded: list[str] = []

    def __init__(self, model):
        assert not FakeGenerator.alive, f"loading {model} while {FakeGenerator.alive} is still loaded"
        self.model, self.tokenizer = model, FakeTokenizer()
        FakeGenerator.alive.append(model)
        FakeGenerator.loaded.append(model)

    def close(self):
        FakeGenerator.alive.remove(self.model)

    def use_adapter(self, adapter):
        import contextlib

        return contextlib.nullcontext(self)

    def generate_one(self, prompt_ids, sampling, enable_thinking=False):
        from medtune.generate.sampling import Generation

        return Generation("请立即拨打120。", "", "请立即拨打120。", 3, 0, "stop", latency_seconds=0.01,
                          ttft_seconds=0.005)

    def generate_ids(self, prompts, sampling, enable_thinking=False, batch_size=8):
        return [self.generate_one(p, sampling) for p in prompts]


def test_stage_frees_each_model_before_the_next_loads(tmp_path, monkeypatch):
    import medtune.evaluate.bench as bench
    import medtune.evaluate.engines as engines

    monkeypatch.setattr(FakeGenerator, "alive", [])
    monkeypatch.setattr(FakeGenerator, "loaded", [])
    monkeypatch.setattr(engines, "load_generator", lambda model, **kwargs: FakeGenerator(model))
    benchmarked = []

    def fake_benchmark(model, adapter, path, format, method, shots, dev_path, output, *args, **kwargs):
        assert not FakeGenerator.alive, f"benchmark model {model} loaded while {FakeGenerator.alive} is loaded"
        benchmarked.append((model, adapter))
        write_json = __import__("medtune.rundir", fromlist=["write_json"]).write_json
        write_json(output, {"benchmark": "b", "format": format, "method": method, "shots": shots, "model": model,
                            "adapter": adapter, "arm": kwargs.get("arm"), "data": str(output), "items": []})

    monkeypatch.setattr(bench, "run_benchmark", fake_benchmark)
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text(json.dumps({"r": 4, "base_model_name_or_path": "org/base"}))
    (run / "adapter_model.safetensors").write_bytes(b"")
    bench_file = tmp_path / "bench.jsonl"
    bench_file.write_text("{}\n")
    safety = tmp_path / "redflags.jsonl"
    safety.write_text("".join(REDFLAGS.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    config = write_config(tmp_path, json.dumps({
        "output_dir": str(run), "model": {"name_or_path": "org/base"},
        "evaluate": {"perplexity": False, "questions": str(QUESTIONS), "max_questions": 2, "safety": str(safety),
                     "compare": [{"name": "tuned", "model": "run:base", "adapter": "run"},
                                 {"name": "other", "model": "org/other"}],
                     "benchmarks": [{"path": str(bench_file)}]}}))
    evaluate_run(load_config(config), log=lambda *_: None)
    # compare: base, then other; safety: base again, then other; then the benchmarks, each alone.
    assert FakeGenerator.loaded == ["org/base", "org/other", "org/base", "org/other"]
    assert benchmarked == [("org/base", str(run)), ("org/other", None)]
    assert FakeGenerator.alive == []
