"""Lesson 07's experiments: a live cricket score, streamed with Server-Sent Events.

A cricket score page is the lecture notes' example of SSE: the page opens
one stream (``new EventSource("/events")``) and the server writes each ball
into it as it is bowled. Every experiment here plays that match from a
seeded :class:`Innings` on loopback, with the kit's
:class:`~labkit.push.sse.SSEStream` serving a :class:`~labkit.hub.Hub` and
:class:`~labkit.push.sse.SSEClient` (the kit's ``EventSource``) reading it;
tornado's WebSocket (:mod:`labkit.push.websocket`) is the two-way contrast.

=============================  =================================================================
call                           what it shows
=============================  =================================================================
``first_bytes()``              the bytes of a real stream: headers, ``retry``, ``event``, ``id``,
                               multi-line ``data``, a heartbeat comment; and what the parser made
``live_score()``               fans follow the match ball by ball: latency, one request per fan
                               however many balls (``drops=`` ends every stream now and then)
``few_events()``               the same few events by SSE and by WebSocket, for a timeline
``server_restart()``           the servers restart mid-match: SSE resumes with ``Last-Event-ID``,
                               a browser's WebSocket stays closed, the kit's resumes with code
``lost_in_the_gap()``          a fan back after more balls than the history keeps: a ``gap``
``ended_for_good()``           a 204 and a wrong content type stop an ``EventSource`` for good
``browser_tabs()``             seven tabs of one "browser" allowed six connections per host
``slow_fan()``                 a fan that stops reading is dropped; the others keep up
``against_websocket()``        set-up, bytes per event, and talking back: SSE beside WebSocket
``through_a_proxy()``          an HTTP-only proxy carries the stream, but not the WebSocket
``at_scale()``                 1 to 1,000 clients of each, in a separate load process
``pros_and_cons(...)``         the notes' pros and cons of SSE, each with its measured number
=============================  =================================================================

Each starts what it needs and stops all of it, also when something fails,
and returns a frozen result with the trace (where there is one) and the
numbers the lesson asserts on; ``figure()`` draws the lesson's chart.

Thread-safety: call them from a cell or a script, never from the lab loop
(they block while they wait).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import tornado.httpclient
from tornado import httputil

from labkit import lab
from labkit.debug.relay import serve_relay
from labkit.endpoints import BodyHandler, NotFound
from labkit.errors import LabkitError, WaitTimeout
from labkit.experiments.start import client_session
from labkit.feed import Event, Feed, play, poisson
from labkit.hub import Hub
from labkit.progress import Progress
from labkit.push.polling import serve_polling
from labkit.push.scale import _until as wait_until, scaling
from labkit.push.sse import SSEClient, SSEStream, encode_item, serve_sse
from labkit.push.sse_protocol import EventStreamParser, MessageEvent, parse
from labkit.push.websocket import WebSocketClient, WebSocketServer, encode_frame
from labkit.trace import Record, Trace
from labkit.wire import CLIENT_HEADER

__all__ = ["SEED", "Innings", "scoreboard", "FirstBytes", "first_bytes", "LiveScore",
           "live_score", "FewEvents", "few_events", "Restart", "server_restart", "Gap",
           "lost_in_the_gap", "Ended", "ended_for_good", "Tabs", "browser_tabs", "SlowFan",
           "slow_fan", "Against", "against_websocket", "Proxy", "through_a_proxy", "Scale",
           "at_scale", "pros_and_cons"]

SEED = 1
TEAM = "IND"
RETRY = 200
"""The reconnection time (ms) the experiments' servers send: short, so a drop is brief."""
OVERS = 20
"""A T20 innings: 20 overs of 6 balls."""


# -- the match -------------------------------------------------------------------------

_BALLS = (  # runs, out?, weight, what the commentator says
    (0, False, 34, "no run"), (1, False, 30, "a single"), (2, False, 8, "two runs"),
    (3, False, 1, "three runs"), (4, False, 13, "FOUR!"), (6, False, 6, "SIX!"),
    (0, True, 8, "OUT!"),
)


class Innings:
    """A seeded T20 innings, ball by ball: what each ball did, and the score after it.

    :meth:`bowl` makes the next ball as a feed event: type ``ball`` (or
    ``wicket``), payload ``{"over": "3.4", "runs": 4, "score": "27/1",
    "text": "FOUR!"}``; ``over`` counts overs and balls bowled so far, as a
    scoreboard does. The same seed bowls the same innings.
    """

    def __init__(self, seed: int = SEED, team: str = TEAM):
        self.team = team
        self._rng = random.Random(seed)
        self.balls = self.runs = self.wickets = 0

    @property
    def score(self) -> str:
        """The scoreboard now: ``IND 27/1 (3.4 ov)``."""
        return f"{self.team} {self.runs}/{self.wickets} ({self.balls // 6}.{self.balls % 6} ov)"

    def next_ball(self) -> tuple[str, dict]:
        """The next ball's event type and payload (LabkitError once the innings is over)."""
        if self.balls >= 6 * OVERS or self.wickets >= 10:
            raise LabkitError(f"the innings is over at {self.score}: bowl fewer balls")
        runs, out, _, text = self._rng.choices(_BALLS, [b[2] for b in _BALLS])[0]
        self.balls += 1
        self.runs += runs
        self.wickets += out
        return ("wicket" if out else "ball",
                {"over": f"{self.balls // 6}.{self.balls % 6}", "runs": runs,
                 "score": f"{self.runs}/{self.wickets}", "text": text})

    def bowl(self, feed: Feed) -> Event:
        """The next ball as a feed event (made now, so its latency starts now)."""
        kind, payload = self.next_ball()
        return feed.make(kind, payload)


