"""Lesson 01's experiments: a shop tells an email service about orders, directly or by queue.

Every experiment here plays the same two services. A *shop* reports each
order (a feed event) to an *email service* whose work takes ``work``
seconds. Directly, the shop calls :class:`~labkit.queues.DirectService`
and waits until the email is sent; by queue, it publishes to a
:class:`~labkit.queues.Broker` and goes on, while a
:class:`~labkit.queues.Consumer` takes the messages out. Only the way the
message travels changes, so the numbers compare.

=============================  ===========================================================
call                           what it shows
=============================  ===========================================================
``caller_waits()``             the shop's wait per order: the work itself for a direct call,
                               a few milliseconds to publish; the queue keeps the messages
                               until a consumer comes, then hands them out oldest first
``outage()``                   both email sides down for a second while 30 orders come in:
                               the direct calls fail, the messages wait (``retries=`` lets
                               the shop try a failed call again)
``crash_before_ack()``         a consumer that crashes before its ack: the message comes
                               back when its lease runs out, after the later ones
``several_workers()``          three workers on one queue finish out of publish order
``notification_sizes()``       the bytes of a "this happened" POST with no, small and full
                               bodies: mostly request line and headers
``outage_on_redis()``          ``outage()`` with the queue on Redis Streams (embedded, or the
                               server ``LABKIT_REDIS_URL`` names): the same claims hold
``crash_on_redis()``           a consumer dies holding a message; another claims it after
                               ``claim_after``, with ``attempts`` 2
``fan_out()``                  consumer groups on one stream: every group gets every message
                               (pub/sub), members of a group share them (a work queue)
``side_by_side(...)``          the lesson's closing table, from the runs above
=============================  ===========================================================

Each returns a frozen result with its trace and the numbers the lesson
asserts on; the first three and the sizes have a ``figure()``.

Thread-safety: call them from a cell or a script, never from the lab loop
(they block while they wait). Each stops every server and consumer it
started, also when something fails.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import requests

from labkit import lab, redis_queue
from labkit.errors import WaitTimeout
from labkit.experiments.start import client_session
from labkit.feed import Event, Feed, fixed_rate
from labkit.progress import Progress
from labkit.queues import Consumer, DirectService, Message, Snapshot, serve_broker
from labkit.trace import Trace

__all__ = ["CallerWaits", "caller_waits", "Outage", "outage", "Crash", "crash_before_ack",
           "Workers", "several_workers", "Sizes", "notification_sizes", "side_by_side"]

QUEUE = "emails"


def _email(work: float):
    """The email service's work: ``work`` seconds of talking to a mail server (simulated)."""
    async def send_email(message: Message) -> None:
        await asyncio.sleep(work)
    return send_email


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


class _Plan:
    """Actions due at planned moments (seconds after ``start``), done in time order between
    the shop's own moves, so which orders fall in an outage does not depend on how busy the
    machine is."""

    def __init__(self, start: float, actions: list[tuple[float, Callable[[], None]]]):
        self.start = start
        self.actions = sorted(actions, key=lambda action: action[0])

    def at(self, moment: float) -> None:
        """Wait until ``moment`` s, doing first whatever the plan has due before it."""
        while self.actions and self.actions[0][0] <= moment:
            when, action = self.actions.pop(0)
            _sleep_until(self.start + when)
            action()
        _sleep_until(self.start + moment)


# -- the caller's wait ------------------------------------------------------------


@dataclass(frozen=True)
class CallerWaits:
    """What :func:`caller_waits` measured (times in seconds)."""

    trace: Trace
    work: float
    direct_waits: tuple[float, ...]
    """How long the shop waited for each direct call."""
    held: tuple[float, ...]
    """How long the email service kept each call open (from the trace)."""
    direct_calls: int
    """Calls that reached the email service."""
    publish_waits: tuple[float, ...]
    """How long the shop waited for each publish."""
    before_consumer: dict = field(repr=False)
    """The queue's counters once every order was published, before any consumer ran."""
    published: tuple[str, ...]
    """Event ids, in publish order."""
    processed: tuple[str, ...]
    """Event ids, in the order the consumer finished them."""
    after: dict = field(repr=False)
    """The queue's counters once the consumer had processed everything."""

    def figure(self):
        """The shop's wait per order on a log scale: direct calls, publishes, and the work."""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
        orders = range(1, len(self.direct_waits) + 1)
        ax.plot(orders, [w * 1000 for w in self.direct_waits], "o-", color="tab:red",
                label="direct call (POST /work)")
        ax.plot(orders, [w * 1000 for w in self.publish_waits], "s-", color="tab:olive",
                label="publish to the queue (POST /queues/emails)")
        ax.axhline(self.work * 1000, color="0.4", linestyle=":",
                   label=f"the work itself ({self.work * 1000:.0f} ms)")
        ax.set_yscale("log")
        ax.set_xticks(list(orders))
        ax.set_title("How long the shop waits for each order it reports")
        ax.set_xlabel("order")
        ax.set_ylabel("the shop's wait (ms, log scale)")
        ax.legend(loc="center right")
        return fig


