"""The hub: events with increasing ids, a bounded history, and clients waiting for more.

Every push-to-client technique needs the same three things: a numbered list
of what happened, a way for a client to say "I have seen up to id N, what is
new?", and a way to park a request until something new arrives. The hub is
that, once, for all of them. It is tornado's chat demo (a message buffer with
a cursor, a condition that wakes the waiting requests, a capped cache)
generalised: ids instead of uuids, a history of any size, waiters that may
time out or leave, and a close that releases everyone.

Each :meth:`Hub.publish` wraps what it is given in an :class:`Item` with the
next id (1, 2, 3 ...). A *cursor* is the id of the last item a client has
seen: ``0`` means "everything you still have", and ``hub.last_id`` means
"only what comes next".

=====================  =================================================================
technique              what its server does with the hub
=====================  =================================================================
polling                ``hub.since(cursor)``: answer at once, often with nothing
long polling           ``await hub.wait(cursor, timeout=hold)``: answer on the next event,
                       or with nothing when the hold runs out
SSE, WebSocket         a loop of ``items = await hub.wait(cursor, None)``, writing each
                       item and moving the cursor to the last id written
message broker         ``await hub.wait(...)`` as "something changed, look again"
=====================  =================================================================

Example::

    hub = Hub(history=100, name="news")
    hub.publish({"headline": "hello"})        # Item(id=1, ...), from a cell or the lab loop
    hub.since(0)                              # [Item(id=1, ...)]
    cursor = hub.cursor(handler.request.headers.get("Last-Event-ID"))  # CursorError if bad
    items = await hub.wait(cursor, timeout=30.0)   # in a handler, on the lab loop

A client that comes back with a cursor older than the history has lost
events; :meth:`Hub.missed` says how many, so an SSE server can tell it.

A hub lives in one process. For servers in several processes that must hand
out the same events with the same ids, :class:`labkit.redis_hub.RedisHub`
keeps the list in a Redis stream and a hub like this one in each process.

``Item.cache`` is a memo shared by every client: a server encodes an item's
frame once (``item.cache["sse"] = b"id: 3\\ndata: ...\\n\\n"``) and writes
those same bytes to all its clients.

How waking works: each waiter parks on a future of its own, kept in a set.
A publish resolves every parked future once (with nothing: no item is copied
to any waiter) and each waiter then reads ``since(cursor)`` from the shared
history, so 10,000 waiters receive the very same :class:`Item` objects. A
waiter that times out or whose task is cancelled (a handler's
``on_connection_close``) removes its own future and timer in O(1).

Thread-safety notes:

* Safe from any thread (a notebook cell, a script): :meth:`Hub.publish`,
  :meth:`Hub.since`, :meth:`Hub.missed`, :meth:`Hub.cursor`,
  :meth:`Hub.close` and the properties. Off the lab thread, ``publish`` and
  ``close`` hand their work to the lab loop (:func:`labkit.lab.run`) and wait
  for it, because the waiters' futures belong to that loop.
* On the lab loop only: ``await hub.wait(...)`` and ``await hub.aclose()``
  (``wait`` raises :class:`~labkit.errors.LabLoopError` elsewhere; from a
  cell, use ``lab.run(hub.wait(cursor, 5))``).
* One lock guards the history, so a cell reading ``since`` while the lab
  loop publishes always sees whole items in id order.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from typing import Any

from labkit import lab
from labkit.errors import CursorError, HubError, HubClosedError, LabLoopError

__all__ = ["Item", "Hub"]

_SHOWN = 40
"""Characters of a bad cursor quoted back in the error message."""


class Item:
    """One published thing: ``id`` (1, 2, 3 ...), ``data``, ``published`` (time.monotonic()).

    Immutable, except ``cache``: a dict where servers memoise what they
    derive from the item (an encoded frame) so it is computed once for every
    client. ``cache`` is not part of equality or the repr.
    """

    __slots__ = ("id", "data", "published", "cache")

    id: int
    data: Any
    published: float
    cache: dict

    def __init__(self, id: int, data: Any, published: float):
        set_slot = object.__setattr__
        set_slot(self, "id", id)
        set_slot(self, "data", data)
        set_slot(self, "published", published)
        set_slot(self, "cache", {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"an Item is immutable (tried to set {name!r}); "
                             f"keep derived values in item.cache instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"an Item is immutable (tried to delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return NotImplemented
        return (self.id, self.published, self.data) == (other.id, other.published, other.data)

    def __hash__(self) -> int:
        return hash((self.id, self.published))

    def __repr__(self) -> str:
        return f"Item(id={self.id}, data={self.data!r}, published={self.published:.6f})"


def _wake(waiter: asyncio.Future) -> None:
    """Resolve a waiter's future unless it already is (woken, timed out or cancelled)."""
    if not waiter.done():
        waiter.set_result(None)


