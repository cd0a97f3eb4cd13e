"""Message queues on a real broker: Redis Streams, with an embedded Redis by default.

:mod:`labkit.queues` builds a broker to show the mechanism. Out in the world
you meet real ones; Redis is among the most widely deployed, and its
*streams* are a message queue with everything that module teaches: a
producer appends, consumer groups share the work, every message stays
pending until it is acknowledged, and messages a crashed consumer took are
handed to another one after a while. This module runs on Redis through the
``redis`` client library, so what you learn here is what you would type in
production.

Where the broker is (:func:`broker_url`):

* by default the **embedded** one: ``fakeredis``, a Redis written in Python,
  running inside this process. Nothing to install, nothing to start; it
  forgets everything when the process ends.
* when the environment variable ``LABKIT_REDIS_URL`` is set
  (``redis://127.0.0.1:6379/0``), a **real Redis server**. The same code runs
  unchanged. If nobody answers there you get a :class:`~labkit.errors.BrokerUnavailable`
  saying which URL and what to do.

What each operation is in Redis, and how it shows in the trace:

==================  =============================================  =========================
operation           Redis command                                  trace record
==================  =============================================  =========================
send                ``XADD <queue> * body <text>``: appends the    ``request`` from the
                    message; its id (``1712345678901-0``:          producer, ``detail``
                    milliseconds and a counter) says where         ``XADD <queue> <id>``
make a group        ``XGROUP CREATE <queue> <group> 0 MKSTREAM``   (none)
receive             ``XREADGROUP GROUP <group> <consumer>          ``event`` on the consumer,
                    COUNT <batch> BLOCK <ms> STREAMS <queue> >``:  with its ``latency`` when
                    the next messages no one in the group has      the body is a feed event
                    had yet; they are now *pending* on this        (``Event.to_json()``)
                    consumer
acknowledge         ``XACK <queue> <group> <id>``: done, no        ``request`` from the
                    longer pending                                 consumer, ``detail``
                                                                   ``XACK <queue> <group> <id>``
redeliver           ``XAUTOCLAIM <queue> <group> <consumer>        ``retry`` on the consumer
                    <ms> <cursor>``: takes over messages pending   that claimed it, then an
                    on anyone for longer than ``claim_after``      ``event`` as above
count attempts      ``XPENDING <queue> <group> <id> <id> 1``:      (in ``detail``)
                    how often a message was delivered
dead-letter         ``MULTI; XADD <queue>:<group>:dead ...;        ``drop`` on the consumer
                    XACK ...; EXEC``: moved, in one step,
                    after ``max_attempts`` failed attempts
==================  =============================================  =========================

Sends and acknowledgements are ``request`` records because each is one
command a client sends to the broker, drawn in a timeline as an arrow up to
it. Their ``bytes`` are the command as the Redis protocol (RESP) frames it,
what a real server reads; the broker's replies and the reads are not
counted, so ``trace.bytes_per_event`` is not comparable with HTTP
techniques here. There are no ``response`` records.

Publish/subscribe versus a work queue: every *group* gets every message (an
email service and an invoicing service each see every order), while the
consumers *inside* one group share its messages (two email workers each send
some of the emails).

A message's life in one group: sent -> waiting -> delivered (pending on a
consumer) -> acknowledged. If ``process`` raises, the message is not
acknowledged and stays pending; if the consumer crashes (or is stopped with
``timeout=0``) while it holds messages, they stay pending too. Pending
messages idle for ``claim_after`` seconds are claimed by a consumer of the
group (any, the same one included) and delivered again with ``attempts``
one higher: **at least once**, so ``process`` must tolerate seeing a message
twice. After ``max_attempts`` deliveries that ended in failure, the message
moves to the dead-letter stream ``<queue>:<group>:dead`` with the error, for
a human to look at (:func:`dead_letters`). A stream entry without a UTF-8
``body`` field, written by some other program, is dead-lettered at once. So
every message sent ends acknowledged or dead-lettered, and the trace says
which.

A Redis stream keeps acknowledged messages (other groups may still need
them) until it is trimmed (``XTRIM``, or ``XADD MAXLEN``), which this module
never does; :func:`delete_queue` removes a queue and its dead letters.
Whether acknowledged work survives the *broker* restarting is Redis's
persistence setting: with ``appendonly yes`` and ``appendfsync always``,
every command it answered is on disk first.

Example::

    from labkit.redis_queue import Consumer, Producer, stats

    with Producer("orders") as shop:
        shop.send("order 1")                  # '1712345678901-0', at once
    done = []
    with Consumer("orders", "emails", done.append) as worker:
        worker.wait_for(1)
    done                 # [Message(id='1712345678901-0', body='order 1', attempts=1)]
    stats("orders", "emails")   # {'length': 1, 'waiting': 0, 'in_flight': 0, 'acked': 1, 'dead': 0}

Threads: producers and consumers talk to Redis with ``redis.asyncio`` on the
lab loop, so a consumer is a coroutine, not a thread: a hundred of them cost
nothing, and ``process`` runs on the lab loop too. It should ``await``
(``asyncio.sleep``), not block (``time.sleep`` stalls every server and
consumer of the lab). From a cell or a script, :meth:`Producer.send`,
:meth:`Consumer.start`, :meth:`Consumer.stop`, :meth:`Consumer.wait_for`,
:func:`stats`, :func:`dead_letters` and :func:`delete_queue` are safe; on the
lab loop, ``await`` :meth:`Producer.asend` and :meth:`Consumer.astop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import fakeredis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from labkit import lab, techniques
from labkit.errors import BrokerUnavailable, LabkitError, QueueError
from labkit.queues import NAME, ConsumerBase, Message
from labkit.trace import Trace

__all__ = ["EMBEDDED", "URL_VARIABLE", "Message", "DeadLetter", "Producer", "Consumer",
           "broker_url", "connect", "embedded_broker", "stats", "dead_letters", "delete_queue",
           "running_consumers"]

EMBEDDED = "embedded"
"""The ``url`` of the in-process broker (fakeredis) every ``embedded`` client shares."""
URL_VARIABLE = "LABKIT_REDIS_URL"
"""The environment variable that points labkit at a real Redis server."""
MAX_BLOCK = 5.0
"""Longest a consumer's read may wait for new messages, in seconds."""
MAX_BATCH = 100
"""Most messages a consumer takes in one read."""
_SOCKET_TIMEOUT = MAX_BLOCK + 5  # a server that stops answering is an error after this long


