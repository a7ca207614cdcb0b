"""The review page in headless Chromium against the real `medtune review` server process.

Two invited reviewers work in two tabs at once; reviewer A judges five items by keyboard only; the server is
killed with SIGKILL while A is judging and restarted; the choice A made while it was down is delivered by the
page's retry. Afterwards the database holds every judgment made, exactly once, with the values chosen; a reload
shows the earlier judgments; a missing or wrong token gets 403 and no data; an answer holding a script tag
is shown as text.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.review_fixture import SCRIPT, review_run

pytest.importorskip("selenium")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver are not installed")
COMMENT = "dose? qazx"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def medtune(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "medtune", *args], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_server(run: Path, port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "medtune", "review", str(run), "--port", str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/").status_code == 403:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the review server did not start")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=390,844",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)  # 390 x 844: a phone's screen
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def keys(driver, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in text:
        ActionChains(driver).send_keys(key).perform()


def settled(driver, timeout: float = 30) -> None:
    """Every save the page started has been answered by the server."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "return document.body.dataset.saving === '0' && document.getElementById('status').dataset.state === 'saved'"))


def open_page(driver, link: str):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(link)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))


def judge_item(driver) -> str:
    """Prefer answer B; A: accurate, safe, complete; B: partly, harmful advice, incomplete; then the next item."""
    item = driver.find_element("id", "item").get_attribute("data-item-id")
    keys(driver, "2qazjwsx")
    settled(driver)
    keys(driver, "n")
    return item


def rows(run: Path) -> list[tuple]:
    db = sqlite3.connect(run / "review" / "review.sqlite")
    try:
        return db.execute("SELECT r.name, j.item_id, j.arm_order, j.preferred, j.answers FROM judgments j "
                          "JOIN reviewers r ON r.id = j.reviewer_id ORDER BY r.name, j.item_id").fetchall()
    finally:
        db.close()


def test_two_reviewers_by_keyboard_survive_a_killed_server(tmp_path, browser):
    import json

    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run = review_run(tmp_path / "run")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    link_a = medtune("review", "invite", str(run), "--name", "Dr A", "--url", url).strip().splitlines()[-1]
    link_b = medtune("review", "invite", str(run), "--name", "Dr B", "--url", url).strip().splitlines()[-1]
    assert link_a.startswith(url + "/?t=") and link_a != link_b
    server = start_server(run, port)
    try:
        # No token, a wrong token: 403 and no data.
        for response in (httpx.get(url + "/api/items"), httpx.get(url + "/api/items",
                                                                  headers={"Authorization": "Bearer wrong"}),
                         httpx.get(url + "/?t=wrong"), httpx.put(url + "/api/judgments", json={"item_id": "x"})):
            assert response.status_code == 403 and "answer" not in response.text

        open_page(browser, link_a)
        tab_a = browser.current_window_handle
        done_a = [judge_item(browser), judge_item(browser)]
        browser.switch_to.new_window("tab")
        tab_b = browser.current_window_handle
        open_page(browser, link_b)
        done_b = [judge_item(browser)]
        # A comment, saved while the reviewer is still in the box (shortcut letters typed there are text).
        keys(browser, "c" + COMMENT)
        WebDriverWait(browser, 20).until(lambda d: any(COMMENT in r[4] for r in rows(run)))
        keys(browser, "\ue00c")  # Escape: back to the shortcuts
        browser.switch_to.window(tab_a)
        done_a.append(judge_item(browser))
        browser.switch_to.window(tab_b)
        done_b.append(judge_item(browser))

        # The answer with a script tag is text: its characters are on the page, no element was made from it.
        browser.switch_to.window(tab_a)
        keys(browser, "p" * 4)
        for _ in range(5):
            if browser.find_element(By.ID, "item").get_attribute("data-item-id") == "compare:q02":
                break
            keys(browser, "n")
        texts = [e.get_attribute("textContent") for e in browser.find_elements(By.CSS_SELECTOR, ".answer .text")]
        assert any(t.endswith(SCRIPT) for t in texts)
        assert browser.find_elements(By.CSS_SELECTOR, ".answer .text b, .answer .text script") == []
        assert browser.title == "medtune review"
        keys(browser, "nn")  # on to q04, the first item A has not judged
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []  # (CSP) nothing refused

        # Killed mid-review: A's next choice is made while the server is down, and arrives after the restart.
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        pending = browser.find_element(By.ID, "item").get_attribute("data-item-id")
        keys(browser, "2qazjwsx")
        time.sleep(0.5)
        assert browser.find_element(By.ID, "status").get_attribute("data-state") == "error"
        server = start_server(run, port)
        settled(browser)
        keys(browser, "n")
        done_a.append(pending)
        done_a.append(judge_item(browser))
        assert len(set(done_a)) == 5

        # A reload shows A's earlier judgment of the first item.
        browser.refresh()
        open_page(browser, link_a)
        keys(browser, "p" * 5)
        pressed = [b.get_attribute("data-label") for b in browser.find_elements(By.CSS_SELECTOR, "button.prefer")
                   if b.get_attribute("aria-pressed") == "true"]
        assert pressed == ["B"]
        assert browser.find_element(By.ID, "count").text == "5 / 5"
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)

    stored = rows(run)
    assert [(name, item) for name, item, *_ in stored] == sorted(
        [("Dr A", i) for i in done_a] + [("Dr B", i) for i in done_b])
    for name, item, order, preferred, answers in stored:
        first, second = json.loads(order)
        assert preferred == second  # "2": the answer shown second
        comment = COMMENT if (name, item) == ("Dr B", done_b[1]) else ""
        assert json.loads(answers) == {
            first: {"accurate": "yes", "safe": "safe", "complete": "yes", "comment": comment},
            second: {"accurate": "partly", "safe": "harmful", "complete": "no", "comment": ""}}
    lines = (run / "review" / "judgments.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(stored)  # written beside the database, one line per judgment