def _ball(message: MessageEvent) -> dict | None:
    """The payload of a ball in an SSE message, or None if it is not one (a ``gap``)."""
    try:
        event = json.loads(message.data)
        return event["payload"] if event.get("type") in ("ball", "wicket") else None
    except (ValueError, AttributeError, KeyError):
        return None


def scoreboard(messages: list[MessageEvent], team: str = TEAM) -> str:
    """What a fan's page shows after ``messages``: the score in the last ball received."""
    balls = [b for b in map(_ball, messages) if b is not None]
    if not balls:
        return f"{team} 0/0 (0.0 ov)"
    return f"{team} {balls[-1]['score']} ({balls[-1]['over']} ov)"


def _until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Wait (bounded) until ``check()``; WaitTimeout naming ``what`` if it never holds."""
    wait_until(check, seconds, lambda: f"{what} did not happen within {seconds} s")


def _stop_all(*things: Any) -> None:
    """Stop clients and servers (None and stopped ones are skipped), even if one fails."""
    errors = []
    for thing in things:
        try:
            if thing is not None:
                thing.stop()
        except Exception as exc:  # keep stopping the rest; report the first
            errors.append(exc)
    if errors:
        raise errors[0]


def _ids(messages: list[MessageEvent]) -> list[int]:
    return [int(m.last_event_id) for m in messages if m.type != "gap"]


# -- the bytes of a stream ------------------------------------------------------------

_NOTES = {"retry": "wait this many ms before reconnecting", ":": "a comment: skipped",
          "event": "the type (default: message)", "id": "sent back as Last-Event-ID",
          "data": "data lines are joined with a LF", "": "end of event: dispatch (if data)"}


@dataclass(frozen=True)
class FirstBytes:
    """What :func:`first_bytes` read from a real stream."""

    head: bytes
    """The status line and headers, as the server sent them."""
    wire: bytes = field(repr=False)
    """The body as it crossed the wire, HTTP/1.1 chunk framing included."""
    stream: bytes
    """The body without the chunk framing: the ``text/event-stream`` itself."""
    events: tuple[MessageEvent, ...]
    """What the kit's parser dispatched, reading the stream whole."""
    one_byte_at_a_time: tuple[MessageEvent, ...]
    """What it dispatched when fed one byte at a time."""
    retry: int | None
    """The reconnection time (ms) the stream set."""

    def annotated(self) -> str:
        """The stream line by line, each with a note on what the field does."""
        lines = []
        for line in self.stream.decode().split("\n")[:-1]:
            name = ":" if line.startswith(":") else line.partition(":")[0]
            lines.append(f"{line[:50] + ' ...' if len(line) > 50 else line:56}"
                         f"<- {_NOTES.get(name, '')}")
        return "\n".join(lines)


def _dechunk(wire: bytes) -> bytes:
    """The body inside HTTP/1.1 chunked framing (``<hex size>\\r\\n<data>\\r\\n`` ...)."""
    body, at = bytearray(), 0
    while at < len(wire):
        end = wire.index(b"\r\n", at)
        size = int(wire[at:end], 16)
        body += wire[end + 2:end + 2 + size]
        at = end + 2 + size + 2
    return bytes(body)


def first_bytes(*, seed: int = SEED, heartbeat: float = 0.15) -> FirstBytes:
    """Open a stream with a raw socket, as a browser would, and keep every byte.

    The server sends ``retry: 2000`` first; then two balls are bowled (an
    event with its type and id each), and the commentator's end-of-over
    note, whose text has two lines; after ``heartbeat`` seconds with
    nothing new the server sends a comment. The bytes are then parsed by
    the kit's WHATWG parser, whole and one byte at a time.
    """
    hub, innings, feed = Hub(), Innings(seed), Feed(seed=seed)
    server = serve_sse(hub, retry=2000, heartbeat=heartbeat)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        raw.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                    + f"{CLIENT_HEADER}: browser\r\n\r\n".encode())
        data = _read_until(raw, bytearray(), lambda d: b"retry: 2000\n" in d)
        hub.publish(innings.bowl(feed))
        hub.publish(innings.bowl(feed))
        hub.publish(f"What a start: a four off the second ball!\n{innings.score}")
        _read_until(raw, data, lambda d: b": heartbeat" in d)
    finally:
        raw.close()
        server.stop()
    head, _, wire = bytes(data).partition(b"\r\n\r\n")
    stream = _dechunk(wire)
    parser = EventStreamParser()
    one_by_one = [event for k in range(len(stream)) for event in parser.feed(stream[k:k + 1])]
    return FirstBytes(head + b"\r\n", wire, stream, tuple(parse(stream)), tuple(one_by_one),
                      parser.retry)


def _read_until(sock: socket.socket, data: bytearray, done: Callable[[bytes], bool]
                ) -> bytearray:
    """Read from ``sock`` into ``data`` until ``done(data)`` (at most 5 s, or 1 MB)."""
    deadline = time.monotonic() + 5.0
    while not done(bytes(data)):
        if time.monotonic() > deadline or len(data) > 1 << 20:
            raise WaitTimeout(f"the stream did not bring what was expected: {bytes(data)[-200:]!r}")
        chunk = sock.recv(65536)
        if not chunk:
            raise LabkitError("the server closed the stream early")
        data += chunk
    return data


# -- the match, live ----------------------------------------------------------------------


