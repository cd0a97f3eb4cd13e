"""A small message broker over HTTP, and a direct service to compare it with.

Two services can talk in two ways. The caller can *call* the other service
and wait while it works (:class:`DirectService`): simple, but the caller is
tied to the callee in time. It waits as long as the work takes, and if the
callee is down at that moment the call fails. Or the caller can put a
*message* in a queue and go on (:class:`Broker`); the other service takes
messages out when it is ready (:class:`Consumer`). The queue stores each
message until it has been processed and hands messages out oldest first.
RabbitMQ, Kafka and Amazon SQS are industrial versions of this module.

The broker's endpoints, all on one server:

==============================  ============================================  ======================
request                         what the broker does                          answer
==============================  ============================================  ======================
``POST /queues/<name>``         stores the body (any UTF-8 text, empty        201 ``{"id": ...}``
                                included) at the back of the queue; nobody
                                needs to be listening
``GET /queues/<name>``          *receive*, with ``?wait=<s>&max=<n>``:        200 ``[{"id": ...,
                                leases the oldest waiting messages (at most   "body": ...,
                                ``max``, default 1, capped at 100) for        "attempts": 1}]``
                                ``visibility_timeout`` seconds. If there are
                                none, holds the request up to ``wait``
                                seconds (default 0, capped at 10) until one
                                arrives: a long poll
``DELETE /queues/<name>/<id>``  *ack*: the message is done, forget it         204
``GET /queues/<name>/stats``    counts: ``depth`` (waiting), ``in_flight``    200 ``{"depth": ...}``
                                (leased, not acked), ``published``,
                                ``delivered``, ``acked``
==============================  ============================================  ======================

A message's life: *published* -> waiting -> *received* (in flight, leased)
-> *acked* (gone). A consumer that crashes, or fails, before it acks lets
its lease run out; the message is then waiting again, at its old place at
the front, and the next receive gets it with ``attempts`` one higher. So
every message is delivered **at least once**, sometimes more: a consumer
must be able to see the same message twice. An ack is by message id and
ends the message even if its lease had run out.

Refusals have a JSON body ``{"error": "<what to do>"}`` and never stop the
server: 404 for an unknown route or message id, 405 for a wrong method, 413
for a body over ``max_body`` bytes (a declared ``Content-Length`` is checked
before the body is read), 400 for a body that is not UTF-8 or a bad
``wait``/``max``, 503 when a queue is full or the broker is stopping.

Python side:

:class:`Broker`
    The queues and their counters; ``rules()`` mounts the endpoints.
:func:`serve_broker`
    Starts a broker on the lab loop; ``server.component`` is the broker.
:class:`Consumer`
    A worker service on the lab loop: receive, ``process(message)``, ack,
    again. ``concurrency`` workers run side by side.
:class:`DirectService`
    ``POST /work`` runs ``process(message)`` inside the request: the contrast.
:class:`Message`
    What ``process`` is given, by a consumer and by the direct service alike.

Every request is in the server's trace (technique ``queue`` or ``direct``):
receives carry ``events`` = messages handed out (0 = an empty poll), a
redelivery adds a ``retry`` record, and a message whose body is a feed
event (``event.to_json()``) adds an ``event`` record, with its latency,
when it reaches a consumer or the direct service.

Example::

    with serve_broker() as server:
        requests.post(server.url + "/queues/emails", data="hello")   # 201, at once
        done = []
        with Consumer(server.url, "emails", done.append) as consumer:
            consumer.wait_for(1)
        print(done)   # [Message(id='msg_000001', body='hello', attempts=1)]

Thread-safety: the servers and consumers live on the lab loop, where
``process`` runs too, so ``process`` should ``await`` (``asyncio.sleep``),
not block (``time.sleep`` stalls every server of the lab). From a cell or a
script: :func:`serve_broker`, :meth:`Broker.stats`, :meth:`Broker.history`,
:meth:`Consumer.start`, :meth:`Consumer.stop`, :meth:`Consumer.wait_for`,
:meth:`DirectService.start` and :meth:`DirectService.stop` are safe.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from labkit import lab
from labkit.endpoints import BodyHandler, Handler, NotFound
from labkit.errors import HubClosedError, LabkitError, RejectedError
from labkit.feed import Event, FeedError
from labkit.hub import Hub
from labkit.trace import Trace
from labkit.wire import CLIENT_HEADER, annotate, client_of

__all__ = ["Broker", "Consumer", "ConsumerBase", "DirectService", "Message", "Snapshot", "serve_broker",
           "running_consumers", "MAX_WAIT", "MAX_BATCH"]

MAX_WAIT = 10.0
"""Longest a receive may be held, in seconds (a larger ``wait`` is capped)."""
MAX_BATCH = 100
"""Most messages one receive hands out (a larger ``max`` is capped)."""
MAX_BODY = 64 * 1024
"""Default largest message body, in bytes."""
NAME = r"[A-Za-z0-9_.-]{1,64}"
"""What a queue name (and a message id) may look like."""

_MAX_WAKEUPS = 10_000  # a held receive rescans at most this often before answering []


@dataclass(frozen=True)
class Message:
    """One message, as a consumer (or the direct service) is given it."""

    id: str
    body: str
    attempts: int
    """1 the first time it is delivered, 2 the second, ..."""

    @property
    def event(self) -> Event | None:
        """The feed :class:`~labkit.feed.Event` the body carries, or None if it is not one."""
        try:
            return Event.from_dict(json.loads(self.body))
        except (ValueError, FeedError):
            return None


@dataclass(frozen=True)
class Snapshot:
    """A queue's size at one moment (``t`` on ``time.monotonic()``, like the trace)."""

    t: float
    depth: int
    in_flight: int


