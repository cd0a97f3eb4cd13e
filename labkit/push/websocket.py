"""WebSockets: one connection, upgraded from HTTP, that both sides may write to at any time.

The client asks once with an HTTP ``GET`` that says ``Upgrade: websocket``;
the server answers **101 Switching Protocols**, and from then on the TCP
connection carries WebSocket *frames* (RFC 6455), not HTTP: the server sends
every hub item as a text frame the moment it is published, and the client
may send messages too, which SSE cannot do. This is tornado's own
``tornado.websocket`` on both sides, without compression.

:class:`WebSocketServer` serves a :class:`~labkit.hub.Hub` (technique
``websocket``):

==================================  ===========================================================
request / frame                     what happens
==================================  ===========================================================
``GET /ws`` with the upgrade        101, then a text frame per item published from now on
headers
``GET /ws?after=41``                101, then first the items after id 41 still in the history
                                    (a ``{"missed": n}`` frame first if some already left)
``after=abc`` (or -1, or an id      400 ``bad_cursor`` (JSON, before any upgrade)
not published yet)
a ``GET`` without the upgrade       400 ``not_websocket``: it says how to connect
``POST`` ...; a ``GET`` with a body  405 / 400, the body left unread
the server is stopping              503 ``stopping``
a text message from the client      a reply ``{"ack": k, "echo": "<the text>"}`` (k counts the
                                    messages on this socket): the way back SSE does not have
a binary message                    a reply ``{"ack": k, "error": ..., "reason": "binary"}``;
                                    the socket stays open
a message over ``max_message``      closed by the server with code 1009 (message too big)
bytes, or invalid UTF-8 text
==================================  ===========================================================

Server to client, every frame is one JSON object: an item ``{"id": 42,
"data": {...}}`` (the same encoding a poll answer lists, made once per item
for all clients: :func:`labkit.push.clients.encode_item`), an ack, or a
``{"missed": 16, "after": 41}`` notice.

**Bytes.** The wire layer counts the HTTP upgrade (the ``request`` and the
101 ``response``); after it the connection is no longer HTTP, so the server
counts the frames itself, as RFC 6455 section 5.2 frames them
(:func:`frame_size`): a 2-byte header, 2 or 8 more bytes of length for
payloads of 126 bytes or more, a 4-byte masking key on every frame a client
sends (clients mask, servers do not), then the payload. Data frames are
counted both ways, and so is the close handshake (a close frame carries a
2-byte code and the reason). When the socket ends, the ``disconnect`` record
carries those frame bytes in ``bytes``; so the wire bytes of a WebSocket are
``request`` + ``response`` + ``disconnect`` bytes, and a fair comparison with
the HTTP techniques adds the three (``labkit.push.scale`` does). Not counted:
a close frame without a status code (tornado's and browsers' clients send
one with a code), and the extra headers of a message a client split into
fragments (tornado hands over the reassembled message; neither kit client
fragments).

Records: ``connect`` when a socket opens, ``disconnect`` when it ends
(``bytes`` as above, ``events`` = items sent, ``detail`` = why it ended and
the frame counts). :class:`WebSocketClient` records each feed event it
receives (``trace.delivered``; ``bytes`` = the frame's payload).

**One frame for everyone.** A server's frames are not masked, so the frame
of an item is the same bytes for every client: it is built once
(:func:`encode_frame`, kept in ``item.cache["ws"]``) and written as it is
to each socket (straight to the socket when tornado has nothing of its own
waiting to go out there, so frames never interleave). Tornado does the
rest: the handshake, reading and unmasking the client's frames, the acks,
the close handshake.

**Slow clients and stopping.** One fan-out per server waits for news and
writes each batch of frames to every socket that is up to date. A socket
whose last write has not left the server yet (its client reads slowly) is
skipped; items published meanwhile wait in the hub, shared by everyone, and
the socket catches up from the hub once its write has left. So a client
that does not read costs one write, and one that falls further behind than
the history gets a ``missed`` notice (:meth:`WebSocketServer.open_sockets`
shows who is waiting). ``aclose`` (awaited by ``server.stop()``)
closes every socket with code 1001 ("going away") and waits, briefly, for
each client's close frame; a socket still open after 1 s is cut. The hub
stays open for other servers.

Example::

    from labkit.feed import Feed
    from labkit.hub import Hub

    hub, feed = Hub(), Feed(seed=1)
    with serve_websocket(hub) as server, \\
            WebSocketClient(server.endpoint_url, trace=server.trace) as client:
        hub.publish(feed.make("tick"))
        client.wait_for(1)
        client.send("hello")          # {'ack': 1, 'echo': 'hello'}

Thread-safety: servers and clients live on the lab loop. From a cell or a
script: :func:`serve_websocket`, :attr:`WebSocketServer.connected`,
:meth:`WebSocketServer.open_sockets`, the client's ``start``, ``stop``,
``wait_for``, ``send`` and what it received; publish with ``hub.publish``
from anywhere.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections import deque
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import tornado.web
import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError

from labkit import lab
from labkit.endpoints import Handler, NotFound
from labkit.errors import HubClosedError, LabkitError, RejectedError
from labkit.hub import Hub, Item
from labkit.push.clients import HubClient, encode_item, error_text
from labkit.trace import Trace
from labkit.wire import CLIENT_HEADER, client_of

__all__ = ["WebSocketServer", "WebSocketClient", "OpenSocket", "serve_websocket", "frame_size",
           "close_payload", "text_frame", "encode_frame"]

CONNECT_TIMEOUT = 5.0
"""Seconds a client waits for the connection and the 101."""
GOING_AWAY = 1001
"""The close code of a server that stops (RFC 6455 section 7.4.1)."""
NORMAL = 1000
"""The close code of a client that is done."""
_STOP_WAIT = 100
"""``aclose`` waits at most this many 10 ms steps for the clients' close frames."""


