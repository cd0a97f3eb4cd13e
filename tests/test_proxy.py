"""Every URL the kit shows a browser works remotely: through a real Jupyter server.

In a classroom the browser is on another machine than the kernel, and
reaches the kit's loopback servers only through ``jupyter-server-proxy`` on
the student's Jupyter server, at ``<base_url>proxy/<port>/``. These tests
start that server for real (``python -m jupyter server`` with the proxy
extension, on 127.0.0.1, base URL ``/user/student/`` as a JupyterHub gives,
a token, isolated config, data and runtime directories) and drive the
system's Chromium through it, logged in with ``?token=`` as a student's
browser would be.

What the proxy does to each technique (jupyter-server-proxy 4.x streams a
response only when the request's ``Accept`` is exactly
``text/event-stream``, and buffers every other response until it ends):
polling and long polling answer complete responses, so buffering delays
nothing; ``EventSource`` sends that ``Accept``, so its stream is streamed;
a WebSocket is proxied as a WebSocket, and tornado's origin check passes
because the proxy forwards the browser's ``Host`` and ``Origin``
unchanged. The tests check each of them gets every event, with latencies
of the order of the direct ones, and the page's clock correction.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec

import pytest
import requests

from helpers import (PANELS, assert_event_source_resumes, chromium, needs, open_race,
                     requests_in_trace, until_every_panel_has)

from labkit import links
from labkit.live import LiveRace

BASE = "/user/student/"
"""The Jupyter server's base URL, as JupyterHub gives a student's single-user server."""
TOKEN = "labkit-proxy-test-token"
START_TIMEOUT = 90.0
"""Most the Jupyter server may take to start (two shared cores, every extension loading)."""
SKEW_MS = 7000
"""How far ahead of this machine's clock the clock test sets the browser's."""
SKEWED_CLOCK = f"""(() => {{
  const now = Date.now.bind(Date);
  Date.now = () => now() + {SKEW_MS};
}})();"""


class Jupyter:
    """A running Jupyter server: ``origin`` (``http://127.0.0.1:<port>``), ``pid``,
    ``runtime_dir``, and ``get(path)`` with the token, as a logged-in student."""

    def __init__(self, origin: str, pid: int, runtime_dir: str):
        self.origin, self.pid, self.runtime_dir = origin, pid, runtime_dir

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.origin + path, params={"token": TOKEN}, timeout=10,
                            allow_redirects=False, **kwargs)

    def proxy_template(self) -> str:
        """The ``LABKIT_BROWSER_URL`` template that names this server's proxy."""
        return f"{self.origin}{BASE}proxy/{{port}}/"


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """A real Jupyter server with jupyter-server-proxy, killed (by its pid) at the end."""
    missing = [name for name in ("jupyter_server", "jupyter_server_proxy") if not find_spec(name)]
    if missing:
        needs(f"the proxy tests need {' and '.join(missing)} (`pip install jupyter-server "
              f"jupyter-server-proxy`)")
    home = tmp_path_factory.mktemp("jupyter")
    dirs = {name: home / name for name in ("config", "data", "runtime", "root", "home")}
    for path in dirs.values():
        path.mkdir()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("JUPYTER", "JPY_", "LABKIT_"))}
    env.update(JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), HOME=str(dirs["home"]),
               JUPYTER_PLATFORM_DIRS="1")
    command = [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ip=127.0.0.1",
               "--port=0", "--ServerApp.port_retries=0", f"--ServerApp.base_url={BASE}",
               f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={dirs['root']}"]
    if os.getuid() == 0:
        command.append("--allow-root")
    with open(home / "server.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        try:
            yield _started(server, dirs["runtime"], home / "server.log")
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def _started(server: subprocess.Popen, runtime_dir, log_path) -> Jupyter:
    """The server once it answers its API with the token (bounded by START_TIMEOUT)."""
    info_file = runtime_dir / f"jpserver-{server.pid}.json"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        if info_file.exists():
            try:
                info = json.loads(info_file.read_text())
                jupyter = Jupyter(f"http://127.0.0.1:{info['port']}", server.pid,
                                  str(runtime_dir))
                if jupyter.get(f"{BASE}api/status").status_code == 200:
                    return jupyter
            except (ValueError, KeyError, requests.ConnectionError):
                pass  # written but not complete yet, or not listening yet
        time.sleep(0.2)
    tail = log_path.read_text(errors="replace")[-3000:]
    pytest.fail(f"the Jupyter server did not start within {START_TIMEOUT} s "
                f"(exit code {server.poll()}); its log ends:\n{tail}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture
def proxied(jupyter, monkeypatch):
    """The setting that sends browsers through the real server's proxy."""
    monkeypatch.setenv(links.ENV, jupyter.proxy_template())
    return jupyter


def _login(url: str) -> str:
    """``url`` with the token, as a student's first visit carries it (the server then keeps
    the student logged in with a cookie, which the page's own requests send)."""
    return f"{url}?token={TOKEN}"


def _median(values):
    return sorted(values)[len(values) // 2]


# -- the proxy and the links, without a browser ----------------------------------------------


def test_the_proxy_forwards_a_logged_in_students_requests_only(jupyter):
    with LiveRace() as race:
        path = f"{BASE}proxy/{race.port}/poll"
        assert jupyter.get(path).json() == {"items": [], "next": 0, "missed": 0}
        anonymous = requests.get(jupyter.origin + path, timeout=10, allow_redirects=False)
        assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
        assert race.trace.count("request", "polling") == 1  # the anonymous one never arrived


def _kernel_link(port: int, env: dict) -> str:
    """What ``links.browser_url(port)`` says in a fresh kernel-like process with ``env``."""
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith(("JUPYTER", "JPY_", "LABKIT_"))}
    code = f"from labkit import links; print(links.browser_url({port}))"
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, timeout=60,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_kernel_on_a_hub_links_to_the_path_the_proxy_really_answers(jupyter):
    with LiveRace() as race:
        link = _kernel_link(race.port, {"JUPYTERHUB_SERVICE_PREFIX": BASE})
        assert link == f"{BASE}proxy/{race.port}/"
        page = jupyter.get(link)
        assert page.status_code == 200 and "<title>labkit: the techniques race" in page.text
        assert jupyter.get(link + "poll").json()["next"] == 0


def test_a_kernel_finds_the_jupyter_server_that_started_it(jupyter):
    parent = {"JPY_PARENT_PID": str(jupyter.pid), "JUPYTER_RUNTIME_DIR": jupyter.runtime_dir}
    with LiveRace() as race:
        # the server listens on 127.0.0.1: its browser is on this machine
        assert _kernel_link(race.port, parent) == race.local_url
        # told to proxy (an SSH tunnel, say), it takes the server's base URL from its file
        link = _kernel_link(race.port, {**parent, links.ENV: "proxy"})
        assert link == f"{BASE}proxy/{race.port}/"
        assert jupyter.get(link).status_code == 200


def test_the_race_gives_browsers_the_setting_and_python_the_loopback_url(proxied):
    with LiveRace() as race:
        assert race.url == f"{proxied.origin}{BASE}proxy/{race.port}/"
        assert race.local_url == f"http://127.0.0.1:{race.port}/"
        assert race.show().src == race.url
        assert race.local_url in repr(race)
        before = time.time() * 1000
        with urllib.request.urlopen(race.local_url + "time") as answer:
            assert answer.headers["Cache-Control"] == "no-store"
            now_ms = json.loads(answer.read())["now_ms"]
        assert before <= now_ms <= time.time() * 1000
        assert proxied.get(f"{BASE}proxy/{race.port}/time").json()["now_ms"] >= now_ms


# -- in a real browser, through the proxy ----------------------------------------------------


def test_every_panel_gets_every_event_through_the_proxy(browser, proxied):
    with LiveRace(every=0.1) as race:
        page = open_race(browser, _login(race.url))
        assert page.url.startswith(f"{proxied.origin}{BASE}proxy/{race.port}/")
        race.publish(20, every=0.05)
        state = until_every_panel_has(page, 20)
        slack = page.evaluate("window.labkitClock.roundTripMs") / 2 + 2
        for key in PANELS:
            assert state[key]["events"] == list(range(1, 21)), key
            assert all(-slack <= ms < 10_000 for ms in state[key]["latencies"]), key
            # of the order of the direct latencies (a few ms; polling: half its period):
            # nothing waits for a response to end before passing it on
            assert _median(state[key]["latencies"]) < 300, (key, state[key]["latencies"])
        page.evaluate("window.labkitStop()")
        state = page.evaluate("window.labkitState")
        counts = requests_in_trace(race, state)
        for key, technique in PANELS.items():
            assert counts[key] == state[key]["requests"], technique
        assert state["sse"]["requests"] == 1 and state["websocket"]["requests"] == 1
        assert state["longPolling"]["requests"] >= 2
        page.close()


def test_a_dropped_event_source_resumes_through_the_proxy_and_misses_nothing(browser, proxied):
    with LiveRace(every=0.1, retry=500) as race:
        assert_event_source_resumes(race, open_race(browser, _login(race.url)))


@pytest.mark.parametrize("route", ["direct", "proxied"])
def test_a_browser_whose_clock_is_seconds_off_still_shows_honest_latencies(
        browser, jupyter, monkeypatch, route):
    if route == "proxied":
        monkeypatch.setenv(links.ENV, jupyter.proxy_template())
    else:
        monkeypatch.setenv(links.ENV, "direct")
    with LiveRace(every=0.1) as race:
        page = open_race(browser, _login(race.url), init_script=SKEWED_CLOCK)
        clock = page.evaluate("window.labkitClock")
        assert clock["samples"] == 5
        # the browser is SKEW_MS ahead: the server's clock is that much behind it, measured
        # to within half the shortest round trip (and 1 ms of Date.now's resolution)
        assert abs(clock["offsetMs"] + SKEW_MS) <= clock["roundTripMs"] / 2 + 1, clock
        assert "ahead of it by" in page.text_content("#offset")
        race.publish(10, every=0.02)
        state = until_every_panel_has(page, 10)
        slack = clock["roundTripMs"] / 2 + 2
        for key in PANELS:  # uncorrected, every latency would be about SKEW_MS
            assert all(-slack <= ms < 1000 for ms in state[key]["latencies"]), (key, state)
        page.evaluate("window.labkitStop()")
        page.close()
