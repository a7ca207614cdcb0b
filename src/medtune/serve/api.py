"""The HTTP API: OpenAI-compatible chat completions, the model list, health, red-flag triage, the chat page.

Routes:
  POST /v1/chat/completions   OpenAI chat completions, streamed (SSE) or not; thinking in `reasoning_content`
  GET  /v1/models             the one served model
  GET  /health                liveness and load (no API key needed)
  POST /api/red-flags         {"text": ...} -> the urgent-care banner decision (medtune.redflags; no API key
                              needed: it never touches the model, and the banner must not fail for want of one)
  GET  /                      the chat page (no API key needed: a browser loads it, then sends the key on /v1/*)

With an API key set, only /v1/* (what runs the model) needs it. Every route checks the Host header against
`allowed_hosts` (when set): a page on another site that reaches a loopback server through DNS rebinding
sends its own host name, and gets 400.

Every error is an OpenAI-style body {"error": {"message", "type", "param", "code"}} with a 4xx status for
anything the client can fix; no request makes the server answer with a stack trace.

Limits: requests beyond `max_concurrent` running ones get 429 at once (never a queue without bound);
prompts longer than `max_input_tokens` (after the chat template) and `max_tokens` above the server's
limit get 400; bodies over `max_body_bytes` get 413.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from medtune import __version__
from medtune.errors import UserError
from medtune.generate.sampling import sampling_for
from medtune.listen import HostCheck
from medtune.redflags import DISCLAIMER, triage
from medtune.text import ThinkSplitter

log = logging.getLogger("medtune.serve")

# OpenAI request fields this server does not implement: asking for them is an error, not silently ignored.
UNSUPPORTED_FIELDS = ("stop", "tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs",
                      "logit_bias", "presence_penalty", "frequency_penalty", "response_format", "audio", "prediction")
NEUTRAL_VALUES = (None, False, 0, [], {}, {"type": "text"})


@dataclass
class ServeSettings:
    api_key: str | None = None
    """Bearer token required on /v1/*; None: no key."""
    max_concurrent: int = 4
    """Requests generating or waiting to generate at once; more get 429."""
    max_input_tokens: int = 4096
    """Prompt tokens after the chat template."""
    max_tokens: int = 1024
    """The most tokens one request may generate; also the default when a request gives none."""
    max_body_bytes: int = 4 * 1024 * 1024
    allowed_hosts: tuple[str, ...] | None = None
    """Host header names (without the port) this server answers; None: any (see medtune.listen.allowed_hosts)."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers


def error_response(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


# -- request schema --

class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")  # e.g. a previous reply's reasoning_content
    role: str
    content: str

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ("system", "developer", "user", "assistant"):
            raise ValueError(f"role {role!r} is not supported; use system, user or assistant")
        return "system" if role == "developer" else role

    @field_validator("content", mode="before")
    @classmethod
    def _text_content(cls, content: Any) -> Any:
        # OpenAI clients may send content as a list of parts; text parts are joined, others are refused.
        if isinstance(content, list):
            texts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise ValueError('content parts must be {"type": "text", "text": "..."}; this model reads text only')
                texts.append(part["text"])
            return "".join(texts)
        return content


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    """vLLM's extension; -1 or 0: no top-k filtering."""
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=1)
    enable_thinking: bool | None = None
    """Qwen3 thinking for this request (default off); `chat_template_kwargs: {"enable_thinking": true}` also works."""
    chat_template_kwargs: dict[str, bool] | None = None
    stream_options: dict[str, bool] | None = None
    """Accepted for compatibility; usage is always in the final chunk."""

    @field_validator("chat_template_kwargs")
    @classmethod
    def _only_thinking(cls, kwargs: dict | None) -> dict | None:
        if kwargs and set(kwargs) - {"enable_thinking"}:
            raise ValueError(f"only enable_thinking is supported, not {sorted(set(kwargs) - {'enable_thinking'})}")
        return kwargs

    def thinking(self) -> bool:
        if self.enable_thinking is not None:
            return self.enable_thinking
        return bool((self.chat_template_kwargs or {}).get("enable_thinking", False))


class TriageRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    text: str


def _param(loc: tuple) -> str | None:
    """('messages', 0, 'role') -> 'messages[0].role'."""
    out = ""
    for part in loc:
        if part == "body":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def _validation_error(errors: list[dict]) -> ApiError:
    first = errors[0]
    param = _param(tuple(first.get("loc", ())))
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    return ApiError(400, f"{param}: {message}" if param else message, param=param, code=first.get("type"))


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is over the server's limit of {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is over the server's limit of {limit} bytes",
                           code="request_too_large")
    if not body:
        raise ApiError(400, "the request body is empty; send a JSON object", code="json_invalid")
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        raise ApiError(400, f"the request body is not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                       code="json_invalid") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="json_invalid") from None
    if not isinstance(obj, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(obj).__name__}", code="json_invalid")
    return obj


def _parse(model: type[BaseModel], obj: dict) -> Any:
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise _validation_error(e.errors()) from None


# -- the app --

class BearerAuth:
    """ASGI middleware: /v1/* needs `Authorization: Bearer <key>` (checked before the body is read)."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):  # constant time: no timing hints about the key
                response = error_response(401, "missing or incorrect API key: send 'Authorization: Bearer <key>'",
                                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ConcurrencyLimit:
    """How many requests may hold the model at once. Acquired without waiting: a full server answers 429.

    Only the event loop thread touches it, so a counter is enough.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.running = 0

    def try_acquire(self) -> bool:
        if self.running >= self.limit:
            return False
        self.running += 1
        return True

    def release(self) -> None:
        self.running -= 1


class CompletionStream(StreamingResponse):
    """A streamed completion that always stops its generation and frees its slot when the response ends.

    The cleanup sits here rather than in the body generator's `finally`, which never runs when the client
    leaves before the first chunk is sent.
    """

    def __init__(self, chunks, on_close):
        super().__init__(chunks, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.on_close()


def create_app(engine, settings: ServeSettings) -> FastAPI:
    app = FastAPI(title="medtune", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    if settings.api_key:
        app.add_middleware(BearerAuth, api_key=settings.api_key)
    if settings.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=settings.allowed_hosts)  # added last: runs first
    limit = ConcurrencyLimit(settings.max_concurrent)
    created = int(time.time())
    page = _chat_page(engine.model_id)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request, exc: RequestValidationError):
        e = _validation_error(list(exc.errors()))
        return error_response(e.status, e.message, param=e.param, code=e.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(exc.status_code, message, code=code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(500, "internal server error; the server log has the details", type="server_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.model_id, "engine": engine.name, "running": limit.running,
                "max_concurrent": limit.limit}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(engine.model_id, created)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != engine.model_id:
            raise _unknown_model(model_id, engine.model_id)
        return _model_card(engine.model_id, created)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.post("/api/red-flags")
    async def red_flags(request: Request):
        body = _parse(TriageRequest, await _read_json(request, settings.max_body_bytes))
        return triage(body.text)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _chat_completion(request, engine, settings, limit)

    return app


async def _chat_completion(request: Request, engine, settings: ServeSettings, limit: ConcurrencyLimit):
    body, thinking, max_tokens = _checked_request(await _read_json(request, settings.max_body_bytes), engine, settings)
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    try:
        prompt_ids = engine.prompt_ids(messages, enable_thinking=thinking)
    except UserError as e:
        raise ApiError(400, str(e), param="messages", code="invalid_messages") from None
    if len(prompt_ids) > settings.max_input_tokens:
        raise ApiError(400, f"messages: the prompt is {len(prompt_ids)} tokens after the chat template, above "
                            f"this server's limit of {settings.max_input_tokens}; shorten the conversation",
                       param="messages", code="context_length_exceeded")
    if len(prompt_ids) + max_tokens > engine.max_model_len:
        raise ApiError(400, f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({max_tokens}) is above the "
                            f"model's context of {engine.max_model_len} tokens", param="max_tokens",
                       code="context_length_exceeded")
    sampling = sampling_for(thinking, max_tokens, temperature=body.temperature, top_p=body.top_p,
                            top_k=body.top_k if body.top_k is None or body.top_k > 0 else 0, seed=body.seed)
    if not limit.try_acquire():
        raise ApiError(429, f"the server is busy: {limit.limit} requests are running (its --max-concurrent "
                            "limit); retry shortly", type="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": "1"})
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": engine.model_id}
    try:
        completion = engine.stream(prompt_ids, sampling, thinking)
    except BaseException:
        limit.release()
        raise
    if body.stream:
        async def close():
            await completion.aclose()
            limit.release()

        return CompletionStream(_sse_chunks(completion, thinking, meta, len(prompt_ids)), close)
    try:
        return await _whole_completion(request, completion, thinking, meta, len(prompt_ids))
    finally:
        await completion.aclose()
        limit.release()


def _checked_request(raw: dict, engine, settings: ServeSettings) -> tuple[ChatCompletionRequest, bool, int]:
    """The parsed request, its thinking flag and its max_tokens, or the ApiError that refuses it."""
    for field in UNSUPPORTED_FIELDS:
        if raw.get(field) not in NEUTRAL_VALUES:
            raise ApiError(400, f"{field}: not supported by medtune serve", param=field, code="unsupported_parameter")
    body: ChatCompletionRequest = _parse(ChatCompletionRequest, raw)
    if body.model is not None and body.model != engine.model_id:
        raise _unknown_model(body.model, engine.model_id)
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.max_tokens
    if max_tokens > settings.max_tokens:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ApiError(400, f"{param}: {max_tokens} is above this server's limit of {settings.max_tokens}",
                       param=param, code="max_tokens_exceeded")
    return body, body.thinking(), max_tokens


def _model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "medtune"}


def _unknown_model(asked: str, served: str) -> ApiError:
    return ApiError(404, f"model {asked!r} is not served here; this server serves {served!r}", param="model",
                    code="model_not_found")


def _usage(prompt_tokens: int, result) -> dict:
    # Like OpenAI and vLLM, completion_tokens counts the end-of-turn token the model generated.
    completion_tokens = result.tokens + (result.finish_reason == "stop")
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


async def _whole_completion(request: Request, completion, thinking: bool, meta: dict, prompt_tokens: int):
    splitter = ThinkSplitter(thinking)
    reasoning, answer = [], []
    async for text in completion:
        t, a = splitter.feed(text)
        reasoning.append(t)
        answer.append(a)
        if await request.is_disconnected():  # nobody will read the answer: stop generating it
            return JSONResponse({}, status_code=499)
    t, a = splitter.flush()
    reasoning.append(t)
    answer.append(a)
    result = completion.result
    message = {"role": "assistant", "content": "".join(answer), "reasoning_content": "".join(reasoning) or None}
    return {**meta, "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}],
            "usage": _usage(prompt_tokens, result)}


async def _sse_chunks(completion, thinking: bool, meta: dict, prompt_tokens: int):
    def event(delta: dict, finish_reason: str | None = None, usage: dict | None = None) -> str:
        chunk = {**meta, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def delta(reasoning: str, answer: str) -> dict:
        return {**({"reasoning_content": reasoning} if reasoning else {}), **({"content": answer} if answer else {})}

    splitter = ThinkSplitter(thinking)
    yield event({"role": "assistant", "content": ""})
    try:
        async for text in completion:
            if d := delta(*splitter.feed(text)):
                yield event(d)
        if d := delta(*splitter.flush()):
            yield event(d)
        result = completion.result
        yield event({}, result.finish_reason, _usage(prompt_tokens, result))
    except Exception:
        log.exception("generation failed")
        error = {"message": "generation failed; the server log has the details", "type": "server_error",
                 "param": None, "code": None}
        yield f"data: {json.dumps({'error': error})}\n\n"
    yield "data: [DONE]\n\n"


def _chat_page(model_id: str) -> str:
    import jinja2

    source = resources.files("medtune.serve").joinpath("chat.html").read_text(encoding="utf-8")
    # autoescape: a model id such as '<script>' is shown as text, never run.
    return jinja2.Environment(autoescape=True, keep_trailing_newline=True).from_string(source).render(disclaimer=DISCLAIMER, model_id=model_id)