@dataclass
class _Stored:
    id: str
    body: str
    attempts: int = 0
    visible_at: float = 0.0  # leased until then (time.monotonic())


class _Queue:
    def __init__(self) -> None:
        self.messages: dict[str, _Stored] = {}  # unacked messages, in publish order
        self.leased: set[str] = set()           # ids of those that may be in flight
        self.counts = collections.Counter()
        self.history: collections.deque[Snapshot] = collections.deque(maxlen=100_000)
        self.hub = Hub(history=1, name="publishes")
        """Wakes held receives: every publish goes through it (the ids, not the bodies)."""

    def sizes(self, now: float) -> tuple[int, int]:
        """(waiting, in flight). Forgets leases that have run out, so it costs O(in flight)."""
        self.leased -= {i for i in self.leased if self.messages[i].visible_at <= now}
        return len(self.messages) - len(self.leased), len(self.leased)

    def next_expiry(self, now: float) -> float:
        """When the next lease runs out (inf if nothing is in flight)."""
        self.sizes(now)
        return min((self.messages[i].visible_at for i in self.leased), default=math.inf)


# -- the broker ----------------------------------------------------------------


class Broker:
    """The queues: messages in publish order, leases, counters. Served by :func:`serve_broker`.

    ``visibility_timeout``: seconds a received message stays leased before it
    is handed out again unless acked. ``max_body``: largest body in bytes
    (413 above). ``max_messages``: most unacked messages per queue (503 above).
    ``trace``: where redeliveries are recorded (``serve_broker`` sets it).
    """

    def __init__(self, *, visibility_timeout: float = 30.0, max_body: int = MAX_BODY,
                 max_messages: int = 10_000, trace: Trace | None = None,
                 technique: str = "queue"):
        if not (isinstance(visibility_timeout, (int, float)) and
                math.isfinite(visibility_timeout) and visibility_timeout > 0):
            raise LabkitError(f"visibility_timeout must be a number of seconds > 0, "
                              f"got {visibility_timeout!r}")
        self.visibility_timeout = float(visibility_timeout)
        self.max_body = max_body
        self.max_messages = max_messages
        self.trace = trace
        self.technique = technique
        self.closed = False
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}
        self._ids = 0

    def rules(self) -> list:
        """Tornado URL rules for the broker's endpoints (the table in the module docstring)."""
        args = {"broker": self}
        return [(rf"/queues/({NAME})/stats", _StatsHandler, args),
                (rf"/queues/({NAME})/({NAME})", _AckHandler, args),
                (rf"/queues/({NAME})", _QueueHandler, args),
                (r".*", NotFound, {"routes": _ROUTES})]

    # -- reading, from anywhere -------------------------------------------

    def queues(self) -> list[str]:
        """Names of the queues used so far."""
        with self._lock:
            return list(self._queues)

    def stats(self, name: str) -> dict[str, int]:
        """What ``GET /queues/<name>/stats`` answers: depth, in flight and counters."""
        with self._lock:
            queue = self._queues.get(name)
            if queue is None:
                return {"depth": 0, "in_flight": 0, "published": 0, "delivered": 0, "acked": 0}
            depth, in_flight = queue.sizes(time.monotonic())
            return {"depth": depth, "in_flight": in_flight, **{
                key: queue.counts[key] for key in ("published", "delivered", "acked")}}

    def history(self, name: str) -> list[Snapshot]:
        """The queue's depth and in-flight count after every publish, receive and ack."""
        with self._lock:
            queue = self._queues.get(name)
            return list(queue.history) if queue is not None else []

    async def aclose(self) -> None:
        """Answer every held receive with 503 and refuse new requests (runs on server stop)."""
        self.closed = True
        for queue in list(self._queues.values()):
            await queue.hub.aclose()

    # -- the operations, on the lab loop -----------------------------------

    def _queue(self, name: str) -> _Queue:
        if name not in self._queues:
            self._queues[name] = _Queue()
        return self._queues[name]

    def _snapshot(self, queue: _Queue, now: float) -> None:
        queue.history.append(Snapshot(now, *queue.sizes(now)))

    def _publish(self, name: str, body: str) -> str:
        with self._lock:
            queue = self._queue(name)
            if len(queue.messages) >= self.max_messages:
                raise RejectedError("full", f"queue {name!r} is full ({self.max_messages} "
                                    f"unacked messages): consume some first", status=503)
            self._ids += 1
            message = _Stored(f"msg_{self._ids:06d}", body)
            queue.messages[message.id] = message
            queue.counts["published"] += 1
            self._snapshot(queue, time.monotonic())
        queue.hub.publish(message.id)
        return message.id

    def _receive(self, name: str, limit: int) -> tuple[list[Message], float]:
        """Lease up to ``limit`` waiting messages, oldest first.

        Also returns when the next lease runs out (inf if none is in flight),
        so a held receive knows when to look again.
        """
        now = time.monotonic()
        batch: list[Message] = []
        with self._lock:
            queue = self._queue(name)
            for message in queue.messages.values():  # oldest first
                if len(batch) == limit:
                    break
                if message.visible_at <= now:
                    message.attempts += 1
                    message.visible_at = now + self.visibility_timeout
                    queue.leased.add(message.id)
                    batch.append(Message(message.id, message.body, message.attempts))
            if batch:
                queue.counts["delivered"] += len(batch)
                self._snapshot(queue, now)
            return batch, queue.next_expiry(now)

    def _ack(self, name: str, message_id: str) -> None:
        with self._lock:
            queue = self._queues.get(name)
            if queue is None or queue.messages.pop(message_id, None) is None:
                raise RejectedError("unknown_id", f"no message {message_id!r} in queue {name!r}: "
                                    f"it was acked already, or never published there",
                                    status=404)
            queue.leased.discard(message_id)
            queue.counts["acked"] += 1
            self._snapshot(queue, time.monotonic())

    def __repr__(self) -> str:
        return f"<Broker queues={self.queues()}>"


