"""What the polling, long-polling and WebSocket clients share: the item format and a client's life.

Two things are the same whichever way a client learns of hub items:

* **The item on the wire.** A poll answer lists items and a WebSocket sends
  one per text frame, in one JSON shape, encoded once per item whatever the
  number of clients (kept in ``item.cache["json"]``)::

      {"id": 3, "data": {"id": "evt_000003_5e1f0c2a", "type": "tick", "seq": 3, ...}}

  ``id`` is the hub's id, the cursor a client sends back (``?after=3``);
  ``data`` is the feed event's dict (:meth:`labkit.feed.Event.to_dict`), or
  whatever else was published, as JSON.

* **A client's life on the lab loop** (:class:`LoopClient`, which the SSE
  client shares too): ``start()`` from a cell, a coroutine that talks to the
  server until ``stop()`` (bounded: cancelled if it does not end in time),
  ``failure`` once it stops for good; and for hub clients
  (:class:`HubClient`) a cursor that only moves forward, every item received
  kept in ``received``, and a ``trace.delivered`` record (with its latency)
  for each feed event that arrives, under the client's ``name`` and
  ``technique``.

=====================  ===============================================================
client                 how it asks
=====================  ===============================================================
``PollingClient``      ``GET /poll?after=<cursor>`` every ``interval`` (polling)
``LongPollingClient``  ``GET /poll?after=<cursor>&wait=<hold>``, again as soon as it
                       is answered (both in :mod:`labkit.push.polling`)
``WebSocketClient``    one socket, ``?after=<cursor>`` when it (re)connects
                       (:mod:`labkit.push.websocket`)
=====================  ===============================================================

A client that is told about lost items (its cursor was older than the
server's history) records a ``drop`` saying how many; one that errs records
a ``retry`` saying what went wrong and when it tries again; one that is
refused for good (a 400: its cursor is not a position of that hub) stops
and says why in ``failure``.

Thread-safety: ``start`` is safe anywhere (on the lab loop too); ``stop``,
``wait_for``, ``received``, ``cursor``, ``delivered``, ``errors`` and
``failure`` are safe from a cell or a script; ``astop`` and everything else
runs on the lab loop.
"""

from __future__ import annotations

import abc
import asyncio
import json
import math
import threading
import time
from typing import Any, NamedTuple

from labkit import lab
from labkit.errors import FeedError, LabkitError
from labkit.feed import Event
from labkit.hub import Item
from labkit.trace import Trace

__all__ = ["Received", "LoopClient", "HubClient", "encode_item", "decode_data", "error_text"]


def encode_item(item: Item) -> bytes:
    """The JSON of ``{"id": item.id, "data": ...}`` as UTF-8, made once per item.

    A feed :class:`~labkit.feed.Event` becomes its dict; other data is
    written as JSON, with ``str()`` for what JSON cannot hold (a set, NaN).
    """
    encoded = item.cache.get("json")
    if encoded is None:
        data = item.data.to_dict() if isinstance(item.data, Event) else item.data
        try:
            text = json.dumps({"id": item.id, "data": data}, default=str, allow_nan=False)
        except ValueError:  # NaN or infinity somewhere inside
            text = json.dumps({"id": item.id, "data": str(data)})
        encoded = item.cache["json"] = text.encode()
    return encoded


def decode_data(data: Any) -> Any:
    """An item's ``data`` as a client keeps it: an :class:`Event` if it is one, else as is."""
    if isinstance(data, dict) and "seq" in data and "created" in data:
        try:
            return Event.from_dict(data)
        except FeedError:
            pass
    return data


class Received(NamedTuple):
    """One item a client received: the hub ``id``, its ``data`` (an :class:`Event`
    for feed events) and when it arrived (``time.monotonic()``)."""

    id: int
    data: Any
    at: float


def _cursor(after: Any) -> int | None:
    if after is None or (isinstance(after, int) and not isinstance(after, bool) and after >= 0):
        return after
    raise LabkitError(f"after is the id of the last item seen (a whole number >= 0), or None "
                      f"to start from now, got {after!r}")


class LoopClient(abc.ABC):
    """A client that lives on the lab loop and is started and stopped from a cell.

    Subclasses write ``_run`` (talk to the server until ``_stopping`` is set
    or ``failure`` is), ``_interrupt`` (cut the connection now) and
    ``ready``; this class owns the task, the stop signal and the bounded stop.
    ``name`` names the client in the trace; ``trace`` is where it records
    what it receives (None: nothing is recorded).
    """

    technique = "http"

    def __init__(self, url: str, *, name: str, trace: Trace | None):
        if not isinstance(name, str) or not name or not name.isprintable():
            raise LabkitError(f"a client's name is a non-empty printable string, got {name!r}")
        self.url = url
        self.name = name
        self.trace = trace
        self._changed = threading.Condition()
        self.failure: str | None = None
        """Why the client stopped for good (a refusal it cannot fix by retrying), or None."""
        self._task: asyncio.Task | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True once the client is talking to the server (see each subclass)."""

    def start(self) -> LoopClient:
        """Start on the lab loop and return at once (from a cell, a script or the lab loop)."""
        if lab.in_lab_thread():
            self._start()
        else:
            lab.run(self._start)
        return self

    def _start(self) -> None:
        if self.running:
            raise LabkitError(f"{type(self).__name__} {self.name!r} is already running: "
                              f"stop() it first")
        self.failure = None
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._main())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop talking to the server and close the connection, from a cell or a script."""
        lab.run(self.astop(timeout))

    async def astop(self, timeout: float = 5.0) -> None:
        """:meth:`stop` for code on the lab loop: close, then wait (bounded) for the end."""
        if not self.running:
            return
        self._stopping.set()
        self._interrupt()
        done, _ = await asyncio.wait([self._task], timeout=timeout)
        if not done:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _fail(self, why: str) -> None:
        """Stop for good, saying why (a waiter in a cell wakes and raises it)."""
        with self._changed:
            self.failure = why
            self._changed.notify_all()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped ({self.failure})" if self.failure \
            else "stopped"
        return f"<{type(self).__name__} {self.name} of {self.url} {state}, {self._tally()}>"

    @abc.abstractmethod
    def _tally(self) -> str:
        """What it has received so far, for ``repr``."""

    # -- on the lab loop -----------------------------------------------------------

    async def _main(self) -> None:
        try:
            await self._run()
        finally:
            self._closed()
            with self._changed:
                self._changed.notify_all()

    @abc.abstractmethod
    async def _run(self) -> None:
        """Talk to the server until ``_stopping`` is set or ``failure`` is."""

    @abc.abstractmethod
    def _interrupt(self) -> None:
        """Cut the connection now (a held request, an open socket): the client is stopping."""

    def _closed(self) -> None:
        """Release what the client holds once ``_run`` has ended."""


