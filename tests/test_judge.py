"""LLM-as-judge against a real OpenAI-compatible HTTP server on loopback: both orders, win/tie/loss, order
consistency, unparsable replies counted, transient errors retried, thinking stripped, and a
length-controlled win rate that sees through a length-biased judge."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from medtune.errors import UserError
from medtune.evaluate.cli import build_parser
from medtune.evaluate.judge import judge_pairwise, length_controlled_win_rate
from medtune.generate.judge import JudgeEndpoint, combine_orders, judge_endpoint, parse_verdict
from medtune.text import answer_only


class FakeJudge(BaseHTTPRequestHandler):
    """POST /v1/chat/completions. The rule: prefer the answer that mentions 就医; both -> tie; neither -> the
    first answer (a position-biased judge). '无法判断' questions get one reply without a verdict, '需要重试'
    questions one HTTP 500, '总是失败' questions only 503s. Every reply starts with thinking holding a
    decoy tag."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        prompt = body["messages"][-1]["content"]
        with server.lock:
            server.prompts.append(prompt)
            server.auth.add(self.headers.get("Authorization"))
            question = re.search(r"\[问题\]\n(.*?)\n\n\[回答1开始\]", prompt, re.S).group(1)
            seen = server.seen[question] = server.seen.get(question, 0) + 1
        if body["model"] != "judge-1":
            return self.reply(404, {"error": {"message": f"model {body['model']} not found"}})
        if "总是失败" in question or ("需要重试" in question and seen == 1):
            return self.reply(503 if "总是失败" in question else 500, {"error": {"message": "overloaded"}})
        first = re.search(r"\[回答1开始\]\n(.*?)\n\[回答1结束\]", prompt, re.S).group(1)
        second = re.search(r"\[回答2开始\]\n(.*?)\n\[回答2结束\]", prompt, re.S).group(1)
        if server.prefer_longer:
            text = "[[1]]" if len(first) > len(second) else "[[2]]"
        elif "无法判断" in question and seen == 1:
            text = "两个回答各有优缺点，难以取舍。"
        else:
            tag = {(True, False): "[[1]]", (False, True): "[[2]]", (True, True): "[[平局]]",
                   (False, False): "[[1]]"}[("就医" in first, "就医" in second)]
            text = f"<think>先看回答2。[[2]]</think>\n正确性：相近。安全性：见上。\n{tag}"
        self.reply(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}]})

    def reply(self, status, obj):
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    server.lock, server.prompts, server.auth, server.seen = threading.Lock(), [], set(), {}
    server.prefer_longer = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


QUESTIONS = ["头痛三天怎么办？", "发烧38度怎么办？", "胸口痛要紧吗？", "咳嗽吃什么药？", "无法判断：腹痛怎么办？",
             "需要重试：失眠怎么办？", "小孩出疹子怎么办？", "高血压能停药吗？"]
BASE = ["多喝水，休息。", "建议尽快就医。", "胸痛可能很危险，请立即就医。", "多喝温水。", "先观察。",
        "睡前少看手机。", "先观察，必要时就医。", "不能自行停药，请就医复诊。"]
TUNED = ["先休息；如果剧烈头痛或伴呕吐，请及时就医。", "可以去医院就医检查。", "可能是肌肉拉伤，多休息。",
         "可以吃止咳糖浆。", "热敷一下。", "长期失眠建议就医。", "<think>应该建议就医，先想一想",  # never closed
         "血压正常就可以停药。"]