@dataclass(frozen=True)
class DeadLetter:
    """A message that was given up on, as :func:`dead_letters` reads it back."""

    message: Message
    """The message as it was last delivered (``attempts`` = deliveries it had)."""
    group: str
    """The consumer group that gave up on it."""
    error: str
    """Why: what ``process`` raised the last time, or why it could not be processed."""


# -- where the broker is ---------------------------------------------------------

_EMBEDDED_SERVER: fakeredis.FakeServer | None = None
_EMBEDDED_LOCK = threading.Lock()


def embedded_broker() -> fakeredis.FakeServer:
    """The in-process Redis (a ``fakeredis.FakeServer``) behind every ``embedded`` client.

    Its data lives as long as this process. ``embedded_broker().connected =
    False`` makes every command fail as if the server were down (an
    outage to experiment with); ``True`` brings it back, data intact.
    """
    global _EMBEDDED_SERVER
    with _EMBEDDED_LOCK:
        if _EMBEDDED_SERVER is None:
            _EMBEDDED_SERVER = fakeredis.FakeServer()
        return _EMBEDDED_SERVER


def broker_url(url: str | None = None) -> str:
    """Which broker ``url`` means: itself if given, else ``$LABKIT_REDIS_URL``, else
    :data:`EMBEDDED`. A URL is ``redis://host:port/db``, ``rediss://`` (TLS) or
    ``unix:///path/to/socket``."""
    if url is None:
        url = os.environ.get(URL_VARIABLE, "").strip() or EMBEDDED
    if not isinstance(url, str) or not (url == EMBEDDED or re.match(r"(rediss?|unix)://", url)):
        raise QueueError(f"a broker URL looks like redis://127.0.0.1:6379/0 (or rediss://, "
                          f"unix://), or is {EMBEDDED!r} for the in-process broker; "
                          f"got {url!r}")
    return url


async def connect(url: str | None = None) -> redis.asyncio.Redis:
    """A ``redis.asyncio`` client for the broker :func:`broker_url` names, checked with a
    ``PING`` (on the lab loop: ``await`` it there).

    Raises :class:`~labkit.errors.BrokerUnavailable` when nobody answers. The client tries a
    failed command once more on a new connection (a restarted server is
    then invisible to the caller), without waiting in between, so a dead
    server is reported within seconds. Close it with ``await client.aclose()``.
    """
    url = broker_url(url)
    if url == EMBEDDED:
        client = fakeredis.FakeAsyncRedis(server=embedded_broker())
    else:
        try:
            client = redis.asyncio.Redis.from_url(
                url, socket_connect_timeout=2, socket_timeout=_SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 1))
        except ValueError as exc:
            raise QueueError(f"not a usable Redis URL {_redacted(url)!r}: {exc}") from None
    try:
        async with _reaching(url):
            await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


