"""A webhook sender that loses nothing: retries, backoff, dead letters, breakers.

A webhook is a single HTTP POST. If the receiver is down, slow or broken at
that moment, the event is gone, unless the *sender* keeps it and tries
again. HTTP does none of this by itself: every provider that promises
reliable webhooks (GitHub, Stripe, Svix ...) builds it. This module is such
a sender, small enough to read in one sitting.

For each event and each endpoint the sender keeps a :class:`DeliveryLog`.
One delivery goes like this:

1. the provider builds the request: the same delivery id on every attempt
   (so the receiver can spot a repeat), a fresh signature and timestamp;
2. POST it, with a connect timeout and a total timeout in real seconds;
3. a 2xx answer means delivered. Anything else is a failure: an error
   status, a redirect (never followed: a webhook URL that redirects is
   misconfigured), a refused connection, a timeout;
4. after a failure, wait the policy's next delay (simulated seconds on a
   :class:`~labkit.clock.Clock`, so Svix's 27-hour schedule plays out in
   seconds) and try again. A 429 or 503 answer with ``Retry-After`` makes
   the wait at least that long. A 410 Gone means "never send here again":
   the endpoint is disabled;
5. when the retries run out, the delivery is *dead-lettered*: kept in
   :attr:`Sender.dead_letters` with its reason, where a person sees it and
   can :meth:`~Sender.redeliver` it, with the same delivery id, once the
   receiver is fixed.

So every (event, endpoint) ends ``delivered`` or ``dead-lettered``, after
at most ``policy.retries + 1`` attempts: nothing is lost in silence and
nothing retries forever.

Endpoints are independent: each has its own limit of requests in flight and
its own retry timers, so a dead endpoint never slows a healthy one. When
``breaker_threshold`` deliveries in a row to one endpoint have exhausted
their retries, its *circuit breaker* opens: the endpoint is disabled (see
:attr:`Sender.disabled_endpoints`) and its pending deliveries are
dead-lettered at once instead of retrying into the void. :meth:`~Sender.enable`
closes the breaker again.

Example::

    sender = Sender(GitHubProvider("s3cret"), [server.endpoint_url],
                    policy=SVIX, clock=Clock(speedup=36000))
    sender.run(events)                 # blocks until every delivery has ended
    print(sender.report())
    for entry in sender.dead_letters:  # after fixing the receiver
        sender.redeliver(entry)
    lab.run(sender.drain())

Threads: the sender works on the lab loop. :meth:`~Sender.send`,
:meth:`~Sender.redeliver`, :meth:`~Sender.enable`, :meth:`~Sender.run` and
:meth:`~Sender.close` may be called from a notebook cell; they hand the work
to the lab loop. The readers (:meth:`~Sender.stats`, :attr:`~Sender.dead_letters`
...) return snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from labkit import lab
from labkit.clock import REAL_TIME, Clock
from labkit.errors import DeliveryError
from labkit.feed import Event
from labkit.trace import Trace
from labkit.wire import CLIENT_HEADER
from labkit.webhooks.backoff import parse_retry_after

__all__ = ["Sender", "DeliveryLog", "Attempt", "PENDING", "DELIVERED", "DEAD_LETTERED",
           "EXHAUSTED", "GONE", "DISABLED"]

# The state of a delivery.
PENDING = "pending"
DELIVERED = "delivered"
DEAD_LETTERED = "dead-lettered"

# Why a delivery was dead-lettered.
EXHAUSTED = "retries exhausted"
GONE = "gone"                      # the endpoint answered 410: stop sending to it
DISABLED = "endpoint disabled"     # the endpoint's circuit breaker opened

RETRY_AFTER_STATUSES = (429, 503)


@dataclass(frozen=True)
class Attempt:
    """One try at delivering: when it was sent and what came back."""

    number: int            # 1 for the first attempt of a delivery's log
    sim: float             # simulated time it was sent (the sender's clock.now())
    real: float            # time.monotonic() it was sent, the trace's clock
    latency: float         # real seconds until the answer or the error
    status: int | None     # the HTTP status; None when no answer came
    error: str = ""        # why it failed, "" when it was delivered

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class DeliveryLog:
    """Everything that happened to one event on its way to one endpoint."""

    event: Event
    url: str
    delivery_id: str
    attempts: list[Attempt] = field(default_factory=list)
    state: str = PENDING
    reason: str = ""       # why it was dead-lettered


class _Endpoint:
    """One receiver URL's own in-flight limit, breaker and disabled state."""

    def __init__(self, concurrency: int):
        self.slots = asyncio.Semaphore(concurrency)
        self.disabled = ""                 # GONE or DISABLED once disabled
        self.exhausted_in_a_row = 0
        self.woken = asyncio.Event()       # set on disabling, cuts backoff waits short


