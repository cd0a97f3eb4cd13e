"""Clients at scale: one server, N simulated clients, the same events, and what it all cost.

A lesson asks "what happens with 1,000 clients?" in one line::

    result = run_clients("long-polling", clients=1000, events=20, rate=10, seed=1)
    result.complete                      # every client got every event
    result.requests, result.bytes_per_event, result.latency[99], result.server_cpu

    rows = scaling("polling", clients=(1, 10, 100, 1000), interval=2.0)  # a table to plot

:func:`run_clients` serves the technique's component on a fresh
:class:`~labkit.hub.Hub`, starts N clients (in groups of 100, each group
connected before the next starts: the server's listen queue holds 128),
waits until the server holds every one that it should hold, then plays
``events`` seeded feed events into the hub (Poisson arrivals at ``rate`` a
second, or evenly spaced), waits until every client has every event or a
bound passes, stops the clients, then the server, and measures:

=====================  ======================================================================
``requests``           HTTP requests on the wire, set-up included (a WebSocket's upgrade is
                       one)
``bytes``              wire bytes: every request and response, plus the WebSocket frames
                       each ``disconnect`` record carries (a WebSocket's, a push service's
                       device connection's): ``Trace.bytes_total``, read once the clients
                       and the server have stopped, so every connection has ended
``peak_connections``   most TCP connections open to the server at once (from the kernel's
                       table, ``/proc/net/tcp``; None where there is none, and for webhooks,
                       whose receivers nobody connects to but the provider, once per
                       delivery). Every page keeps one connection, polling ones too
                       (keep-alive)
``peak_held``          most requests or sockets the server *held* at once: long polls
                       waiting, SSE streams, WebSockets (0 for polling)
``server_cpu``         CPU seconds of the lab thread while the events were delivered
                       (``time.thread_time`` there; for Web Push, plus the application
                       server's own thread): the server alone with ``load="process"``;
                       with ``load="inline"`` the clients run on that thread too, so it is
                       the server *and* the clients
``client_cpu``         with ``load="process"``: CPU seconds of the load process's lab thread
``memory``             bytes of Python memory the process took while the clients connected
                       (``tracemalloc``, on only then, so it does not slow what is timed):
                       what N idle connections hold; the server's alone with
                       ``load="process"``, the server's and the clients' inline. None with
                       ``memory=False``: tracing every allocation slows the connecting
                       (a long-polling server takes 300 clients about three times slower)
``latency``            percentiles 50, 90, 99 of publish-to-receipt latency, in seconds
``delivered``          distinct events each client got, by client name
=====================  ======================================================================

``load="inline"`` (the default) runs the clients as coroutines on the lab
loop beside the server: simple, and fine up to some hundreds of clients.
``load="process"`` runs them on the lab loop of a separate Python process
(started afresh, not forked) which sends its trace records back; the
server is then not starved by its own clients and ``server_cpu`` is the
server's own. Either
way a client's latency is measured on ``time.monotonic()``, one clock for
every process of the machine.

Polling clients poll once at start, then every ``interval`` seconds with a
seeded random phase, so they do not all ask at the same instant. Choose the
interval with the machine in mind: 1,000 clients polling every second are
1,000 requests a second, about all one core serves when it also runs the
clients; with ``interval=2`` a 1,000-client run takes a few seconds.

Each technique is one row of a table (:data:`SETUPS`: how to make its
server component and a client, what the server holds, when a client is
ready, how many events it has); SSE uses :mod:`labkit.push.sse` as it is.

Two techniques have clients that are not pages, and a server side that
sends:

=============  =================================================================================
``webhook``    :class:`WebhookProvider`: each client is a webhook receiver
               (:class:`~labkit.webhooks.receiver.WebhookReceiver`, verifying Standard
               Webhooks signatures) on its own port, which subscribes with ``POST /hooks``;
               the kit's :class:`~labkit.webhooks.sender.Sender` POSTs each event to each
               receiver. Latency: event made -> the receiver's handler has it
``webpush``    :class:`WebPushSite`: each client is a phone (:class:`~labkit.push.webpush.Device`)
               that subscribes at the push service, connects, and hands its subscription to
               the site's :class:`~labkit.push.webpush.AppServer`, which sends each event to
               each phone with pywebpush. Latency: event made -> the phone decrypted it
=============  =================================================================================

Their clients reach the server side within this process (``site`` in
:class:`Setup`), so they run with ``load="inline"`` only. Their modules
(pywebpush, the webhook sender and receiver) are imported on first use, so
a load process and the ``labkit`` command start without them.

Each client holds one socket, and inline its server end is a second one:
a run raises the process's soft limit on open files when it needs more
(within the hard limit, or it says so before starting).

Thread-safety: call :func:`run_clients` and :func:`scaling` from a cell or
a script, never from the lab loop (they wait for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import resource
import socket
import struct
import subprocess
import time
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

from labkit import children, lab, techniques
from labkit.clock import REAL_TIME, Clock
from labkit.endpoints import BodyHandler, NotFound
from labkit.errors import (DeviceError, HubClosedError, LabkitError, RejectedError,
                           UnknownTechniqueError, UsageError, WaitTimeout)
from labkit.feed import Feed, fixed_rate, play, poisson
from labkit.hub import Hub
from labkit.push.polling import LongPollingClient, LongPollingServer, PollingClient, PollingServer
from labkit.push.sse import SSEClient, SSEStream
from labkit.push.websocket import WebSocketClient, WebSocketServer
from labkit.trace import Record, Trace
from labkit.wire import CLIENT_HEADER, annotate

__all__ = ["ScaleResult", "run_clients", "scaling", "SETUPS", "Setup", "BATCH",
           "MAX_CLIENTS", "WebhookProvider", "WebPushSite", "WEBHOOK_SECRET"]

BATCH = 100
"""Clients started together; the next group starts once these are ready."""
MAX_CLIENTS = 10_000
"""Most clients one run simulates."""
_SAMPLE_EVERY = 0.2
"""Seconds between two readings of the kernel's connection table."""


