"""A live page where polling, long polling, SSE and a WebSocket race, in a real browser.

:class:`LiveRace` serves one page on loopback with four panels. The same hub
events reach each panel a different way, and each panel counts its requests
and shows each event's latency (publish time to the page, on one clock):

==============  ===================  =========================================================
panel           route (same origin)  what the page does; what one "request" is
==============  ===================  =========================================================
polling         ``GET /poll``        ``fetch`` every ``every`` s (``?after=<id>``): each fetch
long polling    ``GET /long-poll``   ``fetch`` with ``?after=<id>&wait=<hold>``, again at once:
                                     each fetch
SSE             ``GET /events``      the browser's own ``EventSource`` (it reconnects by
                                     itself, sending ``Last-Event-ID``): each time it opens
WebSocket       ``GET /ws``          ``new WebSocket`` (reconnects with ``?after=<id>``): each
                                     socket it opens
(the page)      ``GET /``            ``live.html``: no external script, style or font
(its clock)     ``GET /time``        ``fetch`` five times before the panels start (see below)
==============  ===================  =========================================================

The page asks for every route relative to its own URL (``poll``, not
``/poll``; ``wss:`` when the page is ``https:``), so the same page works at
``http://127.0.0.1:<port>/`` and behind ``jupyter-server-proxy`` at
``/user/<name>/proxy/<port>/``. :attr:`LiveRace.url` is the one a browser
should open (:func:`labkit.links.browser_url` decides), :attr:`LiveRace.local_url`
the loopback one for Python clients.

Everything is served on **one port**, so the page's requests are same-origin
(no CORS; tornado's WebSocket origin check passes, through jupyter-server-proxy
too: it forwards the browser's ``Host`` and ``Origin``). Yet the trace records
each technique under its own name: a small router (:class:`_Router`, a
tornado connection delegate) reads each request's path and hands it to that
technique's own :class:`~labkit.wire.TracingDelegate`, writing into
``race.trace``. So ``race.trace.count("request", "sse")`` is exactly the
number of streams the browser opened. The port's server keeps a trace of
its own (``race.server.trace``: every request once more, as ``http``).

The four servers are the kit's own components on one :class:`~labkit.hub.Hub`
(:class:`~labkit.push.polling.PollingServer`,
:class:`~labkit.push.polling.LongPollingServer`,
:class:`~labkit.push.sse.SSEStream`,
:class:`~labkit.push.websocket.WebSocketServer`); ``race.sse.end()`` drops
every stream as a network would, and :meth:`LiveRace.stop` then
:meth:`LiveRace.start` serves again on the same port.

Each event is a feed :class:`~labkit.feed.Event` of type ``race`` whose
payload holds ``sent_ms``, the wall-clock time (ms since the epoch) when it
was published. The browser may run on another machine whose clock is off by
seconds, so the page first measures its offset from this machine's clock as
NTP does with one server: it asks ``GET /time`` five times, and from the
answer with the shortest round trip takes ``offset = now_ms - (sent +
received) / 2``, wrong by at most half that round trip. A latency is then
``Date.now() + offset - sent_ms``, on one clock again (``window.labkitClock``
holds ``offsetMs``, ``roundTripMs`` and ``samples``). For tests the
page exposes ``window.labkitState`` (per panel: ``events`` (hub ids in
arrival order), ``requests``, ``latencies`` in ms, ``ready``) and
``window.labkitStop()`` (ends every request, stream and socket).

Example (a notebook cell)::

    race = LiveRace(every=0.25).start()
    race.show()                    # the page, embedded; or open race.url in a browser
    race.publish(20, every=0.2)    # blocks ~4 s while the panels fill
    race.trace.counts()            # requests per technique
    race.stop()

Thread-safety: :meth:`LiveRace.start`, :meth:`LiveRace.stop`,
:meth:`LiveRace.publish` and :meth:`LiveRace.show` are for a cell or a
script (they wait on the lab loop); the servers live on the lab loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from importlib import resources
from typing import Any

import tornado.web
from tornado import httputil

from labkit import lab, links
from labkit.endpoints import Handler, NotFound
from labkit.errors import UsageError
from labkit.feed import Event, Feed, fixed_rate, play
from labkit.hub import Hub
from labkit.push.polling import LongPollingServer, PollingServer
from labkit.push.sse import SSEStream
from labkit.push.websocket import WebSocketServer
from labkit.trace import Trace
from labkit.wire import TracingDelegate

__all__ = ["LiveRace", "EVENT_TYPE"]

EVENT_TYPE = "race"
"""The feed type of the events :meth:`LiveRace.publish` plays (the page listens for it)."""


def _page_template() -> str:
    return resources.files("labkit.live").joinpath("static/live.html").read_text("utf-8")


class _PageHandler(Handler):
    """``GET /``: the page, with this race's settings filled in."""

    def initialize(self, html: bytes) -> None:
        self.html = html

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(self.html)


