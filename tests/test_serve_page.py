"""The chat page at `/`, in headless Chromium against the real server: a streamed answer appears, history is
sent back, thinking shows apart, the disclaimer is always there, the urgent-care banner shows for a red-flag
question and not for a benign one, and the console stays free of errors."""

from __future__ import annotations

import shutil

import pytest

from medtune.serve.api import ServeSettings, create_app
from tests.serving import serve_in_thread

pytest.importorskip("selenium")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver are not installed"),
              pytest.mark.usefixtures("single_torch_thread")]


@pytest.fixture(scope="module")
def page_url(tiny_engine):
    with serve_in_thread(create_app(tiny_engine, ServeSettings(max_concurrent=4, max_tokens=24))) as url:
        yield url + "/"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _ask(driver, text: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    before = len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    box = driver.find_element(By.ID, "question")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, 30).until(
        lambda d: len(answers := d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) > before
        and answers[-1].get_attribute("data-state") != "streaming")
    return driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]


def test_chat_page_in_chromium(browser, page_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_url)
    disclaimer = browser.find_element(By.ID, "disclaimer")
    banner = browser.find_element(By.ID, "urgent-banner")
    assert disclaimer.is_displayed() and "仅供参考" in disclaimer.text and "120" in disclaimer.text
    assert not banner.is_displayed()

    # A benign question: a streamed answer, no banner.
    answer = _ask(browser, "感冒了需要多喝水吗？")
    assert answer.get_attribute("data-state") == "done"
    assert int(answer.get_attribute("data-chunks")) > 1  # the answer was drawn piece by piece
    assert answer.find_element(By.CLASS_NAME, "answer").get_attribute("textContent")
    assert "tokens" in answer.find_element(By.CLASS_NAME, "meta").text
    assert not banner.is_displayed()
    assert not answer.find_element(By.TAG_NAME, "details").is_displayed()  # thinking is off

    # A red-flag question: the banner appears, and the history sent includes the first exchange.
    _ask(browser, "我爸突然胸口剧痛，疼到左胳膊，满头大汗")
    WebDriverWait(browser, 10).until(lambda d: banner.is_displayed())
    assert "120" in banner.text and "胸痛" in banner.text
    assert browser.execute_script("return history.map(m => m.role)") == ["user", "assistant", "user", "assistant"]
    assert disclaimer.is_displayed()

    # Thinking on: the (never finished) thought of the tiny model shows in its own fold.
    browser.find_element(By.ID, "thinking").click()
    thought = _ask(browser, "再详细说说")
    assert thought.get_attribute("data-state") == "done"
    assert thought.find_element(By.TAG_NAME, "details").is_displayed()
    assert thought.find_element(By.CLASS_NAME, "reasoning").get_attribute("textContent")

    # A new chat clears the conversation and the banner.
    browser.find_element(By.ID, "reset").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".msg") == []
    assert not banner.is_displayed() and browser.execute_script("return history.length") == 0

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