class Setup(NamedTuple):
    """How :func:`run_clients` simulates one technique."""

    server: Callable[[Hub, dict], Any]
    """``(hub, options) -> component`` to serve."""
    client: Callable[[str, str, Trace, dict], Any]
    """``(url, name, trace, options) -> client`` with start(), astop(), ready."""
    held: Callable[[Any], int]
    """Requests or sockets the component holds open now."""
    ready: Callable[[Any], bool]
    """True once a client is talking to the server."""
    count: Callable[[Any], int]
    """Feed events a client has received."""
    holds: bool
    """Whether the server holds every ready client (then the run waits for all of them)."""
    start: Callable[[Any], None] = lambda client: client.start()
    """Starts a client, called on the lab loop."""
    site: bool = False
    """Whether a client is handed the served component (``options["site"]``): a webhook
    receiver or a phone is not a page of the server but a party the server side must
    know; the hand-over is in this process, so such a technique runs ``load="inline"``."""
    cpu: Callable[[Any], float] = lambda component: 0.0
    """CPU seconds the component has spent off the lab thread so far."""
    connections: bool = True
    """Whether clients connect to the served port (a webhook's receivers are connected to)."""


# -- the two techniques whose server side sends: webhooks and Web Push --------------------

WEBHOOK_SECRET = "whsec_bGFia2l0IHNjYWxlIHJ1bnM6IGEgZGVtbyBzZWNyZXQ="
"""The secret the provider signs with and every receiver verifies (Standard Webhooks)."""


