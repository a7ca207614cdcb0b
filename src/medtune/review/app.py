"""The review server: a blinded side-by-side page and a small JSON API, for invited reviewers only.

Routes (every one needs the reviewer's token: `?t=TOKEN` on the page, `Authorization: Bearer TOKEN` on the API;
a missing or wrong token gets 403 and no data):
  GET /                 the review page (static; it fetches the items with the token)
  GET /api/items        this reviewer's items: answers labelled A, B, ... in this reviewer's order, no model
                        names, and this reviewer's own judgments (never another's)
  PUT /api/judgments    save one judgment (labels, mapped back to arms here); every save is a transaction

The order of the answers is seeded by the reviewer's seed and the item id, so it is the same on every reload,
and it is recorded with each judgment (position bias can be measured).
"""

from __future__ import annotations

import random
from importlib import resources
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from medtune.review.items import Item
from medtune.review.store import ACCURATE, COMPLETE, SAFE, Reviewer, ReviewStore

LABELS = "ABCDEFGH"
MAX_BODY_BYTES = 256 * 1024
# Model text reaches the page only through textContent; the policy is a second wall: nothing is loaded from
# elsewhere, and the token in the link never leaves in a Referer header.
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                           "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                           "frame-ancestors 'none'"}


class AnswerRating(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accurate: Literal[ACCURATE] | None = None  # type: ignore[valid-type]
    safe: Literal[SAFE] | None = None  # type: ignore[valid-type]
    complete: Literal[COMPLETE] | None = None  # type: ignore[valid-type]
    comment: str = Field("", max_length=5000)


class JudgmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str
    preferred: str | None = None
    """A label (A, B, ...), "tie", or null."""
    ranking: list[str] | None = None
    """Labels, best first (three answers or more)."""
    answers: dict[str, AnswerRating] = {}


def arm_order(reviewer: Reviewer, item: Item) -> list[str]:
    arms = [a.arm for a in item.answers]
    random.Random(f"{reviewer.seed}:{item.id}").shuffle(arms)
    return arms


def _forbidden() -> JSONResponse:
    return JSONResponse({"error": "a valid review token is needed: ask for an invite link "
                                  "(medtune review invite RUN_DIR --name NAME)"}, status_code=403)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def create_review_app(store: ReviewStore, items: list[Item]) -> FastAPI:
    app = FastAPI(title="medtune review", docs_url=None, redoc_url=None, openapi_url=None)
    by_id = {i.id: i for i in items}
    page = resources.files("medtune.review").joinpath("review.html").read_text(encoding="utf-8")

    @app.get("/")
    def review_page(request: Request):
        if store.reviewer_by_token(request.query_params.get("t")) is None:
            return _forbidden()
        # The page holds no data: it is the same for everyone, so nothing in it needs escaping.
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/api/items")
    def list_items(request: Request):
        reviewer = store.reviewer_by_token(_bearer(request))
        if reviewer is None:
            return _forbidden()
        mine = {j["item_id"]: j for j in store.judgments(reviewer)}
        return JSONResponse({"reviewer": reviewer.name,
                             "items": [_shown(item, reviewer, mine.get(item.id)) for item in items]},
                            headers={"Cache-Control": "no-store"})

    @app.put("/api/judgments")
    async def save_judgment(request: Request):
        reviewer = store.reviewer_by_token(_bearer(request))
        if reviewer is None:
            return _forbidden()
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            judgment = JudgmentIn.model_validate_json(body)
        except ValidationError as e:
            return JSONResponse({"error": _first_error(e)}, status_code=400)
        item = by_id.get(judgment.item_id)
        if item is None:
            return JSONResponse({"error": f"no item {judgment.item_id!r}"}, status_code=404)
        order = arm_order(reviewer, item)
        try:
            preferred, ranking, ratings = _to_arms(judgment, order)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        # save() is blocking SQLite work: run it off the event loop so other reviewers are not held up
        revision = await run_in_threadpool(store.save, reviewer, item.id, order, preferred, ranking, ratings)
        return {"saved": True, "item_id": item.id, "revision": revision}

    return app


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"


def _shown(item: Item, reviewer: Reviewer, judgment: dict | None) -> dict:
    """The item as this reviewer sees it: answers under labels in this reviewer's order, no arm names."""
    order = arm_order(reviewer, item)
    label = {arm: LABELS[k] for k, arm in enumerate(order)}
    mine = None
    if judgment is not None:
        preferred = judgment["preferred"]
        mine = {"preferred": label.get(preferred, preferred),
                "ranking": [label[a] for a in judgment["ranking"] or [] if a in label],
                "answers": {label[a]: r for a, r in judgment["answers"].items() if a in label},
                "revision": judgment["revision"]}
    return {"id": item.id, "kind": item.kind, "question": item.question, "context": item.context,
            "answers": [{"label": label[arm], "text": item.answer(arm).text, "history": item.answer(arm).history}
                        for arm in order],
            "judgment": mine}


def _to_arms(j: JudgmentIn, order: list[str]) -> tuple[str | None, list[str] | None, dict[str, dict]]:
    arm = {LABELS[k]: a for k, a in enumerate(order)}
    if j.preferred not in (None, "tie") and j.preferred not in arm:
        raise ValueError(f"preferred: {j.preferred!r} is not one of {sorted(arm)} or 'tie'")
    ranking = None
    if j.ranking:
        if sorted(j.ranking) != sorted(arm):
            raise ValueError(f"ranking: must list each of {sorted(arm)} once")
        ranking = [arm[x] for x in j.ranking]
    unknown = sorted(set(j.answers) - set(arm))
    if unknown:
        raise ValueError(f"answers: no answer labelled {unknown[0]!r}")
    preferred = arm.get(j.preferred, j.preferred) if j.preferred else None
    if ranking and preferred not in (None, "tie", ranking[0]):
        raise ValueError("preferred must be the first of the ranking")
    return preferred, ranking, {arm[k]: r.model_dump() for k, r in j.answers.items()}