def caller_waits(*, orders: int = 5, work: float = 0.2, seed: int = 1) -> CallerWaits:
    """The shop reports ``orders`` orders directly, then the same number through a queue.

    Directly: each call to ``POST /work`` lasts as long as the email takes
    (``work`` seconds). Through the queue: each publish is answered as soon
    as the broker has stored the message; only then does a consumer start
    and work through the queue. One trace holds both (techniques ``direct``
    and ``queue``).
    """
    feed, trace = Feed(seed=seed), Trace()
    service = DirectService(_email(work), trace=trace)
    server = serve_broker(trace=trace)
    consumer = Consumer(server.url, QUEUE, _email(work), trace=trace, name="email-service",
                        wait=0.25)
    direct_waits, publish_waits, published = [], [], []
    try:
        with client_session("shop") as shop, \
                Progress(3 * orders, "direct calls, then a queue") as bar:
            service.start()
            for n in range(orders):
                order = feed.make("order.placed", {"order": 1001 + n})
                started = time.monotonic()
                shop.post(service.url, data=order.to_json(), timeout=5).raise_for_status()
                direct_waits.append(time.monotonic() - started)
                bar.advance()
            for n in range(orders):
                order = feed.make("order.placed", {"order": 1001 + orders + n})
                started = time.monotonic()
                shop.post(f"{server.url}/queues/{QUEUE}", data=order.to_json(),
                          timeout=5).raise_for_status()
                publish_waits.append(time.monotonic() - started)
                published.append(order.id)
                bar.advance()
            before = server.component.stats(QUEUE)
            consumer.start()
            done = consumer.wait_for(orders, timeout=10 + orders * work)
            bar.advance(orders)
    finally:
        consumer.stop()
        service.stop()
        server.stop()
    return CallerWaits(
        trace=trace, work=work, direct_waits=tuple(direct_waits),
        held=tuple(r.duration for r in trace.records(kind="response", technique="direct")),
        direct_calls=len(service.calls), publish_waits=tuple(publish_waits),
        before_consumer=before, published=tuple(published),
        processed=tuple(m.event.id for m in done), after=server.component.stats(QUEUE))


# -- an outage ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """What :func:`outage` measured. Times are seconds since the experiment started."""

    trace: Trace
    down: tuple[float, float]
    """When the email side really went down and came back."""
    created: dict = field(repr=False)
    """Event id -> when the shop made that order."""
    sent: tuple[str, ...]
    """Every order, in the order the shop made them."""
    in_window: tuple[str, ...]
    """The orders due while the email side was meant to be down."""
    failed: tuple[str, ...]
    """Orders whose direct call failed on every try: they never got an email that way."""
    service_calls: int
    """Calls that reached the email service."""
    processed: tuple[str, ...]
    """Event ids in the order the consumer finished them."""
    depth_at_restart: int
    """Messages waiting in the queue when the consumer came back."""
    queue_latency: dict = field(repr=False)
    """Event id -> seconds from the order to the consumer having it."""
    direct_latency: dict = field(repr=False)
    """Event id -> seconds from the order to the email service having it (those that did)."""
    shop_waits: dict = field(repr=False)
    """Event id -> how long the shop spent on its direct call, tries and pauses included."""
    history: tuple[Snapshot, ...] = field(repr=False)
    """The queue's depth after every publish, receive and ack (``t`` on the trace's clock)."""
    start: float = field(repr=False)
    """When the experiment started, on ``time.monotonic()``."""

    @property
    def reached_service_in_window(self) -> int:
        """How many of the outage's orders reached the email service by a direct call."""
        return sum(1 for event_id in self.in_window if event_id in self.direct_latency)

    def figure(self):
        """When each order reached the email side (top), and the queue's depth (bottom)."""
        import matplotlib.pyplot as plt
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                          layout="constrained")
        for ax in (top, bottom):
            ax.axvspan(*self.down, color="0.88", label="email side down")
        arrived = [i for i in self.sent if i in self.direct_latency]
        top.plot([self.created[i] for i in arrived],
                 [self.direct_latency[i] * 1000 for i in arrived], "o", color="tab:red",
                 markersize=4, label="direct call: arrived")
        never = 10 ** 4  # drawn at the top: these orders never arrived
        top.plot([self.created[i] for i in self.failed], [never] * len(self.failed), "x",
                 color="red", markersize=8, markeredgewidth=2,
                 label="direct call: failed, never arrived")
        top.plot([self.created[i] for i in self.sent],
                 [self.queue_latency[i] * 1000 for i in self.sent], "s", color="tab:olive",
                 markersize=4, label="queue: reached the consumer")
        top.set_yscale("symlog", linthresh=10)
        top.set_ylim(0, never * 2)
        top.text(0.005, never, "never", transform=top.get_yaxis_transform(), va="center",
                 color="red", fontsize="small")
        top.set_title("When did each order reach the email service?")
        top.set_ylabel("delay after the order (ms)")
        bottom.step([s.t - self.start for s in self.history], [s.depth for s in self.history],
                    where="post", color="tab:olive", linewidth=2,
                    label="messages waiting (depth)")
        bottom.set_title("The queue while the consumer is away")
        bottom.set_xlabel("time since the experiment started (s)")
        bottom.set_ylabel("messages")
        for ax in (top, bottom):
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        return fig