class _Fanout:
    """A task on the lab loop that hands every item of ``hub`` to ``send``, from its start."""

    def __init__(self, hub: Hub, send: Callable[[Any], None]):
        self.hub, self.send = hub, send
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """Start it if it is not running (on the lab loop)."""
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        cursor = self.hub.last_id
        with contextlib.suppress(HubClosedError):
            while True:
                items = await self.hub.wait(cursor, None)
                cursor = items[-1].id
                for item in items:
                    self.send(item.data)

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class WebhookProvider:
    """A webhook provider for :func:`run_clients`: receivers subscribe, every event goes to each.

    ``POST /hooks`` with ``{"url": "<receiver URL>"}`` subscribes a receiver
    (as GitHub's "create a webhook" API does; answered 201 ``{"id": n}``).
    Every hub item is then POSTed to every subscribed URL by the kit's
    :class:`~labkit.webhooks.sender.Sender`, signed by
    :class:`~labkit.webhooks.providers.StandardWebhooksProvider` with
    :data:`WEBHOOK_SECRET`, without retries (a failure is a ``drop``
    record, and the run reports the event undelivered). It holds no
    connection: each delivery opens its own. :meth:`find` gives a receiver
    the event behind a delivery id, for its latency.
    """

    technique = "webhook"
    path = "/hooks"

    def __init__(self, hub: Hub):
        from labkit.webhooks.providers import StandardWebhooksProvider
        self.trace: Trace | None = None
        self.urls: list[str] = []
        self.provider = StandardWebhooksProvider(WEBHOOK_SECRET)
        self._senders: list = []
        """One per change of the receivers: each sends to every URL subscribed when it began."""
        self._covers = 0
        self._sent: dict[str, Any] = {}
        self._fanout = _Fanout(hub, self._send)

    def rules(self) -> list:
        return [(self.path, _HookHandler, {"provider": self}),
                (r".*", NotFound, {"routes": f"POST {self.path}"})]

    def subscribe(self, url: str) -> int:
        """Add a receiver's URL (on the lab loop); its number."""
        self.urls.append(url)
        self._fanout.start()
        return len(self.urls)

    def find(self, delivery_id: str | None) -> Any:
        """The event sent with ``delivery_id`` (the provider's delivery id is the event's)."""
        return self._sent.get(delivery_id)

    def _send(self, event: Any) -> None:
        from labkit.webhooks.backoff import NO_RETRY
        from labkit.webhooks.sender import Sender
        if self._covers != len(self.urls):
            self._senders.append(Sender(self.provider, self.urls, policy=NO_RETRY,
                                        trace=self.trace, client="provider"))
            self._covers = len(self.urls)
        self._sent[self.provider.delivery_id(event)] = event
        self._senders[-1].send(event)

    async def aclose(self) -> None:
        await self._fanout.aclose()
        for sender in self._senders:
            await sender.aclose()


class _HookHandler(BodyHandler):
    """``POST /hooks``: a receiver subscribes (see :class:`WebhookProvider`)."""

    max_body = 4096

    def initialize(self, provider: WebhookProvider) -> None:
        self.provider = provider

    def post(self) -> None:
        try:
            try:
                url = json.loads(self.text())["url"]
                if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    raise ValueError(url)
            except (ValueError, KeyError, TypeError):
                raise RejectedError("bad_hook", 'send {"url": "http://<the receiver>"}',
                                    status=400) from None
        except RejectedError as exc:
            return self.refuse(exc)
        number = self.provider.subscribe(url)
        annotate(self, detail=f"hook {number}: {url}")
        self.answer(201, {"id": number})