def frame_size(payload: int, *, masked: bool) -> int:
    """Bytes of one WebSocket frame carrying ``payload`` bytes (RFC 6455 section 5.2).

    2 bytes of header; payloads of 126 to 65,535 bytes add a 2-byte length,
    larger ones an 8-byte length; ``masked`` (every frame a client sends)
    adds the 4-byte masking key. ``frame_size(5, masked=False) == 7``: the
    RFC's own example, a text frame with "Hello". The push service's device
    connection (:mod:`labkit.push.webpush.service`) counts its frames with it too.
    """
    if isinstance(payload, bool) or not isinstance(payload, int) or payload < 0:
        raise LabkitError(f"a payload length is a whole number of bytes >= 0, got {payload!r}")
    length = 0 if payload < 126 else 2 if payload < 65536 else 8
    return 2 + length + (4 if masked else 0) + payload


def text_frame(payload: bytes) -> bytes:
    """A whole server frame (FIN, text, unmasked) carrying ``payload`` (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    return head + payload


def encode_frame(item: Item) -> bytes:
    """The text frame of a hub item, built once for every socket (``item.cache["ws"]``)."""
    frame = item.cache.get("ws")
    if frame is None:
        frame = item.cache["ws"] = text_frame(encode_item(item))
    return frame


def close_payload(code: int | None, reason: str | None) -> int:
    """Bytes of a close frame's payload: the 2-byte code and the reason (none without a code)."""
    return 0 if code is None else 2 + len((reason or "").encode())


class OpenSocket(NamedTuple):
    """One socket being served, as :meth:`WebSocketServer.open_sockets` reports it."""

    client: str
    opened: float
    """When it opened (``time.monotonic()``)."""
    written_id: int
    """Id of the last item written to it."""
    waiting: bool
    """True while a write to it has not left the server yet (it reads slowly)."""


