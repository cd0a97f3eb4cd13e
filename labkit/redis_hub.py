"""A hub shared by several servers: a Redis stream underneath, a local copy in each process.

A :class:`~labkit.hub.Hub` lives in one process. Real deployments run several
server processes behind a load balancer, so a client may hold its SSE stream
on one and its neighbour on another, and its next reconnection may land on
a third. Every one of them must hand out the same events, with the same ids,
in the same order. :class:`RedisHub` does that: the one true list of events
is a Redis stream, and each process keeps a *mirror*, an ordinary
:class:`~labkit.hub.Hub` fed by a reader coroutine on the lab loop. Servers
(:class:`~labkit.push.sse.SSEStream`, the polling servers) serve the
``RedisHub`` exactly as they serve a ``Hub``: same methods, same items::

    process A                           Redis                           process B
    hub.publish(e) ------ XADD ------> stream "news"
                                       5-0 6-0 7-0
    mirror <- reader <- XREAD BLOCK ----'         '---- XREAD BLOCK -> reader -> mirror
      |                                                                            |
    SSE and long-poll clients (event 7)                SSE and long-poll clients (event 7)

==========================  ===================================================================
what                        how, in Redis
==========================  ===================================================================
publish from any process    ``XADD news MAXLEN <history> <n>-0 kind event data {...}``: the
                            entry id *is* the event id (``7-0`` is event 7). ``n`` is one more
                            than the last id this process knows; if another process took ``n``
                            first, Redis refuses ("equal or smaller than the target stream top
                            item"), and the publisher reads the top (``XINFO STREAM``) and
                            tries ``top + 1``
each new event, anywhere    the reader's ``XREAD BLOCK 1000 STREAMS news <last>-0``: Redis
                            answers every blocked reader as soon as an entry is added; each
                            entry becomes an item of the mirror with the id ``n`` it carries
a process starts            ``XREVRANGE news + - COUNT <history>``: the mirror starts with the
                            same history as the others, then reads on from there
history                     the stream is trimmed to exactly ``history`` entries at every XADD,
                            and every mirror keeps ``history`` items, so ``since`` and
                            ``missed`` answer alike everywhere (give every process the same
                            ``history`` for one stream)
==========================  ===================================================================

So ids agree across processes because there is only one place that hands
them out, the stream, and only one writer can win each id: Redis appends
``n-0`` only if it is above the stream's top. A client that got event 41
from process A and reconnects to process B with ``Last-Event-ID: 41``
resumes at 42 there.

A client can be a little ahead of a mirror: it got id 42 from A, and B's
reader has not received 42 yet when the client arrives. :meth:`RedisHub.cursor`
then asks Redis (one ``XINFO STREAM``, the only command this hub sends
synchronously, and only in that case) whether id 42 exists; if it does, the
cursor is accepted and the client simply gets 43 next. A cursor above the
stream's top is refused like any cursor from the future
(:class:`~labkit.errors.CursorError`, a 400; a 503 if Redis cannot be
asked).

**Where Redis is** (as in :mod:`labkit.redis_queue`): the embedded broker
(fakeredis) by default, or the real server at ``$LABKIT_REDIS_URL``; the
code is the same. The embedded broker lives *inside this Python process*,
so with it several **server processes** cannot share a hub; what you can
run is several **servers** in this one process (two ``serve_sse`` on two
ports, each over its own ``RedisHub`` with its own mirror and reader),
which exercises every command above. Two real processes need a real Redis
server: set ``LABKIT_REDIS_URL`` (``redis-server --port 6379``, then
``redis://127.0.0.1:6379/0``). :func:`labkit.experiments.processes.two_processes`
runs whichever is available and says which.

What the stream carries: feed :class:`~labkit.feed.Event` objects (as their
JSON; they come out as equal Events, ``created`` included), text, and
JSON values. Anything else is a :class:`~labkit.errors.HubError` at
publish, because it could not reach the other processes. Each process gets
its own copy of the data (``item.published`` is when *its* reader received
the item); an entry some other program added to the stream comes out as a
dict of its fields.

Example::

    from labkit.feed import Feed
    from labkit.push.sse import SSEClient, serve_sse
    from labkit.redis_hub import RedisHub

    feed = Feed(seed=1)
    with RedisHub("news") as one, RedisHub("news") as two, \\
            serve_sse(one) as first, serve_sse(two) as second, \\
            SSEClient(first.endpoint_url) as a, SSEClient(second.endpoint_url) as b:
        two.publish(feed.make("tick"))             # Item(id=1, ...), from either hub
        a.wait_for(1), b.wait_for(1)               # both clients have event 1

Unreachable Redis: creating a ``RedisHub`` raises
:class:`~labkit.errors.BrokerUnavailable`, naming the URL and what to do;
so does a publish while Redis is down. A running reader keeps trying (at
most once a second), notes each failure in ``errors``, and carries on from
its last id when Redis is back; the mirror keeps serving what it has
meanwhile. A Redis that comes back *without its data* (no persistence)
starts its stream again: restart the servers as well.

Closing a ``RedisHub`` stops this process's reader and mirror; the stream
stays in Redis for the other processes (and a real server keeps it between
runs, so ids carry on). :func:`labkit.redis_queue.delete_queue` deletes it.

Thread-safety notes:

* From a cell or a script: ``RedisHub(...)``, :meth:`~RedisHub.publish`
  (returns the :class:`~labkit.hub.Item` once this process's mirror has
  it), :meth:`~RedisHub.close`, and everything a ``Hub`` allows from any
  thread (``since``, ``missed``, ``cursor``, the properties).
* On the lab loop: ``await hub.wait(...)``, ``await hub.aclose()``, and
  ``await hub.publish(data)``: there, publish returns a task to await
  (:func:`labkit.feed.play` awaits it), because the XADD must not block
  the loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import fakeredis
import redis
import redis.asyncio
from redis.exceptions import RedisError, ResponseError

from labkit import lab
from labkit.errors import CursorError, HubClosedError, HubError, LabLoopError
from labkit.feed import Event
from labkit.hub import Hub, Item
from labkit.queues import NAME
from labkit.redis_queue import EMBEDDED, _reaching, _redacted, broker_url, connect, \
    embedded_broker

__all__ = ["RedisHub", "READ_BLOCK", "READ_BATCH", "PUBLISH_TRIES"]

READ_BLOCK = 1.0
"""Seconds one ``XREAD BLOCK`` waits for news before the reader asks again."""
READ_BATCH = 1000
"""Most entries the reader takes in one ``XREAD``."""
PUBLISH_TRIES = 100
"""How often a publish may lose the race for the next id before it gives up."""
MIRROR_WAIT = 10.0
"""Seconds a publish waits for its own entry to come back through this process's reader."""
_CHECK_TIMEOUT = 1.0
"""Seconds the one synchronous command (checking a cursor ahead of the mirror) may take."""
_TOP_TAKEN = "equal or smaller than the target stream top item"
_MAX_DIGITS = 20
"""A stream id's number is below 2**64: at most 20 digits."""


