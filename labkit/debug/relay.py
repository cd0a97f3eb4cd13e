"""A relay: what a tunnel such as ngrok does for a webhook under test, plus a bad network on demand.

A provider on the internet cannot call ``http://127.0.0.1:8000`` on your
laptop. A tunnel gives your local server a public URL: the provider calls
the tunnel, the tunnel forwards each request to your server and copies the
answer back. :func:`serve_relay` is that forwarder, in miniature. Here the
"public" side is honestly just another port on 127.0.0.1, since nothing in
labkit leaves loopback, but the request takes the same path as through a
real tunnel, and the same things go wrong.

What the relay does with each request, in order:

1. The body must fit in ``max_body`` (413 otherwise).
2. The bad network draws, from ``random.Random(seed)``, a delay of
   ``latency`` +/- up to ``jitter`` seconds (at most :data:`MAX_DELAY`) and
   whether the request is lost (probability ``drop``). The delay is waited
   out; a lost request never reaches the target: the relay closes the
   connection (``drop_with=None``, what a provider sees as a network error)
   or answers ``drop_with`` (e.g. 502).
3. The request is sent to the target: same method, path, query, header
   values and body bytes, so signatures over the body still verify. Like
   every proxy it adds ``X-Forwarded-For`` (appending the client address to
   any value already there), ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
   (overwriting those two), drops the headers that describe one connection
   (``Connection``, ``Transfer-Encoding`` ...) and sets ``Host`` to the
   target's, as nginx's ``proxy_pass`` and ``ngrok --host-header=rewrite``
   do (``preserve_host=True`` passes the client's ``Host`` on, as ngrok does
   by default).
4. The target's status, headers and body are streamed back as they arrive
   (a stream of events flows through). A target that refuses the connection
   gives 502, one that does not start answering within ``timeout`` 504,
   each with a message saying what to check.

Every request is logged as an :class:`Exchange` (``relay.log``), with the
request as it arrived (a :class:`~labkit.debug.inspector.CapturedRequest`,
so :func:`~labkit.debug.inspector.as_curl` and ``replay`` work on it, like
the replay button of ngrok's inspection page), what happened to it and what
the client got. Lost requests also go into the trace as ``drop`` records.

Two debugging traps a relay makes visible:

* **The receiver sees the relay, not the provider.** ``request.remote_ip``
  is the relay's address; the provider's is the last entry of
  ``X-Forwarded-For``. An IP allowlist must read that header, and only when
  the connection comes from the proxy (``IpAllowlist(...,
  trusted_proxies=...)``). On loopback every client is 127.0.0.1, so
  ``forwarded_for="192.30.252.10"`` lets the relay report a provider's
  public address, as a tunnel on the internet would.
* **URL-signing schemes need the public URL.** Twilio signs the URL it
  called, which is the relay's; the receiver sees its own. Verify against
  the public URL: wrap the verifier in :class:`PublicUrl`.

Example::

    from labkit.webhooks.receiver import serve_receiver

    receiver = serve_receiver()
    with serve_relay(receiver.url, latency=0.05, jitter=0.02, drop=0.1, seed=1) as tunnel:
        public = tunnel.component.public(receiver.endpoint_url)   # give this URL to the provider
        requests.post(public, json={"id": "evt_1"})
        tunnel.component.log[-1].outcome                         # 'forwarded' (or 'dropped')
    receiver.stop()
"""

from __future__ import annotations

import asyncio
import html
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import StreamClosedError

from labkit import lab, links, techniques
from labkit.endpoints import BodyLimit, too_large
from labkit.errors import LabkitError, RejectedError
from labkit.trace import Trace
from labkit.debug.inspector import HOP_HEADERS, METHODS, CapturedRequest
from labkit.wire import annotate, client_of

__all__ = ["Exchange", "Relay", "serve_relay", "PublicUrl", "MAX_DELAY", "OUTCOMES"]

MAX_DELAY = 10.0
"""The longest delay the bad network may add to one request, in seconds."""

OUTCOMES = ("forwarded", "dropped", "target_down", "timeout", "broken", "client_gone",
            "too_large")
"""What can happen to a request at the relay (:attr:`Exchange.outcome`)."""

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_RESPONSE_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                           "upgrade", "proxy-connection"})