def serve_broker(broker: Broker | None = None, *, trace: Trace | None = None, port: int = 0,
                 **options: Any) -> lab.Server:
    """Serve ``broker`` (or a new :class:`Broker` made from ``options``) on the lab loop.

    One line over :func:`labkit.lab.serve`: ``server.component`` is the
    broker. Stopping the server answers held receives with 503 before
    closing connections.
    """
    return lab.serve(lab.component(Broker, broker, options), trace=trace, port=port)


_ROUTES = ("POST /queues/<name>, GET /queues/<name>?wait=&max=, DELETE /queues/<name>/<id>, "
           "GET /queues/<name>/stats")


# -- the handlers ----------------------------------------------------------------


class _QueueHandler(BodyHandler):
    """``POST`` publishes, ``GET`` receives (a long poll when ``wait`` > 0)."""

    def initialize(self, broker: Broker) -> None:
        self.broker = broker
        self.max_body = broker.max_body
        self.waiting: asyncio.Future | None = None

    def post(self, name: str) -> None:
        try:
            if self.broker.closed:
                raise _stopping()
            message_id = self.broker._publish(name, self.text())
        except RejectedError as exc:
            return self.refuse(exc)
        annotate(self, detail=f"published {message_id}")
        self.set_header("Location", f"/queues/{name}/{message_id}")
        self.answer(201, {"id": message_id})

    async def get(self, name: str) -> None:
        try:
            wait = _number(self, "wait", 0.0, float, MAX_WAIT, "a number of seconds >= 0")
            limit = _number(self, "max", 1, int, MAX_BATCH, "a whole number >= 1")
        except RejectedError as exc:
            return self.refuse(exc)
        broker = self.broker
        deadline = time.monotonic() + wait
        batch: list[Message] = []
        hub = broker._queue(name).hub
        for _ in range(_MAX_WAKEUPS):
            if broker.closed:
                return self.refuse(_stopping())
            cursor = hub.last_id
            batch, next_expiry = broker._receive(name, limit)
            now = time.monotonic()
            if batch or now >= deadline:
                break
            # Hold until a publish, or until a lease runs out or the wait ends.
            self.waiting = asyncio.ensure_future(hub.wait(cursor, min(deadline, next_expiry) - now))
            try:
                await self.waiting
            except asyncio.CancelledError:  # the client went away: nothing to answer
                return
            except HubClosedError:  # the broker is stopping
                return self.refuse(_stopping())
        client = client_of(self)
        for message in batch:
            if message.attempts > 1 and broker.trace is not None:
                broker.trace.add("retry", technique=broker.technique, client=client,
                                 detail=f"{message.id} redelivered, attempt {message.attempts}")
        annotate(self, events=len(batch), detail=" ".join(m.id for m in batch))
        self.answer(200, [{"id": m.id, "body": m.body, "attempts": m.attempts} for m in batch])

    def on_connection_close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()