class RedisHub:
    """A hub whose items live in the Redis stream ``stream``; see the module docstring.

    ``history``: items kept, in the stream and in this process's mirror.
    ``url``: the broker (:func:`labkit.redis_queue.broker_url`: the embedded one
    unless ``$LABKIT_REDIS_URL`` names a server). ``name``: for messages and
    the repr (default: the stream's name). Made from a cell or a script (it
    connects, loads the history and starts its reader before it returns).
    """

    def __init__(self, stream: str = "hub", *, history: int = 1000, url: str | None = None,
                 name: str | None = None):
        if lab.in_lab_thread():
            raise LabLoopError("make a RedisHub from a cell or a script: it connects to Redis "
                               "and loads the history before it returns")
        if not isinstance(stream, str) or not re.fullmatch(NAME, stream):
            raise HubError(f"a stream name is 1 to 64 letters, digits, '_', '.' or '-', "
                           f"got {stream!r}")
        self.stream = stream
        self.url = broker_url(url)
        self._mirror = Hub(history, name=stream if name is None else name)
        self.errors: list[str] = []
        """What went wrong while reading (Redis down, a foreign entry), oldest first."""
        self._horizon = 0
        """Highest id known to exist in the stream (cursors up to it are accepted)."""
        self._writer: redis.asyncio.Redis | None = None
        self._reader: redis.asyncio.Redis | None = None
        self._checker: redis.Redis | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        lab.run(self._open())

    async def _open(self) -> None:
        try:
            self._writer = await connect(self.url)
            self._reader = await connect(self.url)  # a blocked XREAD holds its connection
            async with _reaching(self.url):
                entries = await self._reader.xrevrange(self.stream, count=self.history)
        except BaseException as exc:
            await self._release()
            if isinstance(exc, ResponseError):  # WRONGTYPE: the key holds something else
                raise HubError(f"the key {self.stream!r} at {_redacted(self.url)} is not a "
                               f"stream ({exc}): pick another stream name") from None
            raise
        for raw_id, fields in reversed(entries):
            self._take(raw_id, fields)
        self._horizon = self._mirror.last_id
        self._task = asyncio.ensure_future(self._read())

    # -- the Hub's face ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._mirror.name

    @property
    def history(self) -> int:
        """How many items are kept (in the stream and in each mirror)."""
        return self._mirror.history

    @property
    def last_id(self) -> int:
        """Id of the newest item this process's mirror has."""
        return self._mirror.last_id

    @property
    def first_id(self) -> int:
        """Id of the oldest item the mirror keeps (``last_id + 1`` while empty)."""
        return self._mirror.first_id

    @property
    def waiting(self) -> int:
        """How many :meth:`wait` calls are held on the mirror now."""
        return self._mirror.waiting

    @property
    def reading(self) -> bool:
        """True while the reader coroutine runs (from creation until :meth:`close`)."""
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (the stream itself stays, for the other processes)."""
        return self._mirror.closed

    def since(self, cursor: int, limit: int | None = None) -> list[Item]:
        """:meth:`Hub.since <labkit.hub.Hub.since>` on the mirror ([] for a cursor the mirror
        has not reached yet, see :meth:`cursor`)."""
        if self._ahead(cursor):
            return []
        return self._mirror.since(cursor, limit)

    def missed(self, cursor: int) -> int:
        """:meth:`Hub.missed <labkit.hub.Hub.missed>` on the mirror: the same in every process
        whose mirror has caught up, since all keep the same ``history``."""
        if self._ahead(cursor):
            return 0
        return self._mirror.missed(cursor)

    def cursor(self, raw: Any) -> int:
        """:meth:`Hub.cursor <labkit.hub.Hub.cursor>`, but an id the mirror has not received
        yet is accepted if the stream has it (one synchronous ``XINFO STREAM``)."""
        try:
            return self._mirror.cursor(raw)
        except CursorError:
            value = _as_id(raw)
            if value is None or value <= self._mirror.last_id or self.closed:
                raise
            if value > self._horizon:
                self._horizon = max(self._horizon, self._top_now(value))
            if value > self._horizon:
                raise
            return value

    async def wait(self, cursor: int, timeout: float | None) -> list[Item]:
        """:meth:`Hub.wait <labkit.hub.Hub.wait>` on the mirror (on the lab loop); a cursor the
        mirror has not reached yet waits until the mirror passes it."""
        if not self._ahead(cursor):
            return await self._mirror.wait(cursor, timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._mirror.last_id < cursor:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            if left == 0.0:
                return []
            await self._mirror.wait(self._mirror.last_id, left)
        return await self._mirror.wait(
            cursor, None if deadline is None else max(0.0, deadline - loop.time()))

    def _ahead(self, cursor: Any) -> bool:
        """``cursor`` is an id the stream has but the mirror has not received yet."""
        return (isinstance(cursor, int) and not isinstance(cursor, bool)
                and self._mirror.last_id < cursor <= self._horizon)

    # -- publishing ------------------------------------------------------------------

    def publish(self, data: Any) -> Item | asyncio.Task:
        """Append ``data`` to the stream as the next id; return this process's :class:`Item`.

        Off the lab thread it blocks until the mirror has the item (so
        ``since`` sees it at once, as with a ``Hub``). On the lab loop it
        returns a task to ``await`` for the item. Raises
        :class:`~labkit.errors.BrokerUnavailable` when Redis does not answer,
        :class:`~labkit.errors.HubClosedError` once closed, and
        :class:`~labkit.errors.HubError` for data that cannot travel.
        """
        fields = _encode(data)
        if lab.in_lab_thread():
            return asyncio.ensure_future(self._publish(fields, data))
        return lab.run(self._publish(fields, data))

    async def _publish(self, fields: dict, data: Any) -> Item:
        if self.closed:
            raise HubClosedError(f"hub {self.name!r} is closed: publish to a hub that is "
                                 f"still open")
        number = max(self._mirror.last_id, self._horizon) + 1
        for _ in range(PUBLISH_TRIES):
            try:
                async with _reaching(self.url):
                    await self._writer.xadd(self.stream, fields, id=f"{number}-0",
                                            maxlen=self.history, approximate=False)
                break
            except ResponseError as exc:
                if _TOP_TAKEN not in str(exc):
                    raise HubError(f"Redis refused XADD to {self.stream!r}: {exc}") from None
                async with _reaching(self.url):  # another process took it: go above the top
                    number = await self._top() + 1
        else:
            raise HubError(f"hub {self.name!r}: {PUBLISH_TRIES} publishes in a row lost the "
                           f"race for the next id to other publishers; publish less often "
                           f"from more places, or from fewer")
        self._horizon = max(self._horizon, number)
        return await self._mirrored(number, data)

    async def _mirrored(self, number: int, data: Any) -> Item:
        """This process's item ``number``, once the reader has brought it in."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MIRROR_WAIT
        while self._mirror.last_id < number:
            left = deadline - loop.time()
            if left <= 0:
                last = f" (last error: {self.errors[-1]})" if self.errors else ""
                raise HubError(f"hub {self.name!r}: id {number} was added to {self.stream!r} "
                               f"but this process's reader did not receive it within "
                               f"{MIRROR_WAIT:g} s{last}")
            await self._mirror.wait(self._mirror.last_id, left)
        kept = self._mirror.since(number - 1, limit=1)
        if kept and kept[0].id == number:
            return kept[0]
        return Item(number, data, time.monotonic())  # it already left a tiny history

    async def _top(self) -> int:
        """The number of the stream's last id ever (0 if there is no stream)."""
        try:
            info = await self._writer.xinfo_stream(self.stream)
        except ResponseError:  # no such key
            return 0
        return _number(info["last-generated-id"])

    def _top_now(self, cursor: int) -> int:
        """:meth:`_top`, synchronously, for :meth:`cursor` (a CursorError if Redis is away)."""
        try:
            if self._checker is None:
                self._checker = (fakeredis.FakeRedis(server=embedded_broker())
                                 if self.url == EMBEDDED else redis.Redis.from_url(
                                     self.url, socket_connect_timeout=_CHECK_TIMEOUT,
                                     socket_timeout=_CHECK_TIMEOUT))
            return _number(self._checker.xinfo_stream(self.stream)["last-generated-id"])
        except ResponseError:
            return 0
        except (RedisError, OSError) as exc:
            error = CursorError(
                f"hub {self.name!r}: cursor {cursor} is ahead of this server's copy (last id "
                f"{self._mirror.last_id}) and the broker at {_redacted(self.url)} could not "
                f"say whether it exists ({exc}); try again shortly")
            error.status, error.reason = 503, "broker_unavailable"  # not the client's fault
            raise error from None

    # -- the reader ----------------------------------------------------------------

    async def _read(self) -> None:
        """Bring every new entry of the stream into the mirror, until closed."""
        pause = 0.05
        while not self._closing:
            try:
                reply = await self._reader.xread({self.stream: f"{self._mirror.last_id}-0"},
                                                 count=READ_BATCH, block=int(READ_BLOCK * 1000))
            except (RedisError, OSError) as exc:
                self.errors.append(f"XREAD from {_redacted(self.url)}: "
                                   f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            pause = 0.05
            if self._closing:
                return
            for _, entries in reply or []:
                for raw_id, fields in entries:
                    self._take(raw_id, fields)

    def _take(self, raw_id: bytes, fields: dict) -> None:
        """One stream entry into the mirror, under the id it carries."""
        number, sequence = raw_id.decode().split("-")
        if sequence != "0" or int(number) <= self._mirror.last_id:
            self.errors.append(f"entry {raw_id.decode()} of {self.stream!r} skipped: not an "
                               f"id a RedisHub writes (<n>-0, above {self._mirror.last_id})")
            return
        self._mirror.publish(_decode(fields), id=int(number))

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the reader, release every waiter (HubClosedError) and the connections.

        The stream stays in Redis for the other processes. Idempotent; from
        any thread (on the lab loop, ``await hub.aclose()`` instead).
        """
        if lab.in_lab_thread():
            raise LabLoopError("RedisHub.close() was called on the lab loop: "
                               "use 'await hub.aclose()'")
        if lab.is_running():
            lab.run(self.aclose())

    async def aclose(self) -> None:
        """:meth:`close` on the lab loop."""
        self._closing = True
        task = self._task
        for _ in range(100):  # a cancel can get lost inside the client library (fakeredis)
            if task is None or task.done():  # just as a read starts: ask again; at worst
                break                        # the read ends within READ_BLOCK, sees _closing
            task.cancel()
            await asyncio.wait([task], timeout=0.05)
        await self._mirror.aclose()
        await self._release()

    async def _release(self) -> None:
        for client in (self._writer, self._reader):
            if client is not None:
                await client.aclose()
        self._writer = self._reader = None
        if self._checker is not None:
            self._checker.close()
            self._checker = None

    def __enter__(self) -> RedisHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.waiting} waiting"
        return (f"<RedisHub {self.name!r} on {_redacted(self.url)} stream {self.stream!r} "
                f"ids {self.first_id}..{self.last_id} (history {self.history}), {state}>")


def _number(raw_id: bytes) -> int:
    """The event id a stream id carries: ``b"7-0"`` is 7."""
    return int(raw_id.split(b"-")[0])


def _as_id(raw: Any) -> int | None:
    """A cursor that could be a stream's id (a whole number, at most 20 digits), or None."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 <= raw < 2 ** 64 else None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and \
            len(raw.lstrip("0")) <= _MAX_DIGITS:
        return int(raw)
    return None


def _encode(data: Any) -> dict[str, str]:
    """The fields of a stream entry that carries ``data`` to every process."""
    if isinstance(data, Event):
        return {"kind": "event", "data": data.to_json()}
    if isinstance(data, str):
        return {"kind": "text", "data": data}
    try:
        return {"kind": "json", "data": json.dumps(data, allow_nan=False)}
    except (TypeError, ValueError) as exc:
        raise HubError(f"a hub shared through Redis carries feed events, text and JSON values "
                       f"(dicts, lists, numbers); this {type(data).__name__} cannot reach the "
                       f"other processes: {exc}") from None


def _decode(fields: dict[bytes, bytes]) -> Any:
    """What :func:`_encode` wrote; an entry another program wrote comes out as its fields."""
    kind, data = fields.get(b"kind"), fields.get(b"data")
    try:
        if kind == b"event":
            return Event.from_dict(json.loads(data))
        if kind == b"text":
            return data.decode("utf-8")
        if kind == b"json":
            return json.loads(data)
    except (ValueError, TypeError, AttributeError):  # FeedError and UnicodeError are ValueErrors
        pass
    return {key.decode("utf-8", "replace"): value.decode("utf-8", "replace")
            for key, value in fields.items()}
