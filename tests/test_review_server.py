"""`medtune review` listens as `medtune serve` does (medtune.listen): a port in use is said before anything is
served, and a request whose Host header names another site (a DNS-rebinding page) gets 400, before any token
check, while the loopback names reach the token check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from tests.conftest import ROOT
from tests.review_fixture import review_run

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def test_review_answers_only_its_host_names_and_says_a_busy_port_at_once(tmp_path):
    import httpx

    run = review_run(tmp_path / "run")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "medtune", "review", str(run), "--port", str(port)], env=ENV,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and f"--port {port}: is in use" in done.stderr, done.stderr

    proc = subprocess.Popen([sys.executable, "-m", "medtune", "review", str(run), "--port", str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url, deadline = f"http://127.0.0.1:{port}/api/items", time.monotonic() + 60
        while True:
            try:
                status = httpx.get(url).status_code
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the review server did not start"
                time.sleep(0.2)
        assert status == 403  # loopback name: on to the token check, which a missing token fails
        assert httpx.get(url, headers={"Host": f"localhost:{port}"}).status_code == 403
        rebound = httpx.get(url, headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "invalid_host"
    finally:
        proc.kill()
        proc.wait()