class HubClient(LoopClient):
    """A client of a hub's items (see the module); subclasses write ``_run``.

    ``after`` is the starting cursor (None: only what is published from now
    on, 0: everything the server still keeps).
    """

    def __init__(self, url: str, *, name: str, trace: Trace | None, after: int | None):
        super().__init__(url, name=name, trace=trace)
        self._cursor = _cursor(after)
        self._received: list[Received] = []
        self.delivered = 0
        """How many feed events reached this client (each recorded in the trace)."""
        self.errors: list[str] = []
        """What went wrong, in order (each also a ``retry`` record in the trace)."""

    @property
    def cursor(self) -> int | None:
        """The id of the last item received (None until the server has said where it is)."""
        return self._cursor

    @property
    def received(self) -> list[Received]:
        """A snapshot of every item received, oldest first."""
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until ``count`` items have arrived; return them all.

        Raises :class:`~labkit.errors.WaitTimeout` after ``timeout`` seconds
        saying how far it got, or at once a
        :class:`~labkit.errors.LabkitError` if the client stopped for good.
        """
        def explain() -> str:
            last = f"; last error: {self.errors[-1]}" if self.errors else ""
            return (f"client {self.name!r} got only {len(self._received)} of {count} items "
                    f"from {self.url} within {timeout} s{last}")

        lab.wait_until(self._changed, lambda: len(self._received) >= count or
                       self.failure is not None, timeout, explain)
        with self._changed:
            if len(self._received) < count:
                raise LabkitError(f"client {self.name!r} got {len(self._received)} of {count} "
                                  f"items and stopped for good: {self.failure}")
            return list(self._received)

    def __enter__(self) -> HubClient:
        """Start, and wait (at most 5 s) until :attr:`ready`; stop again if it never is."""
        if not self.running:
            self.start()
        deadline = time.monotonic() + 5.0
        while not self.ready and self.failure is None:
            if time.monotonic() > deadline:
                self.stop()
                raise LabkitError(f"client {self.name!r} could not reach {self.url} within 5 s: "
                                  f"{self.errors[-1] if self.errors else 'no answer'}")
            time.sleep(0.002)
        if self.failure is not None:
            self.stop()
            raise LabkitError(f"client {self.name!r} stopped for good: {self.failure}")
        return self

    def _tally(self) -> str:
        return f"{len(self._received)} items, cursor {self._cursor}"

    # -- on the lab loop -----------------------------------------------------------

    def _take(self, items: list, *, bytes: int = 0) -> int:
        """Keep the items newer than the cursor, record feed events, move the cursor.

        ``items`` are decoded ``{"id": ..., "data": ...}`` dicts, oldest
        first; ``bytes`` goes on each event record. Returns how many were new.
        """
        taken = 0
        now = time.monotonic()
        for entry in items:
            number = entry["id"] if isinstance(entry, dict) else None
            if not isinstance(number, int) or isinstance(number, bool) or "data" not in entry:
                raise LabkitError(f"not an item (an object with an integer id and data): "
                                  f"{str(entry)[:80]}")
            if self._cursor is not None and number <= self._cursor:
                continue  # seen already
            data = decode_data(entry["data"])
            with self._changed:
                self._received.append(Received(number, data, now))
                self._cursor = number
                self._changed.notify_all()
            if isinstance(data, Event):
                self.delivered += 1
                if self.trace is not None:
                    self.trace.delivered(data, technique=self.technique, client=self.name,
                                         bytes=bytes, detail=f"id {number}")
            taken += 1
        return taken

    def _move(self, cursor: int) -> None:
        """Adopt the server's cursor (where "from now" starts) if it is ahead of ours."""
        if self._cursor is None or cursor > self._cursor:
            self._cursor = cursor

    def _lost(self, missed: int, detail: str) -> None:
        """Record that ``missed`` items left the server's history before this client saw them."""
        if self.trace is not None:
            self.trace.add("drop", technique=self.technique, client=self.name,
                           detail=f"{missed} items left the server's history unseen ({detail})")

    def _retry(self, why: str, after: float) -> None:
        """Note an error and that the client tries again in ``after`` seconds."""
        with self._changed:
            self.errors.append(why)
        if self.trace is not None:
            self.trace.add("retry", technique=self.technique, client=self.name,
                           detail=f"{why}: trying again in {after:.3g} s")

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (real time), or less if stopped; True if the client is stopping."""
        if seconds > 0 and math.isfinite(seconds):
            try:
                await asyncio.wait_for(self._stopping.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        return self._stopping.is_set()


def error_text(body: bytes) -> str:
    """The ``error`` of a refusal's JSON body, or the start of whatever the body is."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace") or "(no body)"
