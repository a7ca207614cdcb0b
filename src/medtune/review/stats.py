"""Statistics of the clinicians' judgments -> `<run>/review/stats.json` (the report reads that file).

Run as: medtune review stats RUN_DIR

- Votes: each judgment gives one outcome per pair of the item's arms: a ranking orders every pair, a
  preferred answer beats each other answer, a tie ties every pair. Win rate = (wins + ties/2) / n with a 95%
  Wilson interval (ties counted as half a success).
- Bradley-Terry strengths by Hunter's (2004) MM algorithm, ties as half a win each way, plus one tie per
  compared pair as a prior so a model that never won keeps a finite strength; scaled to a mean log-strength of 0.
- Ratings: per model, the share of answers rated accurate / complete and flagged harmful / missed emergency,
  with 95% Wilson intervals (answers a reviewer left unrated on that field are not counted).
- Agreement between reviewers on the verdict (the preferred arm or tie) and on the safety flag (safe or not):
  Cohen's kappa for two reviewers (the items both judged), Fleiss' kappa for three or more (the items all
  judged). Written here (a dozen lines each) rather than adding scikit-learn/statsmodels as dependencies:
  tests/test_review_stats.py checks them against scikit-learn and Fleiss' (1971) worked example.
- The LLM judge (eval/judge/judgements.jsonl) against the clinicians' majority on the same question and pair:
  agreement, Cohen's kappa, and its position bias: how often it picks the answer shown first, and how often
  it agrees with the clinicians when their preferred answer is shown first versus second.
- Disagreements: items whose reviewers chose different verdicts or safety flags, listed for adjudication.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

from medtune.review.items import Item, require_items
from medtune.review.store import ReviewStore
from medtune.rundir import write_json
from medtune.stats import wilson_interval

UNSAFE = ("harmful", "missed_emergency")


def rate(successes: float, n: int) -> dict:
    lo, hi = wilson_interval(successes, n)
    return {"n": n, "k": successes, "rate": successes / n if n else None, "ci": [lo, hi]}


def pair_outcomes(judgment: dict) -> list[tuple[str, str, float]]:
    """(arm a, arm b, a's score: 1 win, 0.5 tie, 0 loss) for each pair the judgment decides, a < b by name."""
    arms, preferred, ranking = judgment["arm_order"], judgment["preferred"], judgment.get("ranking")
    out = []
    for a, b in combinations(sorted(arms), 2):
        if preferred == "tie":
            score = 0.5
        elif ranking:
            score = 1.0 if ranking.index(a) < ranking.index(b) else 0.0
        elif preferred in (a, b):
            score = 1.0 if preferred == a else 0.0
        else:
            continue  # a preferred third answer says nothing about a versus b
        out.append((a, b, score))
    return out


def verdict(judgment: dict) -> str | None:
    """The preferred arm, or 'tie', or None when the reviewer has not chosen."""
    return judgment["preferred"]


def win_rates(judgments: list[dict]) -> tuple[dict, list[dict]]:
    per_model: dict[str, Counter] = defaultdict(Counter)
    per_pair: dict[tuple, Counter] = defaultdict(Counter)
    for j in judgments:
        for a, b, score in pair_outcomes(j):
            kind = {1.0: "wins", 0.5: "ties", 0.0: "losses"}[score]
            per_pair[(a, b)][kind] += 1
            per_model[a][kind] += 1
            per_model[b][{"wins": "losses", "ties": "ties", "losses": "wins"}[kind]] += 1
    models = {}
    for m, c in sorted(per_model.items()):
        n = c["wins"] + c["ties"] + c["losses"]
        r = rate(c["wins"] + c["ties"] / 2, n)
        models[m] = {"wins": c["wins"], "ties": c["ties"], "losses": c["losses"], "n": n, "win_rate": r["rate"],
                     "win_rate_ci": r["ci"]}
    pairs = []
    for (a, b), c in sorted(per_pair.items()):
        n = c["wins"] + c["ties"] + c["losses"]
        r = rate(c["wins"] + c["ties"] / 2, n)
        pairs.append({"a": a, "b": b, "n": n, "wins": c["wins"], "ties": c["ties"], "losses": c["losses"],
                      "win_rate": r["rate"], "win_rate_ci": r["ci"]})
    return models, pairs


def bradley_terry(outcomes: list[tuple[str, str, float]], iterations: int = 10_000, tol: float = 1e-12) -> dict:
    """{model: log-strength}, mean 0; MM updates p_i = W_i / sum_j n_ij / (p_i + p_j) (see module docstring)."""
    wins: Counter = Counter()
    games: Counter = Counter()
    for a, b, score in outcomes:
        wins[a] += score
        wins[b] += 1 - score
        games[frozenset((a, b))] += 1
    for pair in list(games):  # the prior: one tie per compared pair
        for m in pair:
            wins[m] += 0.5
        games[pair] += 1
    models = sorted(wins)
    p = {m: 1.0 for m in models}
    for _ in range(iterations):
        new = {}
        for m in models:
            denom = sum(n / (p[m] + p[next(iter(pair - {m}))]) for pair, n in games.items() if m in pair)
            new[m] = wins[m] / denom
        scale = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        new = {m: v / scale for m, v in new.items()}
        done = max(abs(new[m] - p[m]) for m in models) < tol
        p = new
        if done:
            break
    return {m: math.log(v) for m, v in p.items()}


def cohen_kappa(x: list, y: list) -> float | None:
    """Cohen's kappa of two raters' labels of the same units; None when undefined (chance agreement 1)."""
    n = len(x)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    expected = sum(cx[k] * cy[k] for k in set(cx) | set(cy)) / (n * n)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(table: list[list[int]]) -> float | None:
    """Fleiss' kappa from a units x categories table of counts (every unit rated by the same number of raters)."""
    if not table:
        return None
    n = sum(table[0])
    units = len(table)
    if n < 2 or any(sum(row) != n for row in table):
        raise ValueError("every unit needs the same number (>= 2) of ratings")
    p_j = [sum(row[j] for row in table) / (units * n) for j in range(len(table[0]))]
    p_bar = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in table) / units
    p_e = sum(p * p for p in p_j)
    return None if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def agreement(labels: dict[str, dict[str, str]]) -> dict:
    """Agreement on {unit: {reviewer: label}}: Cohen for two reviewers, Fleiss for more."""
    reviewers = sorted({r for by in labels.values() for r in by})
    if len(reviewers) < 2:
        return {"method": None, "reviewers": len(reviewers), "units": 0, "kappa": None, "observed": None}
    if len(reviewers) == 2:
        shared = [by for by in labels.values() if len(by) == 2]
        x, y = [by[reviewers[0]] for by in shared], [by[reviewers[1]] for by in shared]
        observed = sum(a == b for a, b in zip(x, y)) / len(shared) if shared else None
        return {"method": "cohen", "reviewers": 2, "units": len(shared), "kappa": cohen_kappa(x, y),
                "observed": observed}
    shared = [by for by in labels.values() if len(by) == len(reviewers)]
    categories = sorted({v for by in shared for v in by.values()})
    table = [[list(by.values()).count(c) for c in categories] for by in shared]
    observed = sum(len(set(by.values())) == 1 for by in shared) / len(shared) if shared else None
    return {"method": "fleiss", "reviewers": len(reviewers), "units": len(shared),
            "kappa": fleiss_kappa(table) if shared else None, "observed": observed}


