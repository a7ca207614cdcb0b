"""`medtune serve`: the model behind an OpenAI-compatible API and a web chat page.

Run as: medtune serve RUN_DIR_OR_MODEL [--host 127.0.0.1 --port 8000] [--api-key KEY] [--allowed-host NAME]

The port is bound before the model loads (minutes), so a port in use or out of range is said at once.

medtune.generate chooses and loads the engine (vLLM on a GPU when installed and the adapter allows it,
transformers otherwise), api.py is the HTTP API, chat.html the page at `/`.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import socket

from medtune.errors import UserError
from medtune.generate.loading import choose_engine, load_generator
from medtune.generate.source import resolve_model_source
from medtune.serve.api import ServeSettings, create_app


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def serve_model(model: str, host: str = "127.0.0.1", port: int = 8000, engine: str = "auto", dtype: str = "auto",
                settings: ServeSettings | None = None, model_id: str | None = None,
                max_input_tokens: int | None = None, allowed_host: tuple[str, ...] = (), log=print) -> None:
    """Load the model and serve it until interrupted. `max_input_tokens=None`: the model's context minus max_tokens.
    `allowed_host`: Host header names to answer besides the bound ones (a reverse proxy's)."""
    import uvicorn

    settings = dataclasses.replace(settings or ServeSettings(), allowed_hosts=allowed_hosts(host, allowed_host))
    source = resolve_model_source(model)
    if model_id:
        source = dataclasses.replace(source, model_id=model_id)
    engine_name = choose_engine(engine, [source.adapter] if source.adapter else [], log=log)
    sock = bind(host, port)  # before loading: a port in use is said now, not after minutes of loading
    with sock:
        log(f"serve: loading {source.base}" + (f" + adapter {source.adapter}" if source.adapter else "")
            + f" with the {engine_name} engine")
        # transformers merges the adapter in memory (faster decoding); vLLM applies it per request, unmerged.
        loaded = load_generator(source, dtype=dtype, engine=engine_name, merge=True, serving=True)
        settings = _fit_context(settings, loaded.max_model_len, max_input_tokens)
        app = create_app(loaded, settings)
        if not _is_loopback(host) and not settings.api_key:
            log(f"serve: warning: listening on {host} without an API key: anyone who can reach this port can use the "
                "model (set --api-key or MEDTUNE_API_KEY)")
        shown = f"[{host}]" if ":" in host else host
        log(f"serve: model '{loaded.model_id}' at http://{shown}:{port}/v1 (chat page: http://{shown}:{port}/); "
            f"limits: {settings.max_concurrent} concurrent, {settings.max_input_tokens} input tokens, "
            f"{settings.max_tokens} max_tokens; thinking is off unless a request sets enable_thinking")
        log("serve: API key " + ("required on /v1/* ('Authorization: Bearer KEY'; the page asks for it)"
                                 if settings.api_key else "not required (none set: --api-key or MEDTUNE_API_KEY)")
            + "; Host header: " + (", ".join(settings.allowed_hosts) if settings.allowed_hosts is not None else "any"))
        config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown; uvicorn.run swallows it too
            pass


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The Host header names a server bound to `host` answers: the loopback names when bound to loopback, the
    bound address otherwise, plus `extra`; None (any) when bound to every interface without --allowed-host."""
    extra = tuple(extra)
    if _is_loopback(host):
        return LOOPBACK_NAMES + extra
    if host in ("0.0.0.0", "::", ""):
        return LOOPBACK_NAMES + extra if extra else None
    return (host,) + extra


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for uvicorn to serve on, or a UserError saying why it cannot be."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: a port is 1 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UserError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        why = "is in use by another program (pick another --port, or stop it)" if e.errno == errno.EADDRINUSE \
            else f"cannot be bound ({e.strerror})"
        raise UserError(f"--host {host} --port {port}: {why}") from None
    return sock


def _fit_context(settings: ServeSettings, max_model_len: int, max_input_tokens: int | None) -> ServeSettings:
    if settings.max_tokens >= max_model_len:
        raise UserError(f"--max-tokens {settings.max_tokens} leaves no room for a prompt in the model's context of "
                        f"{max_model_len} tokens")
    room = max_model_len - settings.max_tokens
    if max_input_tokens is None:
        return dataclasses.replace(settings, max_input_tokens=room)
    if max_input_tokens > room:
        raise UserError(f"--max-input-tokens {max_input_tokens} plus --max-tokens {settings.max_tokens} is above the "
                        f"model's context of {max_model_len} tokens")
    return dataclasses.replace(settings, max_input_tokens=max_input_tokens)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
