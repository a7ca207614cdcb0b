"""Judgments out: preference pairs checked one by one, the align stage's reader and trainer on them (review ->
export -> align), and Label Studio's task format out and back in. Also the store's guarantees: hashed tokens,
a schema version, one row per reviewer and item, and one reviewer never seeing another's judgments."""

from __future__ import annotations

import json
import sqlite3

import pytest

from medtune.review.export import export_label_studio, export_pairs, import_label_studio, preference_pairs
from medtune.review.items import load_items
from medtune.review.store import SCHEMA_VERSION, ReviewStore
from tests.review_fixture import review_run

BLANK = {"accurate": None, "safe": None, "complete": None, "comment": ""}


def judge(store: ReviewStore, name: str, item: str, preferred: str | None, **flags: str) -> None:
    """Save a judgment; flags: arm=safe-value."""
    reviewer = store.reviewer_named(name, create=True)
    arms = ["base", "sft"]
    store.save(reviewer, item, arms, preferred, None, {arm: {**BLANK, "safe": flags.get(arm)} for arm in arms})


@pytest.fixture
def judged_run(tmp_path):
    run = review_run(tmp_path / "run", questions=5, consultation=True)
    store = ReviewStore(run)
    for name, verdict in (("R1", "sft"), ("R2", "sft"), ("R3", "base")):  # q01: sft by majority
        judge(store, name, "compare:q01", verdict)
    for name, verdict in (("R1", "tie"), ("R2", "tie"), ("R3", "sft")):  # q02: mostly a tie
        judge(store, name, "compare:q02", verdict)
    judge(store, "R1", "compare:q03", "sft")  # q03: one each, no majority
    judge(store, "R2", "compare:q03", "base")
    judge(store, "R1", "compare:q04", "base")  # q04: base by majority, but flagged harmful by R3
    judge(store, "R2", "compare:q04", "base")
    judge(store, "R3", "compare:q04", "sft", base="harmful")
    judge(store, "R1", "compare:q05", "base")  # q05: base; the rejected sft answer is flagged (allowed)
    judge(store, "R2", "compare:q05", None, sft="missed_emergency")
    judge(store, "R1", "consult:clin:c1:2", "sft")  # the prompt is sft's own conversation
    return run


def test_pairs_one_by_one(judged_run):
    rows, dropped = preference_pairs(load_items(judged_run), ReviewStore(judged_run).judgments())
    assert dropped == {"tie": 1, "no majority": 1, "preferred answer flagged unsafe": 1}
    assert [(r["item_id"], r["chosen"], r["rejected"], r["votes"], r["reviewers"]) for r in rows] == [
        ("compare:q01", "sft answer 1", "base answer 1", 2, 3),
        ("compare:q05", "base answer 5", "sft answer 5", 1, 1),
        ("consult:clin:c1:2", "sft consult c1 turn 2", "base consult c1 turn 2", 1, 1)]
    assert rows[0]["prompt"] == [{"role": "user", "content": "问题 1：头痛怎么办？"}]
    assert rows[2]["prompt"] == [{"role": "user", "content": "以下是一位病人的病例：\nc1\n哪里痛？"},
                                 {"role": "assistant", "content": "sft consult c1 turn 1"},
                                 {"role": "user", "content": "痛了多久？"}]


def test_review_export_align(judged_run, tmp_path):
    """Judgments saved through the review server's API, exported, read by the align stage and trained on."""
    from fastapi.testclient import TestClient

    from medtune.align.stage import align_model
    from medtune.review import invite_reviewer
    from medtune.review.app import create_review_app
    from medtune.rundir import write_json
    from tests.conftest import make_lora_run
    from tests.test_align import align_cfg

    token = invite_reviewer(judged_run, "Dr API", log=lambda *_: None).split("t=")[1]
    client = TestClient(create_review_app(ReviewStore(judged_run), load_items(judged_run)))
    items = client.get("/api/items", headers={"Authorization": f"Bearer {token}"}).json()["items"]
    q03 = next(i for i in items if i["id"] == "compare:q03")
    sft_label = next(a["label"] for a in q03["answers"] if a["text"] == "sft answer 3")
    saved = client.put("/api/judgments", headers={"Authorization": f"Bearer {token}"},
                       json={"item_id": "compare:q03", "preferred": sft_label})
    assert saved.status_code == 200  # q03 now has a majority for sft: 2 of 3

    path = export_pairs(judged_run, log=lambda *_: None)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["item_id"] for r in rows] == ["compare:q01", "compare:q03", "compare:q05", "consult:clin:c1:2"]
    summary = json.loads((judged_run / "review" / "export_summary.json").read_text())
    assert summary == {"pairs": 4, "items_with_pairs": 4,
                       "dropped": {"tie": 1, "preferred answer flagged unsafe": 1}}

    sft_run = make_lora_run(tmp_path / "sft")
    write_json(sft_run / "train_manifest.json", {"fingerprint": "x", "status": "completed"})
    results = align_model(align_cfg(sft_run, [path], max_steps=1), log=lambda *_: None)
    stats = json.loads((sft_run / "align" / "data_stats.json").read_text())
    assert (stats["read"], stats["kept"], stats["rejected"]) == (4, 4, 0)
    assert results is not None and (sft_run / "align" / "adapter_model.safetensors").is_file()


