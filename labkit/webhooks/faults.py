"""Receivers that misbehave on purpose, to test a sender against.

A sender's retry logic only shows its worth against a receiver that fails,
so this module makes failing easy and repeatable. Each piece plugs into
:class:`~labkit.webhooks.receiver.WebhookReceiver`:

* as its ``faults`` hook, which answers a status *instead of* processing:
  :class:`Flaky` (a seeded random share of 500s), :func:`rate_limited`
  (429 with ``Retry-After``), :func:`gone` (410: "stop sending here"),
  :class:`FailFirst` (the first n tries of every delivery fail), and
  :func:`combine` to stack them;
* as its ``process``, which does the work: :func:`slow` (the work takes a
  while, and the sender waits for it) and :class:`LostAck` (the work is done,
  then the answer fails, as when a response is lost on the way back: the
  sender retries something that already happened);
* around its server: :func:`outage` stops the server for real (connections
  are refused) and serves it again on the same port after a while.

Randomness comes from ``random.Random(seed)``, so an experiment fails the
same requests every time it runs.

Example::

    receiver = WebhookReceiver(faults=combine(Flaky(0.2, seed=1), FailFirst(1)))
    server = serve_receiver(receiver)
    back = lab.submit(outage(server, 3600, clock=clock))   # down one simulated hour
    ...
    back.result().stop()                                   # the server that came back
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any, Callable

from labkit import lab
from labkit.clock import REAL_TIME, Clock
from labkit.errors import LabkitError
from labkit.lab import Server
from labkit.webhooks.receiver import Delivery

__all__ = ["Flaky", "rate_limited", "gone", "FailFirst", "combine", "slow", "LostAck", "outage"]

Answer = tuple[int, dict[str, str]] | None
"""What a faults hook returns: (status, headers) to answer instead, or None to go on."""


class Flaky:
    """A faults hook: answer ``status`` to a random share ``rate`` of requests.

    ``injected`` counts the failures answered so far.
    """

    def __init__(self, rate: float, *, status: int = 500, headers: dict[str, str] | None = None,
                 seed: int = 0):
        if not 0 <= rate <= 1:
            raise LabkitError(f"rate must be a share between 0 and 1, got {rate!r}")
        self.rate = rate
        self.status = status
        self.headers = dict(headers or {})
        self.injected = 0
        self._rng = random.Random(seed)

    def __call__(self, delivery: Delivery) -> Answer:
        if self._rng.random() < self.rate:
            self.injected += 1
            return self.status, dict(self.headers)
        return None


def rate_limited(retry_after: int, rate: float = 1.0, seed: int = 0) -> Flaky:
    """429 Too Many Requests with ``Retry-After: retry_after`` (whole seconds, read by the
    sender as simulated seconds on its clock) to a share ``rate`` of requests."""
    return Flaky(rate, status=429, headers={"Retry-After": str(int(retry_after))}, seed=seed)


def gone() -> Flaky:
    """410 Gone to every request: "this endpoint no longer exists, stop sending"."""
    return Flaky(1.0, status=410)


class FailFirst:
    """A faults hook: answer ``status`` to the first ``times`` tries of every delivery id.

    Deterministic where :class:`Flaky` is random: each delivery succeeds on
    try ``times + 1``, so a sender needs exactly ``times`` retries.
    """

    def __init__(self, times: int, *, status: int = 500, headers: dict[str, str] | None = None):
        self.times = times
        self.status = status
        self.headers = dict(headers or {})
        self.tries: Counter[str] = Counter()

    def __call__(self, delivery: Delivery) -> Answer:
        self.tries[delivery.id] += 1
        if self.tries[delivery.id] <= self.times:
            return self.status, dict(self.headers)
        return None


def combine(*faults: Callable[[Delivery], Any]) -> Callable[[Delivery], Any]:
    """One faults hook from several: ask each in turn, the first that answers wins."""
    def first(delivery: Delivery) -> Answer:
        for fault in faults:
            answer = fault(delivery)
            if answer is not None:
                return answer
        return None
    return first


def slow(seconds: float, process: Callable[[Delivery], Any] | None = None):
    """A process that takes ``seconds`` (real time) before ``process`` runs.

    The receiver answers only when it is done, so a sender whose timeout is
    shorter gives up, and retries work that is still going on. It awaits,
    so other requests are served meanwhile.
    """
    async def work(delivery: Delivery) -> None:
        await asyncio.sleep(seconds)
        if process is not None:
            await lab.invoke(process, delivery)
    return work


class LostAck:
    """A process that does the work, then fails the answer for a share ``rate`` of requests.

    The sender sees a 500 for work that was done, so it retries, and the
    receiver gets the same delivery again: the duplicate that idempotency
    must absorb. ``lost`` counts the answers lost so far.
    """

    def __init__(self, process: Callable[[Delivery], Any], rate: float, seed: int = 0):
        self.process = process
        self.rate = rate
        self.lost = 0
        self._rng = random.Random(seed)

    async def __call__(self, delivery: Delivery) -> None:
        await lab.invoke(self.process, delivery)
        if self._rng.random() < self.rate:
            self.lost += 1
            raise LabkitError("the work was done but the acknowledgement is lost (on purpose)")


async def outage(server: Server, seconds: float, *, clock: Clock = REAL_TIME) -> Server:
    """Take a server down for ``seconds`` on ``clock``, then serve it again.

    Really down: the server stops (open connections are closed, new ones
    refused), and after the window the same component (a receiver, a broker,
    an SSE stream ...) is served on the same port with the same trace. Returns the new server, to stop when done.
    Run it on the lab loop, e.g. ``lab.submit(outage(server, 60, clock=clock))``.
    """
    await server.astop()
    await clock.sleep(seconds)
    return lab.serve(server.component, trace=server.trace, port=server.port)
