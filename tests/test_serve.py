"""`medtune serve`: the OpenAI API on a real server on loopback, driven by the official openai client and raw
HTTP: streaming and not, thinking, API key, every limit, malformed requests, a bounded load test, disconnects."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from medtune.cli import main
from medtune.generate.transformers_engine import TransformersStream
from medtune.serve.api import ServeSettings, create_app
from tests.conftest import ROOT
from tests.serving import serve_in_thread

pytestmark = pytest.mark.usefixtures("single_torch_thread")
KEY = "sk-medtune-test-key"
MODEL = "tiny-run"
HELLO = [{"role": "user", "content": "你好，我有点头疼。"}]
SETTINGS = ServeSettings(api_key=KEY, max_concurrent=2, max_input_tokens=64, max_tokens=16, max_body_bytes=64 * 1024,
                         allowed_hosts=("localhost", "127.0.0.1", "::1"))


@pytest.fixture(scope="module")
def server(tiny_engine):
    with serve_in_thread(create_app(tiny_engine, SETTINGS)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=30)


def _auth():
    return {"Authorization": f"Bearer {KEY}"}


# -- the official openai client --

def test_non_streaming_completion(client, tiny_engine):
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, seed=11)
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == MODEL and resp.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.message.reasoning_content is None  # thinking is off by default
    assert resp.usage.prompt_tokens == len(tiny_engine.prompt_ids(HELLO, enable_thinking=False))
    assert choice.finish_reason in ("stop", "length")
    if choice.finish_reason == "length":
        assert resp.usage.completion_tokens == 6
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streaming_gives_the_same_answer_piece_by_piece(client):
    whole = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, seed=5)
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, seed=5, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices[0].delta.content]
    assert len(pieces) > 1
    assert "".join(pieces) == whole.choices[0].message.content  # same seed, same text
    last = chunks[-1]
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("extra_body", [{"chat_template_kwargs": {"enable_thinking": True}},
                                        {"enable_thinking": True}])
def test_thinking_per_request(client, tiny_engine, extra_body):
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, seed=2, extra_body=extra_body)
    # The thinking prompt is the template's, without the empty <think></think> block of non-thinking mode.
    assert resp.usage.prompt_tokens == len(tiny_engine.prompt_ids(HELLO, enable_thinking=True))
    assert resp.usage.prompt_tokens < len(tiny_engine.prompt_ids(HELLO, enable_thinking=False))
    # The tiny model never writes </think>: an unfinished thought is all reasoning, no answer.
    assert resp.choices[0].message.reasoning_content and resp.choices[0].message.content == ""
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, seed=2, stream=True,
                                            extra_body=extra_body)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in stream)
    assert reasoning == resp.choices[0].message.reasoning_content


def test_models_list_and_unknown_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=HELLO, max_tokens=2)
    assert e.value.body["code"] == "model_not_found"


def test_text_content_parts_and_history_with_reasoning_are_accepted(server):
    messages = [{"role": "system", "content": "你是医生。"},
                {"role": "user", "content": [{"type": "text", "text": "你好"}]},
                {"role": "assistant", "content": "您好。", "reasoning_content": "earlier thinking, not sent back"},
                {"role": "user", "content": "头疼怎么办？"}]
    r = httpx.post(f"{server}/v1/chat/completions", headers=_auth(), timeout=30,
                   json={"messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text


# -- the API key --

def test_api_key_is_required_on_v1_only(server, client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(f"{server}/v1/chat/completions", headers=headers, json={"messages": HELLO}, timeout=10)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server}/v1/models", timeout=10).status_code == 401
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=HELLO)
    assert httpx.get(f"{server}/health", timeout=10).json()["status"] == "ok"
    assert httpx.get(f"{server}/", timeout=10).status_code == 200


def test_host_header_must_name_this_server(server):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example."""
    port = server.rpartition(":")[2]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", ""):
        for path in ("/", "/health", "/v1/models"):
            r = httpx.get(f"{server}{path}", headers={**_auth(), "Host": host}, timeout=10)
            _assert_openai_error(r, 400, code="invalid_host")
        r = httpx.post(f"{server}/api/red-flags", headers={"Host": host}, json={"text": "x"}, timeout=10)
        _assert_openai_error(r, 400, code="invalid_host")
    for host in (f"localhost:{port}", f"LOCALHOST:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert httpx.get(f"{server}/v1/models", headers={**_auth(), "Host": host}, timeout=10).status_code == 200


def test_allowed_hosts_follow_the_bound_address():
    from medtune.listen import allowed_hosts

    loopback = ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts("127.0.0.1") == allowed_hosts("localhost") == allowed_hosts("::1") == loopback
    assert allowed_hosts("127.0.0.1", ("med.example.org",)) == (*loopback, "med.example.org")
    assert allowed_hosts("192.168.1.5") == ("192.168.1.5",)
    assert allowed_hosts("0.0.0.0") is None  # every interface: names unknown, the API key guards it
    assert allowed_hosts("0.0.0.0", ("med.example.org",)) == (*loopback, "med.example.org")


# -- limits and malformed requests: 4xx with an OpenAI-style body, never a 500 --

def _assert_openai_error(r: httpx.Response, status: int, param=None, code=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and "Traceback" not in r.text
    if param is not None:
        assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def test_max_tokens_and_input_limits(server):
    url = f"{server}/v1/chat/completions"
    r = httpx.post(url, headers=_auth(), json={"messages": HELLO, "max_tokens": 17})
    assert "above this server's limit of 16" in _assert_openai_error(r, 400, "max_tokens", "max_tokens_exceeded")["message"]
    r = httpx.post(url, headers=_auth(), json={"messages": HELLO, "max_completion_tokens": 100})
    _assert_openai_error(r, 400, "max_completion_tokens", "max_tokens_exceeded")
    long = [{"role": "user", "content": "我头疼得厉害，" * 30}]
    r = httpx.post(url, headers=_auth(), json={"messages": long, "max_tokens": 2})
    err = _assert_openai_error(r, 400, "messages", "context_length_exceeded")
    assert "limit of 64" in err["message"]
    r = httpx.post(url, headers=_auth(), content=b'{"messages": [], "pad": "' + b"x" * 70000 + b'"}',
                   timeout=10)
    _assert_openai_error(r, 413, code="request_too_large")


OK = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("body, param", [
    (b'{"messages": [', None),
    (b"[1, 2]", None),
    (b"", None),
    (b"\xff\xfe not utf-8", None),
    (b"[" * 30000 + b"]" * 30000, None),  # nested deeper than Python's JSON parser goes
    ({}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [OK, {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[1].content"),
    ({"messages": [OK], "max_tokens": "5"}, "max_tokens"),
    ({"messages": [OK], "max_tokens": 0}, "max_tokens"),
    ({"messages": [OK], "temperature": "hot"}, "temperature"),
    ({"messages": [OK], "temperature": 3}, "temperature"),
    ({"messages": [OK], "top_p": 0}, "top_p"),
    ({"messages": [OK], "stream": "yes"}, "stream"),
    ({"messages": [OK], "n": 2}, "n"),
    ({"messages": [OK], "seed": 1.5}, "seed"),
    ({"messages": [OK], "seed": -1}, "seed"),
    ({"messages": [OK], "model": 7}, "model"),
    ({"messages": [OK], "enable_thinking": "true"}, "enable_thinking"),
    ({"messages": [OK], "chat_template_kwargs": {"add_vision_id": True}}, "chat_template_kwargs"),
    ({"messages": [OK], "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": [OK], "stop": ["\n"]}, "stop"),
    ({"messages": [OK], "logprobs": True}, "logprobs"),
])
def test_invalid_requests_get_400_with_an_openai_error(server, body, param):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(f"{server}/v1/chat/completions", headers={**_auth(), "Content-Type": "application/json"},
                   timeout=10, **kwargs)
    error = _assert_openai_error(r, 400, param)
    assert error["type"] == "invalid_request_error"


def test_unknown_routes_and_methods(server):
    _assert_openai_error(httpx.get(f"{server}/v1/chat/completions", headers=_auth()), 405, code="method_not_allowed")
    _assert_openai_error(httpx.get(f"{server}/nowhere"), 404, code="not_found")
    _assert_openai_error(httpx.post(f"{server}/api/red-flags", json={"text": 5}), 400, "text")


def test_red_flag_endpoint_and_page(server):
    r = httpx.post(f"{server}/api/red-flags", json={"text": "宝宝突然不喘气了，叫也叫不醒"})
    assert r.json()["urgent"] is True and "120" in r.json()["message"]
    assert httpx.post(f"{server}/api/red-flags", json={"text": "感冒要多喝水吗"}).json()["urgent"] is False
    page = httpx.get(f"{server}/").text
    assert "仅供参考" in page and MODEL in page
    assert "https://" not in page and "http://" not in page  # self-contained: no CDN, works offline


# -- load: every request gets an answer or a 429, nobody hangs, the server stays up --

def test_fifty_concurrent_clients(server):
    async def one(client: httpx.AsyncClient, i: int):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"问题 {i}"}], "max_tokens": 8,
                "stream": i % 2 == 0, "seed": i}
        r = await client.post("/v1/chat/completions", json=body)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limit_exceeded" and r.headers["retry-after"] == "1"
        elif body["stream"]:
            assert r.text.rstrip().endswith("data: [DONE]")
        else:
            assert r.json()["usage"]["completion_tokens"] >= 1
        return r.status_code

    async def run():
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=server, headers=_auth(), timeout=30, limits=limits) as c:
            return await asyncio.wait_for(asyncio.gather(*(one(c, i) for i in range(50))), timeout=60)

    started = time.monotonic()
    statuses = asyncio.run(run())
    assert set(statuses) == {200, 429}, statuses
    assert time.monotonic() - started < 60
    deadline = time.monotonic() + 5
    while (health := httpx.get(f"{server}/health").json())["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health == {"status": "ok", "model": MODEL, "engine": "transformers", "running": 0, "max_concurrent": 2}


# -- the concurrency limit exactly, and disconnects, on a server whose generations wait for a gate --

class GatedEngine:
    """The real generator, except that each generation first waits for `gate`; streams are kept for inspection."""

    def __init__(self, engine):
        self.engine, self.name = engine, "transformers"
        self.model_id, self.max_model_len, self.tokenizer = engine.model_id, engine.max_model_len, engine.tokenizer
        self.gate = threading.Event()
        self.completions: list[TransformersStream] = []

    def prompt_ids(self, messages, enable_thinking):
        return self.engine.prompt_ids(messages, enable_thinking)

    def generate_one(self, *args, **kwargs):
        self.gate.wait(20)
        return self.engine.generate_one(*args, **kwargs)

    def stream(self, prompt_ids, sampling, enable_thinking=False):
        self.completions.append(TransformersStream(self, prompt_ids, sampling, enable_thinking))
        return self.completions[-1]


@pytest.fixture(scope="module")
def gated(tiny_engine):
    engine = GatedEngine(tiny_engine)
    with serve_in_thread(create_app(engine, ServeSettings(max_concurrent=2, max_tokens=1000))) as url:
        yield engine, url


def test_requests_over_the_limit_get_429_at_once(gated):
    engine, url = gated
    engine.gate.clear()

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=20) as c:
            body = {"messages": HELLO, "max_tokens": 4, "stream": True}
            async with c.stream("POST", "/v1/chat/completions", json=body) as a, \
                    c.stream("POST", "/v1/chat/completions", json=body) as b:
                assert (a.status_code, b.status_code) == (200, 200)   # both hold a slot, waiting for the gate
                assert (await c.get("/health")).json()["running"] == 2
                t0 = time.monotonic()
                busy = await c.post("/v1/chat/completions", json={**body, "stream": False})
                assert time.monotonic() - t0 < 2                        # refused at once, not queued
                _assert_openai_error(busy, 429, code="rate_limit_exceeded")
                assert busy.json()["error"]["type"] == "rate_limit_error"
                engine.gate.set()
                texts = [await a.aread(), await b.aread()]
            assert all(t.rstrip().endswith(b"data: [DONE]") for t in texts)
            again = await c.post("/v1/chat/completions", json={**body, "stream": False})
            assert again.status_code == 200

    asyncio.run(run())


def test_client_disconnect_stops_generation(gated):
    engine, url = gated
    engine.gate.set()
    with httpx.Client(base_url=url, timeout=20) as c:
        with c.stream("POST", "/v1/chat/completions",
                      json={"messages": HELLO, "max_tokens": 1000, "stream": True, "seed": 4}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
        # leaving the block closes the connection mid-stream
    completion = engine.completions[-1]
    deadline = time.monotonic() + 10
    while completion.result is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert completion.result is not None and completion.result.finish_reason == "cancelled"
    assert completion.result.tokens < 1000
    assert httpx.get(f"{url}/health").json()["running"] == 0


# -- the command line --

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_runs_on_loopback_and_stops_on_ctrl_c(lora_run):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("MEDTUNE_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "medtune", "serve", str(lora_run), "--port", str(port),
                             "--max-tokens", "8"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert health["model"] == MODEL
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        resp = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3)
        assert resp.usage.completion_tokens <= 3
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/v1" in out and "8 max_tokens" in out
    assert "serve: API key not required" in out and "Host header: localhost, 127.0.0.1, ::1" in out


def test_cli_serve_checks_the_port_before_loading_the_model(lora_run, capsys, monkeypatch):
    import medtune.serve

    monkeypatch.delenv("MEDTUNE_API_KEY", raising=False)
    monkeypatch.setattr(medtune.serve, "load_generator", lambda *a, **k: pytest.fail("loaded before the port check"))
    assert main(["serve", str(lora_run), "--port", "99999"]) == 2
    err = capsys.readouterr().err
    assert "--port 99999: a port is 1 to 65535" in err and "Traceback" not in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(lora_run), "--port", str(port)]) == 2
    assert f"--host 127.0.0.1 --port {port}: is in use by another program" in capsys.readouterr().err


def test_cli_serve_bad_arguments_are_plain_errors(lora_run, capsys):
    assert main(["serve", str(lora_run), "--engine", "vllm"]) == 2
    assert "--engine vllm needs the vllm package and a CUDA GPU" in capsys.readouterr().err
    assert main(["serve", str(lora_run / "missing")]) == 2
    assert "Traceback" not in capsys.readouterr().err
