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
4b    a repeat, a delivery id this receiver already accepted,     200, nothing else
      is acknowledged and goes no further (unless
      ``duplicates="process"``)
5     the optional ``faults`` hook may answer instead             its status
6     the :class:`Delivery` is recorded (with its latency if it   --
      carries an event of ``feed``)
7     the optional ``process`` callable runs                      500 if it raises
8     done                                                        200, empty body
====  ==========================================================  ==================

Providers deliver *at least once*: when an answer is lost or late, they send
the same delivery (same id) again. So by default the receiver processes each
delivery id once: a repeat of one it already accepted is answered 200, is
neither recorded nor processed again, and is counted in :attr:`~WebhookReceiver.repeats`
(its trace record says "repeat"). A repeat that arrives while the first copy is
still being processed waits for its outcome: if that fails (500, a fault), the
repeat is processed; so a 200 always means "done". ``duplicates="process"`` turns
this off, the naive receiver that does the work again for every copy (lesson 04
shows what that costs). The ids are kept in memory for the receiver's lifetime;
a production receiver keeps them in its database, under a unique constraint, for
as long as the provider may retry (days). A delivery without an id cannot be
recognised, so it is always processed. Providers look at the status only, so
success has an empty body. Every refusal is recorded as a :class:`Rejection` and its reason
attached to the response's record in the trace; the server keeps serving.

What it remembers: the most recent ``keep`` deliveries, rejections and
repeats (1,000 of each by default; ``keep=None`` remembers all), and how many
of each it ever had (:attr:`~WebhookReceiver.counts`). A receiver that
remembered every delivery would grow by about 2 KB per delivery for as long
as it runs, and so would one that remembered every request a forger sent it.
The trace is not bounded: it holds every request and latency a lesson
measures.

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
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Iterable, NamedTuple
from urllib.parse import parse_qsl

from tornado import httputil

from labkit import lab, techniques
from labkit.endpoints import BodyLimit, too_large, write_answer
from labkit.errors import LabkitError, RejectedError
from labkit.trace import Rows, Trace
from labkit.wire import annotate, client_of

__all__ = ["Delivery", "Rejection", "WebhookReceiver", "serve_receiver"]

ID_HEADERS = ("x-github-delivery", "webhook-id", "i-twilio-idempotency-token")
"""Header names (lower case, as :attr:`Delivery.headers` has them) that carry a delivery id."""
ID_FIELDS = ("id",)
TYPE_HEADERS = ("x-github-event",)
TYPE_FIELDS = ("type", "MessageStatus")
DUPLICATES = ("ignore", "process")
"""What a receiver does with a repeated delivery id: acknowledge it only, or process it again."""


def _field(index: int, doc: str) -> property:
    """A read-only attribute: one value of the kept row."""
    return property(lambda self: self._row[index], doc=doc)


def _flat(headers: dict[str, str]) -> list[str]:
    """Headers as one flat list (name, value, name, value ...), the names interned."""
    flat: list[str] = []
    for name, value in headers.items():
        flat += (sys.intern(name), value)
    return flat


class _Kept:
    """What the receiver keeps of a request: one flat row of strings, bytes and numbers.

    A receiver may keep 100,000 of these. As objects holding dicts they would
    each be walked by every full garbage collection, a pause that lands in
    the latencies a lesson measures; as rows in :class:`labkit.trace.Rows`
    the collector never walks them. The receiver stores ``_row`` and builds
    a new object around it for each reader; the headers dict (and a
    delivery's parsed payload) are made again on first access. The headers
    end the row as name, value, name, value ...: a tuple nested in the row
    would keep the row tracked for a collection or two longer.

    Immutable; equal (and hashed) by what was received.
    """

    __slots__ = ("_row", "_headers")
    _HEADERS: int = 0
    """Where the headers start in the row."""
    _REPR: tuple[str, ...] = ()

    @classmethod
    def _from_row(cls, row: tuple):
        kept = cls.__new__(cls)
        kept._row = row
        return kept

    @property
    def headers(self) -> dict[str, str]:
        """The request's headers, names in lower case (repeated ones joined by commas)."""
        try:
            return self._headers
        except AttributeError:
            start = self._HEADERS
            self._headers = dict(zip(self._row[start::2], self._row[start + 1::2]))
            return self._headers

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._row == other._row

    def __hash__(self) -> int:
        return hash(self._row)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._REPR)
        return f"{type(self).__qualname__}({shown})"


class Delivery(_Kept):
    """One accepted webhook. Header names are lower-case, as HTTP/2 sends them."""

    __slots__ = ("_payload",)
    _HEADERS = 6
    _REPR = ("id", "event_type", "content_type", "received", "remote_ip")

    def __init__(self, id: str | None, event_type: str | None, content_type: str,
                 headers: dict[str, str], body: bytes, payload: Any, received: float,
                 remote_ip: str):
        self._row = (id, event_type, content_type, body, received, remote_ip, *_flat(headers))
        self._headers = headers
        self._payload = payload

    id = _field(0, "The delivery id (see the table in the module docstring), or None.")
    event_type = _field(1, "The event type the provider named, or None.")
    content_type = _field(2, "The ``Content-Type`` header as sent.")
    body = _field(3, "The raw bytes, exactly as received and verified.")
    received = _field(4, "When it was accepted (``time.monotonic()``).")
    remote_ip = _field(5, "The sender's address.")

    @property
    def payload(self) -> Any:
        """Parsed body: a dict for JSON objects, dict[str, str] for forms, an Element for XML."""
        try:
            return self._payload
        except AttributeError:
            self._payload = _parser(self.content_type)(self.body)
            return self._payload


