"""Multiple-choice benchmarks: the four layouts load with their quirks and reject broken rows with reasons,
prompts match lm-evaluation-harness's cmmlu task, log-likelihood scoring equals a plain forward pass and
lm-eval's own result, generation scoring extracts letters without guessing, results and significance
tests are complete, and the command line runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medtune.errors import UserError
from medtune.evaluate.bench import (continuation_logprobs, generate_replies, run_benchmark, select_shots, significance)
from medtune.data.mcq import build_prompt, extract_choice
from medtune.data.mcq import load_items
from tests.conftest import CMMLU_DEV, needs_shared

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
CMMLU_FIXTURE = FIXTURES / "cmmlu"
RESULT_KEYS = {"benchmark", "format", "method", "shots", "model", "adapter", "accuracy", "n", "correct", "ci_low",
               "ci_high", "extraction_failures", "subjects", "rejected", "items", "multi_answer_items"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random Qwen3 whose answer-letter preferences vary between questions (init range 0.2)."""
    from medtune.modeling import build_tiny_qwen3

    return str(build_tiny_qwen3(tmp_path_factory.mktemp("bench") / "tiny", seed=0, initializer_range=0.2))


@pytest.fixture(scope="module")
def loaded(tiny_model):
    from medtune.modeling import load_model

    return load_model(tiny_model)


def reasons(rejected):
    return [(Path(r["file"]).name, r["line"], r["reason"]) for r in rejected]


# -- loaders --

def test_cmmlu_loader_quirks_and_rejections():
    items, rejected = load_items(CMMLU_FIXTURE, "cmmlu")
    assert [(it.id, it.subject, it.answer) for it in items] == [
        ("anatomy.csv:2", "anatomy", "B"), ("anatomy.csv:3", "anatomy", "D"),  # BOM; full-width 'Ｄ'
        ("anatomy.csv:4", "anatomy", "C"),  # ' c. '
        ("anatomy.csv:5", "anatomy", "B"),  # a quoted question over two lines
        ("virology.csv:2", "virology", "B"), ("virology.csv:3", "virology", "C"),
        ("virology.csv:4", "virology", "C"), ("virology.csv:5", "virology", "A")]
    assert items[3].question == "十二指肠大乳头\n位于" and items[0].options == {
        "A": "肋胸膜", "B": "肺胸膜", "C": "膈胸膜", "D": "胸膜顶"}
    assert reasons(rejected) == [
        ("anatomy.csv", 7, "question: empty"),
        ("anatomy.csv", 8, "options: option D is empty"),
        ("anatomy.csv", 9, "answer: E is not one of the options ABCD"),
        ("anatomy.csv", 10, "8 columns, the header has 7"),
        ("anatomy.csv", 11, "answer: missing")]


def test_cmexam_loader_quirks_and_rejections():
    items, rejected = load_items(FIXTURES / "cmexam_sample.csv", "cmexam")
    assert [(it.id, it.subject, it.answer, it.multi) for it in items] == [
        ("cmexam_sample.csv:2", "临床医学", "A", None),
        ("cmexam_sample.csv:7", "临床医学", "AB", None),  # multi-answer
        ("cmexam_sample.csv:12", "临床医学", "C", None),  # 'Ａ．' labels, 'Ｃ' answer
        ("cmexam_sample.csv:16", "药学", "B", None)]  # ' B. '
    assert items[0].options["E"] == "肺栓塞" and items[2].options == {
        "A": "维生素B12", "B": "叶酸", "C": "铁剂", "D": "促红细胞生成素"}
    assert reasons(rejected) == [
        ("cmexam_sample.csv", 20, "options: option C is missing"),
        ("cmexam_sample.csv", 24, "answer: F is not one of the options ABCD"),
        ("cmexam_sample.csv", 28, "question: empty"),
        ("cmexam_sample.csv", 31, "answer: missing"),
        ("cmexam_sample.csv", 35, "Options: cannot read the option line '这是一行说明' (expected 'A text')")]


