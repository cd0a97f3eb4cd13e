"""Counting what crosses the wire, for every request a lab server handles.

Tornado hands each incoming request to an :class:`HTTPServerConnectionDelegate`
(the Application). :class:`TracingDelegate` sits in front of it and wraps the
two objects every request passes through:

* the *message delegate*, which sees the request line, headers and body
  arrive, so it can count the request's bytes and note when it arrived;
* the *connection*, which the handler writes its status line, headers and
  body into, so it can count the response's bytes and note when it finished.

When the response is finished, one ``request`` and one ``response`` record go
into the trace. A client that leaves first still gets its ``response``
record, with no status (or the status of a stream that was cut) and a detail
that says so; the wire layer never writes ``connect`` or ``disconnect``.
Nothing here depends on which handler runs, so every technique gets the same
counting for free, streams (SSE) included.

Byte counts are the HTTP/1.1 message as framed on the wire: start line,
headers, blank line, body, plus chunked-encoding framing when the response
has no ``Content-Length``. TCP/IP headers are not counted.

A handler can tell the trace how many new events a response carried (so that
wasted polls can be counted) and why it refused a request, with
:func:`annotate`.
"""

from __future__ import annotations

import time
from typing import Any

from tornado import httputil

from labkit.trace import Trace

__all__ = ["TracingDelegate", "annotate", "count_sent", "client_of", "CLIENT_HEADER", "LEFT_EARLY",
           "STREAM_CUT"]

CLIENT_HEADER = "X-Labkit-Client"
"""Request header a simulated client may set to name itself in the trace."""

LEFT_EARLY = "the client left before the answer"
"""Detail of a ``response`` record with no status: the connection closed first."""
STREAM_CUT = "the connection closed before the answer finished"
"""Detail of a ``response`` record whose streamed answer was cut off."""


def annotate(handler, *, events: int | None = None, detail: str | None = None) -> None:
    """Attach facts about the current response to its trace record.

    ``events``: how many new events the response carried (0 = a wasted request).
    ``detail``: free text, e.g. why a webhook was rejected.
    Does nothing for handlers that are not served through a lab server.
    """
    connection = getattr(handler.request, "connection", None)
    if isinstance(connection, _CountingConnection):
        if events is not None:
            connection.events = events
        if detail is not None:
            connection.detail = detail


def count_sent(handler, size: int) -> None:
    """Count ``size`` response bytes a technique wrote to the socket itself.

    A stream that fans one frame out to a thousand sockets writes past
    tornado's HTTP writer (where this layer counts) for speed; it reports
    what it wrote here, so the response record still holds every byte.
    """
    connection = getattr(getattr(handler, "request", handler), "connection", handler)
    if isinstance(connection, _CountingConnection):
        connection.response_bytes += size


def client_of(handler) -> str:
    """The name the trace gives the client of ``handler``'s request.

    The ``X-Labkit-Client`` header if the client sent one, else ``ip:port``;
    the bare remote IP for handlers not served through a lab server.
    """
    connection = getattr(handler.request, "connection", None)
    if isinstance(connection, _CountingConnection) and connection.client:
        return connection.client
    return handler.request.remote_ip


def _header(headers: httputil.HTTPHeaders, name: str) -> str:
    """A header's value or "" (``in`` first: a missing key costs tornado an exception)."""
    return headers[name] if name in headers else ""


def _header_bytes(headers: httputil.HTTPHeaders) -> int:
    """The bytes of the header lines, each ``Name: value\\r\\n`` (repeated names count once each).

    A plain loop: it runs twice per exchange, and a generator in ``sum()`` costs more.
    """
    size = 0
    for name, value in headers.get_all():
        size += len(name) + len(value) + 4
    return size