class _AckHandler(Handler):
    """``DELETE`` acks one message."""

    def initialize(self, broker: Broker) -> None:
        self.broker = broker

    def delete(self, name: str, message_id: str) -> None:
        try:
            self.broker._ack(name, message_id)
        except RejectedError as exc:
            return self.refuse(exc)
        annotate(self, detail=f"acked {message_id}")
        self.answer(204)


class _StatsHandler(Handler):
    """``GET`` a queue's counters."""

    def initialize(self, broker: Broker) -> None:
        self.broker = broker

    def get(self, name: str) -> None:
        self.answer(200, self.broker.stats(name))


def _number(handler: tornado.web.RequestHandler, name: str, default: Any, kind: type,
            cap: Any, what: str) -> Any:
    """Query argument ``name`` as ``kind``, capped at ``cap``; RejectedError 400 if bad."""
    raw = handler.get_query_argument(name, None)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    low = 1 if kind is int else 0
    if value is None or not math.isfinite(value) or value < low:
        raise RejectedError("bad_query", f"{name} must be {what} (more than {cap:g} counts as "
                            f"{cap:g}), got {raw[:40]!r}", status=400)
    return min(value, cap)


def _stopping() -> RejectedError:
    return RejectedError("stopping", "the broker is stopping: try again later", status=503)


# -- the consumer ----------------------------------------------------------------

_CONSUMERS: set["Consumer"] = set()


def running_consumers() -> list["Consumer"]:
    """Every consumer started and not yet stopped (a notebook's last cell checks it is empty)."""
    return list(_CONSUMERS)