@dataclass(frozen=True)
class Exchange:
    """One request through the relay: what arrived, what happened, what the client got."""

    request: CapturedRequest = field(repr=False)
    """The request as the relay received it (``request.status`` = what the client got)."""
    outcome: str
    """One of :data:`OUTCOMES`."""
    status: int | None
    """The status the client got; None when the relay closed the connection."""
    target_status: int | None
    """The status the target answered; None when it was not reached."""
    response_headers: tuple[tuple[str, str], ...] = field(repr=False)
    response_size: int
    delay: float
    """Seconds the bad network added."""
    duration: float
    """Seconds from the request's arrival to the end of the answer."""
    detail: str = ""


class Relay:
    """Forwards every request to ``target_url``; see the module docstring. Serve it with :func:`serve_relay`."""

    def __init__(self, target_url: str, *, latency: float = 0.0, jitter: float = 0.0,
                 drop: float = 0.0, seed: int = 0, drop_with: int | None = None,
                 preserve_host: bool = False, forwarded_for: str | None = None,
                 timeout: float = 10.0, max_body: int = 1024 * 1024, max_log: int = 200,
                 technique: str = "relay"):
        parts = urlsplit(target_url)
        if parts.scheme != "http" or parts.hostname not in _LOOPBACK or parts.path not in ("", "/") \
                or parts.query:
            raise LabkitError(
                f"target_url must be a local server's base URL such as http://127.0.0.1:8000, "
                f"got {target_url!r}: a tunnel forwards to your own machine, whole paths "
                f"included (pass server.url, not server.endpoint_url)")
        if latency < 0 or jitter < 0 or latency + jitter > MAX_DELAY:
            raise LabkitError(f"latency and jitter must be 0 or more and add up to at most "
                              f"{MAX_DELAY} s, got {latency} and {jitter}")
        if not 0 <= drop <= 1:
            raise LabkitError(f"drop is a share of requests, from 0 to 1, got {drop}")
        if drop_with is not None and not 400 <= drop_with <= 599:
            raise LabkitError(f"drop_with must be None (close the connection) or an error "
                              f"status from 400 to 599, got {drop_with!r}")
        if timeout <= 0 or max_body < 0 or max_log < 1:
            raise LabkitError("timeout must be positive, max_body 0 or more, max_log at least 1")
        self.technique = techniques.get(technique).name
        """How the trace names this relay's traffic (``relay``, or a variant ``relay: ...``)."""
        self.target_url = f"http://{parts.netloc}"
        self.host, self.port = parts.hostname, parts.port or 80
        self.latency, self.jitter, self.drop, self.seed = latency, jitter, drop, seed
        self.drop_with = drop_with
        self.preserve_host = preserve_host
        self.forwarded_for = forwarded_for
        self.timeout = timeout
        self.max_body = max_body
        self.url: str | None = None
        """The relay's own base URL (its "public" side), set when it is served."""
        self.trace: Trace | None = None
        """Where lost requests are recorded as ``drop`` records, set when it is served."""
        self._rng = random.Random(seed)
        self._changed = threading.Condition()
        self._log: deque[Exchange] = deque(maxlen=max_log)
        self._next_id = 1

    # -- reading -------------------------------------------------------------------

    @property
    def log(self) -> list[Exchange]:
        """A snapshot of the logged exchanges, oldest first (at most ``max_log``)."""
        with self._changed:
            return list(self._log)

    def counts(self) -> dict[str, int]:
        """How many logged requests had each outcome."""
        return dict(Counter(exchange.outcome for exchange in self.log))

    def public(self, local_url: str) -> str:
        """The URL to give a provider so that it reaches ``local_url`` through the relay."""
        if self.url is None:
            raise LabkitError("the relay is not served yet: use serve_relay() or lab.serve()")
        parts = urlsplit(local_url)
        if f"http://{parts.netloc}" != self.target_url:
            raise LabkitError(f"{local_url} is not on the relay's target {self.target_url}")
        return self.url + parts.path + (f"?{parts.query}" if parts.query else "")

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Exchange]:
        """Block until ``count`` exchanges are logged; return the log. Call it from a cell."""
        lab.wait_until(self._changed, lambda: self._next_id - 1 >= count, timeout,
                       lambda: f"only {self._next_id - 1} of {count} requests passed the relay "
                               f"within {timeout} s")
        return self.log

    def attached(self, server: lab.Server) -> None:
        """Learn the relay's own URL (the lab calls this when it is served)."""
        self.url = server.url

    def rules(self) -> list:
        """The one tornado rule: every path is forwarded."""
        return [(r"/.*", _Forward, {"relay": self})]

    # -- used by the handler, on the lab loop ---------------------------------------

    def _draw(self) -> tuple[float, bool]:
        """The bad network's delay and verdict for the next request (two draws each, always)."""
        with self._changed:
            lost = self._rng.random() < self.drop
            delay = max(0.0, self.latency + self.jitter * self._rng.uniform(-1.0, 1.0))
        return min(delay, MAX_DELAY), lost

    def _next(self) -> int:
        with self._changed:
            request_id = self._next_id
            self._next_id += 1
            return request_id

    def _record(self, exchange: Exchange) -> None:
        with self._changed:
            self._log.append(exchange)
            self._changed.notify_all()

    def _repr_html_(self) -> str:
        head = ("#", "method", "path", "outcome", "client got", "target answered",
                "added delay (ms)", "time in relay (ms)")
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                x.request.id, x.request.method, x.request.path, x.outcome,
                "closed" if x.status is None else x.status,
                "-" if x.target_status is None else x.target_status,
                f"{x.delay * 1000:.0f}", f"{x.duration * 1000:.1f}")) + "</tr>"
            for x in self.log[-20:])
        where = html.escape(str(self.url))
        if self.url is not None:  # a link a browser can follow, through Jupyter on a hub
            where = f"<a href='{html.escape(links.browser_url(self.url))}'>{where}</a>"
        return (f"<p>relay {where} &rarr; {html.escape(self.target_url)}: "
                f"{html.escape(str(self.counts()))} (last 20 shown)</p><table><tr>"
                + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{rows}</table>")

    def __repr__(self) -> str:
        return f"<Relay {self.url} -> {self.target_url} {self.counts()}>"


class _Upstream(httputil.HTTPMessageDelegate):
    """Receives the target's answer and copies it to the client as it arrives."""

    def __init__(self, handler: "_Forward"):
        self.handler = handler
        self.started = asyncio.Event()
        self.status: int | None = None
        self.headers: tuple[tuple[str, str], ...] = ()
        self.size = 0
        self.expected: int | None = None
        """The body's length when the answer tells it (0 for HEAD, 204, 304; else Content-Length)."""
        self.complete = False

    def headers_received(self, start_line, headers):
        if 100 <= start_line.code < 200:  # an interim answer: the real one follows
            return None
        self.status = start_line.code
        self.headers = tuple(headers.get_all())
        length = headers.get("Content-Length", "")
        if self.handler.request.method == "HEAD" or start_line.code in (204, 304):
            self.expected = 0
        elif length.isdigit():
            self.expected = int(length)
        self.started.set()
        return self.handler.start_answer(start_line, headers, self)

    def data_received(self, chunk: bytes):
        self.size += len(chunk)
        if self.expected is not None and self.size >= self.expected:
            self.handler.log("forwarded", self.status, self)  # before the client can see the end
        self.handler.write(chunk)
        return self.handler.flush()  # awaited by tornado: a slow client slows the copy

    def finish(self) -> None:
        self.complete = True

    def on_connection_close(self) -> None:
        """The target hung up: the read ends, and ``forward`` sees the answer is incomplete."""


@tornado.web.stream_request_body
class _Forward(tornado.web.RequestHandler):
    SUPPORTED_METHODS = METHODS

    def initialize(self, relay: Relay) -> None:
        self.relay = relay
        self.gone = asyncio.Event()
        self.target_stream = None
        self.limit = BodyLimit(relay.max_body)
        self.delay = 0.0
        self.arrived = time.monotonic()
        self.logged = False

    def prepare(self) -> None:
        try:
            self.limit.check_declared(self.request.headers)
        except RejectedError as exc:
            self.too_large(exc, close=True)  # answered before the body is read

    def data_received(self, chunk: bytes) -> None:
        self.limit.add(chunk)

    def on_connection_close(self) -> None:
        self.gone.set()
        if self.target_stream is not None:
            self.target_stream.close()

    async def forward(self) -> None:
        """Wait out the bad network, then copy the request to the target and its answer back."""
        relay = self.relay
        if self.limit.over:
            return self.too_large(too_large(self.limit.size, relay.max_body))
        self.delay, lost = relay._draw()
        if self.delay:
            try:
                await asyncio.wait_for(self.gone.wait(), self.delay)
                return self.log("client_gone", None, detail="the client left during the delay")
            except asyncio.TimeoutError:
                pass
        if lost:
            return self.lose()
        upstream = _Upstream(self)
        try:
            await self.send_upstream(upstream)
        except (OSError, StreamClosedError, asyncio.TimeoutError, httputil.HTTPInputError) as exc:
            if self.gone.is_set():
                return self.log("client_gone", None, upstream, "the client left")
            if upstream.status is not None:  # answer half copied: all we can do is cut it
                self.request.connection.close()
                return self.log("broken", None, upstream,
                                f"the target's answer broke off: {exc!r}")
            if isinstance(exc, asyncio.TimeoutError):
                return self.fail(504, "timeout", upstream, f"the target {relay.target_url} did "
                                 f"not start answering within {relay.timeout} s: is it stuck, "
                                 f"or too slow for the provider's timeout?")
            cause = getattr(exc, "real_error", None) or exc
            return self.fail(502, "target_down", upstream,
                             f"could not reach the target {relay.target_url} ({cause}): is the "
                             f"local server running, on that port?")
        finally:
            if self.target_stream is not None:
                self.target_stream.close()
        if not upstream.complete:
            self.request.connection.close()
            return self.log("broken", None, upstream, "the target closed before its answer ended")
        self.log("forwarded", upstream.status, upstream)
        self.finish()

    get = head = post = put = patch = delete = options = forward

    async def send_upstream(self, upstream: _Upstream) -> None:
        """Open a connection to the target, write the request, read the answer into ``upstream``."""
        relay = self.relay
        stream = await lab.tcp_client().connect(relay.host, relay.port, timeout=relay.timeout)
        self.target_stream = stream
        if self.gone.is_set():
            raise StreamClosedError()
        connection = HTTP1Connection(stream, True, HTTP1ConnectionParameters(
            no_keep_alive=True, decompress=False))
        body = self.limit.kept
        start = httputil.RequestStartLine(self.request.method, self.request.uri, "HTTP/1.1")
        await connection.write_headers(start, self.forwarded_headers(body))
        if body:
            await connection.write(body)
        connection.finish()
        reading = asyncio.ensure_future(connection.read_response(upstream))
        started = asyncio.ensure_future(upstream.started.wait())
        try:
            await asyncio.wait({reading, started}, timeout=relay.timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if not upstream.started.is_set() and not reading.done():
            stream.close()
            reading.cancel()
            raise asyncio.TimeoutError()
        if not await reading and upstream.status is None:
            raise StreamClosedError(real_error=ConnectionError(
                "the target closed the connection without answering"))

    def forwarded_headers(self, body: bytes) -> httputil.HTTPHeaders:
        """The request's headers as the target gets them (see the module docstring, step 3)."""
        relay, request = self.relay, self.request
        headers = httputil.HTTPHeaders()
        headers["Host"] = request.host if relay.preserve_host else f"{relay.host}:{relay.port}"
        named = {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}
        for name, value in request.headers.get_all():
            low = name.lower()
            if low not in HOP_HEADERS and low not in named and low not in (
                    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"):
                headers.add(name, value)
        earlier = request.headers.get("X-Forwarded-For")
        client = relay.forwarded_for or request.remote_ip
        headers["X-Forwarded-For"] = f"{earlier}, {client}" if earlier else client
        headers["X-Forwarded-Proto"] = request.protocol
        headers["X-Forwarded-Host"] = request.host
        if body or request.method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        headers["Connection"] = "close"
        return headers

    def start_answer(self, start_line, headers, upstream: _Upstream):
        """Copy the target's status line and headers to the client, and send them at once."""
        annotate(self, detail=f"forwarded to {self.relay.target_url} (+{self.delay * 1000:.0f} ms)")
        self.set_status(start_line.code, start_line.reason or "Unknown")
        for name in ("Content-Type", "Server", "Date"):  # tornado's defaults: the target's count
            self.clear_header(name)
        for name, value in headers.get_all():
            if name.lower() not in _RESPONSE_HOP:
                self.add_header(name, value)
        if upstream.expected == 0:
            self.log("forwarded", upstream.status, upstream)
        return self.flush()

    # -- the ways a request can end -----------------------------------------------

    def lose(self) -> None:
        """The bad network loses the request: close the connection, or answer ``drop_with``."""
        relay = self.relay
        detail = f"bad network lost {self.request.method} {self.request.path}"
        if relay.trace is not None:
            relay.trace.add("drop", technique=relay.technique, client=client_of(self),
                            detail=detail)
        if relay.drop_with is None:
            self.log("dropped", None, detail=detail + " (connection closed)")
            self.detach().close()  # no answer at all: the provider sees a network error
        else:
            self.fail(relay.drop_with, "dropped", None, "the simulated bad network lost this request")

    def too_large(self, error: RejectedError, *, close: bool = False) -> None:
        if close:
            self.set_header("Connection", "close")
        self.fail(error.status, error.reason, None, str(error))

    def fail(self, status: int, outcome: str, upstream: _Upstream | None, message: str) -> None:
        """Answer an error of the relay's own, with a message saying what to check."""
        annotate(self, detail=f"{outcome}: {message}")
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.log(outcome, status, upstream, message)
        self.finish(f"relay: {message}\n")

    def log(self, outcome: str, status: int | None, upstream: _Upstream | None = None,
            detail: str = "") -> None:
        """Log this request's exchange, once (before the client has its whole answer)."""
        if self.logged:
            return
        self.logged = True
        relay = self.relay
        request_id = relay._next()
        captured = CapturedRequest.from_request(
            self.request, id=request_id, body=self.limit.kept, size=self.limit.size,
            status=status)
        relay._record(Exchange(
            request=captured, outcome=outcome, status=status,
            target_status=upstream.status if upstream else None,
            response_headers=upstream.headers if upstream else (),
            response_size=upstream.size if upstream else 0, delay=self.delay,
            duration=time.monotonic() - self.arrived, detail=detail))


class PublicUrl:
    """Wrap a verifier so it checks against the public URL the provider called.

    Behind a relay, a tunnel or a TLS-terminating proxy the receiver computes
    its own, local URL (``http://127.0.0.1:8000/webhook``), while the provider
    signed the URL it was given (``https://abc.ngrok.app/webhook``). Schemes
    that sign the URL (Twilio) then never match. ``PublicUrl(TwilioSignature(token),
    "https://abc.ngrok.app")`` keeps the path and query the receiver saw and
    puts the public scheme, host and port in front. Only the URL changes: the
    headers and the body are checked as they are.
    """

    def __init__(self, verifier, public_url: str):
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LabkitError(f"public_url must look like https://host[:port], got {public_url!r}")
        self.verifier = verifier
        self.public_url = f"{parts.scheme}://{parts.netloc}"
        self.name = getattr(verifier, "name", type(verifier).__name__)

    def url_for(self, local_url: str) -> str:
        """``local_url`` as the provider addressed it."""
        parts = urlsplit(local_url)
        return self.public_url + parts.path + (f"?{parts.query}" if parts.query else "")

    def verify(self, headers, body: bytes, *, url: str | None = None,
               remote_ip: str | None = None, now: float | None = None) -> None:
        """Verify with the wrapped verifier, against the public form of ``url``."""
        return self.verifier.verify(headers, body, url=self.url_for(url or "/"),
                                    remote_ip=remote_ip, now=now)

    def __repr__(self) -> str:
        return f"<PublicUrl {self.public_url} {self.verifier!r}>"


def serve_relay(target: str | Relay, *, trace: Trace | None = None, port: int = 0,
                **options: Any) -> lab.Server:
    """Serve a relay: ``target`` is a :class:`Relay`, or the target URL of a new one
    made with ``options`` (the keyword arguments of :class:`Relay`).

    One line over :func:`labkit.lab.serve`: ``server.component`` is the relay
    (its log, counts, ``public(local_url)``). Requests are recorded under the
    technique ``relay``, lost ones as ``drop`` records.
    """
    return lab.serve(lab.component(Relay, target, options), trace=trace, port=port)