@contextlib.asynccontextmanager
async def _reaching(url: str) -> AsyncIterator[None]:
    """Turn the client library's connection failures into a :class:`LabkitError` that
    names the broker and says what to do."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        if url == EMBEDDED:
            advice = "it was switched off: set embedded_broker().connected = True"
        else:
            advice = (f"start a Redis server there (for example `redis-server --port 6379`), "
                      f"or unset {URL_VARIABLE} and pass no url to use the embedded broker, "
                      f"which needs nothing installed")
        raise BrokerUnavailable(f"cannot reach the Redis broker at {_redacted(url)} ({exc}): "
                          f"{advice}") from exc


def _redacted(url: str) -> str:
    """``url`` with any password hidden, fit for an error message."""
    return re.sub(r"//[^@/]*@", "//***@", url)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(NAME, value):
        raise QueueError(f"{what} names are 1 to 64 letters, digits, '_', '.' or '-', "
                          f"got {value!r}")
    return value


def _dead_stream(queue: str, group: str) -> str:
    return f"{queue}:{group}:dead"


def _command_bytes(*args: str) -> int:
    """Size of a command as RESP frames it: ``*<n>`` then ``$<len>`` and each argument."""
    sizes = [len(a.encode()) for a in args]
    return len(f"*{len(sizes)}\r\n") + sum(len(f"${s}\r\n") + s + 2 for s in sizes)


# -- the producer ------------------------------------------------------------------


class Producer:
    """Sends messages to the stream ``queue`` (``XADD``); the stream is made on first send.

    ``name`` names it in the ``trace``; ``technique`` is ``queue`` or a
    variant of it (``"queue: redis"``). Messages are text (``str``); a feed
    event travels as ``event.to_json()``. Sending needs no consumer: the
    stream keeps the message until a group reads it.
    """

    def __init__(self, queue: str, *, url: str | None = None, trace: Trace | None = None,
                 name: str = "producer", technique: str = "queue"):
        self.queue = _name(queue, "queue")
        self.url = broker_url(url)
        self.trace = trace
        self.name = name
        self.technique = techniques.get(technique).name
        self.sent: list[str] = []
        """Ids of the messages sent, oldest first."""
        self._client: redis.asyncio.Redis | None = None

    def send(self, body: str) -> str:
        """Append ``body`` to the queue and return its id (from a cell or a script)."""
        return lab.run(self.asend(body))

    async def asend(self, body: str) -> str:
        """:meth:`send` for code on the lab loop."""
        if not isinstance(body, str):
            raise QueueError(f"a message body is text (str), got {type(body).__name__}: "
                              f"json.dumps() a dict, or .decode() bytes")
        if self._client is None:
            self._client = await connect(self.url)
        async with _reaching(self.url):
            message_id = (await self._client.xadd(self.queue, {"body": body})).decode()
        self.sent.append(message_id)
        if self.trace is not None:
            self.trace.add("request", technique=self.technique, client=self.name,
                           bytes=_command_bytes("XADD", self.queue, "*", "body", body),
                           detail=f"XADD {self.queue} {message_id}")
        return message_id

    def close(self) -> None:
        """Close the connection (a later send opens a new one)."""
        if self._client is not None:
            lab.run(self.aclose())

    async def aclose(self) -> None:
        """:meth:`close` for code on the lab loop."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Producer {self.name} to {_redacted(self.url)} {self.queue}, "
                f"{len(self.sent)} sent>")


# -- the consumer ------------------------------------------------------------------

_CONSUMERS: set["Consumer"] = set()


def running_consumers() -> list["Consumer"]:
    """Every consumer started and not yet stopped (a notebook's last cell checks it is empty)."""
    return list(_CONSUMERS)


