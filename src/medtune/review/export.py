"""Judgments out and in: preference pairs for `medtune align`, and Label Studio's JSON task format.

Run as: medtune review export RUN_DIR [--label-studio]   |   medtune review import RUN_DIR FILE

Preference pairs (`review/preference_pairs.jsonl`, TRL's prompt/chosen/rejected layout that
medtune.data.align reads; add the file to `align.train_files`): per item, chosen = the arm most reviewers
preferred (a ranking's first counts as preferred); an item whose most common verdict is a tie, or shared by two
verdicts, gives no pair; an answer any reviewer flagged unsafe (harmful advice or a missed emergency) is never
chosen, and such an item gives no pair; otherwise one pair per other arm of the item. The prompt is the
conversation the chosen answer was given (a consultation's own earlier answers included).
`review/export_summary.json` counts the items and why each one gave no pair.

Label Studio (`review/label_studio_tasks.json`): one task per two-answer item, `data` {item_id, question,
context, answer1, answer2} in a random order seeded by the item id, `meta` {arms} (not shown to annotators), and each
medtune judgment as an annotation with a `pairwise` result ({"selected": "left"|"right"}; ties are left out, as
Label Studio's Pairwise has none). Labeling config: LABEL_STUDIO_CONFIG. Import reads Label Studio's JSON export
of such tasks and saves each annotation as a judgment by reviewer `labelstudio:<completed_by>`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from medtune.errors import UserError
from medtune.review.items import Item, require_items
from medtune.review.stats import UNSAFE, verdict
from medtune.review.store import ReviewStore
from medtune.rundir import write_json, write_jsonl

LABEL_STUDIO_CONFIG = """<View>
  <Text name="question" value="$question"/>
  <Pairwise name="pw" toName="answer1,answer2"/>
  <Text name="answer1" value="$answer1"/>
  <Text name="answer2" value="$answer2"/>
</View>"""


def preference_pairs(items: list[Item], judgments: list[dict]) -> tuple[list[dict], Counter]:
    by_item: dict[str, list[dict]] = {}
    for j in judgments:
        by_item.setdefault(j["item_id"], []).append(j)
    rows, dropped = [], Counter()
    for item in items:
        js = [j for j in by_item.get(item.id, []) if verdict(j)]
        if not js:
            continue
        counts = Counter(verdict(j) for j in js).most_common()
        top, n = counts[0]
        if len(counts) > 1 and counts[1][1] == n:
            dropped["no majority"] += 1
            continue
        if top == "tie":
            dropped["tie"] += 1
            continue
        if any(j["answers"].get(top, {}).get("safe") in UNSAFE for j in by_item[item.id]):
            dropped["preferred answer flagged unsafe"] += 1
            continue
        for other in item.answers:
            if other.arm != top:
                rows.append({"prompt": item.prompts[top], "chosen": item.answer(top).text,
                             "rejected": other.text, "item_id": item.id, "chosen_arm": top, "rejected_arm": other.arm,
                             "votes": n, "reviewers": len(js)})
    return rows, dropped


def export_pairs(run_dir: str | Path, log=print) -> Path:
    run = Path(run_dir)
    items = require_items(run)
    store = ReviewStore(run)
    rows, dropped = preference_pairs(items, store.judgments())
    path = run / "review" / "preference_pairs.jsonl"
    write_jsonl(path, rows)
    store.write_jsonl()
    write_json(run / "review" / "export_summary.json",
               {"pairs": len(rows), "items_with_pairs": len({r["item_id"] for r in rows}), "dropped": dict(dropped)})
    log(f"review: {len(rows)} preference pairs from {len({r['item_id'] for r in rows})} items -> {path}"
        + (f"; no pair: {', '.join(f'{k} {v}' for k, v in sorted(dropped.items()))}" if dropped else ""))
    log(f"review: train on them with align.train_files: [{path}] (medtune align CONFIG)")
    return path


def _task_order(item: Item) -> list[str]:
    arms = [a.arm for a in item.answers]
    random.Random(f"label-studio:{item.id}").shuffle(arms)
    return arms


def export_label_studio(run_dir: str | Path, log=print) -> Path:
    run = Path(run_dir)
    items = require_items(run)
    judgments = ReviewStore(run).judgments()
    tasks = []
    for item in (i for i in items if len(i.answers) == 2):
        arms = _task_order(item)
        annotations = [{"completed_by": j["reviewer"], "result": [
            {"from_name": "pw", "to_name": "pw", "type": "pairwise",
             "value": {"selected": "left" if j["preferred"] == arms[0] else "right"}}]}
            for j in judgments if j["item_id"] == item.id and j["preferred"] in arms]
        tasks.append({"id": len(tasks) + 1, "data": {"item_id": item.id, "question": item.question,
                                                     "context": "\n\n".join(item.context),
                                                     "answer1": item.answer(arms[0]).text,
                                                     "answer2": item.answer(arms[1]).text},
                      "meta": {"arms": arms}, "annotations": annotations})
    path = run / "review" / "label_studio_tasks.json"
    write_json(path, tasks)
    log(f"review: {len(tasks)} Label Studio tasks (two-answer items) -> {path}; labeling config:\n{LABEL_STUDIO_CONFIG}")
    return path


def import_label_studio(run_dir: str | Path, file: str | Path, log=print) -> int:
    run, file = Path(run_dir), Path(file)
    try:
        tasks = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{file}: cannot read Label Studio's JSON export: {e}") from e
    if not isinstance(tasks, list):
        raise UserError(f"{file}: expected a JSON list of tasks (Label Studio: Export -> JSON)")
    items = {i.id: i for i in require_items(run)}
    store = ReviewStore(run)
    saved = 0
    for k, task in enumerate(tasks):
        item_id = (task.get("data") or {}).get("item_id")
        # the order is seeded by the item id, so a Label Studio that dropped `meta` loses nothing
        arms = (task.get("meta") or {}).get("arms") or (_task_order(items[item_id]) if item_id in items else None)
        if item_id not in items or not isinstance(arms, list) or sorted(arms) != sorted(a.arm for a in items[item_id].answers):
            raise UserError(f"{file}: task {k} (id {task.get('id')}): not a task `medtune review export "
                            "--label-studio` wrote for this run (data.item_id and meta.arms must match its items)")
        for annotation in task.get("annotations") or []:
            selected = next((r.get("value", {}).get("selected") for r in annotation.get("result") or []
                             if r.get("type") == "pairwise"), None)
            if selected not in ("left", "right"):
                continue
            who = annotation.get("completed_by")
            who = who.get("email", who.get("id")) if isinstance(who, dict) else who
            reviewer = store.reviewer_named(f"labelstudio:{who}", create=True)
            store.save(reviewer, item_id, arms, arms[0] if selected == "left" else arms[1], None, {})
            saved += 1
    log(f"review: {saved} judgments imported from {file}")
    return saved