def _is_count(value: Any) -> bool:
    """A true int (``bool`` excluded: ``True`` is not a position)."""
    return isinstance(value, int) and not isinstance(value, bool)


class Hub:
    """Numbered items, the last ``history`` of them kept, and waiters for the next one.

    ``history``: how many items are kept (an int >= 1); publishing one more
    drops the oldest. ``name`` appears in error messages and the repr.
    """

    def __init__(self, history: int = 1000, *, name: str = "hub"):
        if not _is_count(history) or history < 1:
            raise HubError(f"history must be a whole number of items >= 1, got {history!r}")
        if not isinstance(name, str):
            raise HubError(f"a hub's name must be a string, got {name!r}")
        self.name = name
        self._capacity = history
        self._lock = threading.Lock()
        # A ring: the item with id n sits at index (n - 1 - offset) % history. The
        # list grows up to `history` entries, then each publish overwrites the
        # oldest. offset is 0 unless publish(id=...) skipped ids and restarted it.
        self._ring: list[Item] = []
        self._offset = 0
        self._last = 0
        self._closed = False
        self._waiters: set[asyncio.Future] = set()  # only touched on the lab loop

    # -- state, from anywhere ------------------------------------------------

    @property
    def history(self) -> int:
        """How many items the hub keeps at most."""
        return self._capacity

    @property
    def last_id(self) -> int:
        """Id of the newest item (0 before the first publish)."""
        return self._last

    @property
    def first_id(self) -> int:
        """Id of the oldest item still kept (``last_id + 1`` while the hub is empty)."""
        with self._lock:
            return self._last - len(self._ring) + 1

    @property
    def waiting(self) -> int:
        """How many :meth:`wait` calls are held right now."""
        return len(self._waiters)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` (or :meth:`aclose`) ran: no more publishes or waits."""
        return self._closed

    # -- publishing ------------------------------------------------------------

    def publish(self, data: Any, *, id: int | None = None) -> Item:
        """Add ``data`` as the next :class:`Item`, wake every waiter once, return the item.

        ``id`` is for a hub that mirrors one kept elsewhere (a Redis stream,
        :mod:`labkit.redis_hub`): the item takes that id, which must be greater
        than ``last_id``. If it skips ids, the kept history is dropped: what
        came before the gap counts as missed, like anything that left the
        history. Without ``id``, the item is ``last_id + 1``.

        From any thread; off the lab thread the work runs on the lab loop.
        Raises :class:`~labkit.errors.HubClosedError` once the hub is closed.
        """
        if not lab.in_lab_thread():
            return lab.run(functools.partial(self.publish, data, id=id))
        with self._lock:
            if self._closed:
                raise HubClosedError(f"hub {self.name!r} is closed (its server stopped): "
                                     f"publish to a hub that is still open")
            if id is None:
                id = self._last + 1
            elif not _is_count(id) or id <= self._last:
                raise HubError(f"hub {self.name!r}: an item's id must be a whole number "
                               f"greater than the last id ({self._last}), got {_shown(id)}")
            elif id > self._last + 1:
                self._ring.clear()
                self._offset = id - 1
            self._last = id
            item = Item(id, data, time.monotonic())
            if len(self._ring) < self._capacity:
                self._ring.append(item)
            else:
                self._ring[(id - 1 - self._offset) % self._capacity] = item
        self._release()
        return item

    def _release(self) -> None:
        """Wake every waiter held now (on the lab loop)."""
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            _wake(waiter)

    # -- reading, from anywhere ---------------------------------------------------

    def _check(self, cursor: Any) -> int:
        """``cursor`` as a position (an int from 0 to last_id), or CursorError."""
        if not _is_count(cursor) or cursor < 0:
            raise CursorError(f"hub {self.name!r}: a cursor is a whole number >= 0 "
                              f"(the id of the last item seen), got {_shown(cursor)}")
        if cursor > self._last:
            raise _from_the_future(self, cursor)
        return cursor

    def since(self, cursor: int, limit: int | None = None) -> list[Item]:
        """Items with an id greater than ``cursor``, oldest first (at most ``limit``).

        Costs O(items returned), whatever the size of the history. Items that
        already left the history are simply not there: see :meth:`missed`.
        """
        if limit is not None and (not _is_count(limit) or limit < 0):
            raise HubError(f"limit must be None or a whole number >= 0, got {limit!r}")
        with self._lock:
            self._check(cursor)
            start = max(cursor + 1, self._last - len(self._ring) + 1)
            count = self._last - start + 1
            if limit is not None:
                count = min(count, limit)
            if count <= 0:
                return []
            begin = (start - 1 - self._offset) % self._capacity
            end = begin + count
            if end <= self._capacity:
                return self._ring[begin:end]
            return self._ring[begin:] + self._ring[:end - self._capacity]

    def missed(self, cursor: int) -> int:
        """How many items after ``cursor`` already left the history (0 when none did)."""
        with self._lock:
            self._check(cursor)
            first = self._last - len(self._ring) + 1
            return max(0, first - 1 - cursor)

    def cursor(self, raw: Any) -> int:
        """Read a cursor from a query value or a ``Last-Event-ID`` header.

        ``None`` or ``""`` mean "from now" and give ``last_id``. Otherwise it
        must be an int >= 0, or a string of ASCII digits only (no sign, no
        spaces, no decimal point), and at most ``last_id``. Anything else
        raises :class:`~labkit.errors.CursorError` (a 400 for servers).
        """
        if raw is None or (isinstance(raw, str) and not raw):
            return self._last
        if _is_count(raw) and raw >= 0:
            value = raw
        elif isinstance(raw, str) and raw.isascii() and raw.isdigit():
            digits = raw.lstrip("0") or "0"
            if len(digits) > len(str(self._last)):  # and int() refuses over 4300 digits
                raise _from_the_future(self, raw)
            value = int(digits)
        else:
            raise CursorError(
                f"hub {self.name!r}: a cursor is the id of the last event seen, a whole "
                f"number from 0 to {self._last} in ASCII digits (leave it out to start "
                f"from now), got {_shown(raw)}")
        if value > self._last:
            raise _from_the_future(self, raw)
        return value

    # -- waiting, on the lab loop -----------------------------------------------

    async def wait(self, cursor: int, timeout: float | None) -> list[Item]:
        """The items after ``cursor``; if there are none yet, hold until there are.

        Returns at once when ``since(cursor)`` has items. Otherwise holds until
        the next publish (and returns the new items) or until ``timeout``
        seconds pass (and returns ``[]``); ``timeout=None`` holds as long as it
        takes. Raises :class:`~labkit.errors.HubClosedError` if the hub is
        closed or closes meanwhile. Cancelling the awaiting task removes the
        waiter and its timer and leaves nothing behind.
        """
        if not lab.in_lab_thread():
            raise LabLoopError(f"hub {self.name!r}: wait() runs on the lab loop: await it in "
                               f"a handler or coroutine there, or use lab.run(hub.wait(...))")
        if timeout is not None and not (isinstance(timeout, (int, float))
                                        and not isinstance(timeout, bool) and timeout >= 0):
            raise HubError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
        if self._closed:
            raise _closed(self)
        items = self.since(cursor)
        if items or timeout == 0:
            return items
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.add(waiter)
        timer = None
        if timeout is not None and math.isfinite(timeout):
            timer = loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)
            if timer is not None:
                timer.cancel()
        if self._closed:
            raise _closed(self)
        return self.since(cursor)

    # -- closing ---------------------------------------------------------------

    def close(self) -> None:
        """Refuse later publishes and release every waiter with HubClosedError. Idempotent.

        Safe from any thread: off the lab thread, the waiters are released on
        the lab loop before this returns.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if lab.in_lab_thread():
            self._release()
        elif lab.is_running():
            lab.run(self._release)

    async def aclose(self) -> None:
        """:meth:`close`, then let the released waiters run (on the lab loop).

        A server calls it on stop (``server.on_stop(hub.aclose)``) so held
        requests answer before their connections are closed.
        """
        self.close()
        for _ in range(100):  # at most about 1 s; woken waiters usually leave at once
            await asyncio.sleep(0)
            if not self._waiters:
                break
            await asyncio.sleep(0.01)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.waiting} waiting"
        return (f"<Hub {self.name!r} ids {self.first_id}..{self.last_id} "
                f"(history {self.history}), {state}>")


def _shown(raw: Any) -> str:
    """A bad value as an error message quotes it: repr'd, long input cut to ~40 characters."""
    if _is_count(raw) and raw.bit_length() > 128:  # str() refuses ints over 4300 digits
        return f"a whole number of {raw.bit_length()} bits"
    if isinstance(raw, str) and len(raw) > _SHOWN:
        return f"{raw[:_SHOWN]!r}... ({len(raw)} characters)"
    text = repr(raw)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _from_the_future(hub: Hub, raw: int | str) -> CursorError:
    return CursorError(
        f"hub {hub.name!r}: cursor {_shown(raw)} comes from the future: the last event id "
        f"here is {hub.last_id} (a cursor kept from a previous run of the server?); send 0 "
        f"to get everything still kept, or no cursor to start from now")


def _closed(hub: Hub) -> HubClosedError:
    return HubClosedError(f"hub {hub.name!r} was closed (its server stopped): "
                          f"there is nothing more to wait for")