def ratings(judgments: list[dict]) -> dict:
    per: dict[str, Counter] = defaultdict(Counter)
    for j in judgments:
        for arm, r in j["answers"].items():
            c = per[arm]
            for field in ("accurate", "safe", "complete"):
                if r.get(field):
                    c[f"{field}:n"] += 1
                    c[f"{field}:{r[field]}"] += 1
    out = {}
    for arm, c in sorted(per.items()):
        out[arm] = {"accurate": {**rate(c["accurate:yes"], c["accurate:n"]), "partly": c["accurate:partly"],
                                 "no": c["accurate:no"]},
                    "complete": rate(c["complete:yes"], c["complete:n"]),
                    "harmful": rate(c["safe:harmful"], c["safe:n"]),
                    "missed_emergency": rate(c["safe:missed_emergency"], c["safe:n"]),
                    "unsafe": rate(c["safe:harmful"] + c["safe:missed_emergency"], c["safe:n"])}
    return out


def clinician_majority(judgments: list[dict]) -> dict[tuple[str, str, str], float]:
    """{(item, a, b): the majority's score for a (1, 0.5, 0)}, a < b by name; pairs without a majority left out."""
    votes: dict[tuple, Counter] = defaultdict(Counter)
    for j in judgments:
        for a, b, score in pair_outcomes(j):
            votes[(j["item_id"], a, b)][score] += 1
    out = {}
    for key, c in votes.items():
        (top, n), *rest = c.most_common()
        if not rest or rest[0][1] < n:
            out[key] = top
    return out


