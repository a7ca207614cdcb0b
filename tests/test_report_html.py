"""report.html opened from disk in headless Chromium: every plot loads, every table is there, no console
error, no request leaves the file.

Drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages separated
by NUL on file descriptors 3 and 4), so no driver or websocket package is needed. Skips when Chromium
is not installed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from medtune.report.write import write_report
from tests.report_fixture import reference_run

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


class Browser:
    """A headless Chromium with one page, driven over --remote-debugging-pipe."""

    def __init__(self, profile: Path, timeout: float = 60):
        self.timeout = timeout
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():  # Chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=child_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if not select.select([self._from_chrome], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=True)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._receive())

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        return result["result"]["value"]

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            os.close(self._to_chrome)
            os.close(self._from_chrome)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads, and any request that is not the file itself."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(f"console {params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(f"log error: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                out.append(f"load failed: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent":
                url = params.get("request", {}).get("url", "")
                if not url.startswith(("file://", "data:")):
                    out.append(f"network request: {url}")
        return out


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_report_html_in_chromium(tmp_path, lang):
    run = reference_run(tmp_path / "qwen3-8b-huatuo")
    result = write_report(run, lang=lang, generated_at="2025-06-02 14:00", cjk_font=None)
    # opened from a copy elsewhere: self-contained means the plots/ folder is not needed
    page = tmp_path / "alone" / "report.html"
    page.parent.mkdir()
    shutil.copy(result.html, page)
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        images = browser.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.alt])")
        tables = browser.evaluate("document.querySelectorAll('table').length")
        rows = browser.evaluate("[...document.querySelectorAll('table')].map(t => t.tBodies[0].rows.length)")
        dangling = browser.evaluate("[...document.querySelectorAll('a[href^=\"#\"]')]"
                                    ".filter(a => !document.getElementById(a.hash.slice(1))).length")
        lang_attr = browser.evaluate("document.documentElement.lang")
    finally:
        browser.close()
    assert len(images) == result.images == 7
    assert all(complete and width > 0 for complete, width, _ in images), images
    assert tables == result.tables and tables > 15 and min(rows) >= 1
    assert dangling == 0
    assert lang_attr == ("zh-CN" if lang == "zh" else "en")
    assert browser.problems() == []


# Draws a Chinese heading's characters in the heading's own font, forwards and reversed, onto a canvas.
# With real glyphs the two images differ; with missing glyphs every character is the same box and the
# two images are identical.
GLYPH_PROBE = """(() => {
  const h = [...document.querySelectorAll('h2')].find(e => /[\\u4e00-\\u9fff]{2}/.test(e.textContent));
  const chars = [...new Set(h.textContent.match(/[\\u4e00-\\u9fff]/g))].slice(0, 6);
  const draw = text => {
    const c = document.createElement('canvas'); c.width = 300; c.height = 60;
    const g = c.getContext('2d'); g.font = getComputedStyle(h).font; g.textBaseline = 'top';
    g.fillText(text, 0, 0); return c.toDataURL();
  };
  return [chars.join(''), draw(chars.join('')), draw([...chars].reverse().join('')), getComputedStyle(h).fontFamily];
})()"""


def test_chinese_headings_render_with_real_glyphs(tmp_path):
    """A report opened on this machine shows Chinese, not boxes: `make browser` installs fonts-noto-cjk, and
    the page names the common CJK fonts of each system first."""
    result = write_report(reference_run(tmp_path / "run", stages=("prepare",)), lang="zh", cjk_font=None)
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(result.html.as_uri())
        chars, forwards, backwards, family = browser.evaluate(GLYPH_PROBE)
    finally:
        browser.close()
    assert len(chars) >= 2
    assert family.startswith('"PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC"')
    boxes = forwards == backwards
    assert not boxes, f"'{chars}' renders as identical boxes: no CJK font (apt-get install fonts-noto-cjk)"
