"""The live page (labkit.live): served on one origin, and raced in a real Chromium.

The browser tests drive the system's Chromium (``/usr/bin/chromium``) with
Playwright: Playwright's own browser download is not reachable from the CI
machines. Without that browser or the ``playwright`` package they skip on a
developer's machine with what to install, and fail in CI (``CI`` set).
"""

import json
import time
import urllib.error
import urllib.request

import pytest

from helpers import (PANELS, assert_event_source_resumes, chromium, open_race,
                     requests_in_trace, until_every_panel_has)

from labkit.errors import LabkitError, UsageError
from labkit.live import LiveRace

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh user-data dir, for every test of this module."""
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


def _open(browser, race):
    """The race's page (its loopback URL: this browser runs here), once every panel listens."""
    return open_race(browser, race.local_url)


# -- the page and its routes, without a browser ---------------------------------------------


def test_the_page_and_every_technique_are_served_on_one_origin_each_traced_by_name():
    with LiveRace() as race:
        base = race.server.url
        with urllib.request.urlopen(race.local_url) as answer:
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
        state = until_every_panel_has(page, 20)
        # one clock (this machine's, which the page measured its own against, wrong by at
        # most half a round trip), read by Python and by the page: never before the publish
        # by more than that and 2 ms of resolution; a generous sanity bound above
        slack = page.evaluate("window.labkitClock.roundTripMs") / 2 + 2
        for key in PANELS:
            assert state[key]["events"] == list(range(1, 21)), key
            assert len(state[key]["latencies"]) == 20
            assert all(-slack <= ms < 10_000 for ms in state[key]["latencies"]), key
        page.evaluate("window.labkitStop()")
        state = page.evaluate("window.labkitState")
        counts = requests_in_trace(race, state)
        for key, technique in PANELS.items():
            assert counts[key] == state[key]["requests"], technique
            shown = page.text_content(f"#{technique} .requests")
            assert shown == str(state[key]["requests"]), technique
        assert state["sse"]["requests"] == 1 and state["websocket"]["requests"] == 1
        assert state["longPolling"]["requests"] >= 2  # the first, unheld ask, then held ones
        page.close()


def test_event_source_reconnects_with_last_event_id_and_misses_nothing(browser):
    with LiveRace(every=0.1, retry=500) as race:
        assert_event_source_resumes(race, _open(browser, race))


def test_every_panel_resumes_when_the_server_is_served_again_on_the_same_port(browser):
    with LiveRace(every=0.1, retry=500) as race:
        page = _open(browser, race)
        race.publish(5, every=0.01)
        until_every_panel_has(page, 5)
        port = race.port
        race.stop()
        race.publish(5, every=0.01)  # while nothing serves: the hub keeps them
        race.start()
        assert race.port == port
        state = until_every_panel_has(page, 10)
        for key in PANELS:
            assert state[key]["events"] == list(range(1, 11)), key
        assert race.trace.records("connect", "sse")[-1].detail == "resuming after id 5"
        assert race.trace.records("connect", "websocket")[-1].detail == "resuming after id 5"
        page.evaluate("window.labkitStop()")
        page.close()