def outage(*, orders: int = 30, rate: float = 10.0, down: tuple[float, float] = (0.95, 1.95),
           work: float = 0.05, retries: int = 0, retry_pause: float = 0.3,
           seed: int = 1) -> Outage:
    """Take the email side down from ``down[0]`` to ``down[1]`` s while the shop reports orders.

    The shop makes ``orders`` orders, ``rate`` per second, and reports each
    twice: it publishes it to the queue, then calls the email service
    directly. Both the service and the consumer are down during ``down``.
    A direct call that fails is tried up to ``retries`` more times,
    ``retry_pause`` seconds apart; the shop waits meanwhile (its next order
    goes out late). An order whose every try failed is a ``drop`` in the
    trace: this shop has nowhere to keep it.

    Everything runs on one plan in time order, so which orders fall in the
    outage does not depend on how busy the machine is: the outage starts and
    ends between the shop's moves, at their planned times.
    """
    feed, trace = Feed(seed=seed), Trace()
    schedule = fixed_rate(rate, count=orders)
    service = DirectService(_email(work), trace=trace)
    server = serve_broker(trace=trace)
    consumer = Consumer(server.url, QUEUE, _email(work), trace=trace, name="email-service",
                        wait=0.1)
    moments: dict[str, float] = {}
    created: dict[str, float] = {}
    start = time.monotonic()

    def went_down() -> None:
        moments["down"] = time.monotonic() - start

    def comes_back() -> None:
        moments["depth"] = server.component.stats(QUEUE)["depth"]
        moments["up"] = time.monotonic() - start

    def publish(shop: requests.Session, order: Event) -> None:
        created[order.id] = order.created - start
        shop.post(f"{server.url}/queues/{QUEUE}", data=order.to_json(),
                  timeout=5).raise_for_status()

    try:
        run = _OutageRun(feed, trace, service, consumer, start, first_order=2001,
                         went_down=went_down, comes_back=comes_back)
        run.play(schedule, down, publish, retries, retry_pause, "orders through an outage")
    finally:
        server.stop()
    sent, failed, done = run.sent, run.failed, run.done
    waits = {i: run.answered[i] - created[i] for i in sent}
    window = [i for i, offset in zip(sent, schedule) if down[0] <= offset <= down[1]]
    return Outage(
        trace=trace, down=(moments["down"], moments["up"]), created=created,
        sent=tuple(sent), in_window=tuple(window), failed=tuple(failed),
        service_calls=len(service.calls), processed=tuple(m.event.id for m in done),
        depth_at_restart=moments["depth"],
        queue_latency=_latencies(trace, "queue"), direct_latency=_latencies(trace, "direct"),
        shop_waits=waits, history=tuple(server.component.history(QUEUE)), start=start)


class _OutageRun:
    """The shop's side of both outage experiments, on one plan in time order.

    The shop makes one order per planned moment, publishes it with the
    experiment's own ``publish(shop, order)`` (the HTTP broker or Redis),
    then calls the email service directly, retrying as told; an order whose
    every try failed is a ``drop`` in the trace. From ``down[0]`` to
    ``down[1]`` s the service and the consumer are down; ``went_down`` and
    ``comes_back`` let the experiment note what it measures at those moments.
    """

    def __init__(self, feed: Feed, trace: Trace, service: DirectService, consumer, start: float,
                 *, first_order: int, went_down: Callable[[], None] = lambda: None,
                 comes_back: Callable[[], None] = lambda: None):
        self.feed, self.trace, self.service, self.consumer = feed, trace, service, consumer
        self.start, self.first_order = start, first_order
        self.went_down, self.comes_back = went_down, comes_back
        self.sent: list[str] = []
        self.failed: list[str] = []
        self.answered: dict[str, float] = {}
        """When the shop was done calling about each order (s since ``start``)."""
        self.done: list = []

    def _down(self) -> None:
        self.went_down()
        self.service.stop()       # the service goes down ...
        self.consumer.stop()      # ... and so does the consumer (it finishes what it holds)

    def _up(self) -> None:
        self.comes_back()
        self.service.start()
        self.consumer.start()

    def play(self, schedule: list[float], down: tuple[float, float],
             publish: Callable[[requests.Session, Event], None], retries: int,
             retry_pause: float, label: str) -> None:
        at = _Plan(self.start, [(down[0], self._down), (down[1], self._up)]).at
        try:
            self.service.start()
            self.consumer.start()
            with client_session("shop") as shop, Progress(len(schedule), label) as bar:
                busy_until = 0.0
                for offset in schedule:
                    at(max(offset, busy_until))
                    order = self.feed.make("order.placed",
                                           {"order": self.first_order + len(self.sent)})
                    self.sent.append(order.id)
                    publish(shop, order)
                    arrived, busy_until = _call_with_retries(
                        shop, self.service.url, order, at, max(offset, busy_until), retries,
                        retry_pause)
                    self.answered[order.id] = time.monotonic() - self.start
                    if not arrived:
                        self.failed.append(order.id)
                        self.trace.add("drop", technique="direct", client="shop",
                                       event_id=order.id,
                                       detail="every try failed: the email service is down")
                    bar.advance()
                at(max(down[1], busy_until))  # the outage ends even if the orders did first
                self.done = self.consumer.wait_for(len(self.sent), timeout=10)
        finally:
            self.consumer.stop()
            self.service.stop()