class WebSocketServer:
    """Serves ``hub`` to WebSocket clients at ``path`` (technique ``websocket``).

    ``hub``: what to send (a new :class:`~labkit.hub.Hub` if not given).
    ``max_message``: the largest message a client may send, in bytes.
    See the module docstring for the frames and the records.
    """

    technique = "websocket"

    def __init__(self, hub: Hub | None = None, *, path: str = "/ws",
                 max_message: int = 64 * 1024, trace: Trace | None = None):
        if not isinstance(path, str) or not path.startswith("/"):
            raise LabkitError(f"path must start with '/', got {path!r}")
        if isinstance(max_message, bool) or not isinstance(max_message, int) or max_message < 1:
            raise LabkitError(f"max_message is a whole number of bytes >= 1, got {max_message!r}")
        self.hub = hub if hub is not None else Hub(name="websocket")
        self.path = path
        self.max_message = max_message
        self.trace = trace
        self.closed = False
        """True while the server stops: new sockets get 503."""
        self._open: set[_SocketHandler] = set()
        self._cursor = 0
        self._fan_out: asyncio.Task | None = None

    @property
    def connected(self) -> int:
        """How many sockets are open right now."""
        return len(self._open)

    def open_sockets(self) -> list[OpenSocket]:
        """A snapshot of the sockets open now."""
        return [OpenSocket(h.client, h.opened, h.written_id, h.pending is not None)
                for h in list(self._open)]

    def rules(self) -> list:
        """Tornado URL rules: the socket at ``path``, 404 elsewhere."""
        return [(self.path, _SocketHandler, {"server": self}),
                (r".*", NotFound, {"routes": f"GET {self.path} (WebSocket)"})]

    def attached(self, server: lab.Server) -> None:
        """Served (again): accept sockets."""
        self.closed = False

    async def aclose(self) -> None:
        """Close every socket with 1001 (the server awaits it on stop); cut any that lingers."""
        self.closed = True
        if self._fan_out is not None:
            self._fan_out.cancel()
            await asyncio.gather(self._fan_out, return_exceptions=True)
            self._fan_out = None
        for handler in list(self._open):
            handler.end(GOING_AWAY, "the server stopped")
        for _ in range(_STOP_WAIT):
            if not self._open:
                break
            await asyncio.sleep(0.01)
        for handler in list(self._open):
            handler.cut()

    def _start_fan_out(self) -> None:
        """Start the fan-out, if it is not running, from the hub's last id (on the lab loop)."""
        if self._fan_out is None or self._fan_out.done():
            self._cursor = self.hub.last_id
            self._fan_out = asyncio.ensure_future(self._deliver())

    async def _deliver(self) -> None:
        """Wait for news; write each batch, framed once, to every socket that is up to date.

        A socket whose last write has not left yet, or that is behind for
        another reason, is skipped and catches up from the hub on its own.
        """
        hub = self.hub
        try:
            while True:
                items = await hub.wait(self._cursor, None)
                cursor, last = self._cursor, items[-1].id
                missed = hub.missed(cursor)
                frames = [_missed_frame(missed, cursor)] if missed else []
                frames.extend(encode_frame(item) for item in items)
                chunk = b"".join(frames)
                self._cursor = last
                for handler in list(self._open):
                    if handler.pending is not None or handler.ending is not None:
                        continue  # it catches up once its write has left; or it is closing
                    if handler.written_id == cursor:
                        handler.send(chunk, last, len(items), len(frames))
                    elif handler.written_id < last:
                        handler.catch_up()
        except HubClosedError:
            for handler in list(self._open):
                handler.end(GOING_AWAY, "the hub closed: no more items")

    def _record(self, kind: str, client: str, **fields: Any) -> None:
        if self.trace is not None:
            self.trace.add(kind, technique=self.technique, client=client, **fields)

    def __repr__(self) -> str:
        return f"<WebSocketServer {self.path} of {self.hub!r}, {self.connected} open>"


def _json(value: dict) -> bytes:
    return json.dumps(value).encode()


def _missed_frame(missed: int, after: int) -> bytes:
    """The notice that ``missed`` items after id ``after`` left the history unseen."""
    return text_frame(_json({"missed": missed, "after": after}))


