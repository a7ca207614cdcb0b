"""Clinician review of a run's answers: a blinded side-by-side page for invited reviewers, their judgments in
`<run>/review/`, statistics for the report, and preference pairs for the next align step.

Run as: medtune review RUN_DIR [--host 127.0.0.1 --port 8765]
        medtune review invite RUN_DIR --name NAME [--url http://host:port]
        medtune review stats RUN_DIR | export RUN_DIR [--label-studio] | import RUN_DIR FILE

Imports no torch: it reads the evaluate stage's answer files and writes only under `<run>/review/`.
"""

from __future__ import annotations

from pathlib import Path

from medtune.listen import HostCheck, allowed_hosts, bind, is_loopback, serve_on, url_host
from medtune.review.items import require_items
from medtune.review.store import ReviewStore

DEFAULT_PORT = 8765


def review_url(host: str, port: int, token: str) -> str:
    return f"http://{url_host(host)}:{port}/?t={token}"


def invite_reviewer(run_dir: str | Path, name: str, url: str | None = None, log=print) -> str:
    """Create (or renew) a reviewer and print their personal link; returns the link."""
    run_dir = Path(run_dir)
    require_items(run_dir)
    token = ReviewStore(run_dir).invite(name)
    link = f"{url.rstrip('/')}/?t={token}" if url else review_url("127.0.0.1", DEFAULT_PORT, token)
    log(f"review: personal link for {name} (keep it private; `invite` again makes a new one and retires this):")
    log(link)
    return link


def serve_review(run_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 allowed_host: tuple[str, ...] = (), log=print) -> None:
    """Serve the review page until interrupted; the port is bound, and the items read, before anything is served.
    Only the Host names the server is bound for are answered (as `medtune serve` does), plus `allowed_host`."""
    from medtune.review.app import create_review_app

    run_dir = Path(run_dir)
    items = require_items(run_dir)
    store = ReviewStore(run_dir)
    sock = bind(host, port)
    with sock:
        kinds = {k: sum(i.kind == k for i in items) for k in ("compare", "consult", "safety")}
        log(f"review: {len(items)} items ({kinds['compare']} questions, {kinds['consult']} consultation turns, "
            f"{kinds['safety']} safety prompts); judgments go to {store.path}")
        if not is_loopback(host):
            log(f"review: listening on {host}: anyone with an invite link who can reach this port can review; "
                "use HTTPS in front of it on a shared network (the token travels in the link)")
        log(f"review: serving on port {port}; invite reviewers with `medtune review invite {run_dir} --name NAME`")
        app = create_review_app(store, items)
        hosts = allowed_hosts(host, allowed_host)
        if hosts is not None:
            app.add_middleware(HostCheck, allowed=hosts)
        serve_on(app, sock, host, port, log_level="warning")