def test_judge_pairwise_against_a_loopback_server(judge_server, tmp_path, monkeypatch):
    server, url = judge_server
    monkeypatch.setenv("MEDTUNE_TEST_JUDGE_KEY", "sk-test")
    judge = JudgeEndpoint(url, "judge-1", "MEDTUNE_TEST_JUDGE_KEY")
    summary = judge_pairwise(QUESTIONS, {"base": BASE, "tuned": TUNED}, judge, tmp_path,
                             seed=3, workers=3)
    (pair,) = summary["pairs"]
    # wins: 胸口痛, 出疹子 (the unclosed-think answer is empty), 停药; losses: 头痛, 失眠 (after one retry);
    # ties: 发烧 (both say 就医), 咳嗽 (neither: the judge picks answer 1 in both orders, which disagree);
    # 腹痛 has an unparsable reply and no outcome.
    assert (pair["a"], pair["b"], pair["n"]) == ("base", "tuned", 7)
    assert (pair["wins"], pair["ties"], pair["losses"]) == (3, 2, 2)
    assert pair["win_rate"] == pytest.approx(4 / 7)
    assert pair["order_consistency"] == pytest.approx(6 / 7)
    assert (pair["unparsable"], pair["failed"], pair["unjudged_question_ids"]) == (1, 0, ["4"])
    assert len(server.prompts) == 2 * 8 + 1 and server.auth == {"Bearer sk-test"}  # one retry after the 500
    assert not any("<think>" in p or "应该建议就医" in p for p in server.prompts)
    assert sum("（空回答）" in p for p in server.prompts) == 2

    rows = [json.loads(x) for x in (tmp_path / "judgements.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["outcome"] for r in rows] == ["loss", "tie", "win", "tie", None, "loss", "win", "win"]
    assert rows[3]["verdict_a_first"] == "1" and rows[3]["verdict_b_first"] == "1" and not rows[3]["orders_agree"]
    assert rows[4]["unparsable"] == 1 and rows[6]["answer_b"] == ""
    # Independent expected values: the length-controlled rate by scipy's optimiser on the documented objective,
    # the interval by a percentile bootstrap written here.
    judged = [(r, {"win": 1.0, "tie": 0.5, "loss": 0.0}[r["outcome"]]) for r in rows if r["outcome"]]
    scores = [score for _, score in judged]
    diffs = [(len(r["answer_a"]) - len(r["answer_b"])) / (len(r["answer_a"]) + len(r["answer_b"])) for r, _ in judged]
    assert pair["length_controlled_win_rate"] == pytest.approx(scipy_length_controlled(scores, diffs), abs=1e-6)
    assert pair["win_rate_ci"] == pytest.approx(percentile_bootstrap(scores, mean, seed=3, resamples=2000))
    lc_ci = percentile_bootstrap(list(zip(scores, diffs)), lambda pts: scipy_length_controlled(*zip(*pts)), seed=3,
                                 resamples=1000)
    assert pair["length_controlled_win_rate_ci"] == pytest.approx(lc_ci, abs=1e-5)
    assert pair["win_rate_ci"][0] <= pair["win_rate"] <= pair["win_rate_ci"][1]
    lc_lo, lc_hi = pair["length_controlled_win_rate_ci"]
    assert lc_lo <= pair["length_controlled_win_rate"] <= lc_hi and lc_lo < lc_hi
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == summary
    assert summary["judge_model"] == "judge-1" and summary["questions"] == 8


def test_failures_are_counted_and_config_errors_stop(judge_server, tmp_path):
    server, url = judge_server
    summary = judge_pairwise(["总是失败：头晕", "头痛怎么办？"], {"a": ["就医", "休息"], "b": ["休息", "就医"]},
                             JudgeEndpoint(url, "judge-1", "MEDTUNE_TEST_UNSET_KEY"), tmp_path, retries=2, workers=2)
    (pair,) = summary["pairs"]
    assert (pair["n"], pair["failed"], pair["losses"], pair["unjudged_question_ids"]) == (1, 2, 1, ["0"])
    assert server.seen["总是失败：头晕"] == 2 * 3  # 1 try + 2 retries per order
    assert server.auth == {"Bearer EMPTY"}  # no key: the placeholder local servers accept
    rows = [json.loads(x) for x in (tmp_path / "judgements.jsonl").read_text(encoding="utf-8").splitlines()]
    assert "HTTP 503" in rows[0]["error"]
    with pytest.raises(UserError, match="HTTP 404.*--judge-model"):
        judge_pairwise(["头痛怎么办？"], {"a": ["x"], "b": ["y"]}, JudgeEndpoint(url, "no-such-model"), tmp_path)
    with pytest.raises(UserError, match="arm 'b' has 1 answers for 2 questions"):
        judge_pairwise(["q1", "q2"], {"a": ["x", "y"], "b": ["z"]}, JudgeEndpoint(url, "judge-1"), tmp_path)


def test_judge_cli(judge_server, tmp_path, monkeypatch, capsys):
    server, url = judge_server
    answers = tmp_path / "answers.jsonl"
    lines = []
    for arm, texts in (("base", BASE[:3]), ("tuned", TUNED[:3]), ("other", ["x", "y", "z"])):
        for i, (q, a) in enumerate(zip(QUESTIONS[:3], texts)):
            lines.append(json.dumps({"arm": arm, "question_id": f"q{i}", "question": q, "answer": a,
                                     "thinking_text": ""}, ensure_ascii=False))
    answers.write_text("\n".join(lines) + "\n", encoding="utf-8")
    parser, _ = build_parser()
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-cli")
    args = parser.parse_args(["judge", "--answers", str(answers), "--arms", "base,tuned", "--base-url", url,
                              "--judge-model", "judge-1", "--api-key-env", "MY_JUDGE_KEY",
                              "--output", str(tmp_path / "judge")])
    assert args.func(args) == 0
    assert "base vs tuned: 1 win / 1 tie / 1 loss (n=3)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "judge" / "summary.json").read_text(encoding="utf-8"))
    assert [(p["a"], p["b"]) for p in summary["pairs"]] == [("base", "tuned")] and server.auth == {"Bearer sk-cli"}
    rows = (tmp_path / "judge" / "judgements.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["question_id"] for r in rows] == ["q0", "q1", "q2"]

    monkeypatch.delenv("MY_JUDGE_KEY")
    with pytest.raises(UserError, match="MY_JUDGE_KEY: that environment variable is not set"):
        args.func(args)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"arm": "base", "question_id": 1, "question": "q"}\n', encoding="utf-8")
    args = parser.parse_args(["judge", "--answers", str(bad), "--arms", "base,tuned", "--base-url", url,
                              "--judge-model", "judge-1", "--output", str(tmp_path / "j2")])
    with pytest.raises(UserError, match=r"bad.jsonl:1: missing field 'answer'"):
        args.func(args)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["judge", "--help"])
    assert e.value.code == 0 and "--api-key-env VAR" in capsys.readouterr().out


@pytest.mark.parametrize("text, answer", [
    ("<think>想一想</think>\n\n答案", "答案"), ("答案", "答案"), ("  答案 \n", "答案"),
    ("<think>想了很久但没想完", ""),  # never closed: an empty answer
    ("推理过程</think>答案", "推理过程</think>答案"),  # thinking not known to be on, no opening tag: all answer
    ("<think>a</think>b</think>c", "b</think>c"),  # the first </think> closes
])
def test_answers_are_judged_without_their_thinking(text, answer):
    assert answer_only(text) == answer


@pytest.mark.parametrize("reply, verdict", [
    ("分析……\n[[1]]", "1"), ("[[2]]", "2"), ("结论：[[平局]]", "tie"), ("[[ 2 ]]", "2"), ("[[TIE]]", "tie"),
    ("输出 [[1]]、[[2]] 或 [[平局]]。\n最终：[[2]]", "2"),  # the last tag counts
    ("<think>[[1]]</think>\n[[2]]", "2"), ("回答1更好", None), ("<think>[[1]]</think>无结论", None), ("[1]", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_combine_orders():
    # (verdict with A shown first, verdict with B shown first) -> (outcome for A, orders agree)
    assert combine_orders("1", "2") == ("win", True)
    assert combine_orders("2", "1") == ("loss", True)
    assert combine_orders("tie", "tie") == ("tie", True)
    assert combine_orders("1", "1") == ("tie", False)  # position bias
    assert combine_orders("1", "tie") == ("tie", False)
    assert combine_orders(None, "2") == (None, None)


def scipy_length_controlled(scores, diffs):
    """A second implementation of the documented fit: solve the ridge-penalised logistic regression's first-order
    condition (gradient = 0) with MINPACK's hybrid Powell method (scipy.optimize.root), read at d = 0."""
    from scipy.optimize import root
    from scipy.special import expit

    y, x, ridge = np.asarray(scores, float), np.asarray(diffs, float), np.array([0.01, 0.1])

    def gradient(w):
        residual = expit(w[0] + w[1] * x) - y
        return np.array([residual.sum(), (residual * x).sum()]) + ridge * w

    def hessian(w):
        q = expit(w[0] + w[1] * x)
        q = q * (1 - q)
        return np.array([[q.sum() + ridge[0], (q * x).sum()], [(q * x).sum(), (q * x * x).sum() + ridge[1]]])

    solution = root(gradient, np.zeros(2), jac=hessian, method="hybr", options={"xtol": 1e-12})
    assert solution.success
    return float(expit(solution.x[0]))


def mean(values):
    return sum(values) / len(values)


def percentile_bootstrap(values, statistic, seed, resamples):
    """Percentile bootstrap, as stats.bootstrap_interval documents it: Python's seeded Random, n draws with
    replacement per resample, the 2.5% and 97.5% order statistics."""
    import random

    rng, n = random.Random(seed), len(values)
    stats = sorted(statistic([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    return [stats[int(0.025 * resamples)], stats[min(resamples - 1, int(0.975 * resamples))]]


def test_length_controlled_rate_matches_scipy_on_hand_made_data():
    scores = [1, 1, 0.5, 0, 1, 0, 0.5, 1, 0, 1]
    diffs = [0.5, 0.2, 0.0, -0.4, 0.3, -0.1, 0.1, 0.6, -0.5, -0.2]
    assert length_controlled_win_rate(scores, diffs) == pytest.approx(scipy_length_controlled(scores, diffs), abs=1e-6)
    # Without a length effect to remove (all differences 0) the rate is the mean score 0.75, shrunk towards 0.5
    # by the intercept penalty only: w solves 4 (0.75 - sigmoid(w)) = 0.01 w. One Newton step from ln 3:
    # dw = -0.01 ln 3 / (4 * 0.75 * 0.25) = -0.01465, so p = 0.75 - 0.1875 * 0.01465 = 0.74725.
    flat = [1, 1, 1, 0]
    assert length_controlled_win_rate(flat, [0.0] * 4) == pytest.approx(0.74725, abs=1e-4)


def test_length_controlled_interval_covers_the_unbiased_rate_and_the_raw_one_does_not(judge_server, tmp_path):
    # A judge that always prefers the longer answer, and tuned answers mostly longer (18 of 24): the raw win
    # rate of base is 6/24 and its interval excludes 0.5; the length-controlled rate and interval sit around 0.5.
    server, url = judge_server
    questions = [f"第{i}题：头痛怎么办？" for i in range(24)]
    # Length differences d = ±(4k)/(40+4k), k = 1..4: base longer on the first 6 questions, tuned on the rest.
    long_short = [("水" * (20 + 4 * (1 + i % 4)), "水" * 20) for i in range(24)]
    base = [x if i < 6 else y for i, (x, y) in enumerate(long_short)]
    tuned = [y if i < 6 else x for i, (x, y) in enumerate(long_short)]
    server.prefer_longer = True
    (pair,) = judge_pairwise(questions, {"base": base, "tuned": tuned}, JudgeEndpoint(url, "judge-1"), tmp_path,
                             workers=4)["pairs"]
    assert (pair["wins"], pair["losses"], pair["win_rate"]) == (6, 18, 0.25)
    assert pair["win_rate_ci"][1] < 0.5
    lo, hi = pair["length_controlled_win_rate_ci"]
    assert lo <= pair["length_controlled_win_rate"] <= hi
    # The fit moves the rate and its interval towards 0.5 (24 separable points and the ridge keep it from getting
    # all the way there).
    assert pair["length_controlled_win_rate"] > 0.3 and hi > pair["win_rate_ci"][1] + 0.03


def test_length_controlled_win_rate_sees_through_a_length_biased_judge():
    rng = np.random.default_rng(0)
    diffs = rng.uniform(-0.3, 0.7, 400)  # A is usually the longer answer
    # A judge that prefers the longer answer (A wins with probability sigmoid(4 d)), A no better otherwise.
    biased = (rng.uniform(size=400) < 1 / (1 + np.exp(-4 * diffs))).astype(float)
    assert biased.mean() > 0.62
    assert length_controlled_win_rate(list(biased), list(diffs)) == pytest.approx(0.5, abs=0.05)
    # A judge that always picks the longer one.
    always_longer = (diffs > 0).astype(float)
    assert always_longer.mean() > 0.7
    assert length_controlled_win_rate(list(always_longer), list(diffs)) == pytest.approx(0.5, abs=0.05)
    # A judge that ignores length: the controlled rate stays the raw rate.
    fair = (rng.uniform(size=400) < 0.7).astype(float)
    assert length_controlled_win_rate(list(fair), list(diffs)) == pytest.approx(fair.mean(), abs=0.02)
    assert length_controlled_win_rate([0.5] * 10, [0.1 * i for i in range(10)]) == pytest.approx(0.5)
    assert length_controlled_win_rate([], []) is None


def test_judge_endpoint_settings_go_together_and_a_named_key_variable_must_be_set(monkeypatch):
    names = ("--judge-base-url", "--judge-model", "--judge-api-key-env")
    assert judge_endpoint(None, None, "OPENAI_API_KEY", names) is None
    with pytest.raises(UserError, match="give --judge-base-url and --judge-model together .only --judge-model"):
        judge_endpoint(None, "j", "OPENAI_API_KEY", names)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MEDTUNE_TEST_KEY", raising=False)
    assert judge_endpoint("http://x/v1", "j", "OPENAI_API_KEY", names).key() is None  # the default may be unset
    with pytest.raises(UserError, match="--judge-api-key-env MEDTUNE_TEST_KEY: that environment variable is not set"):
        judge_endpoint("http://x/v1", "j", "MEDTUNE_TEST_KEY", names)
    monkeypatch.setenv("MEDTUNE_TEST_KEY", "sk-1")
    judge = judge_endpoint("http://x/v1", "j", "MEDTUNE_TEST_KEY", names)
    assert judge.key() == "sk-1" and "sk-1" not in repr(judge) and judge.fingerprint() == ["http://x/v1", "j"]
