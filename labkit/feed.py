"""The one event source every technique in the kit delivers.

Polling, long polling, SSE, Web Push and webhooks are only comparable if
they carry the same events. A :class:`Feed` makes those events: each gets a
unique ``id``, a ``seq`` number (1, 2, 3 ... so a receiver can spot gaps and
out-of-order delivery) and a ``created`` time on ``time.monotonic()``, the
clock the trace uses, so latency is simply ``delivered - created``.

*When* events happen is a schedule: a list of offsets in seconds from the
start. :func:`fixed_rate` spaces them evenly; :func:`poisson` spaces them
randomly the way independent real-world events arrive (a seed makes the
randomness repeatable). :func:`play` walks a schedule on a clock, making and
publishing one event at each offset.

Example::

    feed = Feed(seed=1)
    schedule = poisson(2.0, duration=10, seed=1)    # about 20 events in 10 s
    events = await play(feed, schedule, hub.publish, clock=Clock(speedup=10))
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from labkit.clock import REAL_TIME, Clock
from labkit.errors import FeedError

__all__ = ["Event", "Feed", "FeedError", "fixed_rate", "poisson", "play", "id_rule"]



@dataclass(frozen=True)
class Event:
    """One thing that happened, as every technique delivers it."""

    id: str
    type: str
    payload: dict
    created: float
    seq: int

    def to_dict(self) -> dict:
        """The event as a plain dict, ready for ``json.dumps``."""
        return {"id": self.id, "type": self.type, "seq": self.seq,
                "created": self.created, "payload": self.payload}

    def to_json(self) -> str:
        """The event as a JSON string, the body a sender puts on the wire."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> Event:
        """Rebuild an event from :meth:`to_dict` output (or its JSON, parsed)."""
        try:
            return cls(id=data["id"], type=data["type"], payload=data["payload"],
                       created=data["created"], seq=data["seq"])
        except (KeyError, TypeError) as exc:
            raise FeedError(
                f"not an event dict (need id, type, seq, created, payload): {data!r}"
            ) from exc


_ID_RULES: list[Callable[[Event], str]] = []


def id_rule(rule: Callable[[Event], str]) -> Callable[[Event], str]:
    """Register how a sender derives its own message id from an event.

    Real providers give each delivery an id of their own (GitHub a GUID in
    ``X-GitHub-Delivery``, Twilio a token). A provider simulator registers
    its rule here (every :class:`labkit.webhooks.providers.Provider` subclass
    does so on its own), and :meth:`Feed.find` then maps such an id back to
    the event, so a receiver can measure latency without knowing any provider.
    """
    if rule not in _ID_RULES:
        _ID_RULES.append(rule)
    return rule


_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9]*")


class Feed:
    """A thread-safe maker of numbered events.

    Ids look like ``evt_000001_3f9a0c12``: the prefix, the ``seq`` number
    (which alone makes ids unique within a feed) and a random tail drawn from
    ``random.Random(seed)``, so the same seed gives the same ids run after run
    while feeds with other seeds or prefixes never clash.
    """

    def __init__(self, seed: int = 0, prefix: str = "evt"):
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise FeedError(
                f"prefix must be letters and digits starting with a letter, got {prefix!r}"
            )
        self.prefix = prefix
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._by_id: dict[str, Event] = {}
        self._indexed = 0  # events (and rules) already in _by_id
        self._rules_indexed = 0

    def make(self, type: str = "tick", payload: dict | None = None) -> Event:
        """Make the next event, remember it and return it.

        The payload is copied through JSON, so the event holds exactly what
        the wire would carry and later changes to the caller's dict do not
        leak in.
        """
        if not isinstance(type, str) or not type:
            raise FeedError(f"event type must be a non-empty string, got {type!r}")
        payload = _json_copy(type, {} if payload is None else payload)
        with self._lock:
            seq = len(self._events) + 1
            event = Event(id=f"{self.prefix}_{seq:06d}_{self._rng.getrandbits(32):08x}",
                          type=type, payload=payload, created=time.monotonic(), seq=seq)
            self._events.append(event)
        return event

    def find(self, message_id: str | None) -> Event | None:
        """The event whose id, or an id a registered sender derived from it
        (see :func:`id_rule`), is ``message_id``; None if there is none."""
        if message_id is None:
            return None
        with self._lock:
            if self._rules_indexed < len(_ID_RULES):  # a rule registered late: index anew
                self._by_id.clear()
                self._indexed, self._rules_indexed = 0, len(_ID_RULES)
            for event in self._events[self._indexed:]:
                self._by_id[event.id] = event
                for rule in _ID_RULES:
                    self._by_id[rule(event)] = event
            self._indexed = len(self._events)
            return self._by_id.get(message_id)

    @property
    def events(self) -> list[Event]:
        """A snapshot of every event made so far, oldest first."""
        with self._lock:
            return list(self._events)