def test_cmb_loader_quirks_and_rejections():
    items, rejected = load_items(FIXTURES / "cmb_sample.json", "cmb")
    assert [(it.id, it.subject, it.answer, it.multi, len(it.options)) for it in items] == [
        ("cmb_sample.json:2", "内科", "C", False, 5),
        ("cmb_sample.json:18", "内科", "ACD", True, 5),
        ("cmb_sample.json:34", "儿科", "B", False, 4),  # the empty trailing "E": "" is dropped
        ("cmb_sample.json:50", "儿科", "AC", True, 5)]  # 'A、C'
    assert reasons(rejected) == [
        ("cmb_sample.json", 66, "answer: 2 letters (AB) for a single-answer question"),
        ("cmb_sample.json", 82, "answer: missing, and id 6 is in no answer file (CMB-test keeps its answers in "
                                "CMB-test-choice-answer.json: put it in the same directory)"),
        ("cmb_sample.json", 97, "options: missing"),
        ("cmb_sample.json", 106, "question: empty")]


def test_medqa_loader_quirks_and_rejections():
    items, rejected = load_items(FIXTURES / "medqa_sample.jsonl", "medqa")
    assert [(it.id, it.subject, it.answer) for it in items] == [
        ("medqa_sample.jsonl:1", "step2&3", "C"), ("medqa_sample.jsonl:2", "临床执业医师", "B"),
        ("medqa_sample.jsonl:4", "临床执业医师", "B")]  # answer_idx ' b '
    assert reasons(rejected) == [
        ("medqa_sample.jsonl", 5, "answer: the text '红霉素' is not option A ('青霉素')"),
        ("medqa_sample.jsonl", 6, "invalid JSON: Expecting ',' delimiter"),
        ("medqa_sample.jsonl", 7, "answer: F is not one of the options ABCDE"),
        ("medqa_sample.jsonl", 8, "options: option D is missing")]