class ConsumerBase:
    """What a consumer of either broker (this module's, or Redis in
    :mod:`labkit.redis_queue`) keeps and does the same way.

    It keeps ``processed`` (messages ``process`` finished, in that order),
    ``failures`` (messages whose ``process`` raised, with the error) and
    ``errors`` (requests or commands to the broker that failed); a cell
    waits on them with :meth:`wait_for`. On the lab loop, ``_pause`` sleeps
    but wakes at once on stop, and ``_note`` appends and wakes the cell.
    A subclass starts and stops its own work and says in ``_problems`` what
    went wrong, for the message of a wait that runs out.
    """

    def __init__(self) -> None:
        self.processed: list[Message] = []
        """Messages ``process`` finished, in that order (a redelivered one may come twice)."""
        self.failures: list[tuple[Message, str]] = []
        """Messages whose ``process`` raised, with the error (not acknowledged)."""
        self.errors: list[str] = []
        """Requests or commands to the broker that failed (it was down, stopping ...)."""
        self._changed = threading.Condition()
        self._stopping: asyncio.Event | None = None

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        """Block until ``process`` has finished ``count`` messages; return them all.

        Raises :class:`~labkit.errors.WaitTimeout` after ``timeout`` seconds,
        saying how far it got.
        """
        def explain() -> str:
            last = f" (last: {self.errors[-1]})" if self.errors else ""
            return (f"only {len(self.processed)} of {count} messages were processed within "
                    f"{timeout} s; {self._problems()}{last}")

        lab.wait_until(self._changed, lambda: len(self.processed) >= count, timeout, explain)
        with self._changed:
            return list(self.processed)

    def _problems(self) -> str:
        return (f"process raised {len(self.failures)} times and "
                f"{len(self.errors)} requests to the broker failed")

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the consumer is stopped."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _note(self, where: list, item: Any) -> None:
        with self._changed:
            where.append(item)
            self._changed.notify_all()

    def __enter__(self):
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Consumer(ConsumerBase):
    """A worker service: receive a message, ``process`` it, ack it, again, on the lab loop.

    ``url``: the broker server's URL. ``process(message)`` may be a plain or
    a coroutine function; if it raises, the message is not acked, so the
    broker hands it out again after its visibility timeout. ``concurrency``
    workers receive and process side by side (then the processing order is
    no longer the publish order). ``wait``: how long each receive may be held.
    ``trace``: where to record feed events as delivered when they arrive.
    ``name`` names the consumer in the trace (workers ``name-1``, ``name-2`` ...).

    :meth:`stop` is clean: each worker finishes the receive it has open (at
    most ``wait`` seconds) and the message it is processing, acks it, and
    ends. So a stopped consumer holds no lease: nothing it received is left
    waiting for a visibility timeout.
    """

    def __init__(self, url: str, queue: str, process: Callable[[Message], Any], *,
                 concurrency: int = 1, wait: float = 1.0, trace: Trace | None = None,
                 name: str = "consumer", technique: str = "queue"):
        if not re.fullmatch(NAME, queue):
            raise LabkitError(f"queue names are 1 to 64 letters, digits, '_', '.' or '-', "
                              f"got {queue!r}")
        if not isinstance(concurrency, int) or not 1 <= concurrency <= 100:
            raise LabkitError(f"concurrency must be a whole number from 1 to 100, "
                              f"got {concurrency!r}")
        if not isinstance(wait, (int, float)) or not 0 < wait <= MAX_WAIT:
            raise LabkitError(f"wait must be a number of seconds > 0 and <= {MAX_WAIT:g}, "
                              f"got {wait!r}")
        super().__init__()
        self.url = url.rstrip("/")
        self.queue = queue
        self.process = process
        self.concurrency = concurrency
        self.wait = wait
        self.trace = trace
        self.name = name
        self.technique = technique
        self._tasks: list[asyncio.Task] = []
        self._http: AsyncHTTPClient | None = None

    @property
    def running(self) -> bool:
        return self in _CONSUMERS

    def start(self) -> Consumer:
        """Start the workers on the lab loop and return at once."""
        if self.running:
            raise LabkitError("this consumer is already running: stop() it first")
        lab.run(self._start)
        return self

    def _start(self) -> None:
        self._stopping = asyncio.Event()
        self._http = lab.http_client(self.concurrency)
        names = [self.name] if self.concurrency == 1 else \
            [f"{self.name}-{i}" for i in range(1, self.concurrency + 1)]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work(name)) for name in names]
        _CONSUMERS.add(self)

    def stop(self, timeout: float | None = None) -> None:
        """Stop cleanly (see the class docstring), from a cell or a script.

        Workers still busy after ``timeout`` seconds (default: ``wait`` + 5)
        are cancelled; what they were processing is not acked, so it comes
        back after the visibility timeout.
        """
        lab.run(self.astop(timeout))

    async def astop(self, timeout: float | None = None) -> None:
        """:meth:`stop` for code on the lab loop."""
        if not self.running:
            return
        self._stopping.set()
        _, late = await asyncio.wait(self._tasks, timeout=self.wait + 5 if timeout is None
                                     else timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        self._http.close()
        _CONSUMERS.discard(self)

    # -- on the lab loop ---------------------------------------------------

    async def _work(self, client: str) -> None:
        receive = f"{self.url}/queues/{self.queue}?wait={self.wait:g}&max=1"
        pause = 0.05
        while not self._stopping.is_set():
            try:
                response = await self._http.fetch(receive, headers={CLIENT_HEADER: client},
                                                  request_timeout=self.wait + 5, raise_error=False)
                if response.code != 200:
                    raise LabkitError(f"receive answered {response.code}: {response.body[:200]!r}")
                messages = [Message(**item) for item in json.loads(response.body)]
            except (HTTPClientError, OSError, ValueError, TypeError, LabkitError) as exc:
                self._note(self.errors, f"{type(exc).__name__}: {exc}")
                await self._pause(pause)
                pause = min(pause * 2, 1.0)  # the broker is down or stopping: back off
                continue
            pause = 0.05
            for message in messages:
                await self._handle(message, client)

    async def _handle(self, message: Message, client: str) -> None:
        event = message.event
        if event is not None and self.trace is not None:
            self.trace.delivered(event, technique=self.technique, client=client,
                                 bytes=len(message.body.encode()),
                                 detail=f"{message.id}, attempt {message.attempts}")
        try:
            await lab.invoke(self.process, message)
        except Exception as exc:  # any bug in process: no ack, the broker will redeliver
            self._note(self.failures, (message, repr(exc)))
            return
        try:
            response = await self._http.fetch(f"{self.url}/queues/{self.queue}/{message.id}",
                                              method="DELETE", headers={CLIENT_HEADER: client},
                                              raise_error=False)
            if response.code != 204:
                self._note(self.errors, f"ack of {message.id} answered {response.code}")
        except (HTTPClientError, OSError) as exc:
            self._note(self.errors, f"ack of {message.id}: {type(exc).__name__}: {exc}")
        self._note(self.processed, message)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<Consumer {self.name} of {self.url}/queues/{self.queue} {state}, "
                f"{len(self.processed)} processed>")


