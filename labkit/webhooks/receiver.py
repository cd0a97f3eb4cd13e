"""The webhook receiver: the endpoint a provider POSTs its events to.

A webhook turns polling around: instead of asking "anything new?", the
client gives the provider a URL and the provider calls it when something
happens. That URL is public, so the receiver's first job is to refuse what
it should not trust, cheaply and in a fixed order, each refusal with the
status that tells the provider what went wrong:

====  ==========================================================  ==================
step  what happens                                                what the sender gets
====  ==========================================================  ==================
0     the path must be ``path`` and the method POST               404, 405
1     the body must fit in ``max_body``: ``Content-Length`` is    413
      read first, so a huge body is refused before it is read,
      then the bytes that actually arrive are counted
2     the content type must be JSON (``application/json``,        415
      ``*+json``), a form (``application/x-www-form-urlencoded``)
      or XML (``application/xml``, ``text/xml``, ``*+xml``)
3     every verifier must pass, in order: signature schemes       the verifier's
      (:mod:`labkit.webhooks.signatures`) and guards              status (401, 403)
      (:mod:`labkit.webhooks.guards`), all on the RAW body bytes
4     the body must parse                                         400
5     the optional ``faults`` hook may answer instead             its status
6     the :class:`Delivery` is recorded (with its latency if it   --
      carries an event of ``feed``)
7     the optional ``process`` callable runs                      500 if it raises
8     done                                                        200, empty body
====  ==========================================================  ==================

A 500 from ``process`` makes the provider retry, so the same delivery id can
arrive twice: the first attempt was recorded at step 6 (real receivers
deduplicate by id). Providers look at the status only, so success has an
empty body. Every refusal is recorded as a :class:`Rejection` and its reason
attached to the response's record in the trace; the server keeps serving.

Where providers put the delivery id and the event type, the first found wins:

==================  ========================================  ==================================
provider            delivery id                               event type
==================  ========================================  ==================================
GitHub              ``X-GitHub-Delivery`` header              ``X-GitHub-Event`` header
Standard Webhooks   ``webhook-id`` header                     ``type`` in the body
Stripe              ``id`` in the body                        ``type`` in the body
Twilio              ``I-Twilio-Idempotency-Token`` header     ``MessageStatus`` form field
==================  ========================================  ==================================

``process`` and ``faults`` may be plain functions or coroutine functions.
They run on the lab loop, inside the request, so their time is the time the
provider waits: a slow plain function (``time.sleep``) stalls every server
of the lab; a coroutine that awaits (``asyncio.sleep``) does not.

XML is parsed with :mod:`xml.etree.ElementTree`, which refuses external
entities; with untrusted senders in production, prefer ``defusedxml``.

Example::

    from labkit.feed import Feed
    from labkit.webhooks.providers import GitHubProvider
    from labkit.webhooks.signatures import GitHubSignature

    receiver = WebhookReceiver([GitHubSignature("s3cret")])
    with serve_receiver(receiver) as server:
        GitHubProvider("s3cret").send(server.endpoint_url, Feed().make())
        print(receiver.wait_for(1)[0].event_type)      # push
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple
from urllib.parse import parse_qsl

from tornado import httputil

from labkit import lab, techniques
from labkit.endpoints import BodyLimit, too_large, write_answer
from labkit.errors import LabkitError, RejectedError
from labkit.trace import Trace
from labkit.wire import annotate, client_of

__all__ = ["Delivery", "Rejection", "WebhookReceiver", "serve_receiver"]

ID_HEADERS = ("X-GitHub-Delivery", "webhook-id", "I-Twilio-Idempotency-Token")
ID_FIELDS = ("id",)
TYPE_HEADERS = ("X-GitHub-Event",)
TYPE_FIELDS = ("type", "MessageStatus")


@dataclass(frozen=True)
class Delivery:
    """One accepted webhook. Header names are lower-case, as HTTP/2 sends them."""

    id: str | None
    event_type: str | None
    content_type: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    """The raw bytes, exactly as received and verified."""
    payload: Any = field(repr=False)
    """Parsed body: a dict for JSON objects, dict[str, str] for forms, an Element for XML."""
    received: float
    remote_ip: str


@dataclass(frozen=True)
class Rejection:
    """One refused request: the status answered and why."""

    status: int
    reason: str
    message: str
    received: float
    remote_ip: str
    headers: dict[str, str] = field(repr=False)


class WebhookReceiver(httputil.HTTPServerConnectionDelegate):
    """Accepts, verifies and records webhooks; see the module docstring for the checks.

    ``verifiers``: objects with ``verify(headers, body, *, url, remote_ip)``.
    ``max_body``: largest accepted body in bytes (413 above).
    ``process``: called with each accepted :class:`Delivery`; raising means 500.
    ``faults``: for failure experiments, called with each verified delivery
    before it is recorded; returning ``(status, headers)`` answers that
    instead (e.g. ``(429, {"Retry-After": "2"})``), returning None goes on.
    ``feed``: a :class:`labkit.feed.Feed`; a delivery whose id belongs to one
    of its events is recorded in ``trace`` as that event delivered, with its
    latency. ``serve_receiver`` sets ``trace`` to the server's trace.
    """

    def __init__(self, verifiers: Iterable = (), *, max_body: int = 1024 * 1024,
                 process: Callable[[Delivery], Any] | None = None,
                 faults: Callable[[Delivery], Any] | None = None,
                 feed=None, trace: Trace | None = None, technique: str = "webhook",
                 path: str = "/webhook"):
        self.verifiers = list(verifiers)
        self.max_body = max_body
        self.process = process
        self.faults = faults
        self.feed = feed
        self.trace = trace
        self.technique = techniques.get(technique).name
        self.path = path
        self._changed = threading.Condition()
        self._deliveries: list[Delivery] = []
        self._rejections: list[Rejection] = []
        self._tasks: set[asyncio.Task] = set()

    @property
    def deliveries(self) -> list[Delivery]:
        """A snapshot of every accepted delivery, oldest first."""
        with self._changed:
            return list(self._deliveries)

    @property
    def rejections(self) -> list[Rejection]:
        """A snapshot of every refused request, oldest first."""
        with self._changed:
            return list(self._rejections)

    def rules(self) -> list:
        """Tornado URL rules mounting this receiver at ``path``."""
        if self.feed is not None and self.trace is None:
            raise LabkitError(
                "a receiver with a feed needs trace= to record latencies in: pass the "
                "server's trace, or use serve_receiver(), which does it for you"
            )
        return [(self.path, self)]

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        """Tornado hands each request (for ``path``, when mounted with :meth:`rules`;
        every request, when served on its own) to a new exchange."""
        return _Exchange(self, request_conn)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        """Block until ``count`` deliveries have arrived; return them all.

        Raises TimeoutError after ``timeout`` seconds, saying what did arrive.
        Call it from a notebook cell or a script, not from the lab loop.
        """
        def explain() -> str:
            rejected = self._rejections
            last = f" (last: {rejected[-1].status} {rejected[-1].reason})" if rejected else ""
            return (f"only {len(self._deliveries)} of {count} deliveries reached {self.path} "
                    f"within {timeout} s, and {len(rejected)} requests were rejected{last}: check "
                    f"the sender's URL, secret and clock, and receiver.rejections for the reasons")

        lab.wait_until(self._changed, lambda: len(self._deliveries) >= count, timeout, explain)
        return self.deliveries

    # -- steps of a request, called by the exchange ----------------------------

    def _check_request(self, method: str, target: str, declared_length: str | None) -> None:
        """Steps 0 and 1, before the body is read: path, method and declared size."""
        if target.partition("?")[0] != self.path:
            raise RejectedError("not_found", f"nothing here: webhooks go to {self.path}",
                                status=404)
        if method != "POST":
            raise RejectedError("method", f"webhooks are POSTed, not sent with {method}",
                                status=405)
        if declared_length and declared_length.isdigit() and int(declared_length) > self.max_body:
            raise too_large(int(declared_length), self.max_body)

    def _verify(self, request, body: bytes) -> Delivery:
        """Steps 2 to 4: content type, verifiers, parsing; return the delivery."""
        content_type = request.headers.get("Content-Type", "")
        parse = _parser(content_type)
        for verifier in self.verifiers:
            verifier.verify(request.headers, body, url=request.url,
                            remote_ip=request.remote_ip)
        payload = parse(body)
        headers = _lower_case(request.headers)
        return Delivery(
            id=_first(headers, payload, ID_HEADERS, ID_FIELDS),
            event_type=_first(headers, payload, TYPE_HEADERS, TYPE_FIELDS),
            content_type=content_type, headers=headers, body=body, payload=payload,
            received=time.monotonic(), remote_ip=request.remote_ip)

    def _reject(self, status: int, reason: str, message: str, request) -> None:
        """Record a refused request."""
        rejection = Rejection(status=status, reason=reason, message=message,
                              received=time.monotonic(), remote_ip=request.remote_ip,
                              headers=_lower_case(request.headers))
        with self._changed:
            self._rejections.append(rejection)
            self._changed.notify_all()

    def _record(self, delivery: Delivery, client: str) -> None:
        """Step 6: keep the delivery and, if it carries a feed event, its latency.

        The one who learns of the event is the receiver itself, so the event
        record has no client (plots draw it on the server's lane); the sender
        is named in its detail.
        """
        with self._changed:
            self._deliveries.append(delivery)
            self._changed.notify_all()
        event = None if self.feed is None else self.feed.find(delivery.id)
        if event is not None:
            self.trace.delivered(event, technique=self.technique,
                                 bytes=len(delivery.body), detail=f"from {client}")

    def __repr__(self) -> str:
        return (f"<WebhookReceiver {self.path} {len(self.deliveries)} delivered, "
                f"{len(self.rejections)} rejected>")


def _lower_case(headers: httputil.HTTPHeaders) -> dict[str, str]:
    """A plain dict of the headers with lower-case names; repeated ones joined by commas."""
    plain: dict[str, str] = {}
    for name, value in headers.get_all():
        name = name.lower()
        plain[name] = f"{plain[name]},{value}" if name in plain else value
    return plain


def _first(headers: dict[str, str], payload: Any, names: tuple, fields: tuple) -> str | None:
    """The first of ``names`` found in the headers, else of ``fields`` in the payload."""
    for name in names:
        if headers.get(name.lower()):
            return headers[name.lower()]
    for name in fields:
        value = _field(payload, name)
        if value is not None:
            return value
    return None


def _field(payload: Any, name: str) -> str | None:
    """A top-level string (or integer) field of a parsed body, or None."""
    if isinstance(payload, dict):
        value = payload.get(name)
        ok = isinstance(value, (str, int)) and not isinstance(value, bool)
        return str(value) if ok else None
    if isinstance(payload, ElementTree.Element):
        return payload.findtext(name) or payload.get(name)
    return None


def _parse_json(body: bytes) -> Any:
    return json.loads(body)


def _parse_form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))


def _parse_xml(body: bytes) -> ElementTree.Element:
    return ElementTree.fromstring(body)


def _parser(content_type: str) -> Callable[[bytes], Any]:
    """Step 2: the parser for a content type, or RejectedError 415."""
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return _PARSERS["json"]
    if media == "application/x-www-form-urlencoded":
        return _PARSERS["form"]
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        return _PARSERS["xml"]
    raise RejectedError(
        "unsupported_type",
        f"content type {content_type[:80]!r} is not JSON, form data or XML",
        status=415)


def _checked(parse: Callable[[bytes], Any], what: str) -> Callable[[bytes], Any]:
    """``parse``, turning a parse failure into RejectedError 400 (step 4)."""
    def parse_or_reject(body: bytes) -> Any:
        try:
            return parse(body)
        except (ValueError, ElementTree.ParseError) as exc:
            raise RejectedError("malformed", f"the body is not valid {what}: {exc}",
                                status=400) from None
    return parse_or_reject


_PARSERS = {"json": _checked(_parse_json, "JSON"), "form": _checked(_parse_form, "form data"),
            "xml": _checked(_parse_xml, "XML")}


class _Incoming(NamedTuple):
    """What the receiver's checks need to know about a request."""

    method: str
    url: str
    """The URL as the sender used it (Twilio signs it)."""
    headers: httputil.HTTPHeaders
    remote_ip: str
    connection: httputil.HTTPConnection
    """Where the wire layer keeps this exchange's trace facts (see ``annotate``)."""


class _Exchange(httputil.HTTPMessageDelegate):
    """One request to the receiver, as HTTP delivers it, and the receiver's answer.

    Tornado calls ``headers_received`` with the request line and headers,
    ``data_received`` with each piece of the body, and ``finish`` when the
    body is complete. That is all a webhook receiver needs, so it works at
    this level rather than through a full ``RequestHandler``: fewer objects
    per delivery, which keeps the kit's receiver as fast as a bare handler
    even with verification and tracing on (see bench/receiver_throughput.py).
    """

    def __init__(self, receiver: WebhookReceiver, connection: httputil.HTTPConnection):
        self.receiver = receiver
        self.connection = connection
        self.body = BodyLimit(receiver.max_body)
        self.answered = False

    def headers_received(self, start_line: httputil.RequestStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        context = self.connection.context
        host = headers.get("Host") or "127.0.0.1"
        self.request = _Incoming(start_line.method, f"{context.protocol}://{host}{start_line.path}",
                                 headers, context.remote_ip, self.connection)
        try:
            self.receiver._check_request(start_line.method, start_line.path,
                                         headers.get("Content-Length"))
        except RejectedError as exc:
            # Answering before the body is read means the connection must close.
            extra = {"Allow": "POST"} if exc.status == 405 else {}
            self.refuse(exc, {**extra, "Connection": "close"})

    def data_received(self, chunk: bytes) -> None:
        self.body.add(chunk)

    def finish(self) -> None:
        if self.answered:
            return
        receiver = self.receiver
        try:
            delivery = receiver._verify(self.request, self.body.body())
        except RejectedError as exc:
            return self.refuse(exc)
        if receiver.faults is None and receiver.process is None:
            return self.accept(delivery)
        task = asyncio.ensure_future(self.run_hooks(delivery))
        receiver._tasks.add(task)
        task.add_done_callback(receiver._tasks.discard)

    async def run_hooks(self, delivery: Delivery) -> None:
        """Steps 5 to 8 when ``faults`` or ``process`` may need to await."""
        receiver = self.receiver
        fault = None if receiver.faults is None else await lab.invoke(receiver.faults, delivery)
        if fault is not None:
            status, headers = fault
            self.note(status, "fault", "answered by the faults hook")
            return self.answer(status, headers)
        if receiver.process is None:
            return self.accept(delivery)
        receiver._record(delivery, client_of(self))
        try:
            await lab.invoke(receiver.process, delivery)
        except Exception as exc:  # any bug in process: the provider sees a 500
            return self.refuse(RejectedError("process_failed", f"process raised {exc!r}",
                                             status=500))
        self.succeed()

    def accept(self, delivery: Delivery) -> None:
        """Record the delivery and answer 200 (steps 6 and 8, nothing to process)."""
        self.receiver._record(delivery, client_of(self))
        self.succeed()

    def succeed(self) -> None:
        annotate(self, events=1)
        self.answer(200)

    def on_connection_close(self) -> None:
        """The sender hung up before its body was complete: nothing to answer."""
        self.answered = True

    def note(self, status: int, reason: str, message: str) -> None:
        """Record a refusal in the receiver and on the response's trace record."""
        self.receiver._reject(status, reason, message, self.request)
        annotate(self, events=0, detail=f"{reason}: {message}")

    def refuse(self, exc: RejectedError, headers: dict | None = None) -> None:
        """Note the refusal and answer its status, with the reason word for humans."""
        self.note(exc.status, exc.reason, str(exc))
        self.answer(exc.status, headers, exc.reason + "\n")

    def answer(self, status: int, headers: dict | None = None, text: str = "") -> None:
        """Write the status line, headers and (usually empty) body, once."""
        if not self.answered:
            self.answered = True
            write_answer(self.connection, status, headers, text)


def serve_receiver(receiver: WebhookReceiver | None = None, *, trace: Trace | None = None,
                   port: int = 0, **options: Any) -> lab.Server:
    """Serve ``receiver`` (or a new one made from ``options``) on the lab loop.

    One line over :func:`labkit.lab.serve`: ``server.component`` is the
    receiver and ``server.endpoint_url`` the URL to give the provider.
    """
    return lab.serve(lab.component(WebhookReceiver, receiver, options), trace=trace, port=port)
