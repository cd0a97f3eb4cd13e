"""Polling and long polling: the client asks "anything new after id N?", again and again.

HTTP is request and response: a server with news cannot speak to a client
that is not asking. **Polling** asks at a fixed interval and takes whatever
is new, often nothing (a weather app refreshing every 10 minutes). **Long
polling** asks the same question, but the server *holds* the request until
there is something to say or a hold time runs out, and the client asks
again as soon as it has its answer (a simple chat). Both read one
:class:`~labkit.hub.Hub` with a cursor, so no event is lost between two
polls, however many arrive while no request is waiting: they are all in the
next answer, in order.

One endpoint serves both; the two servers differ only in how long they may
hold a request (:class:`PollingServer` never does):

=======================================  ==================================================
request                                  answer
=======================================  ==================================================
``GET /poll``                            200 at once: no items, and ``next``, the cursor to
                                         send from now on (the hub's last id)
``GET /poll?after=41``                   200 with the items after id 41 still kept, oldest
                                         first (an empty list if there are none: a wasted
                                         poll); long polling holds an empty answer until an
                                         item arrives or the hold runs out
``GET /poll?after=41&wait=10``           long polling: hold at most 10 s (more than
                                         ``max_hold``, 30 s, counts as 30; polling
                                         answers at once whatever ``wait`` says)
``after=abc``, ``after=-1``,             400 ``bad_cursor``: not the id of an item of this
``after=`` an id not published yet       hub (an id from another run of the server?)
``wait=soon``                            400 ``bad_wait``
``POST``, ``PUT`` ...                    405 (``Allow: GET``), the body left unread
``GET`` with a body                      400 ``body``, the body left unread
the server is stopping                   503 ``stopping``: a held request is answered so at
                                         once; ask again later with the same cursor
any other path                           404 naming the route
=======================================  ==================================================

The answer (``Content-Type: application/json``, ``Cache-Control: no-cache``)::

    {"items": [{"id": 42, "data": {...the feed event...}}, ...], "next": 43, "missed": 0}

``missed`` counts items that already left the hub's history before this
client asked for them (lost for good; the client records a ``drop``).

Each response's trace record carries ``events`` = items it carried, so the
trace can tell polls that brought news from wasted ones
(:meth:`~labkit.trace.Trace.wasted_share`). A held request that the client
abandons is a ``response`` with no status (the wire layer's "the client
left before the answer"), and its hub wait is cancelled at once: nothing is
left behind. Held requests are requests, never ``connect``/``disconnect``.

**Stopping.** ``aclose`` (awaited by ``server.stop()``) answers every held
request with **503** and a body that says to ask again with the same cursor,
with ``Connection: close``; requests that arrive while it stops get the
same. It does not close the hub, which may feed other servers too: serve the
same component again on the same port and clients resume where they were.

Clients: :class:`PollingClient` asks every ``interval`` seconds of a
:class:`~labkit.clock.Clock` (so 10 simulated minutes can pass in a tenth of
a second), :class:`LongPollingClient` asks again at once. Both keep one
HTTP/1.1 connection alive across their requests, as a browser does, and
name themselves with ``X-Labkit-Client``.

Example::

    from labkit.feed import Feed
    from labkit.hub import Hub

    hub, feed = Hub(), Feed(seed=1)
    with serve_long_polling(hub) as server, \\
            LongPollingClient(server.endpoint_url, trace=server.trace) as client:
        hub.publish(feed.make("message", {"text": "hi"}))
        client.wait_for(1)
    server.trace.latency_percentiles("long-polling")   # a few ms on loopback

Thread-safety: servers and clients live on the lab loop. From a cell or a
script: :func:`serve_polling`, :func:`serve_long_polling`, the servers'
``held``, the clients' ``start``/``stop``/``wait_for`` and what they
received; publish with ``hub.publish`` from anywhere.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import tornado.web
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import StreamClosedError

from labkit import lab
from labkit.clock import REAL_TIME, Clock
from labkit.endpoints import Handler, NotFound
from labkit.errors import HubClosedError, LabkitError, RejectedError
from labkit.hub import Hub
from labkit.push.clients import HubClient, encode_item, error_text
from labkit.trace import Trace
from labkit.wire import CLIENT_HEADER, annotate

__all__ = ["PollingServer", "LongPollingServer", "PollingClient", "LongPollingClient",
           "serve_polling", "serve_long_polling", "MAX_HOLD"]

MAX_HOLD = 30.0
"""Longest a long-polling server holds a request, in seconds (a larger ``wait`` is capped)."""
CONNECT_TIMEOUT = 5.0
"""Seconds a client waits for a TCP connection."""
ANSWER_TIMEOUT = 10.0
"""Seconds a client waits for an answer beyond the hold it asked for."""
MAX_ANSWER = 16 * 1024 * 1024
"""Largest poll answer a client reads (a whole history of big items fits)."""
_STOP_WAIT = 100
"""``aclose`` waits at most this many 10 ms steps for released requests to answer."""


def _seconds(value: Any, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise LabkitError(f"{what} is a number of seconds {bound}, got {value!r}")
    return float(value)


class PollingServer:
    """Serves ``hub`` at ``GET path?after=<cursor>``, answering at once (technique ``polling``).

    ``hub``: what to serve (a new :class:`~labkit.hub.Hub` if not given).
    See the module docstring for the endpoint.
    """

    technique = "polling"

    def __init__(self, hub: Hub | None = None, *, path: str = "/poll",
                 trace: Trace | None = None):
        if not isinstance(path, str) or not path.startswith("/"):
            raise LabkitError(f"path must start with '/', got {path!r}")
        self.hub = hub if hub is not None else Hub(name=self.technique)
        self.path = path
        self.trace = trace
        self.hold = 0.0
        """Seconds a request without ``wait`` is held (0: answer at once)."""
        self.max_hold = 0.0
        """The cap on ``wait``."""
        self.closed = False
        """True while the server stops: every request gets 503."""
        self._held: set[_PollHandler] = set()

    @property
    def held(self) -> int:
        """How many requests are held right now."""
        return len(self._held)

    def rules(self) -> list:
        """Tornado URL rules: the endpoint at ``path``, 404 elsewhere."""
        return [(self.path, _PollHandler, {"server": self}),
                (r".*", NotFound, {"routes": f"GET {self.path}?after=<id>"})]

    def attached(self, server: lab.Server) -> None:
        """Served (again): take requests."""
        self.closed = False

    async def aclose(self) -> None:
        """Answer every held request with 503 and refuse new ones (the server awaits it on stop)."""
        self.closed = True
        for handler in list(self._held):
            handler.release()
        for _ in range(_STOP_WAIT):
            if not self._held:
                break
            await asyncio.sleep(0.01)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} GET {self.path} of {self.hub!r}, {self.held} held>"


class LongPollingServer(PollingServer):
    """Serves ``hub`` at ``GET path?after=<cursor>&wait=<s>``, holding empty answers
    (technique ``long-polling``).

    ``hold``: seconds a request without ``wait`` is held; ``max_hold``: the
    cap on ``wait`` (at most :data:`MAX_HOLD`).
    """

    technique = "long-polling"

    def __init__(self, hub: Hub | None = None, *, path: str = "/poll", hold: float = 20.0,
                 max_hold: float = MAX_HOLD, trace: Trace | None = None):
        super().__init__(hub, path=path, trace=trace)
        self.max_hold = _seconds(max_hold, "max_hold", positive=True)
        if self.max_hold > MAX_HOLD:
            raise LabkitError(f"max_hold is at most {MAX_HOLD:g} s (proxies cut idle requests "
                              f"after about that long), got {max_hold!r}")
        self.hold = min(_seconds(hold, "hold"), self.max_hold)


def _refusal_while_stopping(cursor: int) -> RejectedError:
    return RejectedError("stopping", f"the server is stopping: ask again later with the same "
                         f"cursor (after={cursor}); nothing published meanwhile is lost",
                         status=503)


@tornado.web.stream_request_body
class _PollHandler(Handler):
    """One poll: refusals first, then the items after the cursor, held if need be."""

    def initialize(self, server: PollingServer) -> None:
        self.server = server
        self.waiting: asyncio.Future | None = None
        self.left = False
        self.released = False

    def prepare(self) -> None:
        """Refuse, before reading any body, what is not a poll."""
        request = self.request
        if request.method != "GET":
            self.set_header("Allow", "GET")
            self.refuse(RejectedError("method", f"{request.method} is not allowed on "
                                      f"{request.path}: poll with GET {request.path}?after=<id>",
                                      status=405), close=True)
        elif request.headers.get("Content-Length", "0") != "0" or \
                "Transfer-Encoding" in request.headers:
            self.refuse(RejectedError("body", f"GET {request.path} takes no request body: "
                                      f"send the last id seen as ?after=<id>", status=400),
                        close=True)

    def data_received(self, chunk: bytes) -> None:
        """Only a refused request has a body, and it is not kept."""

    async def get(self) -> None:
        server, hub = self.server, self.server.hub
        try:
            cursor = hub.cursor(self.get_query_argument("after", None, strip=False))
            hold = self._hold()
        except RejectedError as exc:
            return self.refuse(exc)
        if server.closed:
            return self.refuse(_refusal_while_stopping(cursor), close=True)
        items = hub.since(cursor)
        if not items and hold > 0:
            try:
                items = await self._wait(cursor, hold)
            except HubClosedError:
                return self.refuse(RejectedError(
                    "closed", "the hub was closed: no more items will come", status=503),
                    close=True)
            if items is None:
                if self.left:
                    return  # nobody to answer; the wire layer records who left
                return self.refuse(_refusal_while_stopping(cursor), close=True)
        self._answer(cursor, items)

    def _hold(self) -> float:
        """``wait`` in seconds, capped at ``max_hold``; the server's ``hold`` if absent."""
        server = self.server
        raw = self.get_query_argument("wait", None, strip=False)
        if raw is None:
            return server.hold
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise RejectedError("bad_wait", f"wait is how long the server may hold the poll, "
                                f"a number of seconds >= 0 (more than {server.max_hold:g} "
                                f"counts as {server.max_hold:g}), got {raw[:40]!r}")
        return min(value, server.max_hold)

    async def _wait(self, cursor: int, hold: float) -> list | None:
        """The hub's items after ``cursor`` within ``hold`` s; None if released or abandoned."""
        server = self.server
        server._held.add(self)
        self.waiting = asyncio.ensure_future(server.hub.wait(cursor, hold))
        try:
            return await self.waiting
        except asyncio.CancelledError:
            if self.left or self.released:
                return None
            raise  # this request itself was cancelled, not its wait
        finally:
            server._held.discard(self)
            self.waiting = None

    def _answer(self, cursor: int, items: list) -> None:
        hub = self.server.hub
        missed = hub.missed(cursor)
        after = items[-1].id if items else cursor
        body = b'{"items": [%s], "next": %d, "missed": %d}' % (
            b", ".join(encode_item(item) for item in items), after, missed)
        if items:
            detail = f"ids {items[0].id}..{after}" if len(items) > 1 else f"id {after}"
        else:
            detail = f"nothing after id {cursor}"
        if missed:
            detail += f"; {missed} left the history unseen"
        annotate(self, events=len(items), detail=detail)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-cache")
        self.finish(body)

    def release(self) -> None:
        """The server is stopping: end the wait so the request is answered 503."""
        self.released = True
        if self.waiting is not None:
            self.waiting.cancel()

    def on_connection_close(self) -> None:
        self.left = True
        if self.waiting is not None:
            self.waiting.cancel()