def judge_vs_clinicians(judge_rows: list[dict], majority: dict) -> dict:
    outcome = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    judge_labels, human_labels = [], []
    first_picks = first_total = 0
    agree_first = Counter()
    agree_second = Counter()
    for row in judge_rows:
        a, b, item = row.get("a"), row.get("b"), f"compare:{row.get('question_id')}"
        for verdict_key, first in (("verdict_a_first", a), ("verdict_b_first", b)):
            v = row.get(verdict_key)
            if v in ("1", "2"):
                first_total += 1
                first_picks += v == "1"
        key, flip = ((item, a, b), False) if a < b else ((item, b, a), True)
        if key not in majority:
            continue
        human = 1 - majority[key] if flip else majority[key]  # from a's side, like the judge's outcome
        if row.get("outcome") in outcome:
            judge_labels.append(row["outcome"])
            human_labels.append({1.0: "win", 0.5: "tie", 0.0: "loss"}[human])
        if human == 0.5:
            continue
        winner = a if human == 1.0 else b
        for verdict_key, first, second in (("verdict_a_first", a, b), ("verdict_b_first", b, a)):
            v = row.get(verdict_key)
            if v not in ("1", "2", "tie"):
                continue
            picked = {"1": first, "2": second}.get(v)
            counter = agree_first if winner == first else agree_second
            counter["n"] += 1
            counter["agree"] += picked == winner
    agree = sum(x == y for x, y in zip(judge_labels, human_labels))
    return {"pairs": len(judge_labels), "agreement": rate(agree, len(judge_labels)),
            "kappa": cohen_kappa(judge_labels, human_labels),
            "judge_picks_first": rate(first_picks, first_total),
            "agrees_when_preferred_shown_first": rate(agree_first["agree"], agree_first["n"]),
            "agrees_when_preferred_shown_second": rate(agree_second["agree"], agree_second["n"])}


def human_position_bias(judgments: list[dict]) -> dict:
    """How often reviewers preferred the answer shown first (two-answer items, ties left out)."""
    decided = [j for j in judgments if len(j["arm_order"]) == 2 and j["preferred"] not in (None, "tie")]
    return rate(sum(j["preferred"] == j["arm_order"][0] for j in decided), len(decided))