class _Subscriber:
    """A webhook receiver (the kit's, verifying signatures) that subscribes at a provider."""

    def __init__(self, url: str, name: str, trace: Trace, site: WebhookProvider):
        self.url, self.name, self.trace, self.site = url, name, trace, site
        self.ready = False
        self.delivered = 0
        self.failure: str | None = None
        self.server: lab.Server | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._subscribe())

    async def _subscribe(self) -> None:
        from labkit.webhooks.receiver import WebhookReceiver
        from labkit.webhooks.signatures import StandardWebhooksSignature
        receiver = WebhookReceiver([StandardWebhooksSignature(WEBHOOK_SECRET)],
                                   process=self._received)
        self.server = lab.serve(receiver, trace=self.trace)
        http = lab.http_client(1)
        try:
            answer = await http.fetch(self.url, method="POST", raise_error=False,
                                      body=json.dumps({"url": self.server.endpoint_url}),
                                      headers={"Content-Type": "application/json",
                                               CLIENT_HEADER: self.name})
        except OSError as exc:
            self.failure = f"cannot reach the provider: {exc}"
            return
        finally:
            http.close()
        if answer.code != 201:
            self.failure = f"the provider answered {answer.code}: {answer.body[:200]!r}"
            return
        self.ready = True

    def _received(self, delivery: Any) -> None:
        event = self.site.find(delivery.id)
        if event is not None:  # one call per delivery id: the receiver drops repeats
            self.delivered += 1
            self.trace.delivered(event, technique="webhook", client=self.name,
                                 bytes=len(delivery.body), detail=f"delivery {delivery.id}")

    async def astop(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.server is not None:
            await self.server.astop()


class WebPushSite:
    """Web Push for :func:`run_clients`: the push service, and the site's application server.

    Serves :class:`~labkit.push.webpush.PushService` as it is. Beside it, the
    :class:`~labkit.push.webpush.AppServer` (pywebpush) sends every hub item
    to every phone that handed it its subscription (:meth:`add`), one
    encrypted POST per phone and event, from :attr:`threads` threads of its
    own (pywebpush blocks on each POST); :attr:`cpu` is their CPU. A push the
    service refused or could not take is a ``drop`` record of ``app-server``.
    The phones' frames (pushes, acks, the close handshake) are on each
    connection's ``disconnect`` record, written by the push service.
    """

    technique = "webpush"
    threads = 4
    """Pushes in flight at once: one thread would wait out each POST's round trip."""

    def __init__(self, hub: Hub):
        from labkit.push.webpush import AppServer, PushService
        self.service = PushService()
        self.app = AppServer(name="app-server")
        self.key = self.app.application_server_key
        self.cpu = 0.0
        self._cpu_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="labkit-app-server")
        self._fanout = _Fanout(hub, self._send)

    @property
    def trace(self) -> Trace | None:
        return self.service.trace

    @trace.setter
    def trace(self, trace: Trace | None) -> None:
        self.service.trace = trace

    @property
    def connected(self) -> int:
        """Phones connected to the push service now."""
        return self.service.connected

    def rules(self) -> list:
        return self.service.rules()

    def attached(self, server: lab.Server) -> None:
        self.service.attached(server)

    def add(self, subscription: dict) -> None:
        """A phone's page hands over its subscription (on the lab loop)."""
        self.app.add(subscription)
        self._fanout.start()

    def _send(self, event: Any) -> None:
        for subscription in self.app.subscriptions:
            self._pool.submit(self._post, subscription, event)

    def _post(self, subscription: dict, event: Any) -> None:
        """One push, on one of the application server's threads."""
        before = time.thread_time()
        try:
            result = self.app.send(subscription, event, ttl=60)
            why = "" if result.ok else f"{result.status}: {result.error}"
        except LabkitError as exc:
            why = str(exc)
        finally:
            with self._cpu_lock:
                self.cpu += time.thread_time() - before
        if why:
            self.trace.add("drop", technique=self.technique, client=self.app.name,
                           event_id=event.id, detail=f"not pushed to a phone: {why}")

    async def aclose(self) -> None:
        await self._fanout.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        self.app.close()
        await self.service.aclose()


