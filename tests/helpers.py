"""Small helpers several test modules share."""

import contextlib
import os
import socket
import time


def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh loopback connection; return all that comes back.

    Bounded: at most 100 reads, each with a ``timeout``; a reset or a timeout
    ends the answer rather than failing, so tests can probe bad input.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while len(chunks) < 100:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def settle(check, what: str, seconds: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        time.sleep(0.005)


def needs(missing: str) -> None:
    """A test that cannot run here because ``missing`` is not installed: skipped on a
    developer's machine, with what to install, but failed in CI (``CI`` set), so a CI
    run can never pass without having run it."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{missing}: CI must run this test, not skip it")
    pytest.skip(missing)


# -- the live page in a real browser (tests/test_live_page.py, tests/test_proxy.py) ------------

CHROMIUM = "/usr/bin/chromium"
"""The system's Chromium: Playwright's own browser download is not reachable from CI."""
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PANELS = {"polling": "polling", "longPolling": "long-polling", "sse": "sse",
          "websocket": "websocket"}
"""window.labkitState's key for each panel -> the technique the trace records it under."""
WAIT_MS = 15_000
"""Most a test waits for the page to reach a state."""


def missing_browser() -> str | None:
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


@contextlib.contextmanager
def chromium(profile_dir):
    """A headless Chromium with the fresh user-data dir ``profile_dir`` (skipped, or failed
    in CI, through :func:`needs` when it is not installed)."""
    missing = missing_browser()
    if missing:
        needs(missing)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield context
        finally:
            context.close()


def open_race(browser, url, init_script=None):
    """A new page at ``url`` (a race's page), once every panel is listening.

    ``init_script``: JavaScript run in the page before its own (e.g. to skew its clock)."""
    page = browser.new_page()
    if init_script is not None:
        page.add_init_script(init_script)
    page.goto(url)
    page.wait_for_function(
        "Object.keys(window.labkitState).length === 4 && "
        "Object.values(window.labkitState).every(s => s.ready)", timeout=WAIT_MS)
    return page


def until_every_panel_has(page, count):
    """The page's ``labkitState`` once every panel has ``count`` events (bounded wait)."""
    page.wait_for_function(
        f"Object.values(window.labkitState).every(s => s.events.length >= {count})",
        timeout=WAIT_MS)
    return page.evaluate("window.labkitState")


def requests_in_trace(race, state, deadline=5.0):
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


def assert_event_source_resumes(race, page):
    """Drop the page's SSE stream as a network would; the browser's ``EventSource``
    reconnects with ``Last-Event-ID`` and, like every other panel, misses nothing."""
    race.publish(10, every=0.01)
    until_every_panel_has(page, 10)
    assert race.sse.end() == 1
    race.publish(10, every=0.01)
    state = until_every_panel_has(page, 20)
    for key in PANELS:
        assert state[key]["events"] == list(range(1, 21)), key
    connects = race.trace.records("connect", "sse")
    assert [c.detail for c in connects] == ["from now (after id 0)",
                                            "resuming after id 10"]  # Last-Event-ID sent
    page.evaluate("window.labkitStop()")
    assert state["sse"]["requests"] == 2
    assert requests_in_trace(race, state)["sse"] == 2, "the trace saw the same two streams"
    page.close()