class TracingDelegate(httputil.HTTPServerConnectionDelegate):
    """Wraps a tornado Application so each request/response lands in a trace."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, trace: Trace,
                 technique: str):
        self.app = app
        self.trace = trace
        self.technique = technique

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        connection = _CountingConnection(request_conn, self)
        inner = self.app.start_request(server_conn, connection)
        return _CountingMessage(inner, connection)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _CountingConnection:
    """Forwards to tornado's connection while counting the response bytes.

    The records are written *before* the last byte of the response is handed
    to tornado, so a client that has read its whole answer always finds the
    exchange already in the trace (no race for a notebook cell to lose).
    """

    # What an exchange starts with, as class attributes: only what changes is set per request.
    client = ""
    arrived = 0.0
    """When the request's headers arrived (``time.monotonic()``)."""
    request_line: httputil.RequestStartLine | None = None
    request_headers: httputil.HTTPHeaders | None = None
    request_bytes = 0
    response_bytes = 0
    remaining: int | None = None
    status: int | None = None
    events: int | None = None
    detail = ""
    chunked = False
    request_recorded = False
    recorded = False

    def __init__(self, conn: httputil.HTTPConnection, owner: TracingDelegate):
        self._conn = conn
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    @property
    def context(self) -> Any:
        """Where the request came from (read on every request, so not via ``__getattr__``)."""
        return self._conn.context

    def _frame(self, start_line: httputil.ResponseStartLine,
               headers: httputil.HTTPHeaders) -> None:
        """Add the framing headers tornado's HTTP/1.1 writer will add (same rules)."""
        request = self.request_line
        if request is None:
            version, asked = "HTTP/1.1", ""
        else:
            version = request.version
            asked = _header(self.request_headers, "Connection").lower()
        bodiless = (request is not None and request.method == "HEAD") or \
            start_line.code in (204, 304) or 100 <= start_line.code < 200
        if version == "HTTP/1.1" and asked == "close":
            headers["Connection"] = "close"
        if version == "HTTP/1.0" and asked == "keep-alive":
            headers["Connection"] = "Keep-Alive"
        has_length = "Content-Length" in headers
        self.chunked = version == "HTTP/1.1" and not bodiless and not has_length
        if self.chunked:
            headers["Transfer-Encoding"] = "chunked"
        if bodiless:
            self.remaining = 0
        elif has_length:
            self.remaining = int(headers["Content-Length"])

    def set_close_callback(self, callback):
        """Notice a connection closed under an unfinished response (a stream, a held poll)."""
        if callback is None:
            return self._conn.set_close_callback(None)

        def closed():
            self.record(closed_early=True)
            callback()
        return self._conn.set_close_callback(closed)

    def write_headers(self, start_line, headers, chunk=None):
        self._frame(start_line, headers)
        self.status = start_line.code
        line = f"HTTP/1.1 {start_line.code} {start_line.reason}\r\n"
        self.response_bytes += len(line) + _header_bytes(headers) + 2
        self._count_body(chunk)
        return self._conn.write_headers(start_line, headers, chunk)

    def write(self, chunk):
        self._count_body(chunk)
        return self._conn.write(chunk)

    def finish(self):
        if self.chunked:
            self.response_bytes += len(b"0\r\n\r\n")
        self.record()
        return self._conn.finish()

    def _count_body(self, chunk: bytes | None) -> None:
        size = len(chunk) if chunk else 0
        self.response_bytes += size
        if size and self.chunked:
            self.response_bytes += len(f"{size:x}\r\n\r\n")
        if self.remaining is not None:
            self.remaining -= size
            if self.remaining <= 0:
                self.record()

    def record_request(self) -> None:
        """Write the request record, once, when its body has fully arrived."""
        if not self.request_recorded:
            self.request_recorded = True
            self._owner.trace.add("request", technique=self._owner.technique,
                                  client=self.client, t=self.arrived, bytes=self.request_bytes)

    def record(self, *, closed_early: bool = False) -> None:
        """Write the response record, once.

        A connection that closes before the response is finished still gets
        one ``response`` record, never a ``disconnect``: with no status if
        the client left before any answer (:data:`LEFT_EARLY`, an abandoned
        long poll), with the status it had if a streamed answer was cut
        (:data:`STREAM_CUT`). ``connect``/``disconnect`` are written by the
        techniques that hold long-lived connections, which know what they mean.
        """
        if self.recorded:
            return
        self.recorded = True
        self.record_request()
        trace, technique = self._owner.trace, self._owner.technique
        now = time.monotonic()
        detail = self.detail
        if closed_early:
            left = LEFT_EARLY if self.status is None else STREAM_CUT
            detail = f"{detail}; {left}" if detail else left
        trace.add("response", technique=technique, client=self.client, t=now,
                  status=self.status, bytes=self.response_bytes,
                  duration=now - self.arrived, events=self.events, detail=detail)


class _CountingMessage(httputil.HTTPMessageDelegate):
    """Forwards to the application's delegate while counting the request bytes."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, connection: _CountingConnection):
        self._inner = inner
        self._connection = connection

    def headers_received(self, start_line, headers):
        conn = self._connection
        conn.arrived = time.monotonic()
        conn.request_line = start_line
        conn.request_headers = headers
        line = f"{start_line.method} {start_line.path} {start_line.version}\r\n"
        conn.request_bytes = len(line) + _header_bytes(headers) + 2
        context = conn.context
        address = getattr(context, "address", None)
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        conn.client = _header(headers, CLIENT_HEADER) or peer
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk):
        self._connection.request_bytes += len(chunk)
        return self._inner.data_received(chunk)

    def finish(self):
        self._connection.record_request()
        return self._inner.finish()

    def on_connection_close(self):
        self._connection.record(closed_early=True)
        return self._inner.on_connection_close()