@tornado.web.stream_request_body
class _SocketHandler(tornado.websocket.WebSocketHandler, Handler):
    """One client's socket: refusals as JSON before the upgrade, then the frames it is sent."""

    def initialize(self, server: WebSocketServer) -> None:
        self.server = server
        self.client = ""
        self.cursor = 0
        self.opened = 0.0
        self.events = 0
        self.asked = 0
        self.sent = self.received = 0
        self.frames_out = self.frames_in = 0
        self.ending: str | None = None
        self.closed_by_server = False
        self.written_id = -1
        """Id of the last item written to this socket (-1 before it opens)."""
        self.pending: asyncio.Future | None = None
        """The write that has not left yet, if any."""
        self.resuming = False
        self.socket_stream = None

    @property
    def max_message_size(self) -> int:
        return self.server.max_message

    def prepare(self) -> None:
        """Refuse, before reading any body or upgrading, what cannot open a socket."""
        request, server = self.request, self.server
        headers = request.headers
        try:
            if request.method != "GET":
                self.set_header("Allow", "GET")
                raise RejectedError("method", f"{request.method} is not allowed on "
                                    f"{request.path}: a WebSocket opens with GET", status=405)
            if headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers:
                raise RejectedError("body", f"GET {request.path} takes no request body: send "
                                    f"the last id seen as ?after=<id>", status=400)
            tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
            if headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in tokens \
                    or not headers.get("Sec-WebSocket-Key"):
                raise RejectedError("not_websocket", f"{request.path} speaks WebSocket: send "
                                    f"'Connection: Upgrade', 'Upgrade: websocket' and a "
                                    f"Sec-WebSocket-Key (use WebSocketClient, or new "
                                    f"WebSocket(url) in a browser)", status=400)
            if headers.get("Sec-WebSocket-Version") != "13":
                self.set_header("Sec-WebSocket-Version", "13")
                raise RejectedError("version", "this server speaks WebSocket version 13 "
                                    "(RFC 6455) only", status=426)
            raw = self.get_query_argument("after", None, strip=False)
            self.cursor = server.hub.cursor(raw)
            self.resuming = bool(raw)
            if server.closed:
                raise RejectedError("stopping", "the server is stopping: connect again later "
                                    "with ?after=<last id seen>", status=503)
        except RejectedError as exc:
            self.refuse(exc, close=exc.reason in ("method", "body"))
            return
        self.client = client_of(self)

    def data_received(self, chunk: bytes) -> None:
        """Only a refused request has a body, and it is not kept."""

    def open(self) -> None:
        server = self.server
        self.opened = time.monotonic()
        self.socket_stream = self.ws_connection.stream
        server._open.add(self)
        resume = "resuming" if self.resuming else "from now"
        server._record("connect", self.client, detail=f"{resume} after id {self.cursor}")
        if server.closed:  # it stopped while this socket was being upgraded
            self.end(GOING_AWAY, "the server stopped")
            return
        self.written_id = self.cursor
        server._start_fan_out()
        self.catch_up()

    def catch_up(self) -> None:
        """Write what the hub has after ``written_id`` (a missed notice first if some left)."""
        hub = self.server.hub
        items = hub.since(self.written_id)
        if not items:
            return
        missed = hub.missed(self.written_id)
        frames = [_missed_frame(missed, self.written_id)] if missed else []
        frames.extend(encode_frame(item) for item in items)
        self.send(b"".join(frames), items[-1].id, len(items), len(frames))

    def send(self, chunk: bytes, last: int, count: int, frames: int) -> None:
        """Write ``chunk`` (``frames`` frames, ``count`` items up to id ``last``).

        Straight to the socket when tornado has nothing of its own waiting to
        go out (an ack, the close frame), else behind it through the stream,
        so frames never interleave. If the kernel does not take it all at
        once, tornado sends the rest, and nothing more is written to this
        socket until it has left; then it catches up.
        """
        stream = self.socket_stream
        if stream.closed():
            return  # the client left; on_close records it
        sent = 0
        if not stream.writing():
            try:
                sent = stream.socket.send(chunk)
            except BlockingIOError:
                pass
            except OSError as exc:  # reset: tornado ends the socket and calls on_close
                stream.close(exc_info=exc)
                return
        self.written_id = last
        self.events += count
        self.sent += len(chunk)
        self.frames_out += frames
        if sent < len(chunk):
            self.pending = stream.write(memoryview(chunk)[sent:])
            self.pending.add_done_callback(self._left)

    def _left(self, written: asyncio.Future) -> None:
        self.pending = None
        if not written.cancelled() and written.exception() is None and self.ending is None:
            self.catch_up()

    async def on_message(self, message: str | bytes) -> None:
        """Count the client's frame, then answer it: an ack with the echo, or why not."""
        binary = isinstance(message, bytes)
        size = len(message) if binary else len(message.encode())
        self.received += frame_size(size, masked=True)
        self.frames_in += 1
        self.asked += 1
        if binary:
            reply = {"ack": self.asked, "error": "this socket takes text messages (JSON or "
                     "plain text), not binary ones", "reason": "binary"}
        else:
            reply = {"ack": self.asked, "echo": message}
        payload = _json(reply)
        self.sent += frame_size(len(payload), masked=False)
        self.frames_out += 1
        try:
            await self.write_message(payload)
        except (tornado.websocket.WebSocketClosedError, StreamClosedError):
            pass

    def end(self, code: int, why: str) -> None:
        """Start the close handshake (first reason wins); the client answers with its close."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return
        self.ending = self.ending or why  # no data frame may follow the close frame
        self.closed_by_server = True
        self.sent += frame_size(close_payload(code, why), masked=False)
        self.frames_out += 1
        self.close(code, why)

    def cut(self) -> None:
        """Close the TCP connection without waiting for the client any longer."""
        if self.socket_stream is not None:
            self.ending = self.ending or "cut: the client did not answer the close"
            self.socket_stream.close()

    def on_close(self) -> None:
        server = self.server
        if not self.opened:  # refused before any upgrade
            return
        server._open.discard(self)
        if self.close_code is not None:  # the client's close frame arrived
            self.received += frame_size(close_payload(self.close_code, self.close_reason),
                                        masked=True)
            self.frames_in += 1
            if not self.closed_by_server:  # tornado answered it with the same code
                self.sent += frame_size(2, masked=False)
                self.frames_out += 1
        why = self.ending or ("the client closed" if self.close_code is not None
                              else "the client left")
        code = f" (code {self.close_code})" if self.close_code is not None else ""
        server._record("disconnect", self.client, bytes=self.sent + self.received,
                       events=self.events, duration=time.monotonic() - self.opened,
                       detail=f"{why}{code}; sent {self.sent} bytes in {self.frames_out} "
                              f"frames, received {self.received} bytes in "
                              f"{self.frames_in} frames")


def serve_websocket(server: WebSocketServer | Hub | None = None, *, trace: Trace | None = None,
                    port: int = 0, **options: Any) -> lab.Server:
    """Serve ``server`` (or a new :class:`WebSocketServer` of the hub given, made with
    ``options``); one line over :func:`labkit.lab.serve`. ``server.endpoint_url`` is the
    URL to give a :class:`WebSocketClient`."""
    return lab.serve(lab.component(WebSocketServer, server, options), trace=trace, port=port)


# -- the client ------------------------------------------------------------------------


class WebSocketClient(HubClient):
    """A WebSocket client on the lab loop (tornado's ``websocket_connect``).

    ``url``: the socket's URL, ``ws://`` or the ``http://`` of
    ``server.endpoint_url``. ``after``: the cursor to start from (0:
    everything the server keeps; None: from now). When the socket ends
    other than by :meth:`stop`, it connects again after ``reconnect``
    seconds with ``?after=<last id received>`` (``reconnect=None``: it
    stays closed). A refusal (400: the cursor is not of this hub) stops it
    for good (``failure``).

    :meth:`send` writes a text message and returns the server's reply.
    """

    technique = "websocket"

    def __init__(self, url: str, *, name: str = "ws-client", trace: Trace | None = None,
                 after: int | None = None, reconnect: float | None = 1.0):
        super().__init__(url, name=name, trace=trace, after=after)
        parts = urlsplit(url)
        scheme = {"http": "ws", "ws": "ws"}.get(parts.scheme)
        if scheme is None or not parts.hostname:
            raise LabkitError(f"a WebSocket client needs a ws:// (or http://) URL, got {url!r}")
        if reconnect is not None and (isinstance(reconnect, bool) or
                                      not isinstance(reconnect, (int, float)) or
                                      not 0 <= reconnect < float("inf")):
            raise LabkitError(f"reconnect is a number of seconds >= 0 or None, got {reconnect!r}")
        self.reconnect = reconnect
        self._base = urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
        self.opened: list[float] = []
        """When each socket opened (``time.monotonic()``)."""
        self.replies: list[dict] = []
        """Every reply to a message this client sent, in order."""
        self.ended: list[str] = []
        """Why each socket ended, or could not be opened, in order."""
        self._conn: tornado.websocket.WebSocketClientConnection | None = None
        self._waiting: deque[asyncio.Future] = deque()
        self._tcp = None

    @property
    def ready(self) -> bool:
        """True while a socket is open."""
        return self._conn is not None

    def send(self, text: str, timeout: float = 5.0) -> dict:
        """Send ``text`` and return the server's reply (from a cell or a script)."""
        return lab.run(self.asend(text, timeout))

    async def asend(self, text: str, timeout: float = 5.0) -> dict:
        """:meth:`send` on the lab loop."""
        if not isinstance(text, str):
            raise LabkitError(f"send() takes text, got {type(text).__name__}")
        if self._conn is None:
            raise LabkitError(f"client {self.name!r} has no open socket: start() it first")
        reply = asyncio.get_running_loop().create_future()
        self._waiting.append(reply)
        await self._conn.write_message(text)
        try:
            return await asyncio.wait_for(reply, timeout)
        except asyncio.TimeoutError:
            raise LabkitError(f"no reply to {text[:40]!r} within {timeout} s") from None

    def _url(self) -> str:
        if self._cursor is None:
            return self._base
        joiner = "&" if "?" in self._base else "?"
        return f"{self._base}{joiner}after={self._cursor}"

    async def _run(self) -> None:
        self._tcp = lab.tcp_client()
        while not self._stopping.is_set():
            why = await self._session()
            with self._changed:
                self.ended.append(why)
            if self._stopping.is_set() or self.failure is not None or self.reconnect is None:
                return
            resume = f" with ?after={self._cursor}" if self._cursor is not None else ""
            self._retry(f"{why}; reconnecting{resume}", self.reconnect)
            if await self._pause(self.reconnect):
                return

    async def _session(self) -> str:
        """Connect, read until the socket ends; returns why it ended."""
        request = HTTPRequest(self._url(), headers={CLIENT_HEADER: self.name},
                              connect_timeout=CONNECT_TIMEOUT, request_timeout=CONNECT_TIMEOUT)
        try:
            conn = await tornado.websocket.websocket_connect(request,
                                                             resolver=self._tcp.resolver)
        except HTTPClientError as exc:
            if exc.code == 599:  # tornado's "no HTTP answer": a timeout
                return f"could not connect: {exc}"
            body = exc.response.body if exc.response is not None else b""
            why = f"the server answered {exc.code}: {error_text(body or b'')}"
            if exc.code < 500:
                self._fail(why)
            return why
        except (OSError, StreamClosedError, tornado.websocket.WebSocketError,
                asyncio.TimeoutError) as exc:
            return f"could not connect: {exc or type(exc).__name__}"
        self._conn = conn
        with self._changed:
            self.opened.append(time.monotonic())
            self._changed.notify_all()
        if self._stopping.is_set():
            conn.close(NORMAL)
        try:
            while True:  # until the socket ends (read_message() gives None), or stop()
                message = await conn.read_message()
                if message is None:
                    break
                self._on_message(message)
        finally:
            self._conn = None
            while self._waiting:
                waiting = self._waiting.popleft()
                if not waiting.done():
                    waiting.set_exception(LabkitError("the socket closed before the reply"))
        code = f" with code {conn.close_code}" if conn.close_code is not None else ""
        reason = f" ({conn.close_reason})" if conn.close_reason else ""
        return f"the socket closed{code}{reason}"

    def _on_message(self, message: str | bytes) -> None:
        try:
            value = json.loads(message)
            if "ack" in value:
                self.replies.append(value)
                if self._waiting:
                    waiting = self._waiting.popleft()
                    if not waiting.done():
                        waiting.set_result(value)
            elif "missed" in value:
                self._lost(value["missed"], f"told so on reconnecting after id {value['after']}")
            else:
                self._take([value], bytes=len(message))
        except (ValueError, TypeError, KeyError, LabkitError) as exc:
            self._retry(f"not a message of this server ({exc}): {str(message)[:80]!r}", 0)

    def _interrupt(self) -> None:
        if self._conn is not None:
            self._conn.close(NORMAL)

    def _closed(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