# -- the direct service ------------------------------------------------------------


class DirectService:
    """A service called directly: ``POST <path>`` runs ``process`` inside the request.

    The caller waits for ``process`` to finish: 204 if it returned None,
    200 with its result as JSON otherwise, 500 if it raised. While the
    service is stopped, calls fail to connect. :meth:`stop` and
    :meth:`start` take it down and bring it back on the same port, so
    callers keep their URL. A body that is a feed event is recorded in
    ``trace`` as delivered when the request arrives.

    ``process(message)`` gets a :class:`Message` (id ``call_000001``,
    ``attempts`` 1), so one function can serve a consumer and this service.
    """

    def __init__(self, process: Callable[[Message], Any] | None = None, *, path: str = "/work",
                 trace: Trace | None = None, port: int = 0, technique: str = "direct",
                 max_body: int = MAX_BODY):
        if not path.startswith("/"):
            raise LabkitError(f"path must start with '/', got {path!r}")
        self.process = process
        self.path = path
        self.trace = trace if trace is not None else Trace()
        self.port = port
        self.technique = technique
        self.max_body = max_body
        self.calls: list[Message] = []
        """Every call that reached the service, oldest first."""
        self.server: lab.Server | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    def rules(self) -> list:
        """The one endpoint, ``POST <path>``, then 404 for anything else."""
        return [(re.escape(self.path), _WorkHandler, {"service": self}),
                (r".*", NotFound, {"routes": f"POST {self.path}"})]

    @property
    def url(self) -> str:
        """The endpoint's full URL, e.g. ``http://127.0.0.1:54321/work``."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> DirectService:
        """Serve on the lab loop (on the same port as before, after a stop)."""
        if self.running:
            raise LabkitError("this service is already running: stop() it first")
        self.server = lab.serve(self, port=self.port)
        self.port = self.server.port
        return self

    def stop(self) -> None:
        """Take the service down: from now on calls fail until :meth:`start`."""
        if self.server is not None:
            self.server.stop()

    def _arrived(self, body: str, client: str) -> Message:
        with self._lock:
            message = Message(f"call_{len(self.calls) + 1:06d}", body, 1)
            self.calls.append(message)
        event = message.event
        if event is not None:
            self.trace.delivered(event, technique=self.technique, client=client,
                                 bytes=len(body.encode()), detail=message.id)
        return message

    def __enter__(self) -> DirectService:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DirectService {self.url} {state}, {len(self.calls)} calls>"


class _WorkHandler(BodyHandler):
    """``POST`` runs the service's ``process`` and answers when it is done."""

    def initialize(self, service: DirectService) -> None:
        self.service = service
        self.max_body = service.max_body

    async def post(self) -> None:
        try:
            message = self.service._arrived(self.text(), client_of(self))
        except RejectedError as exc:
            return self.refuse(exc)
        result = None
        if self.service.process is not None:
            try:
                result = await lab.invoke(self.service.process, message)
            except Exception as exc:  # any bug in process: the caller sees a 500
                return self.refuse(RejectedError("process_failed", f"process raised {exc!r}",
                                                 status=500))
        annotate(self, events=1, detail=message.id)
        if result is None:
            self.answer(204)
        else:
            self.answer(200, result)
