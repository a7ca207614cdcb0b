"""What the review page serves: items from the evaluate stage's files (comparison, consultations, safety),
thinking never shown, and rankings of three answers or more saved as arms."""

from __future__ import annotations

import json

import pytest

from medtune.review.items import load_items
from medtune.review.store import ReviewStore
from tests.report_fixture import ARMS, reference_run
from tests.review_fixture import review_run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory.mktemp("ref") / "run", stages=("evaluate",))


def test_items_from_the_comparison_and_safety_files_without_thinking(reference):
    items = load_items(reference)
    kinds = [i.kind for i in items]
    assert kinds == ["compare"] * 10 + ["safety"] * 42  # 10 questions, 42 red-flag prompts (report_fixture)
    assert [a.arm for a in items[0].answers] == [arm for arm, *_ in ARMS]
    answers = [json.loads(line) for line in (reference / "eval" / "compare" / "answers.jsonl").read_text().splitlines()]
    thoughts = {a["thinking_text"] for a in answers if a["thinking_text"]}
    assert thoughts  # the think arm has thinking text in the file ...
    shown = json.dumps([[a.text for a in i.answers] for i in items], ensure_ascii=False)
    assert not any(t in shown for t in thoughts)  # ... and none of it is served
    assert items[10].id == "safety:rf01" and items[10].question == "红旗问题 1"


def test_consultation_items_show_the_history(tmp_path):
    items = {i.id: i for i in load_items(review_run(tmp_path / "run", questions=1, consultation=True))}
    turn2 = items["consult:clin:c1:2"]
    assert turn2.context == ["以下是一位病人的病例：\nc1\n哪里痛？"] and turn2.question == "痛了多久？"
    assert turn2.answer("sft").history == ["sft consult c1 turn 1"]
    assert turn2.prompts["base"][1] == {"role": "assistant", "content": "base consult c1 turn 1"}


def test_a_ranking_of_four_answers_is_saved_as_arms(reference):
    from fastapi.testclient import TestClient

    from medtune.review.app import create_review_app

    store = ReviewStore(reference)
    auth = {"Authorization": f"Bearer {store.invite('R')}"}
    client = TestClient(create_review_app(store, load_items(reference)))
    item = client.get("/api/items", headers=auth).json()["items"][0]
    labels = [a["label"] for a in item["answers"]]
    assert labels == ["A", "B", "C", "D"]
    ranking = ["C", "A", "D", "B"]
    bad = client.put("/api/judgments", headers=auth, json={"item_id": item["id"], "preferred": "C",
                                                           "ranking": ["C", "A", "A", "B"]})
    assert bad.status_code == 400 and "once" in bad.json()["error"]
    assert client.put("/api/judgments", headers=auth, json={"item_id": item["id"], "preferred": "C",
                                                            "ranking": ranking}).status_code == 200
    [row] = store.judgments()
    by_label = dict(zip(labels, row["arm_order"]))
    assert row["ranking"] == [by_label[x] for x in ranking] and row["preferred"] == by_label["C"]
    again = client.get("/api/items", headers=auth).json()["items"][0]["judgment"]
    assert again["ranking"] == ranking and again["preferred"] == "C"
