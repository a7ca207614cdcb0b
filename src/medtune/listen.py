"""Listening safely, for every server medtune starts (`medtune serve`, `medtune review`): the port is checked and
bound before anything slow loads, and a server answers only the Host names it is bound for, so a page on another
site that reaches a loopback server through DNS rebinding (it sends its own host name) gets 400.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from medtune.errors import UserError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """The host as a URL writes it: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The Host header names a server bound to `host` answers: the loopback names when bound to loopback, the
    bound address otherwise, plus `extra`; None (any) when bound to every interface without --allowed-host."""
    extra = tuple(extra)
    if is_loopback(host):
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


def serve_on(app, sock: socket.socket, host: str, port: int, log_level: str = "info") -> None:
    """Serve an ASGI app on an already bound socket until Ctrl-C."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown; uvicorn.run swallows it too
        pass


class HostCheck:
    """ASGI middleware: the Host header's name must be one of `allowed` (a DNS-rebinding page sends its own)."""

    def __init__(self, app, allowed: tuple[str, ...]):
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if host_name(host) not in self.allowed:
                from starlette.responses import JSONResponse

                message = (f"Host {host!r} is not one this server answers to ({', '.join(sorted(self.allowed))}); "
                           "behind a reverse proxy, start it with --allowed-host NAME")
                error = {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_host"}
                await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """The name in a Host header: '[::1]:8000' -> '::1', 'localhost:8000' -> 'localhost'."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host  # no port, or a bare IPv6 address
