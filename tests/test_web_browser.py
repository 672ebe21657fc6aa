"""The agent console in a real headless Chromium: sign in, change state, screen pop without reload."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.security import generate_password_hash

from ivr.queue import Acd, parse_queues
from ivr.store import open_store
from ivr.testing.fakes import FakeClock, FakeConnector
from ivr.web import create_app
from ivr.web.serving import WebServer

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
QUEUES = """
agents:
  ann: {uri: "sip:ann@127.0.0.1"}
queues:
  support: {ring_timeout: 60, wrap_up: 0}
"""


@pytest.fixture
def console(tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = open_store(tmp_path / "ivr.db")
    store.add_user("ann", generate_password_hash("ann-password", "pbkdf2:sha256:1000"), "agent", 0.0)
    connector = FakeConnector()
    acd = Acd(parse_queues(QUEUES), connector, store, FakeClock(time.time()))
    app = create_app(store, acd, {"secret_key": "browser-test", "live_poll_interval": 0.2})
    # the production server, as ivr serve runs it
    server = WebServer(app, "127.0.0.1", 0, on_stop=app.extensions["ivr.live"].close)
    server.start()
    yield {"url": f"http://127.0.0.1:{server.port}", "store": store, "acd": acd, "connector": connector}
    server.shutdown()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(condition: Any, timeout: float = 10.0) -> float:
    """Seconds until ``condition()`` is truthy (fails after ``timeout``)."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except Exception:  # element not there yet / replaced while reading
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def sign_in(browser: Any, name: str) -> None:
    """Fill in the sign-in form the browser is on for user ``name`` (password ``<name>-password``)."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(f"{name}-password")
    browser.find_element(By.ID, "sign-in").click()


def test_agent_signs_in_gets_a_screen_pop_and_changes_state(console: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    store, acd, connector = console["store"], console["acd"], console["connector"]
    browser.get(console["url"] + "/agent")
    assert "/login" in browser.current_url  # no caller data without signing in
    sign_in(browser, "ann")
    wait_for(lambda: browser.find_element(By.ID, "agent-state").text == "offline")

    browser.execute_script("window.__same_page = true;")  # gone if anything reloads the page
    browser.find_element(By.ID, "go-available").click()
    wait_for(lambda: browser.find_element(By.ID, "agent-state").text == "available")
    assert acd.snapshot()["agents"]["ann"]["state"] == "available"
    wait_for(lambda: "live" in browser.find_element(By.TAG_NAME, "body").get_attribute("class"))

    now = time.time()
    store.start_call("call-1", "+15550142", "100", "support", now - 40)
    store.add_turn("call-1", now - 30, "bot", "Thanks for calling Acme. How can I help?")
    said = 'my card 4111 1111 1111 1111 was charged twice <img src=x onerror="window.__xss=1">'
    store.add_turn("call-1", now - 25, "caller", said, intent="billing_dispute", confidence=0.91)
    store.set_context("call-1", {"intent": "billing_dispute", "confidence": 0.91, "slots": {"amount": "42"}})
    acd.enqueue("call-1", "support", priority=3)
    latency = wait_for(lambda: browser.find_element(By.ID, "pop-intent").text == "billing_dispute")
    pop = browser.find_element(By.ID, "pop").text
    assert "Incoming call" in pop and "+15550142" in pop
    assert "was charged twice" in pop and "**** **** **** 1111" in pop and "4111" not in pop
    assert '<img src=x onerror="window.__xss=1">' in pop  # shown as text, never run
    assert browser.execute_script("return window.__xss") is None
    assert browser.execute_script("return window.__same_page") is True
    print(f"screen pop shown {latency * 1000:.0f} ms after the call was offered")
    assert latency < 2.0, f"screen pop took {latency:.2f}s"

    connector.answer("ann")
    wait_for(lambda: "On call" in browser.find_element(By.ID, "pop-title").text)
    acd.call_finished("call-1")
    wait_for(lambda: browser.find_element(By.ID, "no-call").is_displayed())

    browser.find_element(By.NAME, "reason").send_keys("lunch")
    browser.find_element(By.ID, "go-break").click()
    # The panel is redrawn as the state changes: read state and reason together, from the same drawing.
    wait_for(lambda: (browser.find_element(By.ID, "agent-state").text,
                      browser.find_element(By.ID, "agent-reason").text) == ("break", "lunch"))
    assert acd.snapshot()["agents"]["ann"]["reason"] == "lunch"
    assert browser.execute_script("return window.__same_page") is True


def test_supervisor_puts_an_agent_on_break_from_the_live_view(console: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    store, acd = console["store"], console["acd"]
    store.add_user("sue", generate_password_hash("sue-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    acd.set_agent_state("ann", "available")
    browser.get(console["url"] + "/supervisor")
    sign_in(browser, "sue")
    state = '#live tr[data-agent="ann"] td.state'
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, state).text == "available")
    browser.execute_script("window.__same_page = true;")
    # The live view redraws its rows as updates arrive: each step finds its element again until it holds.
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, '#live tr[data-agent="ann"] button[value="break"]')
             .click() is None)
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, state).text == "break")
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, '#live tr[data-agent="ann"] td.reason').text
             == "set by sue")
    assert acd.snapshot()["agents"]["ann"]["state"] == "break"
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, '#live tr[data-agent="ann"] button[value="offline"]')
             .click() is None)
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, state).text == "offline")
    assert acd.snapshot()["agents"]["ann"]["state"] == "offline"
    assert browser.execute_script("return window.__same_page") is True  # no reload


def test_supervisor_picks_a_date_range_and_exports_a_table(console: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    from ivr.reports import day_bounds

    store = console["store"]
    store.add_user("sue", generate_password_hash("sue-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    start = day_bounds(dt.date(2026, 3, 10))[0]
    for i, outcome in enumerate(["completed", "caller_hangup", "transfer_failed", "completed"]):
        store.start_call(f"r{i}", "+1555", "100", "support", start + 3600 * (9 + i))
        store.set_context(f"r{i}", {"intent": "=cmd|' /C calc'!A0" if i == 3 else "faq"})
        store.end_call(f"r{i}", start + 3600 * (9 + i) + 60, outcome)
    browser.get(console["url"] + "/supervisor")
    sign_in(browser, "sue")
    wait_for(lambda: browser.find_element(By.ID, "figures-title").text == "Today")
    for field, value in (("since", "2026-03-09"), ("until", "2026-03-10")):
        browser.execute_script("arguments[0].value = arguments[1]", browser.find_element(By.ID, field), value)
    browser.find_element(By.ID, "show-range").click()
    wait_for(lambda: browser.find_element(By.ID, "figures-title").text == "2026-03-09 to 2026-03-10")
    assert browser.find_element(By.ID, "fig-calls").text == "4"
    assert browser.find_element(By.ID, "fig-containment").text == "50%"  # the hang-up and failed transfer are not
    link = next(a for a in browser.find_elements(By.CSS_SELECTOR, "a.csv") if a.text == "intents")
    text = browser.execute_async_script(
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(arguments[1])",
        link.get_attribute("href"),
    )
    assert "'=cmd|' /C calc'!A0" in text and "\n=cmd" not in text and ",=cmd" not in text


def test_a_supervisor_plays_a_voicemail_and_marks_it_called_back(console: dict[str, Any], browser: Any,
                                                                  tmp_path: Path) -> None:
    import numpy as np
    from selenium.webdriver.common.by import By

    from ivr.store.sealed_audio import AudioVault

    store = console["store"]
    store.add_user("sue", generate_password_hash("sue-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    store.start_call("call-9", "+15550199", "100", "support", time.time() - 60)
    writer = AudioVault(tmp_path / "rec", store.sealer).new_file("call-9", "voicemail", 8000)
    writer.write((np.sin(np.arange(16000) * 0.3) * 5000).astype("<i2").tobytes())  # 2 s
    writer.close()
    mail = store.add_recording("call-9", time.time() - 30, "voicemail", str(writer.path), writer.duration, "support")
    browser.get(console["url"] + "/login")
    sign_in(browser, "sue")
    wait_for(lambda: "/supervisor" in browser.current_url)
    browser.get(console["url"] + "/voicemail")
    row = browser.find_element(By.ID, f"voicemail-{mail}")
    assert "+15550199" in row.text and "support" in row.text
    audio = row.find_element(By.TAG_NAME, "audio")
    browser.execute_script("arguments[0].load()", audio)
    wait_for(lambda: browser.execute_script(  # the browser fetched, decoded and knows the length
        "return arguments[0].readyState >= 1 && arguments[0].duration > 0", audio))
    duration = browser.execute_script("return arguments[0].duration", audio)
    assert abs(duration - 2.0) < 0.05
    row.find_element(By.XPATH, ".//button[text()='Mark called back']").click()
    wait_for(lambda: "by sue" in browser.find_element(By.ID, f"voicemail-{mail}").text)
    assert store.get_recording(mail)["called_back_by"] == "sue"


def test_supervisor_reads_a_chart_and_clicks_through_to_its_calls(console: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    from ivr.reports import day_bounds

    store = console["store"]
    store.add_user("sue", generate_password_hash("sue-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    first = dt.date(2026, 1, 1)
    for d in range(0, 92, 3):  # a call every third day, two on 2026-03-02
        start = day_bounds(first + dt.timedelta(days=d))[0] + 3600 * 10
        for n in range(2 if d == 60 else 1):
            store.start_call(f"d{d}-{n}", "+1555", "100", "support", start + n)
            store.end_call(f"d{d}-{n}", start + n + 60, "completed")
    browser.get(console["url"] + "/login")
    sign_in(browser, "sue")
    wait_for(lambda: "/supervisor" in browser.current_url)
    browser.get(console["url"] + "/supervisor?since=2026-01-01&until=2026-04-01")
    chart = browser.find_element(By.ID, "chart-calls")
    svg = chart.find_element(By.TAG_NAME, "svg")
    assert svg.size["width"] > 200 and svg.size["height"] > 80  # laid out, not collapsed by the stylesheet
    ticks = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "text.y-tick")]
    assert ticks == ["0", "1", "2"]
    boxes = browser.execute_script(
        "return [...arguments[0].querySelectorAll('text.x-label')].map(t => t.getBoundingClientRect())"
        ".map(r => [r.left, r.right, r.width])", svg)
    assert 5 <= len(boxes) <= 14 and all(w > 0 for _, _, w in boxes)
    assert all(right < next_left for (_, right, _), (next_left, _, _) in itertools.pairwise(boxes))
    bars = chart.find_elements(By.CSS_SELECTOR, "rect.bar")
    assert len(bars) == 91 and max(b.size["height"] for b in bars) > 50
    tallest = max(bars, key=lambda b: b.size["height"])
    tallest.click()  # the bar of 2026-03-02 is a link to that day's calls
    wait_for(lambda: "/calls" in browser.current_url)
    assert "since=2026-03-02" in browser.current_url and "until=2026-03-02" in browser.current_url
    assert browser.find_element(By.ID, "calls-total").text.startswith("2 calls")


def test_a_supervisor_seeks_far_into_a_long_recording(console: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    import numpy as np
    from selenium.webdriver.common.by import By

    from ivr.store.sealed_audio import AudioVault

    store = console["store"]
    store.add_user("sue", generate_password_hash("sue-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    store.start_call("long-1", "+15550199", "100", "support", time.time() - 1300)
    writer = AudioVault(tmp_path / "rec", store.sealer).new_file("long-1", "call", 8000)
    minute = (np.sin(np.arange(8000 * 60) * 0.3) * 5000).astype("<i2").tobytes()
    for _ in range(20):
        writer.write(minute)
    writer.close()
    store.add_recording("long-1", time.time() - 60, "call", str(writer.path), writer.duration, "support")
    browser.get(console["url"] + "/login")
    sign_in(browser, "sue")
    wait_for(lambda: "/supervisor" in browser.current_url)
    browser.get(console["url"] + "/calls/long-1")
    audio = browser.find_element(By.CSS_SELECTOR, "ol.recordings audio")
    browser.execute_script("arguments[0].load()", audio)
    wait_for(lambda: browser.execute_script("return arguments[0].readyState >= 1", audio))
    assert abs(browser.execute_script("return arguments[0].duration", audio) - 1200) < 0.1
    # the player seeks with byte ranges: 19 minutes in plays without fetching what comes before
    browser.execute_script("arguments[0].currentTime = 1140", audio)
    wait_for(lambda: browser.execute_script(
        "const a = arguments[0]; return !a.seeking && a.readyState >= 2 && Math.abs(a.currentTime - 1140) < 1", audio))
    assert browser.execute_script("const s = arguments[0].seekable; return s.length && s.end(0)", audio) > 1199
