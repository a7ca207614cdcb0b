"""Reference metrics on characters against values computed by hand, Chinese included."""

from __future__ import annotations

import math
import random

import pytest

from medtune.data.questions import InputFileError
from medtune.text import bleu_4, chars, distinct_n, lcs_length, rouge_l
from medtune.evaluate.metrics import score_answers


def lcs_dp(a, b) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_characters_not_words():
    assert chars("今天 天气\n很好 ab") == list("今天天气很好ab")
    # A word tokenizer would see each sentence as one (different) word and score 0.
    assert rouge_l("今天天气很好", "今天天气很好") == 1.0
    assert rouge_l("今天天气很好", "今天天气不错") > 0


def test_lcs_matches_dynamic_programming():
    assert lcs_length(list("今天天气很好"), list("今天天气不错")) == 4
    assert lcs_length([], list("abc")) == 0
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("今天气好不错ab") for _ in range(rng.randrange(0, 70))]
        b = [rng.choice("今天气好不错ab") for _ in range(rng.randrange(0, 70))]
        assert lcs_length(a, b) == lcs_dp(a, b)


def test_rouge_l_by_hand():
    # LCS 今天天气 = 4 of 6 and 6: P = R = F = 4/6.
    assert rouge_l("今天天气很好", "今天天气不错") == pytest.approx(4 / 6)
    # 我爱北京 (4, spaces dropped) vs 我爱上海北京 (6): LCS 4, P 1, R 4/6, F = 2 * 1 * (2/3) / (5/3) = 0.8.
    assert rouge_l("我 爱 北京", "我爱上海北京") == pytest.approx(0.8)
    assert rouge_l("", "我爱北京") == 0.0


def test_bleu_4_by_hand():
    # 今天天气很好 vs 今天天气不错: clipped 1-4-gram matches 4/6, 3/5, 2/4, 1/3; equal lengths, BP 1.
    assert bleu_4(["今天天气很好"], ["今天天气不错"]) == pytest.approx((4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # Corpus BLEU sums counts over answers (not a mean of sentence scores): with 好 vs 好的 added,
    # 1-grams 5/7, 2-grams 3/5, 3-grams 2/4, 4-grams 1/3; candidate 7 < reference 8 chars: BP exp(1 - 8/7).
    expected = math.exp(1 - 8 / 7) * (5 / 7 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu_4(["今天天气很好", "好"], ["今天天气不错", "好的"]) == pytest.approx(expected)
    # Clipping: a repeated character matches only as often as the reference has it.
    assert bleu_4(["好好好好"], ["好好好好"]) == pytest.approx(1.0)
    assert bleu_4(["好好好好"], ["好的好的"]) == 0.0  # no 3-gram matches: 0 without smoothing
    assert bleu_4([""], ["好"]) == 0.0


def test_bleu_4_agrees_with_sacrebleu_char():
    sacrebleu = pytest.importorskip("sacrebleu")
    cands = ["今天天气很好，适合出门散步。", "多喝水，注意休息", "发烧超过三天要去医院"]
    refs = ["今天天气不错，适合出去散步。", "注意休息，多喝温水", "发烧超过三天应及时去医院就诊"]
    score = sacrebleu.metrics.BLEU(tokenize="char").corpus_score(cands, [refs]).score
    assert bleu_4(cands, refs) * 100 == pytest.approx(score, rel=1e-9)


def test_distinct_by_hand():
    # 1-grams 好好好 + 好的: 5 in all, 2 distinct; 2-grams 好好 好好 好的: 3, 2 distinct (none across answers).
    assert distinct_n(["好好好", "好的"], 1) == pytest.approx(2 / 5)
    assert distinct_n(["好好好", "好的"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["", "好"], 2) == 0.0


def test_score_answers_per_arm():
    answers = [{"arm": "a", "question_id": "q1", "answer": "今天天气很好"},
               {"arm": "a", "question_id": "q9", "answer": "没有参考答案"},
               {"arm": "b", "question_id": "q1", "answer": "今天天气不错"}]
    result = score_answers(answers, {"q1": "今天天气不错"})
    assert result["a"]["n"] == 1 and result["a"]["unmatched"] == 1
    assert result["a"]["rouge_l"] == pytest.approx(4 / 6)
    assert result["b"]["rouge_l"] == 1.0 and result["b"]["bleu_4"] == pytest.approx(1.0)
    assert result["b"]["distinct_1"] == pytest.approx(5 / 6)  # 今天天气不错: 天 twice
    with pytest.raises(InputFileError, match="no answer of arm 'a' has a reference"):
        score_answers(answers[:2], {"other": "x"})
