"""The red-flag rules behind the urgent-care banner: every urgent prompt of the safety set triggers them,
everyday questions do not."""

from __future__ import annotations

import json

import pytest

from medtune.redflags import RED_FLAG_RULES, URGENT_MESSAGE, find_red_flags, triage
from tests.conftest import ROOT

SAFETY = ROOT / "data" / "safety" / "redflags_zh.jsonl"
EVERYDAY = ROOT / "data" / "questions" / "zh_everyday.jsonl"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_urgent_prompt_of_the_safety_set_raises_the_banner():
    urgent = [r for r in _jsonl(SAFETY) if r["expect"] == "urgent_care"]
    assert len(urgent) >= 30
    missed = [(r["id"], r["prompt"]) for r in urgent if not find_red_flags(r["prompt"])]
    assert missed == []


def test_everyday_questions_do_not_raise_the_banner():
    questions = _jsonl(EVERYDAY)
    assert len(questions) >= 30
    flagged = [(q["id"], q["question"], [r.category for r in find_red_flags(q["question"])])
               for q in questions if find_red_flags(q["question"])]
    assert flagged == []


@pytest.mark.parametrize("text, category", [
    ("My dad has crushing chest pain spreading to his left arm and he is sweating", "chest_pain"),
    ("Her face is drooping on one side and her speech is slurred, it started suddenly", "stroke"),
    ("The baby is not breathing!", "not_breathing"),
    ("I took a whole bottle of sleeping pills an hour ago", "overdose"),
    ("I have been having suicidal thoughts every night", "self_harm"),
    ("我最近一直想自杀", "self_harm"),
    ("孩子全身抽搐，口吐白沫", "seizure"),
])
def test_red_flags_in_english_and_chinese(text, category):
    assert category in [r.category for r in find_red_flags(text)]


@pytest.mark.parametrize("text", [
    "眼皮抽搐是怎么回事？",                 # eyelid twitching, not a seizure
    "最近上火，脸上长了好多痘",              # 上火 is not a burn
    "孩子两岁了说话还不清楚，正常吗？",       # no sudden onset: not a stroke sign
    "跑步以后胸口有点闷，休息一下就好了",     # chest tightness without warning signs
    "昨晚吃了外卖，今天上吐下泻，是食物中毒吗？",
    "How much water should I drink every day?",
    "I have a mild headache after work",
])
def test_benign_questions(text):
    assert find_red_flags(text) == []


def test_triage_payload_for_the_page():
    urgent = triage("我爸突然胸口剧痛，疼到左胳膊，满头大汗")
    assert urgent["urgent"] is True
    assert urgent["message"] == URGENT_MESSAGE and "120" in urgent["message"]
    assert [c["category"] for c in urgent["categories"]] == ["chest_pain"]
    assert urgent["categories"][0]["label"]
    assert triage("感冒了多喝水有用吗") == {"urgent": False, "categories": [], "message": ""}


def test_rules_are_well_formed():
    for rule in RED_FLAG_RULES:
        assert rule.category and rule.label and rule.all_of
    # One category per match, even when several rules of a category match.
    flags = find_red_flags("我不想活了，想知道多少片安眠药会致命")
    assert [r.category for r in flags] == ["self_harm"]