def _call_with_retries(shop: requests.Session, url: str, order: Event, at, first: float,
                       retries: int, pause: float) -> tuple[bool, float]:
    """Call ``url`` with ``order``, trying again after ``pause`` s up to ``retries`` times.

    Returns whether a try got through, and the planned time of the last try.
    """
    moment = first
    for attempt in range(retries + 1):
        moment = first + attempt * pause
        at(moment)
        try:
            shop.post(url, data=order.to_json(), timeout=5).raise_for_status()
            return True, moment
        except requests.ConnectionError:
            continue
    return False, moment


def _latencies(trace: Trace, technique: str) -> dict[str, float]:
    """Event id -> latency of its first arrival under ``technique``."""
    latencies: dict[str, float] = {}
    for record in trace.records(kind="event", technique=technique):
        latencies.setdefault(record.event_id, record.latency)
    return latencies


# -- a crash before the ack --------------------------------------------------------


@dataclass(frozen=True)
class Crash:
    """What :func:`crash_before_ack` measured. Times are seconds since the orders were
    published."""

    trace: Trace
    lease: float
    published: tuple[int, ...]
    """Order numbers, in publish order."""
    processed: tuple[int, ...]
    """Order numbers, in the order the consumer finished them."""
    attempts: dict = field(repr=False)
    """Order number -> how many times it was handed out."""
    crashed: int
    """The order whose first delivery crashed the consumer."""
    received: tuple[tuple[int, float, int], ...] = field(repr=False)
    """(order, when it reached the consumer, attempt), in time order."""
    acked: dict = field(repr=False)
    """Order number -> when its ack was answered."""
    redelivered_at: float
    """When the broker handed the crashed order out again."""

    @property
    def redelivered_after(self) -> float:
        """Seconds from the crashed order's first delivery to its second."""
        first = next(t for order, t, _ in self.received if order == self.crashed)
        return self.redelivered_at - first

    def figure(self):
        """One row per order: received, processed and acked, or crashed and leased away."""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
        styles = {}
        for order, got, attempt in self.received:
            if order == self.crashed and attempt == 1:
                styles["leased, but nobody works on it"] = ax.plot(
                    [got, self.redelivered_at], [order, order], ":", color="red")[0]
                styles["received, crashed before the ack"] = ax.plot(
                    got, order, "x", color="red", markersize=9, markeredgewidth=2)[0]
            else:
                styles["received, processed, acked"] = ax.plot(
                    [got, self.acked[order]], [order, order], "-", color="tab:olive",
                    linewidth=6, solid_capstyle="butt")[0]
        styles["lease runs out: the broker hands it out again"] = ax.axvline(
            self.redelivered_at, color="0.3", linestyle="--")
        ax.legend(styles.values(), styles.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small")
        ax.set_yticks(self.published)
        ax.invert_yaxis()
        ax.set_title(f"A crash before the ack: the order comes back when its {self.lease:g} s "
                     f"lease runs out")
        ax.set_xlabel("time since the orders were published (s)")
        ax.set_ylabel("order")
        return fig


def crash_before_ack(*, orders: int = 4, crash: int = 2, lease: float = 1.0,
                     seed: int = 1) -> Crash:
    """Publish ``orders`` orders; the consumer crashes on the ``crash``-th the first time.

    Its work function raises, so that message is never acked: the broker
    keeps it leased for ``lease`` seconds (the visibility timeout), then
    hands it out again with ``attempts`` 2, after the later orders.
    """
    feed, trace = Feed(seed=seed), Trace()
    numbers = [3001 + n for n in range(orders)]
    crashed = numbers[crash - 1]

    async def crashes_once(message: Message) -> None:
        if message.event.payload["order"] == crashed and message.attempts == 1:
            raise RuntimeError("the email service crashed before it acknowledged")
        await asyncio.sleep(0.02)

    server = serve_broker(trace=trace, visibility_timeout=lease)
    try:
        with client_session("shop") as shop:
            for number in numbers:
                order = feed.make("order.placed", {"order": number})
                shop.post(f"{server.url}/queues/{QUEUE}", data=order.to_json(),
                          timeout=5).raise_for_status()
        start = time.monotonic()
        with Consumer(server.url, QUEUE, crashes_once, trace=trace, name="email-service",
                      wait=0.25) as consumer:
            done = consumer.wait_for(orders, timeout=10 + lease)
    finally:
        server.stop()
    order_of = {e.id: e.payload["order"] for e in feed.events}
    number_of = {m.id: m.event.payload["order"] for m in done}
    received = tuple((order_of[r.event_id], r.t - start, int(r.detail.rsplit(" ", 1)[-1]))
                     for r in trace.records(kind="event"))
    acked = {number_of[r.detail.split()[-1]]: r.t - start
             for r in trace.records(kind="response") if r.detail.startswith("acked")}
    return Crash(trace=trace, lease=lease, published=tuple(numbers),
                 processed=tuple(m.event.payload["order"] for m in done),
                 attempts={m.event.payload["order"]: m.attempts for m in done},
                 crashed=crashed, received=received, acked=acked,
                 redelivered_at=trace.records(kind="retry")[0].t - start)


# -- several workers --------------------------------------------------------------------


@dataclass(frozen=True)
class Workers:
    """What :func:`several_workers` measured."""

    trace: Trace
    published: tuple[int, ...]
    """Order numbers, in publish order."""
    processed: tuple[int, ...]
    """Order numbers, in the order the workers finished them."""

    @property
    def in_order(self) -> bool:
        return self.processed == self.published


def several_workers(*, orders: int = 12, workers: int = 3, seed: int = 1) -> Workers:
    """Publish ``orders`` orders, then let ``workers`` workers share the queue.

    Each email takes a different time (10 to 90 ms, drawn with ``seed``), as
    real work does. Each worker takes the oldest waiting message, so the
    queue hands messages out in publish order, but a quick email started
    later finishes before a slow one started earlier.
    """
    feed, trace, rng = Feed(seed=seed), Trace(), random.Random(seed)
    numbers = [4001 + n for n in range(orders)]
    takes = {number: rng.uniform(0.01, 0.09) for number in numbers}

    async def send_email(message: Message) -> None:
        await asyncio.sleep(takes[message.event.payload["order"]])

    server = serve_broker(trace=trace)
    try:
        with client_session("shop") as shop:
            for number in numbers:
                shop.post(f"{server.url}/queues/{QUEUE}", timeout=5, data=feed.make(
                    "order.placed", {"order": number}).to_json()).raise_for_status()
        with Consumer(server.url, QUEUE, send_email, trace=trace, name="worker",
                      concurrency=workers, wait=0.25) as consumer:
            done = consumer.wait_for(orders, timeout=10)
    finally:
        server.stop()
    return Workers(trace=trace, published=tuple(numbers),
                   processed=tuple(m.event.payload["order"] for m in done))


# -- the size of a notification ------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """What :func:`notification_sizes` measured, one row per body, in bytes."""

    trace: Trace
    names: tuple[str, ...]
    heads: tuple[int, ...]
    """Request line and headers, as the client wrote them."""
    bodies: tuple[int, ...]
    wire: tuple[int, ...]
    """The whole request, as the trace counted it on the wire."""
    answers: tuple[int, ...]
    """The whole answer (status line and headers; it has no body)."""
    statuses: tuple[int, ...]
    waits: tuple[float, ...]
    """How long the sender waited for each answer, in seconds."""
    first_head: str = field(repr=False)
    """The first request's line and headers, as text."""

    def figure(self):
        """Stacked bars: each request's line and headers, its body, and the answer."""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
        x = range(len(self.names))
        ax.bar([i - 0.2 for i in x], self.heads, 0.38, color="0.6",
               label="request: line and headers")
        sent = ax.bar([i - 0.2 for i in x], self.bodies, 0.38, bottom=self.heads,
                      color="tab:olive", label="request: body (the message)")
        answered = ax.bar([i + 0.2 for i in x], self.answers, 0.38, color="0.85", hatch="//",
                          edgecolor="0.5", label="answer: status line and headers")
        ax.bar_label(sent, [f"{w} B" for w in self.wire], fontsize="small")
        ax.bar_label(answered, [f"{a} B" for a in self.answers], fontsize="small")
        ax.margins(y=0.1)
        ax.set_xticks(list(x), self.names)
        ax.set_title("Bytes on the wire for one notification")
        ax.set_xlabel("notification")
        ax.set_ylabel("bytes")
        ax.legend()
        return fig


def notification_sizes(bodies: dict[str, bytes] | None = None, *, seed: int = 1) -> Sizes:
    """POST each body once to an endpoint that only takes note (``POST /notify``, 204).

    By default three bodies: empty, a small JSON object, and a whole order
    with twelve items. Each request's line and headers are rebuilt from what
    ``requests`` sent, to show that the trace counts exactly those bytes
    plus the body.
    """
    if bodies is None:
        items = [{"sku": f"SKU-{n}", "qty": 1} for n in range(12)]
        full = Feed(seed=seed).make("order.shipped", {"order": 1042, "items": items,
                                                      "address": "1 Loop Road"})
        bodies = {"empty": b"", "small JSON": b'{"order": 1042, "status": "shipped"}',
                  "full order": full.to_json().encode()}
    trace = Trace()
    with DirectService(path="/notify", trace=trace) as endpoint, requests.Session() as app:
        replies = [app.post(endpoint.url, data=body, timeout=5) for body in bodies.values()]
    heads = [_head(reply.request) for reply in replies]
    return Sizes(trace=trace, names=tuple(bodies), heads=tuple(len(h) for h in heads),
                 bodies=tuple(len(b) for b in bodies.values()),
                 wire=tuple(r.bytes for r in trace.records(kind="request")),
                 answers=tuple(r.bytes for r in trace.records(kind="response")),
                 statuses=tuple(r.status_code for r in replies),
                 waits=tuple(r.elapsed.total_seconds() for r in replies), first_head=heads[0])


def _head(prepared: requests.PreparedRequest) -> str:
    """The request line and headers of a request, as they crossed the wire."""
    url = urlsplit(prepared.url)
    lines = [f"{prepared.method} {url.path} HTTP/1.1", f"Host: {url.netloc}"]
    lines += [f"{name}: {value}" for name, value in prepared.headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


# -- the same on a real broker: Redis Streams --------------------------------------------

REDIS_QUEUE = "lesson01-orders"


def _broker_name(url: str) -> str:
    """Which broker ran, for the lesson to print (never a password)."""
    if url == redis_queue.EMBEDDED:
        return "the embedded broker (fakeredis, in this process)"
    parts = urlsplit(url)
    return f"a Redis server at {parts.hostname}:{parts.port or 6379}"


@dataclass(frozen=True)
class RedisOutage:
    """What :func:`outage_on_redis` measured. Times are seconds since the experiment started."""

    trace: Trace
    broker: str
    """Which broker ran: the embedded one, or the server ``LABKIT_REDIS_URL`` names."""
    sent: tuple[str, ...]
    """Every order, in the order the shop made them."""
    in_window: tuple[str, ...]
    """The orders due while the email side was down."""
    failed: tuple[str, ...]
    """Orders whose direct call failed: they never got an email that way."""
    processed: tuple[str, ...]
    """Event ids in the order the Redis consumer finished them."""
    waiting_at_restart: int
    """Messages the group had not yet been given when the consumer came back."""
    publish_waits: tuple[float, ...]
    """How long the shop waited for each ``XADD``."""
    published_at: dict = field(repr=False)
    """Event id -> when the shop's send returned."""
    received_at: dict = field(repr=False)
    """Event id -> when the consumer first had it."""
    after: dict = field(repr=False)
    """The group's counters (:func:`labkit.redis_queue.stats`) once it was all processed."""


def outage_on_redis(*, orders: int = 20, rate: float = 20.0,
                    down: tuple[float, float] = (0.475, 0.975), work: float = 0.02,
                    url: str | None = None, seed: int = 1) -> RedisOutage:
    """:func:`outage` with the queue on Redis Streams (:mod:`labkit.redis_queue`).

    The shop sends each order with ``XADD`` to the stream ``lesson01-orders``,
    then calls the email service directly. From ``down[0]`` to ``down[1]`` s
    the service and the consumer (group ``emails``) are down. ``url`` picks
    the broker as :func:`labkit.redis_queue.broker_url` does: by default
    ``$LABKIT_REDIS_URL``, else the embedded one. The stream is deleted
    first, so a real server's leftovers from an earlier run do not count.
    """
    url = redis_queue.broker_url(url)
    redis_queue.delete_queue(REDIS_QUEUE, url=url)
    feed, trace = Feed(seed=seed), Trace()
    service = DirectService(_email(work), trace=trace)
    shop_queue = redis_queue.Producer(REDIS_QUEUE, url=url, trace=trace, name="shop")
    consumer = redis_queue.Consumer(REDIS_QUEUE, "emails", _email(work), url=url, trace=trace,
                                    name="email-service", block=0.1)
    publish_waits, published_at, moments = [], {}, {}
    start = time.monotonic()

    def comes_back() -> None:
        moments["waiting"] = redis_queue.stats(REDIS_QUEUE, "emails", url=url)["waiting"]

    def publish(_shop: requests.Session, order: Event) -> None:
        started = time.monotonic()
        shop_queue.send(order.to_json())
        publish_waits.append(time.monotonic() - started)
        published_at[order.id] = time.monotonic() - start

    try:
        run = _OutageRun(feed, trace, service, consumer, start, first_order=5001,
                         comes_back=comes_back)
        run.play(fixed_rate(rate, count=orders), down, publish, 0, 0.0,
                 "orders through an outage, on Redis")
    finally:
        shop_queue.close()
    sent, failed, done = run.sent, run.failed, run.done
    received_at: dict[str, float] = {}
    for record in trace.records(kind="event", technique="queue"):
        received_at.setdefault(record.event_id, record.t - start)
    window = [i for i, offset in zip(sent, fixed_rate(rate, count=orders))
              if down[0] <= offset <= down[1]]
    return RedisOutage(
        trace=trace, broker=_broker_name(url), sent=tuple(sent), in_window=tuple(window),
        failed=tuple(failed), processed=tuple(m.event.id for m in done),
        waiting_at_restart=moments["waiting"], publish_waits=tuple(publish_waits),
        published_at=published_at, received_at=received_at,
        after=redis_queue.stats(REDIS_QUEUE, "emails", url=url))


@dataclass(frozen=True)
class FanOut:
    """What :func:`fan_out` measured."""

    trace: Trace
    broker: str
    sent: tuple[int, ...]
    """Order numbers, in the order the shop sent them."""
    received: dict
    """``(group, consumer)`` -> the order numbers that consumer processed, in its order."""
    after: dict = field(repr=False)
    """Group -> its counters (:func:`labkit.redis_queue.stats`) at the end."""

    def seen_by(self, group: str) -> list[int]:
        """Every order number the consumers of ``group`` processed, sorted."""
        return sorted(n for (g, _), numbers in self.received.items() if g == group
                      for n in numbers)

    def figure(self):
        """Messages per consumer, one colour per group: groups each get all, members share."""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
        groups = list(dict.fromkeys(g for g, _ in self.received))
        colours = dict(zip(groups, plt.cm.tab10.colors))
        keys = list(self.received)
        bars = ax.bar(range(len(keys)), [len(self.received[k]) for k in keys],
                      color=[colours[g] for g, _ in keys])
        ax.bar_label(bars)
        ax.set_xticks(range(len(keys)), [f"{c}\n(group {g})" for g, c in keys])
        ax.axhline(len(self.sent), color="0.4", linestyle=":",
                   label=f"orders sent ({len(self.sent)})")
        ax.margins(y=0.25)
        ax.set_title("Who processed how many orders: every group gets all, "
                     "members of a group share")
        ax.set_ylabel("orders processed")
        ax.legend(loc="upper left")
        return fig


def fan_out(*, orders: int = 20, groups: dict[str, int] | None = None, work: float = 0.01,
            url: str | None = None, seed: int = 1) -> FanOut:
    """Publish/subscribe and a work queue at once, on Redis Streams.

    ``groups`` maps each consumer group to how many consumers it has
    (default: ``emails`` with two workers, ``analytics`` with one). Every
    consumer starts, then the shop sends ``orders`` orders to the stream
    ``lesson01-orders``; each consumer takes ``work`` seconds per order.
    Every group reads the whole stream; inside a group, each message goes
    to one member.
    """
    groups = {"emails": 2, "analytics": 1} if groups is None else groups
    url = redis_queue.broker_url(url)
    redis_queue.delete_queue(REDIS_QUEUE, url=url)
    feed, trace = Feed(seed=seed), Trace()
    received: dict[tuple[str, str], list[int]] = {}
    changed = threading.Condition()

    def worker(key: tuple[str, str]):
        async def process(message: Message) -> None:
            await asyncio.sleep(work)
            with changed:
                received[key].append(message.event.payload["order"])
                changed.notify_all()
        return process

    consumers = []
    for group, count in groups.items():
        for n in range(1, count + 1):
            key = (group, f"{group}-{n}")
            received[key] = []
            consumers.append(redis_queue.Consumer(REDIS_QUEUE, group, worker(key), url=url,
                                                  trace=trace, name=key[1], block=0.1))
    numbers = [6001 + n for n in range(orders)]
    expected = orders * len(groups)
    try:
        for consumer in consumers:
            consumer.start()
        with redis_queue.Producer(REDIS_QUEUE, url=url, trace=trace, name="shop") as shop:
            for number in numbers:
                shop.send(feed.make("order.placed", {"order": number}).to_json())
        lab.wait_until(changed, lambda: sum(map(len, received.values())) >= expected, 10,
                       lambda: f"only {sum(map(len, received.values()))} of {expected} "
                               f"deliveries within 10 s")
    finally:
        for consumer in consumers:
            consumer.stop()
    return FanOut(trace=trace, broker=_broker_name(url), sent=tuple(numbers),
                  received={key: tuple(value) for key, value in received.items()},
                  after={g: redis_queue.stats(REDIS_QUEUE, g, url=url) for g in groups})


@dataclass(frozen=True)
class RedisCrash:
    """What :func:`crash_on_redis` measured."""

    trace: Trace
    broker: str
    crashed: int
    """The order the first consumer held when it crashed."""
    processed: dict
    """Order number -> (the consumer that finished it, on which attempt)."""
    redelivered_after: float
    """Seconds from the crash to the message being claimed again."""
    after: dict = field(repr=False)
    """The group's counters at the end."""


def crash_on_redis(*, orders: int = 3, crash: int = 2, claim_after: float = 0.3,
                   url: str | None = None, seed: int = 1) -> RedisCrash:
    """A consumer crashes while it holds the ``crash``-th order; a second one claims it.

    ``email-1`` processes orders until it holds the ``crash``-th, then dies
    (stopped with ``timeout=0``: no acknowledgement). The message stays
    pending on it. ``email-2`` joins the group and, once the message has been
    idle for ``claim_after`` seconds, claims it (``XAUTOCLAIM``) and gets it
    with ``attempts`` 2.
    """
    url = redis_queue.broker_url(url)
    redis_queue.delete_queue(REDIS_QUEUE, url=url)
    feed, trace = Feed(seed=seed), Trace()
    numbers = [7001 + n for n in range(orders)]
    holding = threading.Event()

    async def hangs(message: Message) -> None:
        if message.event.payload["order"] == numbers[crash - 1]:
            holding.set()
            await asyncio.sleep(60)  # "crashes" here: it is cut off while it waits

    first = redis_queue.Consumer(REDIS_QUEUE, "emails", hangs, url=url, trace=trace,
                                 name="email-1", claim_after=claim_after, block=0.1)
    second = redis_queue.Consumer(REDIS_QUEUE, "emails", _email(0.01), url=url, trace=trace,
                                  name="email-2", claim_after=claim_after, block=0.1)
    try:
        with redis_queue.Producer(REDIS_QUEUE, url=url, trace=trace, name="shop") as shop:
            for number in numbers:
                shop.send(feed.make("order.placed", {"order": number}).to_json())
        first.start()
        if not holding.wait(5):
            raise WaitTimeout(f"email-1 never got order {numbers[crash - 1]} within 5 s")
        first.stop(timeout=0)
        crashed_at = time.monotonic()
        second.start()
        second.wait_for(orders - crash + 1, timeout=5 + claim_after)
    finally:
        first.stop(timeout=0)
        second.stop()
    processed = {m.event.payload["order"]: (c.name, m.attempts)
                 for c in (first, second) for m in c.processed}
    return RedisCrash(trace=trace, broker=_broker_name(url), crashed=numbers[crash - 1],
                      processed=processed,
                      redelivered_after=trace.records(kind="retry")[0].t - crashed_at,
                      after=redis_queue.stats(REDIS_QUEUE, "emails", url=url))


# -- the closing table --------------------------------------------------------------------


def side_by_side(waits: CallerWaits, down: Outage, crash: Crash, sizes: Sizes) -> str:
    """The lesson's closing table (Markdown), every number from this run's experiments."""
    rows = [
        ("the caller waits for",
         f"the work: **{statistics.median(waits.direct_waits) * 1000:.0f} ms** per order",
         f"the broker to store it: **{statistics.median(waits.publish_waits) * 1000:.1f} ms**",
         f"a bare status: **{statistics.median(sizes.waits) * 1000:.1f} ms** (no work)"),
        ("coupling in time", "both up at the same moment", "none: either may be down a while",
         "both up at the same moment"),
        ("other side down for 1 s",
         f"**{len(down.failed)} of {len(down.in_window)}** calls failed, orders lost",
         f"**0 of {len(down.in_window)}** lost; they waited up to "
         f"**{max(down.queue_latency[i] for i in down.in_window):.2f} s**",
         "the call fails; only a sender that retries saves it"),
        ("storage", "none", f"until acked (depth reached **{down.depth_at_restart}**)",
         "none in between"),
        ("order", "the caller's, while the callee is up",
         "publish order, but a redelivery comes late", "not promised"),
        ("delivery", "at most once",
         f"at least once (a crash meant **attempts = {crash.attempts[crash.crashed]}**)",
         "at most once, unless the sender retries"),
        ("wire bytes per message",
         f"**{waits.trace.bytes_per_event('direct'):.0f} B**: a request and its answer",
         f"**{waits.trace.bytes_per_event('queue'):.0f} B**: publish, receive, ack",
         f"an empty one: **{sizes.wire[0] + sizes.answers[0]} B** with its answer"),
        ("where it fits", "you need the answer before you go on",
         "services of one system sharing a broker", "services of different organisations"),
    ]
    lines = ["| | direct call | queue (broker) | lightweight HTTP notification |",
             "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