class Sender:
    """Delivers events to webhook endpoints and accounts for every one of them.

    ``provider`` builds each request (``provider.build(url, event)``);
    ``endpoints`` are the receiver URLs (one string or several); ``policy``
    is a backoff policy from :mod:`labkit.webhooks.backoff`, its delays in
    simulated seconds on ``clock``. ``timeout`` is (connect, total) in real
    seconds. ``seed`` makes the jitter repeatable. ``retry`` and ``drop``
    records go into ``trace`` under ``technique``. ``concurrency`` is how many
    requests may be in flight to one endpoint; ``breaker_threshold`` how many
    deliveries in a row may exhaust their retries before the endpoint is
    disabled; ``max_retry_after`` caps the wait a ``Retry-After`` header can
    ask for (simulated seconds), so a receiver cannot stall a delivery forever.
    ``client`` names the sender in the trace: its requests carry it in
    ``X-Labkit-Client`` (the kit's one addition to what the provider sends), so
    its requests, retries and drops share one lane on a timeline.
    """

    def __init__(self, provider, endpoints: str | Iterable[str], *, policy,
                 clock: Clock = REAL_TIME, timeout: tuple[float, float] = (1.0, 5.0),
                 seed: int = 0, trace: Trace | None = None, technique: str = "webhook",
                 concurrency: int = 10, breaker_threshold: int = 5,
                 max_retry_after: float = 3600.0, client: str = "sender"):
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls or len(set(urls)) != len(urls):
            raise DeliveryError(f"give one or more distinct endpoint URLs, got {urls!r}")
        for name, value in (("concurrency", concurrency), ("breaker_threshold", breaker_threshold)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DeliveryError(
                    f"{name} must be a whole number >= 1, got {value!r}: with "
                    f"concurrency=0 no request could ever be sent, and a breaker_threshold "
                    f"of 0 would disable every endpoint before its first delivery")
        self.provider = provider
        self.policy = policy
        self.clock = clock
        self.connect_timeout, self.request_timeout = timeout
        self.trace = Trace() if trace is None else trace
        self.technique = technique
        self.client = client
        self.breaker_threshold = breaker_threshold
        self.max_retry_after = max_retry_after
        self.log: dict[tuple[str, str], DeliveryLog] = {}
        """Every delivery, keyed by (event id, endpoint URL)."""
        self._rng = random.Random(seed)
        self._endpoints = {url: _Endpoint(concurrency) for url in urls}
        self._max_clients = concurrency * len(urls)
        self._client: AsyncHTTPClient | None = None
        self._tasks: set[asyncio.Task] = set()
        self._retries = 0

    # -- sending ---------------------------------------------------------

    def send(self, event: Event) -> list[DeliveryLog]:
        """Start delivering ``event`` to every endpoint; return its logs at once.

        Fits :func:`labkit.feed.play` as the ``publish`` function. To a
        disabled endpoint the event is dead-lettered at once, never dropped.
        """
        if not lab.in_lab_thread():
            return lab.run(lambda: self.send(event))
        entries = []
        for url in self._endpoints:
            if (event.id, url) in self.log:
                raise DeliveryError(f"event {event.id} was already sent to {url}: "
                                    f"use redeliver() to send it again")
            entry = DeliveryLog(event, url, self.provider.build(url, event).delivery_id)
            self.log[event.id, url] = entry
            self._start(entry)
            entries.append(entry)
        return entries

    def redeliver(self, entry: DeliveryLog) -> DeliveryLog:
        """Send a dead letter again, with the same delivery id (GitHub's "Redeliver").

        It gets a fresh round of retries; its earlier attempts stay in its log.
        """
        if not lab.in_lab_thread():
            return lab.run(lambda: self.redeliver(entry))
        if self.log.get((entry.event.id, entry.url)) is not entry or entry.state != DEAD_LETTERED:
            raise DeliveryError(f"only this sender's dead letters can be redelivered, and "
                                f"{entry.delivery_id} is {entry.state}")
        why = self._endpoints[entry.url].disabled
        if why:
            raise DeliveryError(f"{entry.url} is disabled ({why}): fix the receiver, "
                                f"call enable() and redeliver again")
        self._start(entry)
        return entry

    def enable(self, url: str) -> None:
        """Re-enable a disabled endpoint (close its breaker): new events go to it again."""
        if not lab.in_lab_thread():
            return lab.run(lambda: self.enable(url))
        endpoint = self._endpoints[url]
        endpoint.disabled = ""
        endpoint.exhausted_in_a_row = 0
        endpoint.woken.clear()

    async def drain(self) -> None:
        """Wait until no delivery is pending (raises if a delivery task crashed).

        Cancelling the wait (as :meth:`run` does when its ``timeout`` passes)
        stops only the waiting: the deliveries go on, and a later drain waits for them.
        """
        while self._tasks:
            done, _ = await asyncio.wait(set(self._tasks))
            for task in done:
                task.result()

    async def deliver(self, events: Iterable[Event]) -> dict[str, int]:
        """Send every event, wait until each delivery has ended, return :meth:`stats`."""
        for event in events:
            self.send(event)
        await self.drain()
        return self.stats()

    def run(self, events: Iterable[Event], timeout: float | None = None) -> dict[str, int]:
        """:meth:`deliver`, blocking: for notebook cells and scripts."""
        return lab.run(self.deliver(events), timeout)

    async def aclose(self) -> None:
        """Wait for pending deliveries, then free the HTTP client."""
        await self.drain()
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        """:meth:`aclose`, blocking."""
        lab.run(self.aclose())

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one delivery ----------------------------------------------------

    def _start(self, entry: DeliveryLog) -> None:
        entry.state, entry.reason = PENDING, ""
        task = asyncio.get_running_loop().create_task(self._deliver(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entry: DeliveryLog) -> None:
        endpoint = self._endpoints[entry.url]
        waits = iter(self.policy.delays(self._rng))
        retrying = None                    # (why, last status) when the next attempt is a retry
        while True:
            async with endpoint.slots:
                if endpoint.disabled:
                    return self._dead_letter(entry, endpoint.disabled)
                if retrying:               # counted only when the retry really goes out
                    self._retries += 1
                    self.trace.add("retry", technique=self.technique, client=self.client,
                                   event_id=entry.event.id, status=retrying[1],
                                   detail=retrying[0])
                attempt, retry_after = await self._attempt(entry)
            if attempt.ok:
                endpoint.exhausted_in_a_row = 0
                entry.state = DELIVERED
                return
            if attempt.status == 410:
                self._disable(endpoint, GONE)
                return self._dead_letter(entry, GONE)
            wait = next(waits, None)
            if wait is None:
                break
            if retry_after is not None:
                wait = max(wait, min(retry_after, self.max_retry_after))
            retrying = (f"attempt {attempt.number + 1} in {wait:.3g} s, after {attempt.error}, "
                        f"to {entry.url}", attempt.status)
            await self._wait(endpoint, wait)
        self._dead_letter(entry, EXHAUSTED)
        endpoint.exhausted_in_a_row += 1
        if endpoint.exhausted_in_a_row >= self.breaker_threshold:
            self._disable(endpoint, DISABLED)

    async def _attempt(self, entry: DeliveryLog) -> tuple[Attempt, float | None]:
        """POST once; return the attempt (also logged) and any Retry-After seconds."""
        webhook = self.provider.build(entry.url, entry.event)
        headers = {**webhook.headers, CLIENT_HEADER: self.client}
        request = HTTPRequest(webhook.url, method=webhook.method, headers=headers,
                              body=webhook.body, follow_redirects=False,
                              connect_timeout=self.connect_timeout,
                              request_timeout=self.request_timeout)
        sim, real = self.clock.now(), time.monotonic()
        status, error, retry_after = None, "", None
        try:
            response = await self._http().fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as exc:   # timeouts; refused or reset connections
            error = str(exc) or type(exc).__name__
        else:
            status = response.code
            if not 200 <= status < 300:
                error = f"HTTP {status} {response.reason}"
            if status in RETRY_AFTER_STATUSES:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        attempt = Attempt(len(entry.attempts) + 1, sim, real, time.monotonic() - real,
                          status, error)
        entry.attempts.append(attempt)
        return attempt, retry_after

    def _http(self) -> AsyncHTTPClient:
        # Created on first use, on the lab loop; one slot per request any endpoint
        # may have in flight, so no request ever waits in tornado's own queue
        # (time spent there would count against its timeout).
        if self._client is None:
            self._client = lab.http_client(self._max_clients)
        return self._client

    async def _wait(self, endpoint: _Endpoint, sim_seconds: float) -> None:
        """Sleep ``sim_seconds`` on the clock, or less if the endpoint gets disabled."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.clock.to_real(sim_seconds)):
                await endpoint.woken.wait()

    def _dead_letter(self, entry: DeliveryLog, reason: str) -> None:
        entry.state, entry.reason = DEAD_LETTERED, reason
        self.trace.add("drop", technique=self.technique, client=self.client,
                       event_id=entry.event.id, detail=reason)

    def _disable(self, endpoint: _Endpoint, reason: str) -> None:
        if not endpoint.disabled:
            endpoint.disabled = reason
            endpoint.woken.set()

    # -- reading ---------------------------------------------------------

    @property
    def dead_letters(self) -> list[DeliveryLog]:
        """Deliveries that ended without success, oldest first."""
        return [e for e in list(self.log.values()) if e.state == DEAD_LETTERED]

    @property
    def disabled_endpoints(self) -> dict[str, str]:
        """Disabled endpoint URL -> why (``gone`` or ``endpoint disabled``)."""
        return {url: e.disabled for url, e in self._endpoints.items() if e.disabled}

    def stats(self) -> dict[str, int]:
        """Counts: events, sent (event x endpoint), delivered, dead_lettered,
        pending, attempts, retries. ``sent == delivered + dead_lettered + pending``."""
        entries = list(self.log.values())
        states = Counter(e.state for e in entries)
        return {"events": len({e.event.id for e in entries}), "sent": len(entries),
                "delivered": states[DELIVERED], "dead_lettered": states[DEAD_LETTERED],
                "pending": states[PENDING], "attempts": sum(len(e.attempts) for e in entries),
                "retries": self._retries}

    def report(self) -> str:
        """The stats, dead letters by reason and disabled endpoints, as text."""
        s = self.stats()
        lines = [f"{s['sent']} deliveries of {s['events']} events to {len(self._endpoints)} "
                 f"endpoint(s): {s['delivered']} delivered, {s['dead_lettered']} "
                 f"dead-lettered, {s['pending']} pending",
                 f"{s['attempts']} attempts, {s['retries']} retries ({self.policy.name} policy)"]
        reasons = Counter(e.reason for e in self.dead_letters)
        if reasons:
            lines.append("dead letters: " + ", ".join(f"{n} {r}" for r, n in reasons.items()))
        for url, why in self.disabled_endpoints.items():
            lines.append(f"disabled: {url} ({why})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Sender {len(self._endpoints)} endpoint(s), {self.stats()}>"
