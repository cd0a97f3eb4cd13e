"""The live page (labkit.live): served on one origin, and raced in a real Chromium.

The browser tests drive the system's Chromium (``/usr/bin/chromium``) with
Playwright: Playwright's own browser download is not reachable from the CI
machines. Without that browser or the ``playwright`` package they skip on a
developer's machine with what to install, and fail in CI (``CI`` set).
"""

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from helpers import needs

from labkit.errors import LabkitError, UsageError
from labkit.live import LiveRace

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PANELS = {"polling": "polling", "longPolling": "long-polling", "sse": "sse",
          "websocket": "websocket"}
"""window.labkitState's key for each panel -> the technique the trace records it under."""
WAIT_MS = 15_000
"""Most a test waits for the page to reach a state."""


def _missing_browser() -> str | None:
    """What to install for the browser tests, or None when all is there."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"the system's Chromium at {CHROMIUM} (`apt-get install chromium`; "
                       f".ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Playwright package (`pip install playwright`; its own browser "
                       "download is not needed)")
    if not missing:
        return None
    return "the live-page browser tests need " + " and ".join(missing)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh user-data dir, for every test of this module."""
    missing = _missing_browser()
    if missing:
        needs(missing)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=FLAGS)
        try:
            yield context
        finally:
            context.close()


def _open(browser, race):
    """The race's page, once every panel is listening."""
    page = browser.new_page()
    page.goto(race.url)
    page.wait_for_function(
        "Object.keys(window.labkitState).length === 4 && "
        "Object.values(window.labkitState).every(s => s.ready)", timeout=WAIT_MS)
    return page


def _until_every_panel_has(page, count):
    page.wait_for_function(
        f"Object.values(window.labkitState).every(s => s.events.length >= {count})",
        timeout=WAIT_MS)
    return page.evaluate("window.labkitState")


def _requests_in_trace(race, state, deadline=5.0):
    """The trace's request count per panel, once it matches the page's (or after
    ``deadline`` s: the page counts a request just before it leaves)."""
    end = time.monotonic() + deadline
    while True:
        counts = {key: race.trace.count("request", technique)
                  for key, technique in PANELS.items()}
        if all(counts[key] == state[key]["requests"] for key in PANELS) or \
                time.monotonic() > end:
            return counts
        time.sleep(0.05)


# -- the page and its routes, without a browser ---------------------------------------------


def test_the_page_and_every_technique_are_served_on_one_origin_each_traced_by_name():
    with LiveRace() as race:
        base = race.server.url
        with urllib.request.urlopen(race.url) as answer:
            assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
            html = answer.read().decode()
        assert "__LABKIT_CONFIG__" not in html and '"pollMs": 250' in html
        assert "https://" not in html and "http://" not in html  # nothing from elsewhere
        for path in ("/poll", "/long-poll?wait=0"):
            with urllib.request.urlopen(base + path) as answer:
                assert json.loads(answer.read()) == {"items": [], "next": 0, "missed": 0}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/elsewhere")
        assert refused.value.code == 404
        assert json.loads(refused.value.read())["reason"] == "no_route"
        assert race.trace.count("request", "http") == 2  # the page and the 404
        assert race.trace.count("request", "polling") == 1
        assert race.trace.count("request", "long-polling") == 1
        assert race.server.trace.count("request", "http") == 4  # the port's own view


def test_publish_plays_seeded_events_stamped_with_the_wall_clock():
    with LiveRace(seed=7) as race:
        before = time.time() * 1000
        events = race.publish(3, every=0.01)
        items = race.hub.since(0)
    assert [item.id for item in items] == [1, 2, 3]
    assert [item.data.id for item in items] == [event.id for event in events]
    assert all(item.data.type == "race" for item in items)
    stamps = [item.data.payload["sent_ms"] for item in items]
    assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.time() * 1000
    again = LiveRace(seed=7).publish(3, every=0.01)  # same seed, same ids (no server needed)
    assert [event.id for event in again] == [event.id for event in events]


def test_bad_settings_and_use_before_start_are_clear_errors():
    with pytest.raises(UsageError, match="every is a number of seconds"):
        LiveRace(every=0)
    with pytest.raises(UsageError, match="hold is a number of seconds"):
        LiveRace(hold=float("nan"))
    race = LiveRace()
    with pytest.raises(UsageError, match="race.start"):
        race.url
    with race:
        with pytest.raises(UsageError, match="every is a number of seconds"):
            race.publish(1, every=-1)
        with pytest.raises(LabkitError):
            race.publish(-1)
        assert race.hub.last_id == 0


def test_show_embeds_the_page():
    with LiveRace() as race:
        frame = race.show(width=800)
        assert frame.src == race.url and frame.width == 800


# -- in a real browser ------------------------------------------------------------------------


def test_every_event_reaches_every_panel_and_the_counts_match_the_trace(browser):
    with LiveRace(every=0.1) as race:
        page = _open(browser, race)
        race.publish(20, every=0.02)
        state = _until_every_panel_has(page, 20)
        for key in PANELS:
            assert state[key]["events"] == list(range(1, 21)), key
            assert len(state[key]["latencies"]) == 20
            # one clock (this machine's), read by Python and by the page: within 2 ms of
            # its resolution, never before the publish; a generous sanity bound above
            assert all(-2 <= ms < 10_000 for ms in state[key]["latencies"]), key
        page.evaluate("window.labkitStop()")
        state = page.evaluate("window.labkitState")
        counts = _requests_in_trace(race, state)
        for key, technique in PANELS.items():
            assert counts[key] == state[key]["requests"], technique
            shown = page.text_content(f"#{technique} .requests")
            assert shown == str(state[key]["requests"]), technique
        assert state["sse"]["requests"] == 1 and state["websocket"]["requests"] == 1
        assert state["longPolling"]["requests"] >= 2  # the first, unheld ask, then held ones
        page.close()


def test_event_source_reconnects_with_last_event_id_and_misses_nothing(browser):
    with LiveRace(every=0.1, retry=500) as race:
        page = _open(browser, race)
        race.publish(10, every=0.01)
        _until_every_panel_has(page, 10)
        assert race.sse.end() == 1  # the stream drops, as a network would drop it
        race.publish(10, every=0.01)
        state = _until_every_panel_has(page, 20)
        for key in PANELS:
            assert state[key]["events"] == list(range(1, 21)), key
        connects = race.trace.records("connect", "sse")
        assert [c.detail for c in connects] == ["from now (after id 0)",
                                                "resuming after id 10"]
        page.evaluate("window.labkitStop()")
        assert state["sse"]["requests"] == 2
        assert _requests_in_trace(race, state)["sse"] == 2
        page.close()


def test_every_panel_resumes_when_the_server_is_served_again_on_the_same_port(browser):
    with LiveRace(every=0.1, retry=500) as race:
        page = _open(browser, race)
        race.publish(5, every=0.01)
        _until_every_panel_has(page, 5)
        port = race.port
        race.stop()
        race.publish(5, every=0.01)  # while nothing serves: the hub keeps them
        race.start()
        assert race.port == port
        state = _until_every_panel_has(page, 10)
        for key in PANELS:
            assert state[key]["events"] == list(range(1, 11)), key
        assert race.trace.records("connect", "sse")[-1].detail == "resuming after id 5"
        assert race.trace.records("connect", "websocket")[-1].detail == "resuming after id 5"
        page.evaluate("window.labkitStop()")
        page.close()
