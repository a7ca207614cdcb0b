"""`medtune serve`: the model behind an OpenAI-compatible API and a web chat page.

Run as: medtune serve RUN_DIR_OR_MODEL [--host 127.0.0.1 --port 8000] [--api-key KEY] [--allowed-host NAME]

The port is bound before the model loads (minutes), so a port in use or out of range is said at once.

medtune.generate chooses and loads the engine (vLLM on a GPU when installed and the adapter allows it,
transformers otherwise), api.py is the HTTP API, chat.html the page at `/`.
"""

from __future__ import annotations

import dataclasses

from medtune.errors import UserError
from medtune.generate.loading import choose_engine, load_generator
from medtune.generate.source import resolve_model_source
from medtune.listen import allowed_hosts, bind, is_loopback, serve_on, url_host
from medtune.serve.api import ServeSettings, create_app


def serve_model(model: str, host: str = "127.0.0.1", port: int = 8000, engine: str = "auto", dtype: str = "auto",
                settings: ServeSettings | None = None, model_id: str | None = None,
                max_input_tokens: int | None = None, allowed_host: tuple[str, ...] = (), log=print) -> None:
    """Load the model and serve it until interrupted. `max_input_tokens=None`: the model's context minus max_tokens.
    `allowed_host`: Host header names to answer besides the bound ones (a reverse proxy's)."""
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
        if not is_loopback(host) and not settings.api_key:
            log(f"serve: warning: listening on {host} without an API key: anyone who can reach this port can use the "
                "model (set --api-key or MEDTUNE_API_KEY)")
        shown = url_host(host)
        log(f"serve: model '{loaded.model_id}' at http://{shown}:{port}/v1 (chat page: http://{shown}:{port}/); "
            f"limits: {settings.max_concurrent} concurrent, {settings.max_input_tokens} input tokens, "
            f"{settings.max_tokens} max_tokens; thinking is off unless a request sets enable_thinking")
        log("serve: API key " + ("required on /v1/* ('Authorization: Bearer KEY'; the page asks for it)"
                                 if settings.api_key else "not required (none set: --api-key or MEDTUNE_API_KEY)")
            + "; Host header: " + (", ".join(settings.allowed_hosts) if settings.allowed_hosts is not None else "any"))
        serve_on(app, sock, host, port)


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