@dataclass(frozen=True)
class LiveScore:
    """What :func:`live_score` measured."""

    trace: Trace = field(repr=False)
    balls: int
    fans: int
    score: str
    """The real score at the end of the run."""
    boards: dict[str, str]
    """What each fan's page showed at the end."""
    received: dict[str, list[int]] = field(repr=False)
    """The event ids each fan received, in order."""
    requests: int
    """HTTP requests the server received (one per stream opened)."""
    latency: dict[float, float]
    """Percentiles 50, 90, 99 of publish-to-receipt latency, in seconds."""
    bytes_per_event: float
    """Wire bytes per delivered ball (requests and the streams, headers included)."""
    worm: tuple[tuple[float, int, bool], ...] = field(repr=False)
    """(overs, runs, wicket?) after each ball, as the first fan saw it."""

    def figure(self):
        """The score as a fan's page drew it (the "worm"), and how fast each ball arrived."""
        import matplotlib.pyplot as plt
        from labkit.plots import latency_cdf, technique_color
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
        overs, runs, out = zip(*self.worm)
        left.step(overs, runs, where="post", color=technique_color("sse"), label="runs")
        left.plot([o for o, _, w in self.worm if w], [r for _, r, w in self.worm if w], "kv",
                  label="wicket")
        left.set(xlabel="overs", ylabel="runs", title=f"the score on fan-1's page: {self.score}")
        left.grid(alpha=0.3)
        left.legend(loc="upper left")
        latency_cdf(self.trace, techniques=["sse"], ax=right,
                    title=f"{self.fans} fans x {self.balls} balls: time from bowled to on screen")
        return fig


def live_score(*, fans: int = 3, balls: int = 60, rate: float = 100.0, drops: int = 0,
               seed: int = SEED) -> LiveScore:
    """``fans`` pages follow ``balls`` balls (``rate`` a second, seeded Poisson arrivals).

    Each fan is an :class:`SSEClient` with one stream. ``drops``: how many
    times, evenly spread over the match, the server ends every stream (as
    a network drop would); fans come back after ``RETRY`` ms with
    ``Last-Event-ID`` and get what they missed from the hub.
    """
    hub, innings, feed = Hub(history=1000), Innings(seed), Feed(seed=seed)
    server = serve_sse(hub, retry=RETRY)
    pages: list[SSEClient] = []
    try:
        for k in range(1, fans + 1):
            pages.append(SSEClient(server.endpoint_url, name=f"fan-{k}", trace=server.trace))
            pages[-1].__enter__()
        cuts = {round(balls * (k + 1) / (drops + 1)) for k in range(drops)}
        start = time.monotonic()
        for number, offset in enumerate(poisson(rate, count=balls, seed=seed), 1):
            time.sleep(max(0.0, offset - (time.monotonic() - start)))
            hub.publish(innings.bowl(feed))
            if number in cuts:  # once every fan is back from the last cut
                _until(lambda: len(server.component.open_streams()) == fans, "every fan's return")
                server.component.end()
        for page in pages:
            page.wait_for(balls)
    finally:
        _stop_all(*pages, server)
    trace = server.trace
    first = pages[0].events
    worm = [(0.0, 0, False)] + [(int(b["over"].split(".")[0]) + int(b["over"][-1]) / 6,
                                 int(b["score"].split("/")[0]), "OUT" in b["text"])
                                for b in map(_ball, first)]
    return LiveScore(trace, balls, fans, innings.score,
                     {p.name: scoreboard(p.events) for p in pages},
                     {p.name: _ids(p.events) for p in pages}, trace.count("request", "sse"),
                     trace.latency_percentiles("sse"), trace.bytes_per_event("sse"),
                     tuple(worm))


# -- the same few events, by SSE and by WebSocket ----------------------------------------------


@dataclass(frozen=True)
class FewEvents:
    """What :func:`few_events` recorded: one trace for both techniques."""

    trace: Trace = field(repr=False)
    count: int
    requests: dict[str, int]
    """HTTP requests each technique's server received."""
    latency: dict[str, float]
    """Median latency of each technique, in seconds."""

    def figure(self):
        """The swimlane timeline of both: one long bar each, a diamond per event."""
        import matplotlib.pyplot as plt
        from labkit.plots import timeline
        fig, ax = plt.subplots(figsize=(11, 3.8), layout="constrained")
        timeline(self.trace, ax=ax, techniques=["sse", "websocket"],
                 roles={"sse-page": "EventSource", "ws-page": "new WebSocket(url)"},
                 title=f"The same {self.count} events by SSE and by WebSocket")
        return fig


def few_events(*, count: int = 5, rate: float = 3.0, seed: int = 6) -> FewEvents:
    """The same ``count`` seeded events (Poisson, ``rate`` a second) reach one SSE page and
    one WebSocket page, served from one hub and recorded in one trace. The defaults are
    those of lesson 06's :func:`labkit.experiments.polling.same_events`: the same events."""
    hub, trace = Hub(), Trace()
    sse = serve_sse(hub, trace=trace)
    ws = lab.serve(WebSocketServer(hub), trace=trace)
    page = socket_page = None
    try:
        page = SSEClient(sse.endpoint_url, name="sse-page", trace=trace).__enter__()
        socket_page = WebSocketClient(ws.endpoint_url, name="ws-page", trace=trace).__enter__()
        playing = lab.submit(play(Feed(seed=seed), poisson(rate, count=count, seed=seed),
                                  hub.publish))
        with Progress(count, "the same events to two pages") as bar:
            for done in range(1, count + 1):
                page.wait_for(done, timeout=count / rate + 10)
                socket_page.wait_for(done, timeout=count / rate + 10)
                bar.update(done)
        playing.result(timeout=5)
    finally:
        _stop_all(page, socket_page, sse, ws)
    return FewEvents(trace, count, {t: trace.count("request", t) for t in ("sse", "websocket")},
                     {t: trace.latency_percentiles(t, (50,))[50] for t in ("sse", "websocket")})


# -- a restart in the middle of the match -----------------------------------------------------