class Consumer(ConsumerBase):
    """One member ``name`` of the consumer group ``group`` on ``queue``, on the lab loop.

    It loops: claim messages pending on anyone for ``claim_after`` seconds
    (every ``claim_after / 2`` seconds), else read up to ``batch`` new ones,
    waiting at most ``block`` seconds; for each, ``process(message)`` (a
    plain or a coroutine function), then acknowledge it. The group is made
    on :meth:`start` if it does not exist, reading the queue from its first
    message (``from_beginning=True``) or only what is sent after
    (``False``, the ``$`` of ``XGROUP CREATE``).

    ``process`` raising leaves the message pending, so it comes back after
    ``claim_after`` seconds; the ``max_attempts``-th failure (or a message
    delivered more often than that whose consumers crashed every time)
    dead-letters it. ``claim_after`` must be longer than ``process`` ever
    takes, or another consumer claims a message still being worked on.

    Two consumers with the same ``name`` in one group are one consumer to
    Redis (they share its pending messages): give each its own.
    """

    def __init__(self, queue: str, group: str, process: Callable[[Message], Any], *,
                 name: str = "consumer", url: str | None = None, trace: Trace | None = None,
                 claim_after: float = 30.0, max_attempts: int = 5, batch: int = 1,
                 block: float = 0.5, from_beginning: bool = True, technique: str = "queue"):
        self.queue = _name(queue, "queue")
        self.group = _name(group, "group")
        self.name = _name(name, "consumer")
        if not callable(process):
            raise QueueError(f"process must be a function taking a Message, got {process!r}")
        if not (isinstance(claim_after, (int, float)) and math.isfinite(claim_after)
                and claim_after >= 0.01):
            raise QueueError(f"claim_after must be a number of seconds >= 0.01, "
                              f"got {claim_after!r}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise QueueError(f"max_attempts must be a whole number >= 1, got {max_attempts!r}")
        if not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
            raise QueueError(f"batch must be a whole number from 1 to {MAX_BATCH}, got {batch!r}")
        if not isinstance(block, (int, float)) or not 0.001 <= block <= MAX_BLOCK:
            raise QueueError(f"block must be a number of seconds from 0.001 to {MAX_BLOCK:g}, "
                              f"got {block!r}")
        super().__init__()
        self.process = process
        self.url = broker_url(url)
        self.trace = trace
        self.claim_after = float(claim_after)
        self.max_attempts = max_attempts
        self.batch = batch
        self.block = float(block)
        self.from_beginning = from_beginning
        self.technique = techniques.get(technique).name
        self.dead: list[DeadLetter] = []
        """Messages this consumer moved to the dead-letter stream."""
        self._client: redis.asyncio.Redis | None = None
        self._task: asyncio.Task | None = None
        self._claim_cursor = "0-0"

    @property
    def running(self) -> bool:
        return self in _CONSUMERS

    def start(self) -> Consumer:
        """Connect, make the group if need be and start consuming; return at once.

        Raises :class:`~labkit.errors.LabkitError` here, not later, if the broker is not there.
        """
        if self.running:
            raise LabkitError("this consumer is already running: stop() it first")
        lab.run(self._start())
        return self

    async def _start(self) -> None:
        self._client = await connect(self.url)
        try:
            async with _reaching(self.url):
                await self._client.xgroup_create(self.queue, self.group, mkstream=True,
                                                 id="0" if self.from_beginning else "$")
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # BUSYGROUP: the group exists already, fine
                await self._client.aclose()
                raise LabkitError(f"cannot make group {self.group!r} on {self.queue!r}: "
                                  f"{exc}") from None
        except BaseException:
            await self._client.aclose()
            raise
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work())
        _CONSUMERS.add(self)

    def stop(self, timeout: float | None = None) -> None:
        """Stop cleanly: finish the read under way (at most ``block`` seconds) and the
        messages it brought, acknowledge them, disconnect.

        After ``timeout`` seconds (default ``block`` + 5) the consumer is cut
        off wherever it is, like a crash: ``stop(timeout=0)`` leaves what it
        held pending, to be claimed by another consumer after ``claim_after``.
        """
        lab.run(self.astop(timeout))

    async def astop(self, timeout: float | None = None) -> None:
        """:meth:`stop` for code on the lab loop."""
        if not self.running:
            return
        _CONSUMERS.discard(self)
        self._stopping.set()
        limit = self.block + 5 if timeout is None else timeout
        if limit > 0:
            await asyncio.wait([self._task], timeout=limit)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    def _problems(self) -> str:
        return (f"process raised {len(self.failures)} times, {len(self.dead)} messages were "
                f"dead-lettered and {len(self.errors)} commands to the broker failed")

    # -- on the lab loop ---------------------------------------------------

    async def _work(self) -> None:
        pause = 0.05
        next_claim = 0.0  # claim at once: a crashed predecessor may have left messages
        while not self._stopping.is_set():
            try:
                taken: list[tuple[str, dict, int]] = []
                if time.monotonic() >= next_claim:
                    taken, more = await self._claim()
                    next_claim = time.monotonic() + (0 if more else self.claim_after / 2)
                if not taken:
                    taken = await self._read()
            except Exception as exc:  # the broker is down or restarting (or a bug): note, wait
                self._note(self.errors, f"{type(exc).__name__}: {exc}")
                await self._pause(pause)
                pause = min(pause * 2, 1.0)
                continue
            pause = 0.05
            for message_id, fields, attempts in taken:
                await self._handle(message_id, fields, attempts)

    async def _read(self) -> list[tuple[str, dict, int]]:
        """New messages for the group, now pending on this consumer (attempt 1)."""
        reply = await self._client.xreadgroup(self.group, self.name, {self.queue: ">"},
                                              count=self.batch, block=int(self.block * 1000))
        return [(raw_id.decode(), fields, 1) for _, entries in reply or []
                for raw_id, fields in entries]

    async def _claim(self) -> tuple[list[tuple[str, dict, int]], bool]:
        """Messages idle on anyone for ``claim_after`` s, now pending on this consumer,
        with how often each has been delivered; and whether there may be more."""
        reply = await self._client.xautoclaim(
            self.queue, self.group, self.name, min_idle_time=int(self.claim_after * 1000),
            start_id=self._claim_cursor, count=self.batch)
        cursor, claimed, deleted = reply[0], reply[1], (reply[2] if len(reply) > 2 else [])
        self._claim_cursor = cursor.decode()
        for raw_id in deleted:  # trimmed or XDEL'd before anyone acknowledged it
            self._lost(raw_id.decode())
        if not claimed:
            return [], self._claim_cursor != "0-0"
        async with self._client.pipeline(transaction=False) as pipe:
            for raw_id, _ in claimed:
                pipe.xpending_range(self.queue, self.group, min=raw_id, max=raw_id, count=1)
            pending = await pipe.execute()
        taken = [(raw_id.decode(), fields, info[0]["times_delivered"])
                 for (raw_id, fields), info in zip(claimed, pending)
                 if info]  # empty: its first consumer acknowledged it meanwhile
        return taken, True

    async def _handle(self, message_id: str, fields: dict, attempts: int) -> None:
        raw = fields.get(b"body")
        try:
            message = Message(message_id, raw.decode("utf-8"), attempts)
            problem = None
        except (AttributeError, UnicodeDecodeError):
            message = Message(message_id, "", attempts)
            problem = ("malformed entry: no 'body' field" if raw is None
                       else "malformed entry: its 'body' is not UTF-8 text")
        if attempts > 1:
            self._record("retry", message, f"{message_id} claimed after {self.claim_after:g} s "
                                           f"unacknowledged, attempt {attempts}")
        if problem is None and attempts > self.max_attempts:
            problem = (f"delivered {attempts} times and never acknowledged: whoever took it "
                       f"crashed or was stopped while processing it")
        if problem is not None:
            return await self._dead_letter(message, raw, problem)
        self._record("event", message, f"{message_id}, attempt {attempts}")
        try:
            await lab.invoke(self.process, message)
        except Exception as exc:  # any bug in process: no ack; claimed again, or dead-lettered
            self._note(self.failures, (message, repr(exc)))
            if attempts >= self.max_attempts:
                await self._dead_letter(message, raw, repr(exc))
            return
        try:
            await self._client.xack(self.queue, self.group, message_id)
            self._record("request", message, f"XACK {self.queue} {self.group} {message_id}",
                         _command_bytes("XACK", self.queue, self.group, message_id))
        except RedisError as exc:  # still pending: it will be claimed and processed again
            self._note(self.errors, f"ack of {message_id}: {type(exc).__name__}: {exc}")
        self._note(self.processed, message)

    async def _dead_letter(self, message: Message, raw: Any, error: str) -> None:
        """Move ``message`` to the dead-letter stream and acknowledge it, in one transaction."""
        dead = _dead_stream(self.queue, self.group)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(dead, {"id": message.id, "body": raw if raw is not None else b"",
                                 "attempts": message.attempts, "error": error,
                                 "consumer": self.name})
                pipe.xack(self.queue, self.group, message.id)
                await pipe.execute()
        except RedisError as exc:  # still pending: it will be claimed and judged again
            self._note(self.errors, f"dead-lettering {message.id}: {type(exc).__name__}: {exc}")
            return
        self._record("drop", message, f"{message.id} dead-lettered to {dead} after "
                                      f"{message.attempts} attempts: {error}")
        self._note(self.dead, DeadLetter(message, self.group, error))

    def _lost(self, message_id: str) -> None:
        """A pending message that is gone from the stream: say so, never silently."""
        text = (f"{message_id} was deleted from {self.queue} (XDEL or a trim) before it "
                f"was acknowledged: lost")
        self._note(self.errors, text)
        if self.trace is not None:
            self.trace.add("drop", technique=self.technique, client=self.name,
                           event_id=message_id, detail=text)

    def _record(self, kind: str, message: Message, detail: str, size: int | None = None) -> None:
        if self.trace is None:
            return
        event = message.event
        if kind == "event" and event is not None:
            self.trace.delivered(event, technique=self.technique, client=self.name,
                                 bytes=len(message.body.encode()), detail=detail)
            return
        if size is None:
            size = len(message.body.encode()) if kind == "event" else 0
        self.trace.add(kind, technique=self.technique, client=self.name, bytes=size,
                       event_id=event.id if event is not None else message.id, detail=detail)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<Consumer {self.name} of group {self.group} on {_redacted(self.url)} "
                f"{self.queue} {state}, {len(self.processed)} processed, "
                f"{len(self.dead)} dead-lettered>")