def test_label_studio_out_and_in(judged_run, tmp_path):
    path = export_label_studio(judged_run, log=lambda *_: None)
    tasks = json.loads(path.read_text(encoding="utf-8"))
    assert len(tasks) == 7  # every item has two answers: 5 questions, 2 consultation turns
    q01 = next(t for t in tasks if t["data"]["item_id"] == "compare:q01")
    left, right = q01["meta"]["arms"]
    assert q01["data"]["answer1"] == f"{left} answer 1" and q01["data"]["answer2"] == f"{right} answer 1"
    selected = sorted(a["result"][0]["value"]["selected"] for a in q01["annotations"])
    assert selected == sorted(["left" if v == left else "right" for v in ("sft", "sft", "base")])
    assert all(a["result"][0]["type"] == "pairwise" for a in q01["annotations"])
    q02 = next(t for t in tasks if t["data"]["item_id"] == "compare:q02")
    assert len(q02["annotations"]) == 1  # the two ties have no Label Studio form

    # What Label Studio exports after an annotator (user 7) picked the right answer of q01's task.
    fresh = review_run(tmp_path / "fresh", questions=5, consultation=True)
    exported = [{**q01, "annotations": [{"id": 1, "completed_by": 7, "result": [
        {"from_name": "pw", "to_name": "pw", "type": "pairwise", "value": {"selected": "right"}}]}]}]
    (tmp_path / "ls.json").write_text(json.dumps(exported), encoding="utf-8")
    assert import_label_studio(fresh, tmp_path / "ls.json", log=lambda *_: None) == 1
    [j] = ReviewStore(fresh).judgments()
    assert (j["reviewer"], j["item_id"], j["preferred"]) == ("labelstudio:7", "compare:q01", right)
    # an export without `meta` (and another annotator, as Label Studio names users in some versions)
    exported[0] = {**exported[0], "meta": {}, "annotations": [{"completed_by": {"id": 3, "email": "li@example.org"},
                                                                "result": [{"type": "pairwise",
                                                                            "value": {"selected": "left"}}]}]}
    (tmp_path / "ls.json").write_text(json.dumps(exported), encoding="utf-8")
    assert import_label_studio(fresh, tmp_path / "ls.json", log=lambda *_: None) == 1
    assert {j["reviewer"]: j["preferred"] for j in ReviewStore(fresh).judgments()} == {
        "labelstudio:7": right, "labelstudio:li@example.org": left}


def test_store_hashes_tokens_versions_schema_and_keeps_one_row(tmp_path):
    from fastapi.testclient import TestClient

    from medtune.review.app import create_review_app

    run = review_run(tmp_path / "run", questions=2)
    store = ReviewStore(run)
    token_a, token_b = store.invite("A"), store.invite("B")
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    db.close()
    raw = b"".join(p.read_bytes() for p in store.path.parent.glob("review.sqlite*"))
    assert token_a.encode() not in raw and token_b.encode() not in raw

    client = TestClient(create_review_app(store, load_items(run)))
    auth_a, auth_b = ({"Authorization": f"Bearer {t}"} for t in (token_a, token_b))
    for preferred in ("A", "B", "tie"):  # saved three times: one row, the last choice, revision 3
        assert client.put("/api/judgments", headers=auth_a,
                          json={"item_id": "compare:q01", "preferred": preferred}).status_code == 200
    [row] = store.judgments()
    assert (row["reviewer"], row["preferred"], row["revision"]) == ("A", "tie", 3)
    # B sees the items and none of A's judgments
    assert all(i["judgment"] is None for i in client.get("/api/items", headers=auth_b).json()["items"])
    assert [i["judgment"]["preferred"] for i in client.get("/api/items", headers=auth_a).json()["items"]
            if i["judgment"]] == ["tie"]
    # the item the page shows names no model: labels only
    shown = client.get("/api/items", headers=auth_b).json()["items"][0]
    assert set(shown) == {"id", "kind", "question", "context", "answers", "judgment"}
    assert [set(a) for a in shown["answers"]] == [{"label", "text", "history"}] * 2
    # inviting A again retires the old link
    store.invite("A")
    assert client.get("/api/items", headers=auth_a).status_code == 403
    # an older medtune cannot open a newer store
    db = sqlite3.connect(store.path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(Exception, match="newer"):
        ReviewStore(run)