class Rejection(_Kept):
    """One refused request: the status answered and why."""

    __slots__ = ()
    _HEADERS = 5
    _REPR = ("status", "reason", "message", "received", "remote_ip")

    def __init__(self, status: int, reason: str, message: str, received: float, remote_ip: str,
                 headers: dict[str, str]):
        self._row = (status, reason, message, received, remote_ip, *_flat(headers))
        self._headers = headers

    status = _field(0, "The status answered.")
    reason = _field(1, "Why, in one word (``mismatch``, ``too_large`` ...).")
    message = _field(2, "Why, in a sentence for humans.")
    received = _field(3, "When it was refused (``time.monotonic()``).")
    remote_ip = _field(4, "The sender's address.")


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
    ``duplicates``: ``"ignore"`` (the default) acknowledges a repeated delivery
    id with 200 and does nothing else, counting it in :attr:`repeats`;
    ``"process"`` is the naive receiver that records and processes every copy.
    ``keep``: how many of the most recent deliveries, rejections and repeats
    it remembers (None: all); :attr:`counts` counts every one.
    """

    def __init__(self, verifiers: Iterable = (), *, max_body: int = 1024 * 1024,
                 process: Callable[[Delivery], Any] | None = None,
                 faults: Callable[[Delivery], Any] | None = None,
                 feed=None, trace: Trace | None = None, technique: str = "webhook",
                 path: str = "/webhook", duplicates: str = "ignore", keep: int | None = 1000):
        if duplicates not in DUPLICATES:
            raise LabkitError(f"duplicates={duplicates!r}: choose {DUPLICATES[0]!r} (a repeated "
                              f"delivery id is acknowledged, not processed again) or "
                              f"{DUPLICATES[1]!r} (every copy is processed)")
        self.duplicates = duplicates
        # Ids already answered 200 (the lab loop's alone). A dict rather than a set: the
        # garbage collector walks a set's items on every full collection, not a dict's
        # atomic keys and values (bench/gc_pauses.py: 8.9 ms less per collection at 100,000).
        self._accepted_ids: dict[str, None] = {}
        self._accepting: dict[str, asyncio.Event] = {}       # id -> set when its first copy ends
        self.verifiers = list(verifiers)
        self.max_body = max_body
        self.process = process
        self.faults = faults
        self.feed = feed
        self.trace = trace
        self.technique = techniques.get(technique).name
        self.path = path
        self._changed = threading.Condition()
        # The rows of the last `keep` of each, which the collector never walks.
        self._deliveries = Rows(keep)   # Delivery._row
        self._rejections = Rows(keep)   # Rejection._row
        self._repeats = Rows(keep)      # (delivery id,)
        self.keep = keep
        self._tasks: set[asyncio.Task] = set()

    @property
    def deliveries(self) -> list[Delivery]:
        """A snapshot of the accepted deliveries (the last ``keep``), oldest first."""
        with self._changed:
            rows = self._deliveries.snapshot()
        return [Delivery._from_row(row) for row in rows]

    @property
    def rejections(self) -> list[Rejection]:
        """A snapshot of the refused requests (the last ``keep``), oldest first."""
        with self._changed:
            rows = self._rejections.snapshot()
        return [Rejection._from_row(row) for row in rows]

    @property
    def repeats(self) -> list[str]:
        """The delivery id of each repeat acknowledged without processing (the last
        ``keep``), oldest first."""
        with self._changed:
            rows = self._repeats.snapshot()
        return [row[0] for row in rows]

    @property
    def counts(self) -> dict[str, int]:
        """How many deliveries were ``accepted``, requests ``rejected`` and ``repeats``
        acknowledged since the receiver was made, remembered or not; one snapshot."""
        with self._changed:
            return {"accepted": self._deliveries.total, "rejected": self._rejections.total,
                    "repeats": self._repeats.total}

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
        """Block until ``count`` deliveries have arrived; return them (the last ``keep``).

        Raises TimeoutError after ``timeout`` seconds, saying what did arrive.
        Call it from a notebook cell or a script, not from the lab loop.
        """
        def explain() -> str:
            rejected, counts = self.rejections, self.counts
            last = f" (last: {rejected[-1].status} {rejected[-1].reason})" if rejected else ""
            return (f"only {counts['accepted']} of {count} deliveries reached {self.path} within "
                    f"{timeout} s, and {counts['rejected']} requests were rejected{last}: check "
                    f"the sender's URL, secret and clock, and receiver.rejections for the reasons")

        lab.wait_until(self._changed, lambda: self._deliveries.total >= count, timeout, explain)
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
            self._rejections.append(rejection._row)
            self._changed.notify_all()

    def _record(self, delivery: Delivery, client: str) -> None:
        """Step 6: keep the delivery and, if it carries a feed event, its latency.

        The one who learns of the event is the receiver itself, so the event
        record has no client (plots draw it on the server's lane); the sender
        is named in its detail.
        """
        with self._changed:
            self._deliveries.append(delivery._row)
            self._changed.notify_all()
        event = None if self.feed is None else self.feed.find(delivery.id)
        if event is not None:
            self.trace.delivered(event, technique=self.technique,
                                 bytes=len(delivery.body), detail=f"from {client}")

    def _once_key(self, delivery: Delivery) -> str | None:
        """The id to process once (step 4b), or None when every copy is processed."""
        return delivery.id if self.duplicates == "ignore" else None

    def _accepted(self, delivery: Delivery) -> None:
        """Remember an id answered 200, so its repeats are only acknowledged."""
        key = self._once_key(delivery)
        if key is not None:
            self._accepted_ids[key] = None

    def _repeated(self, delivery_id: str) -> None:
        with self._changed:
            self._repeats.append((delivery_id,))
            self._changed.notify_all()

    def __repr__(self) -> str:
        return (f"<WebhookReceiver {self.path} {self._deliveries.total} delivered, "
                f"{self._rejections.total} rejected>")


def _lower_case(headers: httputil.HTTPHeaders) -> dict[str, str]:
    """A plain dict of the headers with lower-case names; repeated ones joined by commas."""
    plain: dict[str, str] = {}
    for name, value in headers.get_all():
        name = name.lower()
        plain[name] = f"{plain[name]},{value}" if name in plain else value
    return plain


def _first(headers: dict[str, str], payload: Any, names: tuple, fields: tuple) -> str | None:
    """The first of ``names`` (lower case) found in the headers, else of ``fields`` in the
    payload."""
    for name in names:
        value = headers.get(name)
        if value:
            return value
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
        """The body is complete: answer in the loop's next turn, as tornado runs a
        ``RequestHandler``.

        Requests that arrived together are all read first, then answered one
        after another. Answering each as soon as it is read interleaves the
        answers with the reading, and each answer then finds its sender
        asleep: waking it is work the kernel charges to this server (on a
        virtual machine, about 10 us of system time per delivery at 64
        senders; bench/receiver_throughput.py).
        """
        asyncio.get_running_loop().call_soon(self.respond)

    def respond(self) -> None:
        """Steps 2 to 8, once the whole body is in."""
        if self.answered:
            return
        receiver = self.receiver
        try:
            delivery = receiver._verify(self.request, self.body.body())
        except RejectedError as exc:
            return self.refuse(exc)
        key = receiver._once_key(delivery)
        if key in receiver._accepted_ids:
            return self.repeat(delivery)
        if receiver.faults is None and receiver.process is None and key not in receiver._accepting:
            return self.accept(delivery)
        task = asyncio.ensure_future(self.once(key, delivery))
        receiver._tasks.add(task)
        task.add_done_callback(receiver._tasks.discard)

    async def once(self, key: str | None, delivery: Delivery) -> None:
        """Step 4b when the hooks may await: while a copy with the same id is being
        handled, wait for its outcome; then acknowledge a repeat, or run the hooks."""
        receiver = self.receiver
        while key in receiver._accepting:
            await receiver._accepting[key].wait()
        if key in receiver._accepted_ids:
            return self.repeat(delivery)
        if key is None:
            return await self.run_hooks(delivery)
        receiver._accepting[key] = ended = asyncio.Event()
        try:
            await self.run_hooks(delivery)
        finally:
            del receiver._accepting[key]
            ended.set()

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
        self.succeed(delivery)

    def accept(self, delivery: Delivery) -> None:
        """Record the delivery and answer 200 (steps 6 and 8, nothing to process)."""
        self.receiver._record(delivery, client_of(self))
        self.succeed(delivery)

    def succeed(self, delivery: Delivery) -> None:
        self.receiver._accepted(delivery)
        annotate(self, events=1)
        self.answer(200)

    def repeat(self, delivery: Delivery) -> None:
        """Step 4b: a delivery id already accepted is acknowledged, and nothing else."""
        self.receiver._repeated(delivery.id)
        annotate(self, events=0, detail=f"repeat of delivery {delivery.id}: acknowledged, "
                                        f"not processed again")
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
            write_answer(self.connection, status, headers, text, method=self.request.method)


def serve_receiver(receiver: WebhookReceiver | None = None, *, trace: Trace | None = None,
                   port: int = 0, **options: Any) -> lab.Server:
    """Serve ``receiver`` (or a new one made from ``options``) on the lab loop.

    One line over :func:`labkit.lab.serve`: ``server.component`` is the
    receiver and ``server.endpoint_url`` the URL to give the provider.
    """
    return lab.serve(lab.component(WebhookReceiver, receiver, options), trace=trace, port=port)