def serve_polling(server: PollingServer | Hub | None = None, *, trace: Trace | None = None,
                  port: int = 0, **options: Any) -> lab.Server:
    """Serve ``server`` (or a new :class:`PollingServer` of the hub given, made with ``options``).

    One line over :func:`labkit.lab.serve`; ``server.endpoint_url`` is the URL
    to give a :class:`PollingClient`.
    """
    return lab.serve(lab.component(PollingServer, server, options), trace=trace, port=port)


def serve_long_polling(server: LongPollingServer | Hub | None = None, *,
                       trace: Trace | None = None, port: int = 0, **options: Any) -> lab.Server:
    """Serve ``server`` (or a new :class:`LongPollingServer` of the hub given, made with
    ``options`` such as ``hold``); one line over :func:`labkit.lab.serve`."""
    return lab.serve(lab.component(LongPollingServer, server, options), trace=trace, port=port)


# -- the clients ---------------------------------------------------------------------

_PARAMS = HTTP1ConnectionParameters(max_body_size=MAX_ANSWER, decompress=False)


class _Answer(NamedTuple):
    status: int
    body: bytes


class _Reader(httputil.HTTPMessageDelegate):
    """Collects one response."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.close = False
        self.chunks: list[bytes] = []
        self.finished = False

    def headers_received(self, start_line: httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        self.status = start_line.code
        self.close = headers.get("Connection", "").lower() == "close"

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> None:
        self.finished = True


class _Connection:
    """One HTTP/1.1 connection kept alive from request to request, as a browser keeps it.

    Opened on the first request, and again after the server closed it.
    """

    def __init__(self, url: str, name: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.headers = {"Host": parts.netloc, CLIENT_HEADER: name, "Accept": "application/json"}
        self._tcp = lab.tcp_client()
        self._stream = None

    @property
    def open(self) -> bool:
        return self._stream is not None and not self._stream.closed()

    async def get(self, target: str, timeout: float) -> _Answer:
        """``GET target``; StreamClosedError, OSError or TimeoutError if it fails."""
        if not self.open:
            self._stream = await asyncio.wait_for(self._tcp.connect(self.host, self.port),
                                                  CONNECT_TIMEOUT)
        connection = HTTP1Connection(self._stream, True, _PARAMS)
        reader = _Reader()
        try:
            connection.write_headers(httputil.RequestStartLine("GET", target, "HTTP/1.1"),
                                     httputil.HTTPHeaders(self.headers))
            connection.finish()
            await asyncio.wait_for(connection.read_response(reader), timeout)
        except BaseException:
            self.close()
            raise
        if reader.status is None or not reader.finished:
            self.close()
            raise StreamClosedError()
        if reader.close:
            self.close()
        return _Answer(reader.status, b"".join(reader.chunks))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def shutdown(self) -> None:
        self.close()
        self._tcp.close()


class PollingClient(HubClient):
    """Polls ``url`` every ``interval`` seconds of ``clock`` (technique ``polling``).

    The first poll goes out at once; the next ones at ``phase``,
    ``phase + interval``, ``phase + 2 * interval`` ... seconds after the
    start (0 <= phase < interval: clients started together with different
    phases do not all poll at the same instant). A poll that takes longer
    than the interval skips the ticks it overran rather than bursting, and
    notes when each was due in :attr:`skipped`.
    ``after``: start from that cursor (0: everything the server keeps; None:
    from now). Each new feed event becomes a ``trace.delivered`` record;
    a failed poll a ``retry`` record, and the next tick tries again.
    """

    technique = "polling"

    def __init__(self, url: str, *, interval: float = 1.0, clock: Clock | None = None,
                 phase: float = 0.0, name: str = "poller", trace: Trace | None = None,
                 after: int | None = None):
        super().__init__(url, name=name, trace=trace, after=after)
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise LabkitError(f"a polling client needs an http:// URL, got {url!r}")
        self.interval = _seconds(interval, "interval", positive=True)
        self.phase = _seconds(phase, "phase")
        if self.phase >= self.interval:
            raise LabkitError(f"phase must be less than the interval ({interval!r}), "
                              f"got {phase!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise LabkitError(f"clock must be a labkit.clock.Clock, got {clock!r}")
        self.clock = clock if clock is not None else REAL_TIME
        self.polls = 0
        """How many requests were answered (any status)."""
        self.skipped: list[float] = []
        """``time.monotonic()`` when each tick was due that a poll overran (no poll went out)."""
        self._path = (parts.path or "/") + (f"?{parts.query}&" if parts.query else "?")
        self._http: _Connection | None = None
        self._answered = False

    @property
    def ready(self) -> bool:
        """True once the server has answered a first poll."""
        return self._answered

    def _target(self, hold: float | None = None) -> str:
        query = [] if self._cursor is None else [f"after={self._cursor}"]
        if hold is not None:
            query.append(f"wait={hold:g}")
        return self._path + "&".join(query) if query else self._path[:-1]

    async def _run(self) -> None:
        self._http = _Connection(self.url, self.name)
        clock = self.clock
        start, due = clock.now(), 0  # tick k is at start + phase + k * interval
        while not self._stopping.is_set():
            await self._poll(None)
            if self.failure is not None:
                return
            now, real = clock.now(), time.monotonic()
            tick = math.floor((now - start - self.phase) / self.interval) + 1
            self.skipped += [real - clock.to_real(now - start - self.phase - k * self.interval)
                             for k in range(due, tick)]
            due = tick + 1
            wait = clock.to_real(start + self.phase + tick * self.interval - now)
            if await self._pause(wait):
                return

    async def _poll(self, hold: float | None) -> int | None:
        """One request; the number of new items, or None if it failed."""
        wait = 0.0 if hold is None else hold
        try:
            answer = await self._http.get(self._target(hold), wait + ANSWER_TIMEOUT)
        except (StreamClosedError, OSError, asyncio.TimeoutError) as exc:
            if not self._stopping.is_set():
                self._retry(f"the poll failed: {exc or type(exc).__name__}", self._next_try())
            return None
        self.polls += 1
        if answer.status == 200:
            try:
                payload = json.loads(answer.body)
                taken = self._take(payload["items"])
                self._move(payload["next"])
                missed = payload["missed"]
            except (ValueError, KeyError, TypeError, LabkitError) as exc:
                self._retry(f"not a poll answer ({exc}): {answer.body[:80]!r}",
                            self._next_try())
                return None
            if missed:
                self._lost(missed, f"told so by the answer up to id {payload['next']}")
            self._answered = True
            return taken
        why = f"the server answered {answer.status}: {error_text(answer.body)}"
        if answer.status >= 500:
            self._retry(why, self._next_try())
        else:
            self._fail(why)  # a refusal that asking again would only repeat
        return None

    def _next_try(self) -> float:
        """Seconds until the next attempt after a failure (the next tick, for polling)."""
        return self.clock.to_real(self.interval)

    def _interrupt(self) -> None:
        if self._http is not None:
            self._http.close()

    def _closed(self) -> None:
        if self._http is not None:
            self._http.shutdown()


class LongPollingClient(PollingClient):
    """Long-polls ``url``: asks with ``wait=hold`` and asks again as soon as it is answered
    (technique ``long-polling``).

    After a failure (the server down, a 503 while it stops) it waits
    ``backoff`` seconds, doubled after each failure in a row up to 2 s, and
    asks again with the same cursor. An empty answer that comes back before
    half the hold passed (a server that does not hold) is followed by a pause
    up to that half, so a client never hammers a server.

    ``pause``: seconds the client spends on an answer that brought news
    before it asks again (0: at once). A real page spends some (it renders
    the messages; a phone's radio wakes up); whatever is published meanwhile
    waits in the hub and comes, in order, in the next answer.
    """

    technique = "long-polling"

    def __init__(self, url: str, *, hold: float = 20.0, backoff: float = 0.05,
                 pause: float = 0.0, name: str = "long-poller", trace: Trace | None = None,
                 after: int | None = None):
        super().__init__(url, name=name, trace=trace, after=after)
        self.hold = min(_seconds(hold, "hold", positive=True), MAX_HOLD)
        self.backoff = _seconds(backoff, "backoff", positive=True)
        self.pause = _seconds(pause, "pause")
        self._pause_next = self.backoff

    @property
    def ready(self) -> bool:
        """True once nothing published from now on can be missed.

        With a starting cursor (``after=3``) that is as soon as its connection
        is open: the held request names what it has seen. A client that starts
        "from now" (``after=None``) first asks without holding, to learn where
        now is, and is ready when that answer came back; a held first request
        could reach the server after events published meanwhile, and miss them.
        """
        if self._answered:
            return True
        return self._cursor is not None and self._http is not None and self._http.open

    async def _run(self) -> None:
        self._http = _Connection(self.url, self.name)
        while not self._stopping.is_set():
            asked, held = time.monotonic(), self._cursor is not None
            taken = await self._poll(self.hold if held else 0.0)
            if self.failure is not None:
                return
            if taken is None:
                wait = self._next_try()
                self._pause_next = min(self._pause_next * 2, 2.0)
            else:
                self._pause_next = self.backoff
                empty = taken == 0 and held  # a hold that ran out, or an early empty answer
                if empty:
                    wait = asked + self.hold / 2 - time.monotonic()
                else:  # news takes `pause` to read; the first, unheld answer none
                    wait = self.pause if taken else 0.0
            if await self._pause(wait):
                return

    def _next_try(self) -> float:
        return self._pause_next