def disagreements(judgments: list[dict], items: dict[str, Item]) -> list[dict]:
    by_item: dict[str, list[dict]] = defaultdict(list)
    for j in judgments:
        by_item[j["item_id"]].append(j)
    out = []
    for item_id, js in sorted(by_item.items()):
        if len(js) < 2:
            continue
        verdicts = {j["reviewer"]: verdict(j) for j in js if verdict(j)}
        safety = {arm: {j["reviewer"]: j["answers"].get(arm, {}).get("safe") for j in js
                        if j["answers"].get(arm, {}).get("safe")} for arm in js[0]["arm_order"]}
        split_safety = {arm: by for arm, by in safety.items() if len({v in UNSAFE for v in by.values()}) > 1}
        if len(set(verdicts.values())) > 1 or split_safety:
            question = items[item_id].question if item_id in items else ""
            out.append({"item_id": item_id, "question": question[:200], "verdicts": verdicts,
                        "safety": split_safety})
    return out


def review_stats(judgments: list[dict], items: list[Item], judge_rows: list[dict] | None) -> dict:
    """Every statistic of the module docstring, as stats.json holds it."""
    by_id = {i.id: i for i in items}
    models, pairs = win_rates(judgments)
    outcomes = [o for j in judgments for o in pair_outcomes(j)]
    strengths = bradley_terry(outcomes) if outcomes else {}
    verdict_labels: dict[str, dict[str, str]] = defaultdict(dict)
    safety_labels: dict[str, dict[str, str]] = defaultdict(dict)
    for j in judgments:
        if verdict(j):
            verdict_labels[j["item_id"]][j["reviewer"]] = verdict(j)
        for arm, r in j["answers"].items():
            if r.get("safe"):
                safety_labels[f"{j['item_id']}|{arm}"][j["reviewer"]] = "unsafe" if r["safe"] in UNSAFE else "safe"
    kinds = Counter(by_id[j["item_id"]].kind for j in judgments if j["item_id"] in by_id)
    return {
        "reviewers": sorted({j["reviewer"] for j in judgments}),
        "judgments": len(judgments), "items": len(items), "items_judged": len({j["item_id"] for j in judgments}),
        "judgments_by_kind": dict(sorted(kinds.items())),
        "models": {m: {**v, "bradley_terry": strengths.get(m)} for m, v in models.items()},
        "ranking": sorted(strengths, key=lambda m: -strengths[m]),
        "pairs": pairs,
        "ratings": ratings(judgments),
        "agreement": {"verdict": agreement(verdict_labels), "safety": agreement(safety_labels)},
        "position_bias": human_position_bias(judgments),
        "judge": judge_vs_clinicians(judge_rows, clinician_majority(judgments)) if judge_rows else None,
        "disagreements": disagreements(judgments, by_id),
        "method": __doc__.split("\n\n", 1)[1].strip(),
    }


def write_review_stats(run_dir: str | Path, log=print) -> dict:
    from medtune.review.items import read_rows

    run = Path(run_dir)
    items = require_items(run)
    store = ReviewStore(run)
    judgments = [j for j in store.judgments() if j["preferred"] or any(
        any(v for k, v in r.items() if k != "comment") for r in j["answers"].values())]
    judge_file = run / "eval" / "judge" / "judgements.jsonl"
    stats = review_stats(judgments, items, read_rows(judge_file) if judge_file.is_file() else None)
    store.write_jsonl()
    write_json(run / "review" / "stats.json", stats)
    log(f"review: judgments {stats['judgments']}, reviewers {len(stats['reviewers'])}, items judged "
        f"{stats['items_judged']} of {stats['items']} -> {run / 'review' / 'stats.json'}")
    for m in stats["ranking"]:
        v = stats["models"][m]
        log(f"  {m}: win rate {v['win_rate']:.3f} [{v['win_rate_ci'][0]:.3f}, {v['win_rate_ci'][1]:.3f}] "
            f"over {v['n']} comparisons; Bradley-Terry {v['bradley_terry']:+.3f}")
    a = stats["agreement"]["verdict"]
    if a["kappa"] is not None:
        log(f"  agreement between reviewers ({a['method']}'s kappa, {a['units']} items): {a['kappa']:.3f}")
    log(f"  {len(stats['disagreements'])} items to adjudicate (reviewers disagree)")
    return stats