def _json_copy(type: str, payload: Any) -> dict:
    """Return ``payload`` round-tripped through JSON, or say why it cannot be."""
    if not isinstance(payload, dict):
        raise FeedError(
            f"payload for a {type!r} event must be a dict, got {payload.__class__.__name__}"
        )
    try:
        return json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise FeedError(
            f"payload for a {type!r} event is not JSON-serialisable ({exc}); "
            f"use only dict, list, str, int, finite float, bool and None"
        ) from exc


# -- schedules ---------------------------------------------------------------


def fixed_rate(rate: float, *, count: int | None = None,
               duration: float | None = None) -> list[float]:
    """Evenly spaced offsets: ``rate`` events per second.

    Give exactly one of ``count`` (how many events) or ``duration`` (every
    event up to and including that many seconds). The first event comes one
    interval after the start, as in :func:`poisson`, so both schedules have
    ``rate * duration`` events in a duration (Poisson on average).
    """
    _check_rate(rate, count, duration)
    if count is None:
        count = math.floor(rate * duration + 1e-9)  # 1e-9: 0.3 * 10 must give 3, not 2
    return [k / rate for k in range(1, count + 1)]


def poisson(rate: float, *, count: int | None = None, duration: float | None = None,
            seed: int = 0) -> list[float]:
    """Random offsets of a Poisson process: ``rate`` events per second on average.

    Gaps between events are independent exponential draws with mean
    ``1 / rate``, how unrelated real-world events (payments, pushes) arrive.
    The draws come from ``random.Random(seed)``: same seed, same schedule.
    Give exactly one of ``count`` or ``duration``, as for :func:`fixed_rate`.
    """
    _check_rate(rate, count, duration)
    rng = random.Random(seed)
    if count is not None:
        return list(itertools.accumulate(rng.expovariate(rate) for _ in range(count)))
    offsets: list[float] = []
    t = rng.expovariate(rate)
    while t <= duration:
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def _check_rate(rate: float, count: int | None, duration: float | None) -> None:
    if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise FeedError(f"rate must be a finite number of events per second > 0, got {rate!r}")
    if (count is None) == (duration is None):
        raise FeedError("give exactly one of count= (how many events) or duration= (seconds)")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise FeedError(f"count must be a whole number >= 0, got {count!r}")
    if duration is not None and (not isinstance(duration, (int, float))
                                 or not math.isfinite(duration) or duration < 0):
        raise FeedError(f"duration must be a finite number of seconds >= 0, got {duration!r}")


async def play(feed: Feed, schedule: Iterable[float],
               publish: Callable[[Event], Awaitable[Any] | Any], *,
               clock: Clock | None = None, type: str = "tick",
               payload: dict | None = None) -> list[Event]:
    """Make and publish one event at each offset of ``schedule``; return them.

    Offsets are simulated seconds on ``clock`` (real time if omitted),
    measured from when ``play`` starts. Waits are computed from the start,
    not from the previous event, so slow publishing does not make the
    schedule drift. ``publish`` may be a plain function or a coroutine
    function; an awaitable result is awaited before the next event.
    """
    schedule = list(schedule)
    if any(t < 0 for t in schedule) or any(a > b for a, b in zip(schedule, schedule[1:])):
        raise FeedError("schedule offsets must be >= 0 and in increasing order")
    clock = REAL_TIME if clock is None else clock
    start = clock.now()
    events: list[Event] = []
    for offset in schedule:
        await clock.sleep(offset - (clock.now() - start))
        event = feed.make(type, payload)
        events.append(event)
        result = publish(event)
        if inspect.isawaitable(result):
            await result
    return events