class _ClockHandler(Handler):
    """``GET /time``: this machine's wall clock, for the page to measure its own clock's offset."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.answer(200, {"now_ms": time.time() * 1000})


class _Routed(httputil.HTTPMessageDelegate):
    """One request: its path, once its headers arrive, picks the delegate that serves it."""

    def __init__(self, router: _Router, server_conn: object,
                 request_conn: httputil.HTTPConnection):
        self.router, self.server_conn, self.request_conn = router, server_conn, request_conn
        self.inner: httputil.HTTPMessageDelegate | None = None

    def headers_received(self, start_line: httputil.RequestStartLine,
                         headers: httputil.HTTPHeaders) -> Any:
        path = start_line.path.partition("?")[0]
        target = self.router.routes.get(path, self.router.page)
        self.inner = target.start_request(self.server_conn, self.request_conn)
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()


class _Router(httputil.HTTPServerConnectionDelegate):
    """The race's component: one port, each path traced under its own technique."""

    technique = "http"

    def __init__(self, components: list, page: tornado.web.Application, trace: Trace):
        self.trace: Trace | None = None  # the port's own view, set by lab.serve
        self.components = components
        self.routes = {c.path: TracingDelegate(lab.application(c, {}), trace, c.technique)
                       for c in components}
        self.page = TracingDelegate(lab.application(page, {}), trace, "http")

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Routed(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        for delegate in (*self.routes.values(), self.page):
            delegate.on_close(server_conn)

    def attached(self, server: lab.Server) -> None:
        for component in self.components:
            attached = getattr(component, "attached", None)
            if attached is not None:
                attached(server)

    async def aclose(self) -> None:
        for component in self.components:
            await component.aclose()


class LiveRace:
    """The four techniques on one hub, one trace and one page; see the module docstring.

    ``every``: seconds between the page's polls. ``hold``: seconds a long
    poll may be held. ``retry``: the SSE reconnection time in ms.
    ``seed``: the feed's seed. ``port``: 0 for a free one.
    """

    technique = "http"

    def __init__(self, *, every: float = 0.25, hold: float = 20.0, retry: int = 1000,
                 seed: int = 1, port: int = 0, trace: Trace | None = None):
        for name, value in (("every", every), ("hold", hold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or value <= 0:
                raise UsageError(f"{name} is a number of seconds > 0, got {value!r}")
        self.every, self.hold, self.port = float(every), float(hold), port
        self.trace = trace if trace is not None else Trace()
        self.hub = Hub(name="race")
        self.feed = Feed(seed=seed, prefix="race")
        self.polling = PollingServer(self.hub, path="/poll", trace=self.trace)
        self.long_polling = LongPollingServer(self.hub, path="/long-poll", hold=hold,
                                              trace=self.trace)
        self.sse = SSEStream(self.hub, path="/events", retry=retry, trace=self.trace)
        self.websocket = WebSocketServer(self.hub, path="/ws", trace=self.trace)
        config = json.dumps({"pollMs": round(self.every * 1000), "holdS": self.hold})
        self.html = _page_template().replace("__LABKIT_CONFIG__", config).encode()
        self.server: lab.Server | None = None

    @property
    def components(self) -> list:
        return [self.polling, self.long_polling, self.sse, self.websocket]

    @property
    def url(self) -> str:
        """The page's URL for a browser: :func:`labkit.links.browser_url` of the server, so
        through ``jupyter-server-proxy`` on a JupyterHub (raises :class:`UsageError` before
        :meth:`start`). Python clients use :attr:`local_url`."""
        return links.browser_url(self._served(), "/")

    @property
    def local_url(self) -> str:
        """The page's loopback URL (``http://127.0.0.1:<port>/``), for Python clients and tests."""
        return self._served().url + "/"

    def _served(self) -> lab.Server:
        if self.server is None:
            raise UsageError("the race is not served: call race.start() first")
        return self.server

    def start(self) -> LiveRace:
        """Serve the page and the four techniques (again on the same port after a stop)."""
        if self.server is not None:
            return self
        routes = " ".join(f"GET {c.path}" for c in self.components) + " GET /time"
        page = tornado.web.Application([
            ("/", _PageHandler, {"html": self.html}),
            ("/time", _ClockHandler),
            (r".*", NotFound, {"routes": f"GET / (the page) {routes}"})])
        self.server = lab.serve(_Router(self.components, page, self.trace), port=self.port)
        self.port = self.server.port
        return self

    def stop(self) -> None:
        """Stop serving (held polls get 503, streams and sockets end); the hub stays open."""
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def publish(self, n: int, every: float = 0.05) -> list[Event]:
        """Play ``n`` seeded events into the hub, one every ``every`` s; return them.

        Each event's payload is ``{"sent_ms": <wall clock at publish, ms>}``.
        Blocks until the last one is published.
        """
        if isinstance(every, bool) or not isinstance(every, (int, float)) or \
                not math.isfinite(every) or every <= 0:
            raise UsageError(f"every is a number of seconds > 0, got {every!r}")
        return lab.run(play(self.feed, fixed_rate(1 / every, count=n), self._stamp,
                            type=EVENT_TYPE))

    def _stamp(self, event: Event) -> None:
        """Publish ``event`` with the wall-clock time of this very moment in its payload."""
        self.hub.publish(dataclasses.replace(event, payload={"sent_ms": time.time() * 1000}))

    def show(self, width: int = 1000, height: int = 330) -> Any:
        """The page in a notebook: an IPython ``IFrame`` of :attr:`url` (the browser's URL)."""
        from IPython.display import IFrame
        return IFrame(self.url, width=width, height=height)

    def __enter__(self) -> LiveRace:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.local_url if self.server is not None else "not served"
        return f"<LiveRace {where}, {self.hub.last_id} events>"
