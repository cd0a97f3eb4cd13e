"""Server-Sent Events: one long HTTP response that the server keeps writing events into.

The client asks once (``GET /events``, ``Accept: text/event-stream``); the
server answers ``200`` and never finishes: each new event is a few more lines
of the body (the format is in :mod:`labkit.push.sse_protocol`). When the
connection drops, the client waits the ``retry`` time the server asked for,
asks again, and sends the id of the last event it got as ``Last-Event-ID``;
the server sends what it missed, then carries on. That is the whole
technique: HTTP, one direction, reconnection built in.

:class:`SSEStream` serves a :class:`~labkit.hub.Hub` (technique ``sse``):

==============================  =================================================================
request                         answer
==============================  =================================================================
``GET /events``                 200 ``text/event-stream``, ``Cache-Control: no-cache``: first a
                                ``retry:`` line, then every hub item published from now on, one
                                event each (``id:`` the item's id; a feed Event gets ``event:``
                                its type and ``data:`` its JSON, any other data its text or JSON)
``GET /events`` with            the same, but first the items after that id still in the hub's
``Last-Event-ID: 41``           history; if some already left it, first a ``gap`` event
``Last-Event-ID: soon``         400 with the reason: not an id of this hub (garbage, negative, or
                                larger than the last id: an id from another run of the server)
the hub is closed               204: the spec's way to tell a client "do not reconnect"
``POST``, ``PUT`` ...           405 (``Allow: GET``), the body left unread, connection closed
``GET`` with a body             400, the body left unread, connection closed
any other path                  404 naming the route
==============================  =================================================================

The ``gap`` event, sent when a resuming client asks for events that the hub
no longer keeps (ids ``from`` to ``to`` are lost for good)::

    event: gap
    id: 57                                         <- "to": resuming goes on after the gap
    data: {"missed": 16, "from": 42, "to": 57}

When no event has been published for ``heartbeat`` seconds, every stream
gets a ``: heartbeat`` comment, so proxies and clients can tell it is still
alive.

**How the server writes.** One task serves all the streams of an
:class:`SSEStream`: it waits on the hub (one waiter, however many clients)
and, for each publish, encodes the new events once (``item.cache["sse"]``),
frames them once as an HTTP/1.1 chunk, and hands those very bytes to every
stream, which sends them on its socket there and then (one ``send`` call).
No coroutine per client wakes up and nothing is copied per client, so a
delivery costs little more than the system call: about a third of the
server CPU of a plain tornado handler that writes and flushes per client
(``bench/sse_fanout.py``, ``docs/benchmarks.md``). The wire layer still
counts every byte: a stream adds what it sends itself to its response's
count. Requests skip tornado's ``RequestHandler``, as the webhook receiver
does: each goes straight to a small per-stream object, which keeps an idle
stream at about 10 KB of server memory.

**Slow clients.** A client that stops reading must not make the server hoard
memory on its behalf. The server writes to each client at most
``max_buffer`` bytes at a time (64 KiB; one item larger than that goes out
alone) and waits until those bytes have left for the network before writing
more; meanwhile new events simply wait in the hub, shared by everyone. So
what the server holds for one client is never more than one write. If
``max_lag`` further events (100) are published while a write to a client
is still waiting to leave, that client is not keeping up: its stream is
closed, with a ``drop`` record that names it and says why. It can come back
with ``Last-Event-ID`` and gets what it missed from the history (all of it
if ``max_lag`` is smaller than the hub's ``history``).

Records: ``connect`` when a stream opens and ``disconnect`` when it ends
(``detail``: the client left, the server stopped, the hub closed, ended by
:meth:`SSEStream.end`, or dropped), ``drop`` for a slow client. The wire
layer records the request and the response (``events`` = items written).
The server does not record ``event``: :class:`SSEClient` does, when a feed
event reaches it, so latency runs from publish to receipt.

:class:`SSEClient` behaves like a browser's ``EventSource``: it sends
``Accept: text/event-stream`` (and ``Last-Event-ID`` once it has one),
reconnects after the reconnection time (3 s, until the server's ``retry:``
says otherwise) whenever the stream ends or cannot connect, and stops for
good ("fails the connection") on a status other than 200 (204 included;
redirects are not followed) or a ``Content-Type`` other than
``text/event-stream``.

Example::

    from labkit.feed import Feed
    from labkit.hub import Hub

    hub = Hub(history=1000)
    with serve_sse(hub, retry=1000) as server, \\
            SSEClient(server.endpoint_url, trace=server.trace) as client:
        feed = Feed(seed=1)
        for _ in range(3):
            hub.publish(feed.make("tick"))
        print([m.last_event_id for m in client.wait_for(3)])     # ['1', '2', '3']

Stopping the server ends every stream cleanly (the client will try to
reconnect) but does not close the hub, which may feed other servers too:
serve the same stream again on the same port and clients resume where they
were, events published meanwhile included.

Thread-safety: the servers and clients live on the lab loop. From a cell or
a script: :func:`serve_sse`, :meth:`SSEStream.end`,
:meth:`SSEStream.open_streams`, :meth:`SSEClient.start`,
:meth:`SSEClient.stop`, :meth:`SSEClient.wait_for` and the client's
``events`` are safe; publish with ``hub.publish`` from anywhere.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import tornado.tcpclient
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError

from labkit import lab
from labkit.endpoints import NotFound, write_answer
from labkit.errors import CursorError, HubClosedError, LabkitError, RejectedError
from labkit.feed import Event
from labkit.hub import Hub, Item
from labkit.push.clients import LoopClient
from labkit.push.sse_protocol import (MIME_TYPE, EventStreamError, EventStreamParser,
                                      MessageEvent, comment, format_event, is_event_stream)
from labkit.trace import Trace
from labkit.wire import CLIENT_HEADER, LEFT_EARLY, annotate, client_of, count_sent

__all__ = ["SSEStream", "SSEClient", "OpenStream", "serve_sse", "encode_item"]

HEARTBEAT = comment("heartbeat")
CONNECT_TIMEOUT = 5.0
"""Seconds the client waits for a TCP connection before counting the attempt as failed."""


def encode_item(item: Item) -> bytes:
    """The event frame of a hub item, encoded once and kept in ``item.cache["sse"]``.

    A feed :class:`~labkit.feed.Event` is written with its type as the event
    type and its JSON as data; a string as it is; anything else as JSON
    (values JSON cannot hold are written with ``str``). An item that cannot
    be framed at all (a feed event whose type holds a line break) becomes a
    ``gap`` of one, so clients move past it.
    """
    frame = item.cache.get("sse")
    if frame is None:
        data = item.data
        if isinstance(data, Event):
            text, kind = data.to_json(), data.type
        elif isinstance(data, str):
            text, kind = data.encode("utf-8", "replace").decode("utf-8"), None
        else:
            text, kind = json.dumps(data, default=str), None
        try:
            frame = format_event(text, event=kind, id=item.id)
        except EventStreamError:
            frame = _gap(item.id - 1, 1)
        item.cache["sse"] = frame
    return frame


def _gap(cursor: int, missed: int) -> bytes:
    """The ``gap`` event: ids ``cursor + 1`` to ``cursor + missed`` are lost."""
    last = cursor + missed
    return format_event(json.dumps({"missed": missed, "from": cursor + 1, "to": last}),
                        event="gap", id=last)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class OpenStream(NamedTuple):
    """One stream being served, as :meth:`SSEStream.open_streams` reports it."""

    client: str
    opened: float
    """When it opened (``time.monotonic()``)."""
    written_id: int
    """Id of the last item written to it."""
    sent_id: int
    """Id of the last item whose bytes have all left the server."""
    waiting_bytes: int
    """Bytes written to it that have not left the server yet (at most one write)."""


class SSEStream(httputil.HTTPServerConnectionDelegate):
    """Serves ``hub`` as an event stream at ``GET path``; see the module docstring.

    ``hub``: what to stream (a new :class:`~labkit.hub.Hub` if not given).
    ``retry``: the reconnection time sent to clients, in milliseconds.
    ``heartbeat``: seconds without a new event after which a comment is sent.
    ``max_buffer``: most bytes written to one client before waiting for
    them to leave. ``max_lag``: how many events may be published while a
    write to a client is still waiting, before that client is dropped.

    A bare tornado connection delegate (like the webhook receiver): each
    request goes straight to a :class:`_Stream`, without a ``RequestHandler``.
    """

    technique = "sse"

    def __init__(self, hub: Hub | None = None, *, path: str = "/events", retry: int = 3000,
                 heartbeat: float = 15.0, max_buffer: int = 64 * 1024, max_lag: int = 100,
                 trace: Trace | None = None):
        if not isinstance(path, str) or not path.startswith("/"):
            raise EventStreamError(f"path must start with '/', got {path!r}")
        if not (isinstance(heartbeat, (int, float)) and math.isfinite(heartbeat)
                and heartbeat > 0):
            raise EventStreamError(f"heartbeat is a number of seconds > 0, got {heartbeat!r}")
        for name, value in (("max_buffer", max_buffer), ("max_lag", max_lag)):
            if not _whole(value) or value < 1:
                raise EventStreamError(f"{name} is a whole number >= 1, got {value!r}")
        self.hub = hub if hub is not None else Hub(name="sse")
        self.path = path
        self.retry = retry
        self.heartbeat = float(heartbeat)
        self.max_buffer = max_buffer
        self.max_lag = max_lag
        self.trace = trace
        self.opening = format_event(None, retry=retry)
        """The first bytes of every stream: the ``retry:`` line."""
        self._open: set[_Stream] = set()
        self._cursor = 0
        """Id of the last item the fan-out has handed to the streams."""
        self._fan_out_task: asyncio.Task | None = None

    def rules(self) -> list:
        """Tornado URL rules mounting the stream at ``path`` (404 elsewhere)."""
        return [(self.path, self), (r".*", NotFound, {"routes": f"GET {self.path}"})]

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        """Tornado hands each request to a new :class:`_Stream`."""
        return _Stream(self, request_conn)

    def open_streams(self) -> list[OpenStream]:
        """A snapshot of the streams being served now."""
        return [OpenStream(s.client, s.opened, s.written_id, s.sent_id, s.waiting_bytes)
                for s in list(self._open)]

    def end(self, client: str | None = None) -> int:
        """End the open streams (only ``client``'s, if given) as a network drop would.

        Their clients reconnect after the ``retry`` time and resume with
        ``Last-Event-ID``. Returns how many streams were ended.
        """
        if not lab.in_lab_thread():
            return lab.run(lambda: self.end(client))
        ended = [s for s in list(self._open) if client is None or s.client == client]
        for stream in ended:
            stream.end("ended by the server")
        return len(ended)

    async def aclose(self) -> None:
        """End every open stream cleanly (the server awaits it on stop).

        Each response is finished, so the client sees the stream end and will
        reconnect. The hub is left open: it may feed other servers, and a
        stream served again resumes from it.
        """
        for stream in list(self._open):
            stream.end("the server stopped")

    # -- the fan-out, on the lab loop ---------------------------------------------------

    def _join(self, stream: _Stream) -> None:
        """Add a stream; the first one starts the fan-out."""
        self._open.add(stream)
        if self._fan_out_task is None or self._fan_out_task.done():
            self._cursor = self.hub.last_id
            self._fan_out_task = asyncio.ensure_future(self._fan_out())

    def _leave(self, stream: _Stream) -> None:
        """Remove a stream; after the last one the fan-out stops waiting on the hub."""
        self._open.discard(stream)
        if not self._open and self._fan_out_task is not None:
            self._fan_out_task.cancel()
            self._fan_out_task = None

    async def _fan_out(self) -> None:
        """One task for all streams: wait for news, hand it to every stream."""
        try:
            while True:
                items = await self.hub.wait(self._cursor, self.heartbeat)
                if items:
                    self._deliver(items)
                else:
                    for stream in list(self._open):
                        if stream.pending is None:
                            stream.send(HEARTBEAT, framed=_HEARTBEAT_CHUNK)
        except HubClosedError:
            for stream in list(self._open):
                stream.end("the hub closed")

    def _deliver(self, items: list[Item]) -> None:
        """Hand ``items`` (the news after ``_cursor``) to the streams, ``max_buffer`` at a time.

        The frames are joined and framed as an HTTP chunk once, and the very
        same bytes go to every stream that had everything up to ``_cursor``
        and has no write waiting. A stream whose write is still waiting is
        checked for lag (and catches up from the hub once that write has
        left); a stream that is behind for another reason catches up now.
        """
        cursor, missed = self._cursor, self.hub.missed(self._cursor)
        while items:
            frames = [_gap(cursor, missed)] if missed else []
            count = _fit(items, frames, self.max_buffer)
            missed, last = 0, items[count - 1].id
            chunk = b"".join(frames)
            framed = _chunked(chunk)
            self._cursor = last
            for stream in list(self._open):
                if stream.pending is not None:
                    stream.check_lag(last)
                elif stream.written_id == cursor:
                    stream.send(chunk, last, count, framed)
                elif stream.written_id < last:
                    stream.catch_up()
            cursor, items = last, items[count:]

    def _record(self, kind: str, client: str, **fields: Any) -> None:
        if self.trace is not None:
            self.trace.add(kind, technique=self.technique, client=client, **fields)

    def __repr__(self) -> str:
        return f"<SSEStream GET {self.path} of {self.hub!r}, {len(self._open)} open>"


def _fit(items: list[Item], frames: list[bytes], limit: int) -> int:
    """Append to ``frames`` the frames of the first ``items`` that fit in ``limit`` bytes
    (at least one); return how many items that is."""
    size = sum(len(frame) for frame in frames)
    count = 0
    for item in items:
        frame = encode_item(item)
        if count and size + len(frame) > limit:
            break
        frames.append(frame)
        size += len(frame)
        count += 1
    return count


def _chunked(data: bytes) -> bytes:
    """``data`` as one chunk of HTTP/1.1 chunked transfer coding (RFC 9112, 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


_HEARTBEAT_CHUNK = _chunked(HEARTBEAT)
_OK = httputil.ResponseStartLine("HTTP/1.1", 200, "OK")
"""The status line of every stream (tornado keeps it per connection: one object for all)."""


class _Request(NamedTuple):
    """What :func:`~labkit.wire.annotate` and :func:`~labkit.wire.client_of` read."""

    connection: httputil.HTTPConnection
    remote_ip: str


class _Stream(httputil.HTTPMessageDelegate):
    """One request to the stream: refused, or answered with a stream that stays open.

    Writing: after the headers, the stream writes to its socket itself (one
    ``send`` of bytes shared by every stream); tornado's ``IOStream`` only
    takes what the socket could not take at once, and nothing else is written
    until that has left (``pending``), so the two never interleave. The wire
    layer counts what passes through the connection; the bytes sent directly
    the stream reports with :func:`~labkit.wire.count_sent`, so the trace
    stays byte-exact.
    """

    def __init__(self, owner: SSEStream, connection: httputil.HTTPConnection):
        self.owner = owner
        self.connection = connection
        self.request = _Request(connection, getattr(connection.context, "remote_ip", ""))
        self.asked: tuple[httputil.RequestStartLine, httputil.HTTPHeaders] | None = None
        self.answered = False
        self.client = ""
        self.opened = 0.0
        self.written_id = self.sent_id = 0
        self.waiting_bytes = 0
        self.waiting_since = 0
        """``hub.last_id`` when the write now waiting was made."""
        self.events = 0
        self.ending: str | None = None
        self.pending: asyncio.Future | None = None
        """The write still waiting to leave, if any (at most one at a time)."""

    # -- the request -------------------------------------------------------------------

    def headers_received(self, start_line: httputil.RequestStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        """Refuse at once what cannot open a stream (a body is never read)."""
        self.asked = (start_line, headers)
        path = start_line.path.partition("?")[0]
        with_body = headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers
        if path != self.owner.path:
            self.refuse(RejectedError("no_route", f"no endpoint {start_line.method} {path}: "
                                      f"this server answers GET {self.owner.path}",
                                      status=404), close=with_body)
        elif start_line.method != "GET":
            self.refuse(RejectedError("method", f"{start_line.method} is not allowed on "
                                      f"{path}: an event stream is opened with GET",
                                      status=405), {"Allow": "GET"}, close=True)
        elif with_body:
            self.refuse(RejectedError("body", f"GET {path} takes no request body: send the "
                                      f"last id seen as a Last-Event-ID header", status=400),
                        close=True)

    def data_received(self, chunk: bytes) -> None:
        """Only a refused request has a body, and it is not kept."""

    def finish(self) -> None:
        """The request is complete: open the stream (or refuse a bad ``Last-Event-ID``)."""
        if self.answered:
            return
        owner, hub = self.owner, self.owner.hub
        start_line, headers = self.asked
        raw = headers.get("Last-Event-ID")
        try:
            cursor = hub.cursor(raw)
        except CursorError as exc:
            return self.refuse(exc)
        if hub.closed:
            annotate(self, events=0, detail="the hub is closed: 204 asks the client to stay away")
            return self.answer(204, {})
        self.answered = True
        self.client = client_of(self)
        self.opened = time.monotonic()
        self.written_id = self.sent_id = cursor
        start = f"resuming after id {cursor}" if raw else f"from now (after id {cursor})"
        owner._record("connect", self.client, detail=start)
        connection = self.connection
        self.iostream = connection.stream
        self.socket = self.iostream.socket
        self.chunked = start_line.version == "HTTP/1.1"  # tornado's rule for this answer
        connection.set_close_callback(self.connection_closed)
        # Start once tornado watches the connection for a close (right after this
        # returns): a client that goes before the first byte then ends like any other.
        asyncio.get_running_loop().call_soon(self.start)

    def start(self) -> None:
        """Join the fan-out and write the headers and the ``retry:`` line."""
        if self.ending is not None:
            return
        if self.iostream.closed():  # gone while its request was read: tornado did not watch
            annotate(self, events=0, detail=LEFT_EARLY)
            self.connection.finish()  # so the wire layer records the answer that never left
            return self.end("the client left", finish=False)
        owner = self.owner
        self.iostream.set_nodelay(True)  # an event goes out at once, not after the last ACK
        owner._join(self)
        head = httputil.HTTPHeaders({"Date": httputil.format_timestamp(time.time()),
                                     "Content-Type": MIME_TYPE, "Cache-Control": "no-cache"})
        self._wait_for(self.connection.write_headers(_OK, head, owner.opening),
                       len(owner.opening))

    def refuse(self, error: RejectedError, headers: dict | None = None, *,
               close: bool = False) -> None:
        """Answer ``error`` as every labkit endpoint does: ``{"error", "reason"}`` JSON, the
        reason on the trace record; ``close`` when a request body is left unread."""
        annotate(self, events=0, detail=f"{error.reason}: {error}")
        headers = {**(headers or {}), "Content-Type": "application/json"}
        if close:
            headers["Connection"] = "close"
        self.answer(error.status, headers,
                    json.dumps({"error": str(error), "reason": error.reason}))

    def answer(self, status: int, headers: dict, text: str = "") -> None:
        """Write a whole short answer, once (204: no body and no ``Content-Length``;
        the answer to a ``HEAD``: no body)."""
        if self.answered:
            return
        self.answered = True
        if status != 204:
            method = self.asked[0].method if self.asked is not None else "GET"
            return write_answer(self.connection, status, headers, text, method=method)
        self.connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 204, "No Content"),
            httputil.HTTPHeaders({"Date": httputil.format_timestamp(time.time()), **headers}))
        self.connection.finish()

    def on_connection_close(self) -> None:
        """The client left before its request was complete: no stream was opened."""
        self.answered = True

    # -- the stream's end ----------------------------------------------------------------

    def connection_closed(self) -> None:
        """The connection closed under the open stream."""
        self.end("the client left", finish=False)

    def end(self, why: str, *, finish: bool = True) -> None:
        """End the stream (the first reason is the one recorded); ``finish`` the response
        so the client sees a clean end and reconnects."""
        if self.ending is not None:
            return
        self.ending = why
        self.owner._leave(self)
        self.owner._record("disconnect", self.client, events=self.events,
                           duration=time.monotonic() - self.opened, detail=why)
        if finish and not self.iostream.closed():
            self.connection.finish()

    # -- writing: by the fan-out, or after a waiting write has left ----------------------

    def send(self, chunk: bytes, last: int | None = None, count: int = 0,
             framed: bytes | None = None) -> None:
        """Write ``chunk``: frames up to id ``last`` (``count`` events), or a heartbeat.

        ``framed``: ``chunk`` already framed as an HTTP chunk, made once by the fan-out
        for every stream.
        """
        if last is not None:
            self.written_id = last
            self.events += count
            annotate(self, events=self.events)
        data = (framed or _chunked(chunk)) if self.chunked else chunk
        count_sent(self.connection, len(data))
        try:
            sent = self.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # reset, or already closed: tornado ends the stream
            return self.iostream.close(exc_info=exc)
        if sent == len(data):
            self._sent()
        else:  # the socket's buffer is full: tornado sends the rest when it can
            self._wait_for(self.iostream.write(memoryview(data)[sent:]), len(data) - sent)

    def _sent(self) -> None:
        """Everything written has left; catch up (soon) if the fan-out went further."""
        self.sent_id = self.written_id
        if self.written_id < self.owner._cursor:
            asyncio.get_running_loop().call_soon(self.catch_up)

    def _wait_for(self, written: asyncio.Future, size: int) -> None:
        """Write nothing more to this stream until ``written`` is done."""
        if written.done():
            return self._sent()
        self.pending, self.waiting_bytes = written, size
        self.waiting_since = self.owner.hub.last_id
        written.add_done_callback(self._left)

    def _left(self, written: asyncio.Future) -> None:
        """The waiting write has left (or the connection closed): carry on."""
        self.pending, self.waiting_bytes = None, 0
        if self.ending is None and not self.iostream.closed():
            self._sent()

    def catch_up(self) -> None:
        """Write from the hub's history what this stream lacks, up to the fan-out's cursor,
        at most ``max_buffer`` bytes at a time."""
        owner = self.owner
        target = owner._cursor
        if self.ending is not None or self.pending is not None or self.written_id >= target:
            return
        missed = owner.hub.missed(self.written_id)
        frames = [_gap(self.written_id, missed)] if missed else []
        after = self.written_id + missed
        items = owner.hub.since(after, limit=max(0, target - after))
        count = _fit(items, frames, owner.max_buffer) if items else 0
        self.send(b"".join(frames), items[count - 1].id if count else after, count)

    def check_lag(self, last: int) -> None:
        """Drop the client if ``max_lag`` events came while its write waited to leave."""
        published = last - self.waiting_since
        if published > self.owner.max_lag:
            self._drop(published)

    def _drop(self, published: int) -> None:
        """Close the stream of a client that does not read (see the module docstring)."""
        self.owner._record(
            "drop", self.client,
            detail=f"not reading: {published} events were published while {self.waiting_bytes} "
                   f"bytes waited to leave the server (limit {self.owner.max_lag} events); "
                   f"stream closed after id {self.sent_id} left; the client may resume "
                   f"with Last-Event-ID")
        self.end("dropped: not reading", finish=False)
        self.iostream.close()  # frees what tornado buffered for it


def serve_sse(stream: SSEStream | Hub | None = None, *, trace: Trace | None = None,
              port: int = 0, **options: Any) -> lab.Server:
    """Serve ``stream`` (or a new :class:`SSEStream` of the hub given, made with ``options``).

    One line over :func:`labkit.lab.serve`: ``server.component`` is the
    stream and ``server.endpoint_url`` the URL to give an :class:`SSEClient`.
    """
    return lab.serve(lab.component(SSEStream, stream, options), trace=trace, port=port)


# -- the client ----------------------------------------------------------------------

_PARAMS = HTTP1ConnectionParameters(no_keep_alive=True, max_body_size=2 ** 62)
"""A stream is one endless body: no limit on its size (the parser keeps only one event)."""


class SSEClient(LoopClient):
    """An ``EventSource`` on the lab loop: connect, read events, reconnect, resume.

    ``url``: the stream's URL (``server.endpoint_url``). ``name`` names the
    client in the trace (sent as ``X-Labkit-Client``). ``trace``: where to
    record each feed event received, with its latency. ``reconnection_time``:
    seconds to wait before reconnecting, until the server sends ``retry:``.
    ``last_event_id``: start as if that id had been received (sent on the
    first connection too).

    What it saw: ``events`` (every :class:`MessageEvent`, ``gap`` ones
    included), ``opened`` (when each stream opened), ``ended`` (why each
    connection ended or could not be made) and ``failure`` (why it stopped
    for good, or None).
    """

    def __init__(self, url: str, *, name: str = "sse-client", trace: Trace | None = None,
                 technique: str = "sse", reconnection_time: float = 3.0,
                 last_event_id: str = ""):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise EventStreamError(f"an SSE client needs an http:// URL, got {url!r}")
        if not (isinstance(reconnection_time, (int, float)) and
                math.isfinite(reconnection_time) and reconnection_time >= 0):
            raise EventStreamError(f"reconnection_time is a number of seconds >= 0, "
                                   f"got {reconnection_time!r}")
        super().__init__(url, name=name, trace=trace)
        self.technique = technique
        self.reconnection_time = float(reconnection_time)
        """Seconds before a reconnection; the server's ``retry:`` (ms) replaces it."""
        self._host, self._port = parts.hostname, parts.port or 80
        self._netloc = parts.netloc
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._parser = EventStreamParser(last_event_id)
        self._events: list[MessageEvent] = []
        self.opened: list[float] = []
        """When each stream opened (``time.monotonic()``, a 200 with the right type)."""
        self.ended: list[str] = []
        """Why each connection ended, or could not be made, in order."""
        self._stream: IOStream | None = None

    @property
    def last_event_id(self) -> str:
        """The id it would send as ``Last-Event-ID`` now ("" before any)."""
        return self._parser.last_event_id

    @property
    def events(self) -> list[MessageEvent]:
        """A snapshot of every event received, oldest first."""
        with self._changed:
            return list(self._events)

    @property
    def ready(self) -> bool:
        """True once a stream is open (events published from then on reach it)."""
        return bool(self.opened)

    def wait_open(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until ``count`` streams have opened in all (1: it is listening now).

        Events published before a stream opens are not sent on it (unless the
        client resumes with ``Last-Event-ID``), so wait for this first. Raises
        like :meth:`wait_for`.
        """
        def explain() -> str:
            last = f"; last ended: {self.ended[-1]}" if self.ended else ""
            return (f"only {len(self.opened)} of {count} streams opened at {self.url} "
                    f"within {timeout} s{last}")

        lab.wait_until(self._changed, lambda: len(self.opened) >= count or
                       self.failure is not None, timeout, explain)
        if len(self.opened) < count:
            raise LabkitError(f"SSE client {self.name!r} stopped for good: {self.failure}")

    def wait_for(self, count: int, timeout: float = 5.0) -> list[MessageEvent]:
        """Block until ``count`` events have arrived; return them all.

        Raises :class:`~labkit.errors.WaitTimeout` after ``timeout`` seconds,
        or at once a :class:`~labkit.errors.LabkitError` if the client
        stopped for good, saying what happened.
        """
        def explain() -> str:
            last = f"; last ended: {self.ended[-1]}" if self.ended else ""
            return (f"only {len(self._events)} of {count} events arrived from {self.url} "
                    f"within {timeout} s over {len(self.opened)} streams{last}")

        lab.wait_until(self._changed, lambda: len(self._events) >= count or
                       self.failure is not None, timeout, explain)
        with self._changed:
            if len(self._events) < count:
                raise LabkitError(f"SSE client {self.name!r} got {len(self._events)} of "
                                  f"{count} events and stopped for good: {self.failure}")
            return list(self._events)

    # -- on the lab loop -------------------------------------------------------------

    async def _run(self) -> None:
        tcp = lab.tcp_client()
        try:
            while True:
                why = await self._connect(tcp)
                with self._changed:
                    self.ended.append(why)
                    self._changed.notify_all()
                if self._stopping.is_set() or self.failure is not None:
                    return
                if self._parser.retry is not None:
                    self.reconnection_time = self._parser.retry / 1000
                resume = f" with Last-Event-ID {self.last_event_id}" if self.last_event_id else ""
                if self.trace is not None:
                    self.trace.add("retry", technique=self.technique, client=self.name,
                                   detail=f"{why}: reconnecting in "
                                          f"{self.reconnection_time:g} s{resume}")
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.reconnection_time)
                    return
                except asyncio.TimeoutError:
                    pass
        finally:
            tcp.close()

    async def _connect(self, tcp: tornado.tcpclient.TCPClient) -> str:
        """One connection: request, read until it ends; returns why it ended."""
        try:
            stream = await asyncio.wait_for(tcp.connect(self._host, self._port),
                                            CONNECT_TIMEOUT)
        except (OSError, StreamClosedError, asyncio.TimeoutError) as exc:
            return f"could not connect: {exc or type(exc).__name__}"
        if self._stopping.is_set():
            stream.close()
            return "stopped"
        self._stream = stream
        headers = httputil.HTTPHeaders({"Host": self._netloc, "Accept": MIME_TYPE,
                                        "Cache-Control": "no-cache", CLIENT_HEADER: self.name})
        if self.last_event_id:
            # The spec sends it as UTF-8; tornado writes header text as Latin-1.
            headers["Last-Event-ID"] = self.last_event_id.encode().decode("latin-1")
        reader = _Reader(self)
        connection = HTTP1Connection(stream, True, _PARAMS)
        try:
            connection.write_headers(
                httputil.RequestStartLine("GET", self._target, "HTTP/1.1"), headers)
            connection.finish()
            await connection.read_response(reader)
        except (StreamClosedError, OSError):
            pass
        finally:
            stream.close()
            self._stream = None
            self._parser.close()  # an event without its blank line is dropped
        return "stopped" if self._stopping.is_set() else reader.ended

    def _opened_stream(self) -> None:
        with self._changed:
            self.opened.append(time.monotonic())
            self._changed.notify_all()

    def _interrupt(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def _receive(self, chunk: bytes) -> None:
        for message in self._parser.feed(chunk):
            with self._changed:
                self._events.append(message)
                self._changed.notify_all()
            event = _feed_event(message.data) if self.trace is not None else None
            if event is not None:
                self.trace.delivered(event, technique=self.technique, client=self.name,
                                     bytes=len(message.data.encode()),
                                     detail=f"id {message.last_event_id}")

    def __enter__(self) -> SSEClient:
        """Start, and wait until the first stream is open (stopping again if it does not)."""
        if not self.running:
            self.start()
        try:
            self.wait_open()
        except BaseException:
            self.stop()
            raise
        return self

    def _tally(self) -> str:
        return f"{len(self._events)} events"


def _feed_event(data: str) -> Event | None:
    """The feed event a message's data carries (its JSON), or None if it is not one."""
    try:
        return Event.from_dict(json.loads(data))
    except ValueError:  # not JSON, or JSON but not an event (FeedError is a ValueError)
        return None


class _Reader(httputil.HTTPMessageDelegate):
    """Reads one response for an :class:`SSEClient`: checks it, then feeds its parser."""

    def __init__(self, client: SSEClient):
        self.client = client
        self.ended = "the connection closed before an answer"

    def headers_received(self, start_line: httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        client, code = self.client, start_line.code
        content_type = headers.get("Content-Type")
        if code == 204:
            why = "the server answered 204 No Content: it asks the client not to reconnect"
        elif code != 200:
            why = f"the server answered {code} {start_line.reason}, not 200"
        elif not is_event_stream(content_type):
            why = f"the server answered Content-Type {content_type!r}, not {MIME_TYPE}"
        else:
            self.ended = "the connection was cut"
            return client._opened_stream()
        self.ended = why
        client._fail(why)  # the spec's "fail the connection": no reconnection
        client._stream.close()

    def data_received(self, chunk: bytes) -> None:
        if self.client.failure is None:
            self.client._receive(chunk)

    def finish(self) -> None:
        if self.client.failure is None:
            self.ended = "the server ended the stream"

    def on_connection_close(self) -> None:
        """The connection closed mid-answer (``ended`` already says so)."""