class _Phone:
    """A phone for :class:`WebPushSite`: subscribes, connects, hands the site its subscription."""

    def __init__(self, url: str, name: str, trace: Trace, site: WebPushSite):
        from labkit.push.webpush import Device
        self.site, self.name = site, name
        self.device = Device(url, site.key, name=name, trace=trace)
        self.ready = False
        self.failure: str | None = None
        self._task: asyncio.Task | None = None

    @property
    def delivered(self) -> int:
        return len(self.device.received)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._subscribe())

    async def _subscribe(self) -> None:
        try:  # Device.subscribe() and online() wait for the lab loop: their coroutines here
            await self.device._subscribe()
            await self.device._connect()
        except DeviceError as exc:
            self.failure = str(exc)
            return
        self.site.add(self.device.subscription_info)
        self.ready = True

    async def astop(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.device._close()


SETUPS: dict[str, Setup] = {
    "polling": Setup(
        lambda hub, o: PollingServer(hub),
        lambda url, name, trace, o: PollingClient(
            url, interval=o["interval"], clock=o["clock"], phase=o["phase"], name=name,
            trace=trace, after=0),
        lambda server: server.held, lambda c: c.ready, lambda c: c.delivered, False),
    "long-polling": Setup(
        lambda hub, o: LongPollingServer(hub, hold=o["hold"]),
        lambda url, name, trace, o: LongPollingClient(url, hold=o["hold"], name=name,
                                                      trace=trace, after=0),
        lambda server: server.held, lambda c: c.ready, lambda c: c.delivered, True),
    "sse": Setup(
        lambda hub, o: SSEStream(hub),
        lambda url, name, trace, o: SSEClient(url, name=name, trace=trace, last_event_id="0"),
        lambda server: len(server.open_streams()), lambda c: bool(c.opened),
        lambda c: len(c.events), True,
        lambda c: c._start()),  # SSEClient.start() waits for the lab loop, so not on it
    "websocket": Setup(
        lambda hub, o: WebSocketServer(hub),
        lambda url, name, trace, o: WebSocketClient(url, name=name, trace=trace, after=0),
        lambda server: server.connected, lambda c: c.ready, lambda c: c.delivered, True),
    "webpush": Setup(
        lambda hub, o: WebPushSite(hub),
        lambda url, name, trace, o: _Phone(url, name, trace, o["site"]),
        lambda site: site.connected, lambda c: c.ready, lambda c: c.delivered, True,
        site=True, cpu=lambda site: site.cpu),
    "webhook": Setup(
        lambda hub, o: WebhookProvider(hub),
        lambda url, name, trace, o: _Subscriber(url, name, trace, o["site"]),
        lambda provider: 0, lambda c: c.ready, lambda c: c.delivered, False,
        site=True, connections=False),
}
"""One row per technique :func:`run_clients` can simulate; a new technique is one more row."""


@dataclass(frozen=True)
class ScaleResult:
    """What one :func:`run_clients` measured (see the module docstring for each number)."""

    technique: str
    clients: int
    events: int
    """Events asked for (all of them published, unless the bound passed first)."""
    load: str
    trace: Trace = field(repr=False)
    delivered: dict[str, int] = field(repr=False)
    requests: int
    bytes: int
    peak_connections: int | None
    peak_held: int
    server_cpu: float
    client_cpu: float | None
    memory: int | None
    latency: dict[float, float]
    wasted_share: float
    seconds: float
    """How long from the first publish until every client had every event (or the bound)."""

    @property
    def complete(self) -> bool:
        """True if every client got every event."""
        return len(self.delivered) == self.clients and \
            all(count == self.events for count in self.delivered.values())

    @property
    def deliveries(self) -> int:
        """Events delivered, summed over the clients."""
        return sum(self.delivered.values())

    @property
    def bytes_per_event(self) -> float:
        """Wire bytes per delivered event (inf if none was)."""
        return self.bytes / self.deliveries if self.deliveries else math.inf

    @property
    def cpu_per_event(self) -> float:
        """Server CPU seconds per delivered event (inf if none was)."""
        return self.server_cpu / self.deliveries if self.deliveries else math.inf

    def row(self) -> dict:
        """The numbers as one flat dict (a row of a table; the trace left out)."""
        return {
            "technique": self.technique, "clients": self.clients, "events": self.events,
            "load": self.load, "complete": self.complete, "deliveries": self.deliveries,
            "requests": self.requests, "bytes": self.bytes, "bytes/event": self.bytes_per_event,
            "connections": self.peak_connections, "held": self.peak_held,
            "server CPU (s)": self.server_cpu, "CPU/event (µs)": self.cpu_per_event * 1e6,
            "client CPU (s)": self.client_cpu, "memory (bytes)": self.memory,
            "p50 latency (s)": self.latency[50], "p90 latency (s)": self.latency[90],
            "p99 latency (s)": self.latency[99], "wasted share": self.wasted_share,
            "seconds": self.seconds,
        }


def run_clients(technique: str, clients: int = 10, *, events: int = 10, rate: float = 10.0,
                seed: int = 0, interval: float = 1.0, hold: float = 20.0,
                schedule: str = "poisson", clock: Clock | None = None, load: str = "inline",
                timeout: float | None = None, payload: dict | None = None,
                memory: bool = True) -> ScaleResult:
    """Serve ``technique``, run ``clients`` clients, deliver ``events`` events; measure it.

    ``rate``: events per second (of ``clock``); ``schedule``: ``"poisson"``
    (seeded arrivals) or ``"fixed"`` (evenly spaced). ``interval``: seconds
    between polls (polling only); ``hold``: the long-poll hold.
    ``clock``: a :class:`~labkit.clock.Clock` on which ``rate`` and
    ``interval`` are counted (real time if omitted). ``load``: ``"inline"``
    or ``"process"`` (see the module docstring). ``timeout``: the bound on
    the whole delivery, in real seconds (by default the schedule's length
    plus two intervals plus 10 s). ``payload``: what each event carries.
    ``memory``: False to skip measuring memory (and its cost).
    """
    setup = _setup(technique)
    count = _whole(clients, "clients", 1, MAX_CLIENTS)
    total = _whole(events, "events", 1, 1_000_000)
    if schedule not in ("poisson", "fixed"):
        raise UsageError(f"schedule is 'poisson' or 'fixed', got {schedule!r}")
    if load not in ("inline", "process"):
        raise UsageError(f"load is 'inline' (clients on the lab loop) or 'process' (clients in "
                         f"a separate process), got {load!r}")
    if load == "process" and setup.site:
        raise UsageError(f"{technique} runs with load='inline' only: its clients hand the "
                         f"server side what it needs to reach them, within this process")
    if clock is not None and not isinstance(clock, Clock):
        raise UsageError(f"clock must be a labkit.clock.Clock, got {clock!r}")
    clock = clock if clock is not None else REAL_TIME
    interval = _seconds(interval, "interval")
    Feed().make("tick", payload)  # a payload JSON cannot carry fails here, not mid-run
    _check_files(count * (2 if load == "inline" else 1))
    offsets = poisson(rate, count=total, seed=seed) if schedule == "poisson" \
        else fixed_rate(rate, count=total)
    if timeout is None:
        timeout = clock.to_real(offsets[-1] + 2 * interval) + 10.0
    bound = _seconds(timeout, "timeout")
    rng = random.Random(seed)
    options = {"interval": interval, "hold": hold, "speedup": clock.speedup}
    specs = [(f"{technique}-{k:04d}", rng.uniform(0, interval)) for k in range(1, count + 1)]

    hub = Hub(history=max(1000, total), name=technique)
    server = lab.serve(setup.server(hub, dict(options, clock=clock)))
    trace = server.trace
    peaks = _Peaks(setup, server)
    load_run = (_InlineLoad if load == "inline" else _ProcessLoad)(
        technique, server.endpoint_url, specs,
        dict(options, site=server.component) if setup.site else options, total, trace)
    playing = None
    taken = _Memory() if memory else contextlib.nullcontext()
    try:
        with taken:
            load_run.start(bound)
            if setup.holds:
                _until(lambda: setup.held(server.component) >= count, bound,
                       lambda: f"the server holds only {setup.held(server.component)} of "
                               f"{count} clients")
        peaks.sample(force=True)
        cpu_before = lab.run(time.thread_time) + setup.cpu(server.component)
        started = time.monotonic()
        playing = lab.submit(play(Feed(seed=seed), offsets, hub.publish, clock=clock,
                                  payload=payload))
        load_run.deliver(lambda: playing.done(), started + bound, peaks)
        seconds = time.monotonic() - started
        server_cpu = lab.run(time.thread_time) + setup.cpu(server.component) - cpu_before
        peaks.sample(force=True)
    finally:
        if playing is not None and not playing.done():
            playing.cancel()
        load_run.stop()
        server.stop()
    if not playing.cancelled():
        playing.result()  # an error while publishing is the caller's to see
    load_run.merge()
    return ScaleResult(
        technique=technique, clients=count, events=total, load=load, trace=trace,
        delivered=_delivered(trace, technique, [name for name, _ in specs]),
        requests=trace.count("request", technique),
        bytes=trace.bytes_total(technique),
        peak_connections=peaks.connections, peak_held=peaks.held, server_cpu=server_cpu,
        client_cpu=load_run.cpu, memory=taken.taken if memory else None,
        latency=trace.latency_percentiles(technique, (50, 90, 99)),
        wasted_share=trace.wasted_share(technique), seconds=seconds)


def scaling(technique: str, clients: Iterable[int] = (1, 10, 100, 1000),
            **options: Any) -> list[dict]:
    """:func:`run_clients` once per number of clients; one :meth:`ScaleResult.row` each."""
    return [run_clients(technique, count, **options).row() for count in clients]


# -- running the clients -------------------------------------------------------------------


def _make_clients(technique: str, url: str, trace: Trace, specs: list, options: dict) -> list:
    setup = SETUPS[technique]
    clock = Clock(options["speedup"])
    return [setup.client(url, name, trace, dict(options, clock=clock, phase=phase))
            for name, phase in specs]


def _start(technique: str, clients: list, seconds: float) -> None:
    """Start ``clients`` in groups of :data:`BATCH`, each group ready before the next."""
    setup = SETUPS[technique]
    deadline = time.monotonic() + seconds
    for first in range(0, len(clients), BATCH):
        group = clients[first:first + BATCH]
        lab.run(lambda group=group: [setup.start(client) for client in group])

        def explain(group=group) -> str:
            late = [c for c in group if not setup.ready(c)]
            why = getattr(late[0], "failure", None) or (late[0].errors[-1] if getattr(
                late[0], "errors", None) else "no answer yet")
            return f"{len(late)} clients were not ready in time; {late[0].name}: {why}"

        _until(lambda group=group: all(setup.ready(c) for c in group),
               deadline - time.monotonic(), explain)


def _stop(clients: list) -> None:
    async def stop_all() -> None:
        await asyncio.gather(*(client.astop() for client in clients))
    lab.run(stop_all(), timeout=30.0)


class _InlineLoad:
    """The clients as coroutines on this process's lab loop, beside the server."""

    cpu = None

    def __init__(self, technique: str, url: str, specs: list, options: dict, events: int,
                 trace: Trace):
        self.technique = technique
        self.events = events
        self.clients = _make_clients(technique, url, trace, specs, options)
        self.started: list = []

    def start(self, seconds: float) -> None:
        self.started = self.clients
        _start(self.technique, self.clients, seconds)

    def deliver(self, played: Callable[[], bool], deadline: float, peaks: _Peaks) -> None:
        count = SETUPS[self.technique].count
        for _ in range(1_000_000):  # bounded by the deadline long before
            if played() and all(count(c) >= self.events for c in self.clients):
                return
            if time.monotonic() > deadline:
                return
            peaks.sample()
            time.sleep(0.01)

    def stop(self) -> None:
        if self.started:
            _stop(self.started)

    def merge(self) -> None:
        """The records are in the server's trace already."""


class _ProcessLoad:
    """The clients on the lab loop of a separate Python process, which sends its records back.

    The process is started with ``python -c`` (not ``multiprocessing``, which
    would run a script's main module again in the child) by
    :func:`labkit.children.start`, so it dies with this process however this
    one ends (a kernel restart, SIGKILL), and talks over a socket pair with
    :class:`multiprocessing.connection.Connection` framing.
    """

    def __init__(self, technique: str, url: str, specs: list, options: dict, events: int,
                 trace: Trace):
        self.trace = trace
        self.spec = {"technique": technique, "url": url, "specs": specs, "options": options,
                     "events": events}
        self.cpu: float | None = None
        self.records: list[Record] = []
        self.process: subprocess.Popen | None = None
        self.pipe: Connection | None = None

    def start(self, seconds: float) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.process = children.start(
                ["-c", f"from labkit.push.scale import _load_main; "
                       f"_load_main({theirs.fileno()})"],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.pipe = Connection(ours.detach())
        self.pipe.send(dict(self.spec, seconds=seconds))
        self._receive("ready", seconds + 30.0)  # + the time to start Python and import

    def _receive(self, kind: str, seconds: float, peaks: _Peaks | None = None) -> tuple:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if peaks is not None:
                peaks.sample()
            try:
                message = self.pipe.recv() if self.pipe.poll(0.005) else None
            except (EOFError, OSError):
                self.process.wait(5.0)
                raise LabkitError(f"the load process ended (exit status "
                                  f"{self.process.returncode}) before it reported {kind!r}")
            if message is not None and message[0] == "error":
                raise LabkitError(f"the load process failed: {message[1]}")
            if message is not None and message[0] == kind:
                return message
        raise WaitTimeout(f"the load process did not report {kind!r} within {seconds:.3g} s")

    def deliver(self, played: Callable[[], bool], deadline: float, peaks: _Peaks) -> None:
        for _ in range(1_000_000):  # bounded by the deadline long before
            if played() or time.monotonic() > deadline:
                break
            peaks.sample()
            time.sleep(0.005)
        self.pipe.send(("played",))
        try:
            self.cpu = self._receive("done", max(deadline - time.monotonic(), 0) + 5, peaks)[1]
        except WaitTimeout:
            self.pipe.send(("stop",))
            self.cpu = self._receive("done", 10.0)[1]

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.pipe.send(("stop",))
            self.records = self._receive("records", 30.0)[1]
        except (OSError, LabkitError):
            pass  # it failed or ended already: the records are lost, the error was raised
        finally:
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.terminate()  # our own child, by its pid
                self.process.wait(5.0)
            self.pipe.close()

    def merge(self) -> None:
        for r in self.records:
            self.trace.add(r.kind, technique=r.technique, client=r.client, t=r.t,
                           status=r.status, bytes=r.bytes, duration=r.duration,
                           latency=r.latency, events=r.events, event_id=r.event_id,
                           detail=r.detail)


def _load_main(fd: int) -> None:
    """The load process: run the clients, say when they are ready and when they are done."""
    pipe = Connection(fd)
    trace = Trace()
    clients: list = []
    try:
        spec = pipe.recv()
        technique, events = spec["technique"], spec["events"]
        _check_files(len(spec["specs"]))
        clients = _make_clients(technique, spec["url"], trace, spec["specs"], spec["options"])
        _start(technique, clients, spec["seconds"])
        pipe.send(("ready",))
        cpu_before = lab.run(time.thread_time)
        count = SETUPS[technique].count
        played = False
        deadline = time.monotonic() + spec["seconds"] + 5
        while time.monotonic() < deadline:
            if played and all(count(c) >= events for c in clients):
                break
            if pipe.poll(0.005):
                message = pipe.recv()[0]
                played = played or message == "played"
                if message == "stop":
                    break
        pipe.send(("done", lab.run(time.thread_time) - cpu_before))
        for _ in range(1000):  # wait for the parent's stop (bounded: 1000 x 10 ms)
            if pipe.poll(0.01) and pipe.recv()[0] == "stop":
                break
        _stop(clients)
        pipe.send(("records", trace.records()))
    except Exception as exc:  # reported to the parent, which raises it
        if clients:
            _stop(clients)
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()
        lab.shutdown()


# -- measuring -------------------------------------------------------------------------------


class _Memory:
    """Python memory taken while the block runs (``tracemalloc``, started for it if need be)."""

    def __init__(self) -> None:
        self.taken = 0
        self._started = False
        self._before = 0

    def __enter__(self) -> _Memory:
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        self._before = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.taken = max(0, tracemalloc.get_traced_memory()[0] - self._before)
        if self._started:
            tracemalloc.stop()


class _Peaks:
    """The largest held count and connection count seen."""

    def __init__(self, setup: Setup, server: lab.Server):
        self.setup = setup
        self.server = server
        self.held = 0
        self.connections: int | None = None
        self._last = 0.0
        self._pattern: re.Pattern | None = None
        if not setup.connections:
            return  # no client connects to the server: None, not a misleading 0
        try:  # the kernel writes an IPv4 address as one little-endian hex word
            local = "%08X" % struct.unpack("<I", socket.inet_aton(server.host))[0]
            self._pattern = re.compile(
                rf"^\s*\d+: {local}:{server.port:04X} ([0-9A-F]{{8}}:[0-9A-F]{{4}}) 01 ", re.M)
        except OSError:
            pass  # an IPv6 server: connections are not counted

    def sample(self, force: bool = False) -> None:
        self.held = max(self.held, self.setup.held(self.server.component))
        now = time.monotonic()
        if not force and now - self._last < _SAMPLE_EVERY:
            return
        self._last = now
        connections = _connections(self._pattern)
        if connections is not None:
            self.connections = max(self.connections or 0, connections)


def _connections(pattern: re.Pattern | None) -> int | None:
    """Established TCP connections whose local end is the server's address (Linux, IPv4).

    Counted by their remote end: the kernel may list a connection twice while
    the table changes under the read.
    """
    if pattern is None:
        return None
    try:
        return len(set(pattern.findall(Path("/proc/net/tcp").read_text())))
    except OSError:
        return None


def _delivered(trace: Trace, technique: str, names: list[str]) -> dict[str, int]:
    seen: dict[str, set] = {name: set() for name in names}
    for record in trace.records(kind="event", technique=technique):
        if record.client in seen:
            seen[record.client].add(record.event_id)
    return {name: len(ids) for name, ids in seen.items()}


# -- checking arguments --------------------------------------------------------------------------


def _setup(technique: Any) -> Setup:
    techniques.get(technique)  # a misspelt name is UnknownTechniqueError here
    if technique not in SETUPS:
        raise UnknownTechniqueError(f"run_clients simulates {', '.join(SETUPS)}; "
                                    f"{technique!r} is not one of them")
    return SETUPS[technique]


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{what} is a whole number from {low} to {high:,}, got {value!r}")
    return value


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise UsageError(f"{what} is a number of seconds > 0, got {value!r}")
    return float(value)


def _check_files(needed: int) -> None:
    """Raise the soft limit on open files if the clients need more; say so if it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 200
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise UsageError(f"{needed} sockets are more than this process may open ({hard}): "
                             f"use fewer clients, or load='process'")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _until(check: Callable[[], bool], seconds: float, explain: Callable[[], str]) -> None:
    """Wait (bounded) until ``check()``; WaitTimeout with ``explain()`` if it never holds."""
    deadline = time.monotonic() + max(seconds, 0.0)
    while not check():
        if time.monotonic() > deadline:
            raise WaitTimeout(explain())
        time.sleep(0.005)