# -- looking at a queue, from a cell ---------------------------------------------------


async def _with_client(url: str | None, work: Callable[[redis.asyncio.Redis], Any]) -> Any:
    url = broker_url(url)
    client = await connect(url)
    try:
        async with _reaching(url):
            return await work(client)
    finally:
        await client.aclose()


def stats(queue: str, group: str, *, url: str | None = None) -> dict[str, int | None]:
    """Where the messages of ``queue`` are for ``group``, at this moment.

    ``length``: messages in the stream (acknowledged ones stay until
    trimmed); ``waiting``: not yet delivered to the group (Redis's ``lag``);
    ``in_flight``: delivered, not yet acknowledged (pending); ``dead``:
    dead-lettered; ``acked``: the rest, acknowledged after processing.
    ``waiting`` and ``acked`` are None when Redis cannot tell (after entries
    were deleted from the middle of the stream).
    """
    _name(queue, "queue")
    _name(group, "group")

    async def read(client: redis.asyncio.Redis) -> dict[str, int | None]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(queue).xlen(_dead_stream(queue, group))
            length, dead = await pipe.execute()
        try:
            groups = await client.xinfo_groups(queue)
        except ResponseError:  # no such stream yet
            groups = []
        info = next((g for g in groups if g["name"].decode() == group), None)
        if info is None:  # no consumer has made the group yet: everything is waiting
            return {"length": length, "waiting": length, "in_flight": 0, "acked": 0,
                    "dead": dead}
        waiting, in_flight = info.get("lag"), info["pending"]
        acked = None if waiting is None else length - waiting - in_flight - dead
        return {"length": length, "waiting": waiting, "in_flight": in_flight, "acked": acked,
                "dead": dead}

    return lab.run(_with_client(url, read))


def dead_letters(queue: str, group: str, *, url: str | None = None) -> list[DeadLetter]:
    """The messages ``group`` gave up on, oldest first, with why."""
    _name(queue, "queue")
    _name(group, "group")

    async def read(client: redis.asyncio.Redis) -> list[DeadLetter]:
        entries = await client.xrange(_dead_stream(queue, group))
        return [DeadLetter(Message(f[b"id"].decode(), f[b"body"].decode("utf-8", "replace"),
                                   int(f[b"attempts"])), group, f[b"error"].decode())
                for _, f in entries]

    return lab.run(_with_client(url, read))


def delete_queue(queue: str, *, url: str | None = None) -> int:
    """Delete ``queue``, its groups and their dead letters; return how many keys went.

    A real Redis server keeps a queue between runs of a notebook: start an
    experiment with this to start from nothing.
    """
    _name(queue, "queue")

    async def delete(client: redis.asyncio.Redis) -> int:
        keys = [queue] + [key async for key in client.scan_iter(match=f"{queue}:*:dead")]
        return await client.delete(*keys)

    return lab.run(_with_client(url, delete))