def test_loader_errors_for_whole_files(tmp_path):
    with pytest.raises(UserError, match="benchmark data not found"):
        load_items(tmp_path / "absent.csv", "cmmlu")
    bad = tmp_path / "x.csv"
    bad.write_text("q,a,b\n1,2,3\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"x.csv: not the CMMLU layout .*Question, A, B, C, D, Answer"):
        load_items(bad, "cmmlu")
    bad.write_bytes("Question,A,B,C,D,Answer\n题,甲,乙,丙,丁,A\n".encode("gb18030"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_items(bad, "cmmlu")


# -- prompts and few-shot --

def test_prompt_is_lm_eval_cmmlu_format():
    items, _ = load_items(CMMLU_FIXTURE, "cmmlu")
    examples, scored = select_shots(items, None, 1, "fixture")
    assert [s.id for s in examples["anatomy"]] == ["anatomy.csv:2"] and len(scored) == len(items) - 2
    assert build_prompt(scored[0], examples["anatomy"], "cmmlu") == (
        "以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n"
        "壁胸膜的分部不包括\nA. 肋胸膜\nB. 肺胸膜\nC. 膈胸膜\nD. 胸膜顶\n答案： B\n\n"
        "属于右心房的结构是\nA. 肉柱\nB. 室上嵴\nC. 乳头肌\nD. 梳状肌\n答案：")
    medqa, _ = load_items(FIXTURES / "medqa_sample.jsonl", "medqa")
    english = build_prompt(medqa[0], [], "medqa")
    assert english.startswith("The following are multiple choice questions (with answers) about medicine.\n\nA 23")
    assert english.endswith("\nE. Appendicitis\nAnswer:")
    cmb, _ = load_items(FIXTURES / "cmb_sample.json", "cmb")
    assert build_prompt(cmb[1], [], "cmb").startswith("以下是关于内科的多项选择题")


def test_shots_from_a_dev_file_are_not_excluded_and_must_suffice(tmp_path):
    items, _ = load_items(CMMLU_FIXTURE, "cmmlu")
    dev = tmp_path / "dev"
    dev.mkdir()
    shutil.copy(CMMLU_FIXTURE / "virology.csv", dev / "virology.csv")
    shutil.copy(CMMLU_FIXTURE / "virology.csv", dev / "anatomy.csv")  # another file: nothing excluded
    dev_items, _ = load_items(dev, "cmmlu")
    examples, scored = select_shots(items, dev_items, 2, str(dev))
    assert scored == items and [s.id for s in examples["anatomy"]] == ["anatomy.csv:2", "anatomy.csv:3"]
    with pytest.raises(UserError, match=r"--shots 5: .* has only 4 item\(s\) for subject 'anatomy'"):
        select_shots(items, None, 5, "fixture")


# -- answer extraction --

@pytest.mark.parametrize("reply, expected", [
    ("答案是B", "B"), ("答案：B", "B"), ("B. 肺胸膜", "B"), ("选B", "B"), ("(C)", "C"), ("（Ｃ）", "C"),
    ("Ｂ", "B"), ("正确答案：A、C", "AC"), ("正确答案是A和C。", "AC"), ("ACD", "ACD"), ("A, C", "AC"),
    ("答案是C和A", "AC"),  # sorted, as gold sets are: a multi-answer item needs exactly the gold set
    ("答案是B。因为A不对", "B"), ("**答案：B**", "B"), ("我认为应该选择D。", "D"), ("正确答案为：D.", "D"),
    ("The answer is (C).", "C"), ("Answer: D", "D"), ("C项正确", "C"),
    ("<think>可能是A</think>\n\n答案是C", "C"),  # thinking is stripped first
    ("<think>答案是A", None),  # never closed: an empty answer
    ("B超检查显示胆囊结石", None), ("DNA是遗传物质", None), ("A型血的人", None), ("我不知道", None), ("", None),
    ("答案是A。……综上，答案是B", None),  # contradicts itself
    ("答案是E", None),  # not an option
    ("选项A错误，选项B正确", None),  # mentions options without choosing one
])
def test_extract_choice(reply, expected):
    assert extract_choice(reply, "ABCD") == expected


# -- scoring on a tiny model --

def test_continuation_logprobs_equal_a_plain_forward_pass(loaded):
    from tests.test_bench_prefix import plain_forward_scores

    model, tok = loaded
    requests = [("以下是关于解剖学的单项选择题。\n\n壁胸膜的分部不包括\n答案：", " B"),
                ("以下是关于解剖学的单项选择题。\n\n壁胸膜的分部不包括\n答案：", " 肺胸膜和膈胸膜"),
                ("短", " A"), ("上下文以空格结尾 ", "B")]
    expected = plain_forward_scores(model, tok, requests)
    for batch_size in (1, 3):
        got = continuation_logprobs(model, tok, requests, batch_size=batch_size)
        assert got == pytest.approx(expected, abs=1e-4)


def test_run_benchmark_loglik_writes_the_result(tiny_model, tmp_path):
    out = tmp_path / "eval" / "benchmarks" / "cmmlu.json"
    result = run_benchmark(tiny_model, None, str(CMMLU_FIXTURE), "cmmlu", "loglik", 1, None, out, batch_size=3)
    assert json.loads(out.read_text(encoding="utf-8")) == result
    assert RESULT_KEYS <= set(result) and result["n"] == 6 and result["shots"] == 1
    assert [r["reason"] for r in result["rejected"]][:1] == ["question: empty"] and len(result["rejected"]) == 5
    items = result["items"]
    assert [o["id"] for o in items] == ["anatomy.csv:3", "anatomy.csv:4", "anatomy.csv:5",
                                        "virology.csv:3", "virology.csv:4", "virology.csv:5"]
    for o in items:
        assert o["predicted"] == max(o["logprobs"], key=o["logprobs"].get)
        assert o["correct"] == (o["predicted"] == o["gold"])
    assert result["correct"] == sum(o["correct"] for o in items) and result["extraction_failures"] == 0
    assert result["accuracy"] == result["correct"] / 6 and result["ci_low"] <= result["accuracy"] <= result["ci_high"]
    assert set(result["subjects"]) == {"anatomy", "virology"}
    assert sum(s["n"] for s in result["subjects"].values()) == 6


def test_loglik_scores_multi_answer_items_wrong(tiny_model, tmp_path):
    result = run_benchmark(tiny_model, None, str(FIXTURES / "cmb_sample.json"), "cmb", "loglik", 0, None,
                           tmp_path / "cmb.json")
    assert result["multi_answer_items"] == 2 and result["n"] == 4
    for o in result["items"]:
        assert len(o["predicted"]) == 1
        if len(o["gold"]) > 1:
            assert o["correct"] is False


def test_run_benchmark_generate_counts_extraction_failures(tiny_model, loaded, tmp_path):
    result = run_benchmark(tiny_model, None, str(FIXTURES / "cmexam_sample.csv"), "cmexam", "generate", 0, None,
                           tmp_path / "gen.json", batch_size=3, max_new_tokens=6)
    assert result["n"] == 4 and result["method"] == "generate"
    letters = {it.id: "".join(it.options) for it in load_items(FIXTURES / "cmexam_sample.csv", "cmexam")[0]}
    for o in result["items"]:
        assert o["predicted"] == extract_choice(o["output"], letters[o["id"]])
        assert o["correct"] == (o["predicted"] == o["gold"])
    assert result["extraction_failures"] == sum(o["predicted"] is None for o in result["items"])
    # Batched left-padded greedy decoding gives what one prompt at a time gives.
    model, tok = loaded
    prompts = ["以下是关于内科的选择题。\n\n胸痛首选的检查是\nA. 心电图\nB. 胃镜\n答案：", "短问题", "另一个稍长一些的问题？"]
    assert generate_replies(model, tok, prompts, batch_size=3, max_new_tokens=5) == \
        generate_replies(model, tok, prompts, batch_size=1, max_new_tokens=5)


def test_significance_pairs_results_on_the_same_items():
    def result(model, outcomes, data="/d/cmmlu", ids=None):
        ids = ids or [f"q{i}" for i in range(len(outcomes))]
        return {"benchmark": "cmmlu", "format": "cmmlu", "data": data, "method": "loglik", "shots": 0,
                "model": model, "adapter": None,
                "items": [{"id": i, "correct": c} for i, c in zip(ids, outcomes)]}

    a = result("base", [True] * 10 + [False] * 2 + [True] * 5)
    b = result("tuned", [False] * 10 + [True] * 2 + [True] * 5)
    c = result("other", [True] * 3, data="/d/elsewhere")
    d = result("fewshot", [True, False], ids=["q0", "q10"])
    tests = significance([a, b, c, d])["tests"]
    assert [(t["a"], t["b"]) for t in tests] == [
        ("base (loglik, 0-shot)", "tuned (loglik, 0-shot)"), ("base (loglik, 0-shot)", "fewshot (loglik, 0-shot)"),
        ("tuned (loglik, 0-shot)", "fewshot (loglik, 0-shot)")]
    first = tests[0]
    assert (first["n"], first["only_a"], first["only_b"], first["unpaired_items"]) == (17, 10, 2, 0)
    assert first["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)
    assert first["accuracy_a"] == pytest.approx(15 / 17) and first["accuracy_b"] == pytest.approx(7 / 17)
    assert (tests[1]["n"], tests[1]["unpaired_items"]) == (2, 15)


# -- command line --

def bench_parser():
    from medtune.evaluate.cli import build_parser

    return build_parser()[0]


def test_bench_cli(tiny_model, tmp_path, capsys):
    out = tmp_path / "b.json"
    args = bench_parser().parse_args(["bench", "--model", tiny_model, "--data", str(FIXTURES / "medqa_sample.jsonl"),
                                      "--format", "medqa", "--method", "loglik", "--shots", "1",
                                      "--output", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "4 row(s) rejected" in printed and f"wrote {out}" in printed
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["benchmark"] == "medqa_sample" and result["n"] == 1  # one per subject is an example
    with pytest.raises(SystemExit) as e:
        bench_parser().parse_args(["bench", "--help"])
    assert e.value.code == 0 and "--method {loglik,generate}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_parser().parse_args(["bench", "--model", "m", "--data", "d", "--format", "mmlu", "--output", "o"])


# -- the reference implementation --

LM_EVAL_TASK = """task: {task}
dataset_path: csv
dataset_kwargs:
  data_files:
    test: {test}
    dev: {dev}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
num_fewshot: {shots}
output_type: multiple_choice
doc_to_text: "{{{{Question.strip()}}}}\\nA. {{{{A}}}}\\nB. {{{{B}}}}\\nC. {{{{C}}}}\\nD. {{{{D}}}}\\n答案："
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(Answer)}}}}"
description: "以下是关于{name}的单项选择题，请直接给出正确答案的选项。\\n\\n"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@needs_shared
def test_loglik_accuracy_equals_lm_eval_cmmlu(tiny_model, tmp_path, monkeypatch):
    """lm-eval's own harness on the same saved model and CSVs: the same accuracy, predictions and scores."""
    pytest.importorskip("lm_eval")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from medtune.data.mcq import CMMLU_SUBJECTS_ZH

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zero, test, dev, tasks = tmp_path / "zero", tmp_path / "test", tmp_path / "dev", tmp_path / "tasks"
    for d in (zero, test, dev, tasks):
        d.mkdir()
    zero_shot, two_shot = ["anatomy", "virology", "clinical_knowledge"], ["genetics", "nutrition"]
    for subject in zero_shot:  # 0-shot on the whole file
        shutil.copy(CMMLU_DEV / f"{subject}.csv", zero / f"{subject}.csv")
    for subject in two_shot:  # 2-shot: examples from a separate dev file, as lm-eval's fewshot_split
        header, *rows = (CMMLU_DEV / f"{subject}.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        (dev / f"{subject}.csv").write_text(header + "".join(rows[:2]), encoding="utf-8")
        (test / f"{subject}.csv").write_text(header + "".join(rows[2:]), encoding="utf-8")
    for subject in zero_shot + two_shot:
        folder, shots = (zero, 0) if subject in zero_shot else (test, 2)
        (tasks / f"{subject}.yaml").write_text(LM_EVAL_TASK.format(
            task=f"local_cmmlu_{subject}", test=folder / f"{subject}.csv", dev=(dev if shots else folder) / f"{subject}.csv",
            shots=shots, name=CMMLU_SUBJECTS_ZH[subject]), encoding="utf-8")
    reference = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tiny_model},dtype=float32", device="cpu", batch_size=4,
        tasks=[f"local_cmmlu_{s}" for s in zero_shot + two_shot], log_samples=True,
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False))

    ours = {**run_benchmark(tiny_model, None, str(zero), "cmmlu", "loglik", 0, None, tmp_path / "z.json")["subjects"],
            **run_benchmark(tiny_model, None, str(test), "cmmlu", "loglik", 2, str(dev), tmp_path / "t.json")["subjects"]}
    items = {o["id"]: o for path in ("z.json", "t.json")
             for o in json.loads((tmp_path / path).read_text(encoding="utf-8"))["items"]}
    predictions = []
    for subject in zero_shot + two_shot:
        task = f"local_cmmlu_{subject}"
        assert ours[subject]["accuracy"] == reference["results"][task]["acc,none"], subject
        for sample in reference["samples"][task]:
            ours_item = items[f"{subject}.csv:{sample['doc_id'] + 2}"]
            theirs = [float(r[0]) for r in sample["filtered_resps"]]
            assert [ours_item["logprobs"][k] for k in "ABCD"] == pytest.approx(theirs, abs=1e-4)
            assert ours_item["predicted"] == "ABCD"[theirs.index(max(theirs))]
            assert ours_item["correct"] == bool(sample["acc"])
            predictions.append(ours_item["predicted"])
    assert len(predictions) == 21 and len(set(predictions)) > 1  # not a model that always says the same letter


def test_bench_loglik_benchmark_script_smoke(tiny_model, monkeypatch, capsys):
    """benchmarks/bench_loglik.py at a tiny size (in this process: torch is imported already): it runs, and
    its last line is the JSON it promises."""
    import runpy

    pytest.importorskip("lm_eval")
    script = Path(__file__).parents[1] / "benchmarks" / "bench_loglik.py"
    monkeypatch.setattr("sys.argv", [str(script), "--model", tiny_model, "--data", str(CMMLU_FIXTURE),
                                     "--shots", "1", "--repeat", "1", "--batch-size", "4"])
    runpy.run_path(str(script), run_name="__main__")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["requests"] == 32 and result["same_predictions"] is True
    assert result["max_abs_logprob_difference"] < 1e-4 and result["speedup"] > 0
    assert result["distinct_inputs"] == 8  # the four letters of a question share one input
    assert result["prefix_groups"] >= 0 and 0 <= result["prefix_shared_token_share"] <= 1