class _Overheard(httputil.HTTPMessageDelegate):
    """Passes a request on to the stream, keeping its headers on the way."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, asked: list):
        self.inner, self.asked = inner, asked

    def headers_received(self, start_line, headers):
        self.asked.append((f"{start_line.method} {start_line.path}", headers.copy()))
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.inner.data_received(chunk)

    def finish(self):
        return self.inner.finish()

    def on_connection_close(self):
        return self.inner.on_connection_close()


class _Listening(SSEStream):
    """An :class:`SSEStream` that also keeps the request line and headers of every
    request it gets (``asked``), so a lesson can show what a reconnecting client sent."""

    def __init__(self, hub: Hub, **options: Any):
        super().__init__(hub, **options)
        self.asked: list[tuple[str, httputil.HTTPHeaders]] = []

    def start_request(self, server_conn, request_conn):
        return _Overheard(super().start_request(server_conn, request_conn), self.asked)


@dataclass(frozen=True)
class Restart:
    """What :func:`server_restart` saw."""

    trace: Trace = field(repr=False)
    published: list[int]
    """Ids of every ball bowled, in order."""
    down: list[int]
    """Ids of the balls bowled while the servers were down."""
    received: dict[str, list[int]]
    """Ids each page received, in order: ``fan`` (SSE), ``browser`` (a browser's
    WebSocket, no resume), ``app`` (the kit's WebSocketClient, resumes)."""
    asked: list[tuple[str, httputil.HTTPHeaders]]
    """Every request the SSE server got: its request line and headers."""
    resumed: list[str]
    """How each WebSocket connection began, from the server's ``connect`` records."""
    failed_attempts: int
    """Reconnection attempts of the SSE fan that found the server down."""

    def figure(self):
        """The restart on a timeline: bars break, retries, and who came back."""
        import matplotlib.pyplot as plt
        from labkit.plots import timeline
        fig, ax = plt.subplots(figsize=(11, 4.6), layout="constrained")
        timeline(self.trace, ax=ax, techniques=["sse", "websocket"],
                 roles={"fan": "EventSource", "browser": "new WebSocket(url)",
                        "app": "WebSocketClient: resumes"},
                 title="The servers restart mid-match: who resumes?")
        return fig


def server_restart(*, before: int = 4, while_down: int = 3, after: int = 3, down: float = 0.5,
                   seed: int = SEED) -> Restart:
    """Both servers (SSE and WebSocket, one hub) restart in the middle of the match.

    ``before`` balls, then both servers stop for ``down`` seconds (a deploy)
    while ``while_down`` more are bowled into the hub (which, like a
    database, outlives the servers), then both are served again on the same
    ports and ``after`` more are bowled. Three pages watch: an SSE ``fan``,
    a ``browser`` page with a plain WebSocket (no reconnection: a browser's
    ``WebSocket`` does not reconnect by itself) and an ``app`` with the
    kit's :class:`WebSocketClient`, whose code reconnects with ``?after=``.
    """
    hub, innings, feed, trace = Hub(), Innings(seed), Feed(seed=seed), Trace()
    stream, sockets = _Listening(hub, retry=RETRY), WebSocketServer(hub)
    servers = [lab.serve(stream, trace=trace), lab.serve(sockets, trace=trace)]
    pages: list = []
    published: list[int] = []
    try:
        url, ws_url = servers[0].endpoint_url, servers[1].endpoint_url
        pages = [SSEClient(url, name="fan", trace=trace).__enter__(),
                 WebSocketClient(ws_url, name="browser", trace=trace, reconnect=None).__enter__(),
                 WebSocketClient(ws_url, name="app", trace=trace, reconnect=RETRY / 1000
                                 ).__enter__()]

        def bowl(balls: int) -> None:
            for _ in range(balls):
                published.append(hub.publish(innings.bowl(feed)).id)
                time.sleep(0.05)

        bowl(before)
        _until(lambda: all(_count(p) == before for p in pages), "every page's first balls")
        ports = [s.port for s in servers]
        _stop_all(*servers)
        bowl(while_down)
        time.sleep(max(0.0, down - 0.05 * while_down))
        servers = [lab.serve(stream, trace=trace, port=ports[0]),
                   lab.serve(sockets, trace=trace, port=ports[1])]
        _until(lambda: _count(pages[0]) == before + while_down, "the fan's resume")
        bowl(after)
        for page in (pages[0], pages[2]):
            _until(lambda page=page: _count(page) == len(published), f"{page.name}'s last ball")
        time.sleep(0.1)  # the browser page would have had time to get one, had it been open
    finally:
        _stop_all(*pages, *servers)
    fan, browser, app = pages
    return Restart(
        trace, published, published[before:before + while_down],
        {"fan": _ids(fan.events), "browser": [r.id for r in browser.received],
         "app": [r.id for r in app.received]},
        list(stream.asked),
        [r.detail for r in trace.records(kind="connect", technique="websocket")],
        sum(why.startswith("could not connect") for why in fan.ended))


def _count(page: Any) -> int:
    return len(page.events) if isinstance(page, SSEClient) else len(page.received)


# -- resuming after the history ran out -----------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """What :func:`lost_in_the_gap` saw."""

    history: int
    seen: int
    bowled: int
    gap: dict | None
    """The ``gap`` event's data (``missed``, ``from``, ``to``), or None if there was none."""
    after: list[int]
    """Ids received after coming back (after the gap event)."""
    asked_with: str
    """The ``Last-Event-ID`` the returning client sent."""

    @property
    def missed(self) -> int:
        """Events lost for good, as the server reported them (0 without a gap)."""
        return self.gap["missed"] if self.gap else 0


def lost_in_the_gap(*, history: int = 10, seen: int = 5, bowled: int = 25,
                    seed: int = SEED) -> Gap:
    """A fan follows ``seen`` balls, loses the connection while the match goes on to
    ``bowled`` balls, and comes back with ``Last-Event-ID: <seen>`` to a server whose hub
    keeps only the last ``history`` events."""
    if not 0 < seen <= bowled:
        raise LabkitError(f"the fan must have seen some balls, and no more than were bowled: "
                          f"seen={seen}, bowled={bowled}")
    hub, innings, feed = Hub(history=history), Innings(seed), Feed(seed=seed)
    server = serve_sse(hub, retry=RETRY)
    fan = back = None
    try:
        fan = SSEClient(server.endpoint_url, name="fan").__enter__()
        for _ in range(seen):
            hub.publish(innings.bowl(feed))
        fan.wait_for(seen)
        fan.stop()
        for _ in range(bowled - seen):
            hub.publish(innings.bowl(feed))
        back = SSEClient(server.endpoint_url, name="fan", last_event_id=fan.last_event_id)
        missed = hub.missed(seen)
        messages = back.__enter__().wait_for((1 if missed else 0) + bowled - seen - missed)
    finally:
        _stop_all(fan, back, server)
    gaps = [json.loads(m.data) for m in messages if m.type == "gap"]
    return Gap(history, seen, bowled, gaps[0] if gaps else None, _ids(messages),
               fan.last_event_id)


# -- what ends an EventSource for good --------------------------------------------------------


class Ended(tuple):
    """What :func:`ended_for_good` saw: one row per case (``case``, ``requests``,
    ``failure``, ``running``, ``ended``), as dicts."""

    def table(self) -> str:
        """The cases as a Markdown table."""
        lines = ["| case | requests the server got | connections, and how each ended | "
                 "the client, now |", "|---|---|---|---|"]
        lines += [f"| {row['case']} | {row['requests']} | {'; '.join(row['ended'])} | "
                  f"{'reconnecting' if row['running'] else 'stopped for good'} |"
                  for row in self]
        return "\n".join(lines)


def ended_for_good(*, wait: float = 0.3) -> Ended:
    """Two servers that tell an ``EventSource`` to stop, each watched ``wait`` seconds.

    ``the match is over``: the hub is closed, the stream ends, the client
    reconnects (a network drop is not the end) and is answered **204**.
    ``not an event stream``: the client is pointed at the kit's polling
    endpoint, which answers 200 with ``application/json``. The server's
    ``retry`` and the client's reconnection time are 50 ms, so in ``wait``
    seconds a client that did reconnect would have done so several times.
    """
    rows = []
    hub = Hub()
    with serve_sse(hub, retry=50) as server:
        client = SSEClient(server.endpoint_url, name="fan").__enter__()
        try:
            hub.publish("the last ball")
            client.wait_for(1)
            hub.close()
            _until(lambda: client.failure is not None, "the 204")
            time.sleep(wait)
        finally:
            client.stop()
        rows.append(_case("the match is over (the hub closed)", server, client))
    with serve_polling(Hub()) as server:
        client = SSEClient(server.endpoint_url, name="fan", reconnection_time=0.05).start()
        try:
            _until(lambda: client.failure is not None, "the refusal")
            time.sleep(wait)
        finally:
            client.stop()
        rows.append(_case("not an event stream (a JSON endpoint)", server, client))
    return Ended(rows)


def _case(case: str, server: lab.Server, client: SSEClient) -> dict:
    return {"case": case, "requests": server.trace.count("request"), "failure": client.failure,
            "running": client.running, "ended": list(client.ended)}


# -- six connections per host ------------------------------------------------------------------


@dataclass(frozen=True)
class Tabs:
    """What :func:`browser_tabs` saw."""

    trace: Trace = field(repr=False)
    per_host: int
    tabs: int
    open_while_full: list[str]
    """The streams the server had open once the browser's connections were all in use."""
    requests_while_full: int
    """Requests the server had received by then."""
    waiting_got: int
    """Events the last tab had received by then (it was still queued in the browser)."""
    waited: float
    """Seconds the last tab waited for a connection once one was free."""
    got_ball: dict[str, bool]
    """Which tabs showed the ball bowled while the browser was full."""

    def figure(self):
        """The tabs' streams on a timeline: six bars at once, the seventh after one ends."""
        import matplotlib.pyplot as plt
        from labkit.plots import timeline
        fig, ax = plt.subplots(figsize=(11, 4.6), layout="constrained")
        timeline(self.trace, ax=ax, techniques=["sse"], title=f"{self.tabs} tabs, one browser, "
                 f"{self.per_host} connections per host (HTTP/1.1)")
        return fig


def browser_tabs(*, tabs: int = 7, per_host: int = 6, seed: int = SEED) -> Tabs:
    """One "browser" opens the score page in ``tabs`` tabs; it may have ``per_host``
    connections to one host open at once (HTTP/1.1) and queues the rest.

    The browser is tornado's own HTTP client with ``max_clients=per_host``:
    it opens at most that many connections and queues further requests
    until one finishes, the rule browsers apply per host. Each tab streams
    ``GET /events`` and parses what arrives (each ball it shows is an
    ``event`` record). Once the browser is full a ball is bowled; then the
    server ends tab 1's stream (closing tab 1 would free its connection the
    same way), the waiting tab gets the connection, and one more ball is
    bowled.
    """
    hub, innings, feed = Hub(), Innings(seed), Feed(seed=seed)
    server = serve_sse(hub, retry=RETRY)
    stream = server.component
    names = [f"tab-{k}" for k in range(1, tabs + 1)]
    got: dict[str, list[str]] = {name: [] for name in names}

    def reader(name: str) -> Callable[[bytes], None]:
        parser = EventStreamParser()

        def read(chunk: bytes) -> None:  # on the lab loop, as the tab's bytes arrive
            for message in parser.feed(chunk):
                got[name].append(message.last_event_id)
                server.trace.delivered(Event.from_dict(json.loads(message.data)),
                                       technique="sse", client=name)
        return read

    def open_tabs():
        browser = lab.http_client(max_clients=per_host)
        return browser, [browser.fetch(tornado.httpclient.HTTPRequest(
            server.endpoint_url, headers={"Accept": "text/event-stream", CLIENT_HEADER: name},
            streaming_callback=reader(name), connect_timeout=30, request_timeout=30),
            raise_error=False) for name in names]

    browser, loads = lab.run(open_tabs)
    try:
        _until(lambda: len(stream.open_streams()) == min(tabs, per_host), "the first streams")
        time.sleep(0.2)  # long enough for a seventh stream to open, were it allowed to
        full = [name for name in names if name in {s.client for s in stream.open_streams()}]
        requests_while_full = server.trace.count("request")
        waiting_got = len(got[names[-1]])
        hub.publish(innings.bowl(feed))
        _until(lambda: all("1" in got[name] for name in full), "the ball on every open tab")
        got_ball = {name: "1" in got[name] for name in names}
        freed = time.monotonic()
        stream.end(names[0])
        _until(lambda: names[-1] in {s.client for s in stream.open_streams()}, "the last tab")
        waited = time.monotonic() - freed
        hub.publish(innings.bowl(feed))
        _until(lambda: "2" in got[names[-1]], "the next ball on the last tab")
    finally:
        server.stop()
        lab.run(_closed(browser, loads), timeout=10)
    return Tabs(server.trace, per_host, tabs, full, requests_while_full, waiting_got,
                waited, got_ball)


async def _closed(browser, loads: list) -> None:
    """Let the tabs' requests finish (the server ended them), then close the browser."""
    await asyncio.wait(loads, timeout=5)
    browser.close()


# -- a fan that stops reading -------------------------------------------------------------------


@dataclass(frozen=True)
class SlowFan:
    """What :func:`slow_fan` saw."""

    trace: Trace = field(repr=False)
    published: int
    """Big events published until the slow fan was dropped."""
    kernel_took: int
    """Events published before the server held anything for the slow fan: the kernel's
    socket buffers absorbed those."""
    most_held: int
    """The most bytes the server held for the slow fan at once."""
    max_buffer: int
    max_lag: int
    frame: int
    """Bytes of one event's frame."""
    drop: Record
    """The server's ``drop`` record."""
    healthy_complete: bool
    """The healthy fan got every event, in order."""


def slow_fan(*, size: int = 8000, max_buffer: int = 16 * 1024, max_lag: int = 20,
             limit: int = 3000) -> SlowFan:
    """Two fans: one reads (an :class:`SSEClient`), one stops reading (a raw socket
    with a tiny receive window that never calls ``recv``). Full scorecards of
    ``size`` bytes are published, at most ``limit`` of them, until the server
    drops the slow fan by its rule: ``max_lag`` events published while a
    write to it waits (the server writes at most ``max_buffer`` bytes at a time)."""
    hub = Hub(history=limit + 10)
    server = serve_sse(hub, max_buffer=max_buffer, max_lag=max_lag)
    stream = server.component
    card = "x" * size
    frame = len(encode_item(hub.publish(card)))
    slow = socket.socket()
    healthy = None
    held, first = [], hub.last_id
    try:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect: tiny window
        slow.settimeout(5)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\n{CLIENT_HEADER}: asleep\r\n\r\n".encode())
        healthy = SSEClient(server.endpoint_url, name="awake").__enter__()
        _until(lambda: len(stream.open_streams()) == 2, "both streams")
        for _ in range(limit):
            hub.publish(card)
            held.append(max((s.waiting_bytes for s in stream.open_streams()
                             if s.client == "asleep"), default=0))
            if server.trace.count("drop"):
                break
        published = hub.last_id - first
        got = healthy.wait_for(published, timeout=30)
        complete = _ids(got) == list(range(first + 1, hub.last_id + 1))
    finally:
        slow.close()
        _stop_all(healthy, server)
    drops = server.trace.records(kind="drop")
    if not drops:
        raise LabkitError(f"the slow fan was not dropped after {limit} events: raise limit")
    return SlowFan(server.trace, published, next(k for k, h in enumerate(held) if h), max(held),
                   max_buffer, max_lag, frame, drops[0], complete)


# -- SSE beside WebSocket: set-up, bytes per event, and the way back ----------------------------


class _Cheers(BodyHandler):
    """``POST /cheers``: the site's endpoint for what a fan sends back; answers as the
    WebSocket server does, ``{"ack": k, "echo": "<the text>"}``."""

    def initialize(self, counter: list) -> None:
        self.counter = counter

    def post(self) -> None:
        self.counter.append(1)
        self.answer(200, {"ack": len(self.counter), "echo": self.text()})


@dataclass(frozen=True)
class Against:
    """What :func:`against_websocket` measured, per technique (``sse``, ``websocket``)."""

    trace: Trace = field(repr=False)
    events: int
    messages: int
    setup: dict[str, int]
    """Bytes on the wire to open the stream or socket (request and answer head)."""
    per_event: dict[str, float]
    """Bytes on the wire per event, once open."""
    back: dict[str, int]
    """Bytes on the wire for ``messages`` messages from the page and their answers."""
    back_requests: dict[str, int]
    """HTTP requests those messages took."""
    frames: dict[str, bytes]
    """One event as each technique puts it on the wire."""
    status: dict[str, int]
    """The status each opening request was answered with."""

    def table(self) -> str:
        """The numbers as a Markdown table."""
        rows = [("open (set-up bytes)", *(f"{self.setup[t]:,} B" for t in _BOTH)),
                ("answer to the opening request", *(str(self.status[t]) for t in _BOTH)),
                ("bytes per event", *(f"{self.per_event[t]:.0f} B" for t in _BOTH)),
                (f"{self.messages} messages back, and their answers",
                 *(f"{self.back[t]:,} B in {self.back_requests[t]} requests" for t in _BOTH))]
        lines = ["| | SSE (+ POST to send) | WebSocket |", "|---|---|---|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])

    def figure(self):
        """Three bar charts: set-up bytes, bytes per event, bytes of the messages back."""
        import matplotlib.pyplot as plt
        from labkit.plots import plain_log_ticks, technique_color
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
        for ax, (title, values) in zip(axes, (
                ("opening the stream / socket", self.setup),
                ("per event, once open", self.per_event),
                (f"{self.messages} messages from the page", self.back))):
            bars = ax.bar(["SSE", "WebSocket"], [values[t] for t in _BOTH],
                          color=[technique_color(t) for t in _BOTH])
            ax.bar_label(bars, fmt="{:,.0f} B")
            ax.set(title=title, ylabel="bytes on the wire")
            ax.margins(y=0.15)
        return fig


_BOTH = ("sse", "websocket")


def against_websocket(*, events: int = 20, messages: int = 20, seed: int = SEED) -> Against:
    """SSE and WebSocket side by side on one hub, every byte from the trace.

    Set-up and bytes per event come from two connections of each: an
    ``idle`` one that opens and closes with no event, and a ``fan`` that
    gets ``events`` balls; the difference is what the events cost. Then a
    ``talker`` page sends ``messages`` cheers: over its WebSocket (a frame
    each, a frame back), or, for SSE, as that many ``POST /cheers``
    requests beside its stream (on one keep-alive connection; a browser's
    would carry cookies and more headers).
    """
    hub, innings, feed, trace = Hub(), Innings(seed), Feed(seed=seed), Trace()
    counter: list = []
    servers = [serve_sse(hub, trace=trace), lab.serve(WebSocketServer(hub), trace=trace),
               lab.serve([("/cheers", _Cheers, {"counter": counter}),
                          (r".*", NotFound, {"routes": "POST /cheers"})], trace=trace)]
    sse_url, ws_url, cheers = servers[0].endpoint_url, servers[1].endpoint_url, servers[2].url
    cheer = [json.dumps({"fan": "talker", "cheer": f"what a shot! #{k}"}) for k in range(messages)]
    try:
        for name in ("idle", "fan"):
            pages = [SSEClient(sse_url, name=name, trace=trace).__enter__(),
                     WebSocketClient(ws_url, name=name, trace=trace).__enter__()]
            try:
                for _ in range(events if name == "fan" else 0):
                    hub.publish(innings.bowl(feed))
                pages[0].wait_for(events if name == "fan" else 0)
                pages[1].wait_for(events if name == "fan" else 0)
            finally:
                _stop_all(*pages)
        with WebSocketClient(ws_url, name="talker", trace=trace) as talker:
            for text in cheer:
                talker.send(text)
        with client_session("talker") as session:
            for text in cheer:
                session.post(cheers + "/cheers", data=text, timeout=5).raise_for_status()
    finally:
        _stop_all(*servers)
    example = hub.since(0, limit=1)[0]

    def total(kind: str, technique: str, client: str) -> int:
        return sum(r.bytes for r in trace.records(kind, technique, client))

    # The idle SSE answer is its head and the retry line; the idle WebSocket's, the 101.
    setup = {t: total("request", t, "idle") + total("response", t, "idle") for t in _BOTH}
    per_event = {"sse": (total("response", "sse", "fan") - total("response", "sse", "idle"))
                 / events,
                 "websocket": (total("disconnect", "websocket", "fan")
                               - total("disconnect", "websocket", "idle")) / events}
    back = {"sse": total("request", "http", "talker") + total("response", "http", "talker"),
            "websocket": total("disconnect", "websocket", "talker")
            - total("disconnect", "websocket", "idle")}
    statuses = {t: trace.records("response", t, "idle")[0].status for t in _BOTH}
    return Against(trace, events, messages, setup, per_event, back,
                   {"sse": trace.count("request", "http"), "websocket": 0},
                   {"sse": encode_item(example), "websocket": encode_frame(example)}, statuses)


# -- through a proxy that speaks plain HTTP ------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """What :func:`through_a_proxy` saw."""

    trace: Trace = field(repr=False)
    events: int
    sse_got: list[int]
    """Ids the SSE fan received through the proxy."""
    ws_failure: str | None
    """Why the WebSocket page stopped for good (None if it connected)."""
    ws_opened: int
    """WebSocket connections that opened through the proxy."""


def through_a_proxy(*, events: int = 5, seed: int = SEED) -> Proxy:
    """An SSE page and a WebSocket page, each behind an HTTP proxy that knows nothing of
    WebSocket (the kit's relay: it forwards HTTP messages and, as HTTP/1.1 says a proxy
    must, drops the headers that describe one connection, ``Connection`` and ``Upgrade``
    among them). ``events`` balls are bowled once the stream is open."""
    hub, innings, feed, trace = Hub(), Innings(seed), Feed(seed=seed), Trace()
    sse, ws = serve_sse(hub, trace=trace), lab.serve(WebSocketServer(hub), trace=trace)
    proxies = [serve_relay(sse.url, trace=trace), serve_relay(ws.url, trace=trace)]
    fan = page = None
    try:
        fan = SSEClient(proxies[0].component.public(sse.endpoint_url), name="fan",
                        trace=trace).__enter__()
        for _ in range(events):
            hub.publish(innings.bowl(feed))
        fan.wait_for(events)
        page = WebSocketClient(proxies[1].component.public(ws.endpoint_url), name="page",
                               trace=trace, reconnect=None).start()
        _until(lambda: not page.running, "the WebSocket page's end")
    finally:
        _stop_all(fan, page, *proxies, sse, ws)
    return Proxy(trace, events, _ids(fan.events), page.failure, len(page.opened))


# -- clients at scale --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """What :func:`at_scale` measured: one row (:meth:`ScaleResult.row`) per technique and
    number of clients, and one longer SSE run."""

    rows: dict[str, list[dict]]
    events: int
    longer: dict
    """SSE again, with the second number of clients and five times the events (at five times
    the rate: the same length of run)."""
    traced: int
    """The most clients a run measured memory with (``memory (bytes)`` is None above)."""

    def row(self, technique: str, clients: int) -> dict:
        """The row of ``technique`` with ``clients`` clients."""
        return next(r for r in self.rows[technique] if r["clients"] == clients)

    def figure(self):
        """Requests, bytes, open connections, server CPU, memory and p99 latency against the
        number of clients, both axes logarithmic."""
        import matplotlib.pyplot as plt
        from labkit.plots import plain_log_ticks, technique_color
        from labkit.techniques import label
        panels = (("requests", "requests", 1), ("bytes", "bytes on the wire (MB)", 1e-6),
                  ("connections", "open connections (peak)", 1),
                  ("server CPU (s)", "server CPU (ms)", 1e3),
                  ("memory (bytes)", "server memory taken (MB)", 1e-6),
                  ("p99 latency (s)", "p99 latency (ms)", 1e3))
        styles = {"sse": ("o-", 7), "websocket": ("s--", 4)}
        fig, axes = plt.subplots(2, 3, figsize=(13, 7), layout="constrained")
        for ax, (key, title, scale) in zip(axes.flat, panels):
            for technique, rows in self.rows.items():
                style, size = styles[technique]
                ax.plot([r["clients"] for r in rows],
                        [math.nan if r[key] is None else r[key] * scale for r in rows],
                        style, markersize=size, color=technique_color(technique),
                        label=label(technique))
            ax.set(xscale="log", yscale="log", title=title, xlabel="clients")
            plain_log_ticks(ax.xaxis)
            plain_log_ticks(ax.yaxis, subs=(1, 2, 5))
            ax.grid(alpha=0.3)
        axes.flat[0].legend()
        fig.suptitle(f"{self.events} events to every client; the clients run in a separate "
                     f"process")
        return fig


def at_scale(*, clients: tuple[int, ...] = (1, 10, 100, 1000), events: int = 10,
             rate: float = 100.0, traced: int = 100, seed: int = SEED) -> Scale:
    """:func:`labkit.push.scale.scaling` for SSE and WebSocket: each number of clients in a
    separate load process (``load="process"``), so the server's CPU is its own. Then SSE
    once more with the second number of clients (10) and five times the events, at five
    times the rate.

    Server memory is measured in the runs of up to ``traced`` clients: ``tracemalloc``
    traces every allocation, which makes connecting 1,000 clients take over twice as long, and
    an idle connection holds as much with 100 clients as with 1,000.
    """
    rows: dict[str, list[dict]] = {"sse": [], "websocket": []}
    options = {"seed": seed, "load": "process"}
    with Progress(2 * len(clients) + 1, "SSE and WebSocket, 1 to 1,000 clients") as bar:
        for technique, done in rows.items():
            for count in clients:
                done.extend(scaling(technique, clients=(count,), events=events, rate=rate,
                                    memory=count <= traced, **options))
                bar.advance()
        [longer] = scaling("sse", clients=clients[1:2] or clients[:1], events=5 * events,
                           rate=5 * rate, memory=False, **options)
        bar.advance()
    return Scale(rows, events, longer, traced)


# -- the notes' pros and cons ---------------------------------------------------------------------


def pros_and_cons(live: LiveScore, restart: Restart, against: Against, proxy: Proxy) -> str:
    """The lecture notes' pros and cons of SSE, each with this run's number (Markdown)."""
    sse_back, ws_back = against.back["sse"], against.back["websocket"]
    rows = [
        ("pro: real one-way push, server to client",
         f"{live.balls} balls reached {live.fans} fans, median **{live.latency[50] * 1e3:.1f} "
         f"ms** after they were bowled, over **{live.requests} requests** in all (one per fan)",
         "true"),
        ("pro: works over HTTP (firewall friendly)",
         f"the stream is a plain GET answered **{against.status['sse']}** "
         f"(a WebSocket opens with **{against.status['websocket']}** and an upgrade); an "
         f"HTTP-only proxy carried all **{len(proxy.sse_got)}** events and refused the "
         f"WebSocket", "true"),
        ("pro: lightweight compared to WebSockets",
         f"opening: SSE **{against.setup['sse']} B**, WebSocket "
         f"**{against.setup['websocket']} B**; per event: SSE "
         f"**{against.per_event['sse']:.0f} B**, WebSocket "
         f"**{against.per_event['websocket']:.0f} B**", "partly: a few bytes either way; "
         "what is lighter is the work: resume and reconnection come with it"),
        ("con: only server to client",
         f"{against.messages} messages back: **{against.back_requests['sse']} POSTs, "
         f"{sse_back:,} B** beside the stream; over the WebSocket **{ws_back:,} B**, no "
         f"request", "true, and sending back costs "
         f"{sse_back / ws_back:.1f} times the bytes"),
        ("(not in the notes) resumes by itself",
         f"after a restart the fan got all **{len(restart.received['fan'])}** balls once, "
         f"in order; a browser's WebSocket got **{len(restart.received['browser'])}**",
         "SSE's advantage over WebSocket"),
        ("con: not supported in some old browsers",
         "nothing to measure here: every current browser has EventSource; Internet Explorer "
         "never did", "true of IE and old Edge only"),
    ]
    lines = ["| the notes say | this run measured | verdict |", "|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
