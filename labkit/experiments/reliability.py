"""Lesson 04's experiments: break receivers on purpose, and measure what each habit buys.

Every experiment sends Standard Webhooks deliveries (``webhook-id`` is the event
id, so a retry keeps it) with :class:`~labkit.webhooks.sender.Sender`, on a
compressed :class:`~labkit.clock.Clock`: retry waits are simulated seconds,
while timeouts and the receiver's work stay in real seconds. Each function
starts its receivers, runs, stops everything (also on error) and returns a
frozen result holding the senders (their logs and stats), the receivers'
components (what they accepted) and a ``figure()``.

===========================  ===================================================
call                         what it shows
===========================  ===================================================
``receiver_goes_down()``     40 events, the receiver down 3 minutes: lost
                             without retries, late but delivered with them
``backoff_draws()``          four backoff policies' waits, drawn 300 times
``retry_for_a_day()``        Svix's 27.6-hour schedule against a broken receiver,
                             in a second; dead letters; redelivery once fixed
``thundering_herd()``        60 deliveries failing together: waves of retries
                             without jitter, a trickle with full jitter
``listen_to_receiver()``     ``429`` with ``Retry-After`` honoured, ``410`` stops
``one_dead_endpoint()``      fan-out: a dead endpoint delays nobody, its breaker opens
``answer_first()``           slow work in the request against a background worker
``at_least_once()``          duplicates: the naive receiver against the safe default
``out_of_order()``           a late retry: last-arrived against ``LatestWins``
``books(*runs)``             every sender's accounts: delivered + dead-lettered = sent
===========================  ===================================================

Example::

    run = receiver_goes_down()
    run.stats["no retries"]["dead_lettered"], run.stats["with retries"]["dead_lettered"]
    run.figure()

Thread-safety: call them from a cell or a script, not from the lab loop. The
longer ones show a :class:`~labkit.progress.Progress` bar in a notebook.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from labkit import lab
from labkit.clock import Clock
from labkit.errors import WaitTimeout
from labkit.feed import Event, Feed, fixed_rate
from labkit.lab import Server
from labkit.progress import Progress
from labkit.trace import Trace
from labkit.webhooks.backoff import (NO_RETRY, SVIX, DecorrelatedJitter, EqualJitter,
                                     Exponential, FixedSchedule, FullJitter)
from labkit.webhooks.faults import FailFirst, Flaky, gone, outage, slow
from labkit.webhooks.processing import BackgroundWorker, LatestWins
from labkit.webhooks.providers import StandardWebhooksProvider
from labkit.webhooks.receiver import WebhookReceiver, serve_receiver
from labkit.webhooks.sender import DEAD_LETTERED, DeliveryLog, Sender
from labkit.webhooks.signatures import StandardWebhooksSignature

__all__ = ["SECRET", "MINUTE", "HOUR", "receiver_goes_down", "Outage", "backoff_draws",
           "Draws", "retry_for_a_day", "SvixRun", "thundering_herd", "Herd", "modelled_peak",
           "listen_to_receiver", "Polite", "one_dead_endpoint", "FanOut", "answer_first",
           "AnswerFirst", "at_least_once", "AtLeastOnce", "out_of_order", "Orders", "books",
           "busiest"]

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MINUTE, HOUR = 60, 3600
PROVIDER = StandardWebhooksProvider(SECRET)
"""Every experiment's sender: Standard Webhooks, whose ``webhook-id`` is the event id."""


def _receiver(trace: Trace, technique: str, started: list[Server], **options: Any) -> Server:
    """A receiver that checks Standard Webhooks signatures, as lesson 03 taught."""
    server = serve_receiver(verifiers=[StandardWebhooksSignature(SECRET)], trace=trace,
                            technique=technique, **options)
    started.append(server)
    return server


def _stop(started: list[Server], senders: list[Sender] = ()) -> None:
    """Free every sender's client and stop every server, whatever happened."""
    try:
        for sender in senders:
            sender.close()
    finally:
        for server in started:
            server.stop()


def _run(work: Awaitable, *, label: str, total: int, done: Callable[[], int],
         timeout: float) -> Any:
    """Run ``work`` on the lab loop while a progress bar follows ``done()`` of ``total``.

    A compressed clock stretches every real pause: at 400 simulated seconds per real
    one, a 100 ms garbage collection walking a notebook's 150,000 objects becomes 40
    simulated seconds in the middle of a retry schedule. So the objects that exist
    before the run are frozen (:func:`labkit.lab.freeze`, as the lab does when it
    starts): a collection during the run walks only what the run itself made.
    """
    lab.freeze()
    future = lab.submit(work)
    deadline = time.monotonic() + timeout
    with Progress(total, label) as bar:
        while not future.done():
            if time.monotonic() > deadline:
                future.cancel()
                raise WaitTimeout(f"{label}: not finished within {timeout} s")
            bar.update(done())
            concurrent.futures.wait([future], timeout=0.1)
        bar.update(total)
    return future.result()


def _finished(*senders: Sender) -> Callable[[], int]:
    """How many deliveries of ``senders`` have ended (delivered or dead-lettered)."""
    return lambda: sum(s.stats()["sent"] - s.stats()["pending"] for s in senders)


async def _down(server: Server, at: float, seconds: float, clock: Clock,
                window: dict[str, float], started: list[Server]) -> None:
    """Take ``server`` down at simulated time ``at`` for ``seconds`` (``faults.outage``);
    note in ``window`` when the first server went down and came back."""
    await clock.sleep(at - clock.now())
    window.setdefault("from", clock.now())
    started.append(await outage(server, seconds, clock=clock))
    window.setdefault("to", clock.now())


def busiest(times: list[float], width: float) -> int:
    """The most ``times`` in any window ``width`` long (sliding, so no bin edge splits a burst)."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= width:
            start += 1
        most = max(most, end - start + 1)
    return most


# -- 1. the receiver goes down -----------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """Two senders, one without retries and one with, to two receivers down at once."""

    trace: Trace
    senders: dict[str, Sender]
    """``"no retries"`` and ``"with retries"``: their logs, stats and reports."""
    receivers: dict[str, WebhookReceiver]
    events: tuple[Event, ...]
    down: tuple[float, float]
    """When the receivers were down, in simulated seconds on the senders' clock."""

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return {name: sender.stats() for name, sender in self.senders.items()}

    def first_sent(self, name: str, *, inside: bool, margin: float = 30) -> list[DeliveryLog]:
        """Deliveries of sender ``name`` first sent well inside the outage (``inside``) or
        well outside it, ``margin`` simulated seconds from its edges (a request in flight
        as the server stops or starts may go either way)."""
        start, end = self.down
        logs = self.senders[name].log.values()
        if inside:
            return [e for e in logs if start + margin < e.attempts[0].sim < end - margin]
        return [e for e in logs if not start - margin <= e.attempts[0].sim <= end + margin]

    def figure(self):
        """Each event as a dot where it was first sent; a line to when a retry delivered it."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
        fig, ax = plt.subplots(figsize=(11, 3.2), layout="constrained")
        ax.axvspan(self.down[0] / MINUTE, self.down[1] / MINUTE, color="0.88")
        for y, name in ((1, "no retries"), (0, "with retries")):
            for entry in self.senders[name].log.values():
                first, last = (entry.attempts[0].sim / MINUTE, entry.attempts[-1].sim / MINUTE)
                if entry.state == DEAD_LETTERED:
                    ax.plot(first, y, "x", color="tab:red", markersize=8, markeredgewidth=2)
                elif len(entry.attempts) == 1:
                    ax.plot(first, y, "o", color="tab:green", markersize=6)
                else:
                    ax.plot([first, last], [y, y - 0.25], "-", color="tab:orange", linewidth=1)
                    ax.plot(first, y, "o", color="tab:orange", markersize=6)
                    ax.plot(last, y - 0.25, "|", color="tab:orange", markersize=10,
                            markeredgewidth=2)
        ax.legend(handles=[
            plt.Line2D([], [], color="tab:green", marker="o", linestyle="none",
                       label="delivered at once"),
            plt.Line2D([], [], color="tab:orange", marker="o",
                       label="delivered by a retry (line: until when)"),
            plt.Line2D([], [], color="tab:red", marker="x", linestyle="none",
                       markeredgewidth=2, label="lost"),
            Patch(color="0.88", label="receiver down")],
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        ax.set_yticks([1, 0], ["no retries", "with retries"])
        ax.set_ylim(-0.6, 1.5)
        ax.set_xlabel("simulated time the event was first sent (minutes)")
        lost = self.stats["no retries"]["dead_lettered"]
        ax.set_title(f"{len(self.events)} events, the receiver down for "
                     f"{(self.down[1] - self.down[0]) / MINUTE:.0f} minutes: {lost} lost without "
                     f"retries, {self.stats['with retries']['dead_lettered']} with them")
        ax.grid(axis="x", alpha=0.3)
        return fig


def receiver_goes_down(*, policy=None, events: int = 40, every: float = 15,
                       down_at: float = 3 * MINUTE, down_for: float = 3 * MINUTE,
                       speedup: float = 600, seed: int = 4) -> Outage:
    """Send ``events`` "order paid" events, one every ``every`` simulated seconds, to two
    identical receivers that both go down at ``down_at`` for ``down_for`` simulated seconds.

    One sender tries each event once (``NO_RETRY``); the other follows ``policy``
    (default: exponential, 15 s, 30 s, 60 s, then every 2 minutes, 8 retries).
    ``faults.outage`` really stops each server (connections are refused) and
    serves it again on the same port. Circuit breakers are off (lesson section 6).
    """
    policy = Exponential(base=15, cap=2 * MINUTE, retries=8) if policy is None else policy
    clock, feed, trace, started = Clock(speedup=speedup), Feed(seed=seed), Trace(), []
    names = ("no retries", "with retries")
    servers = {name: _receiver(trace, f"webhook: {name}", started) for name in names}
    senders = {name: Sender(PROVIDER, servers[name].endpoint_url,
                            policy=NO_RETRY if name == "no retries" else policy, clock=clock,
                            seed=seed, trace=trace, technique=f"webhook: {name}",
                            breaker_threshold=10_000) for name in names}
    window: dict[str, float] = {}
    sent: list[Event] = []

    async def experiment() -> None:
        outages = [asyncio.ensure_future(_down(s, down_at, down_for, clock, window, started))
                   for s in servers.values()]
        try:
            for n, at in enumerate(fixed_rate(1 / every, count=events)):
                await clock.sleep(at - clock.now())
                sent.append(feed.make("order.paid", {"order": 1000 + n, "amount": 20 + n % 7}))
                for sender in senders.values():
                    sender.send(sent[-1])
            await asyncio.gather(*(s.drain() for s in senders.values()), *outages)
        finally:
            for task in outages:
                task.cancel()

    try:
        _run(experiment(), label="sending through an outage", total=2 * events,
             done=_finished(*senders.values()), timeout=60)
    finally:
        _stop(started, list(senders.values()))
    return Outage(trace=trace, senders=senders,
                  receivers={name: s.component for name, s in servers.items()},
                  events=tuple(sent), down=(window["from"], window["to"]))


# -- 2. backoff policies -----------------------------------------------------------------


@dataclass(frozen=True)
class Draws:
    """Each policy's waits before retries 1..n, drawn many times (rows: draws)."""

    waits: dict[str, Any]
    """Policy name -> a numpy array, one row per draw, one column per retry."""
    ceiling: Any
    """``min(cap, base * 2**n)`` for each retry n: the exponential policy's waits."""

    def figure(self):
        """Median wait per retry, with a band from the 10th to the 90th percentile."""
        import matplotlib.pyplot as plt
        import numpy as np
        fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
        retry = np.arange(1, len(self.ceiling) + 1)
        for (name, waits), colour in zip(self.waits.items(),
                                         ["0.2", "tab:blue", "tab:orange", "tab:green"]):
            low, mid, high = np.percentile(waits, [10, 50, 90], axis=0)
            same = name == "exponential"
            ax.plot(retry, mid, marker="o", color=colour,
                    label=name + (" (no jitter: every draw the same)" if same else " (median)"))
            if not same:
                ax.fill_between(retry, low, high, color=colour, alpha=0.15)
        ax.set_yscale("log")
        ax.set_xlabel("retry number")
        ax.set_ylabel("wait before the retry (s, log scale)")
        ax.set_title(f"Backoff policies: median wait, band = 10th-90th percentile of "
                     f"{len(next(iter(self.waits.values())))} draws")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        return fig


def backoff_draws(*, base: float = 1, cap: float = 60, retries: int = 8, draws: int = 300,
                  seed: int = 4) -> Draws:
    """Draw the waits of the four policies of the AWS Architecture Blog's "Exponential
    Backoff And Jitter" (no jitter, full, equal, decorrelated) ``draws`` times each."""
    import numpy as np
    rng = random.Random(seed)
    policies = [kind(base=base, cap=cap, retries=retries)
                for kind in (Exponential, FullJitter, EqualJitter, DecorrelatedJitter)]
    waits = {p.name: np.array([p.delays(rng) for _ in range(draws)]) for p in policies}
    return Draws(waits=waits, ceiling=np.array([policies[0].ceiling(n) for n in range(retries)]))


# -- 3. a day of retries, dead letters, redelivery ---------------------------------------


@dataclass(frozen=True)
class SvixRun:
    """Svix's schedule against a receiver that answers 500, then a redelivery once fixed."""

    sender: Sender
    receiver: WebhookReceiver
    spans: tuple[float, ...]
    """Simulated hours from each delivery's first attempt to its last, before redelivery."""
    real_seconds: float
    """How long those retries took in real time."""
    attempts_before: tuple[int, ...]
    """Attempts each delivery made before it was dead-lettered."""
    dead_lettered: tuple[tuple[str, str], ...]
    """(delivery id, reason) of every dead letter, before the redelivery."""
    gaps: tuple[tuple[float, ...], ...]
    """Simulated seconds between consecutive attempts, per delivery, before redelivery."""

    @property
    def speedup_measured(self) -> float:
        """Simulated seconds covered per real second."""
        return max(self.spans) * HOUR / self.real_seconds

    def figure(self):
        """Each invoice's attempts over the simulated hours, then its redelivery."""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(10.5, 3.2), layout="constrained")
        entries = list(self.sender.log.values())
        for row, (entry, tries) in enumerate(zip(entries, self.attempts_before)):
            start = entry.attempts[0].sim
            hours = [(a.sim - start) / HOUR for a in entry.attempts]
            ax.plot(hours[:tries], [row] * tries, "-o", color="tab:purple", markersize=5)
            ax.plot(hours[tries - 1], row, "x", color="tab:red", markersize=11,
                    markeredgewidth=2)
            ax.plot(hours[tries:], [row] * len(hours[tries:]), "D", color="tab:green",
                    markersize=7)
        ax.set_yticks(range(len(entries)), [e.event.payload["invoice"] for e in entries])
        ax.set_ylim(-0.7, len(entries) - 0.3)
        ax.set_xlabel("simulated hours since the first attempt")
        ax.set_title(f"Svix's schedule: {self.attempts_before[0]} attempts over about "
                     f"{sum(SVIX.nominal) / HOUR:.1f} h, played in "
                     f"{self.real_seconds:.1f} real s; redelivered once fixed")
        ax.legend(handles=[
            plt.Line2D([], [], color="tab:purple", marker="o", label="attempt (answered 500)"),
            plt.Line2D([], [], color="tab:red", marker="x", linestyle="none",
                       markeredgewidth=2, label="dead-lettered"),
            plt.Line2D([], [], color="tab:green", marker="D", linestyle="none",
                       label="redelivered (200)")], loc="upper left", bbox_to_anchor=(1.01, 1.0),
            fontsize="small")
        ax.grid(alpha=0.3)
        return fig


def retry_for_a_day(*, invoices: int = 3, speedup: float = 100_000, seed: int = 4) -> SvixRun:
    """Deliver ``invoices`` events with Svix's retry schedule to a receiver with a bug (it
    answers 500 to everything), on a clock playing ``speedup`` simulated seconds per real
    one; every delivery is dead-lettered. Then fix the bug and redeliver the dead letters,
    with the same delivery ids."""
    clock, feed, trace, started = Clock(speedup=speedup), Feed(seed=seed), Trace(), []
    buggy = _receiver(trace, "webhook: svix", started, faults=Flaky(1.0))
    sender = Sender(PROVIDER, buggy.endpoint_url, policy=SVIX, clock=clock, seed=seed,
                    trace=trace, technique="webhook: svix")
    events = [feed.make("invoice.paid", {"invoice": f"in_{n}", "amount": 40 + n})
              for n in range(invoices)]
    try:
        began = time.monotonic()
        _run(sender.deliver(events), label="27 simulated hours of retries", total=invoices,
             done=_finished(sender), timeout=60)
        real = time.monotonic() - began
        entries = list(sender.log.values())
        before = tuple(len(e.attempts) for e in entries)
        spans = tuple((e.attempts[-1].sim - e.attempts[0].sim) / HOUR for e in entries)
        gaps = tuple(tuple(b.sim - a.sim for a, b in zip(e.attempts, e.attempts[1:]))
                     for e in entries)
        letters = tuple((e.delivery_id, e.reason) for e in sender.dead_letters)
        buggy.component.faults = None                  # the bug is fixed and deployed
        for entry in sender.dead_letters:
            sender.redeliver(entry)
        lab.run(sender.drain(), timeout=10)
    finally:
        _stop(started, [sender])
    return SvixRun(sender=sender, receiver=buggy.component, spans=spans, real_seconds=real,
                   attempts_before=before, dead_lettered=letters, gaps=gaps)


# -- 4. the thundering herd --------------------------------------------------------------


@dataclass(frozen=True)
class Herd:
    """Deliveries failing together, retried without jitter and with full jitter.

    Every time is in simulated seconds on the senders' clock, counted from the
    moment the deliveries first failed (when the first attempts came back,
    refused): the moment the policy's first wait starts from.
    """

    senders: dict[str, Sender]
    down: tuple[float, float]
    """When the receivers were down, on the same axis."""
    start: float
    """The senders' clock when the first attempts had failed (subtracted from every time)."""

    def attempts(self, name: str, *, reached: bool | None = None) -> list[tuple[int, float]]:
        """(attempt number, time) of every attempt of group ``name``; ``reached=True`` keeps
        those the receiver answered, ``False`` those refused at the door (it was down)."""
        return [(a.number, a.sim - self.start) for e in self.senders[name].log.values()
                for a in e.attempts
                if reached is None or (a.status is not None) == reached]

    def waves(self, name: str = "no jitter", retries: int = 4) -> list[float]:
        """When retry 1, 2, ... ``retries`` of group ``name`` began: its earliest attempt.

        (The rest of a wave follows within the moment the lab needs to send 60 requests,
        which the compressed clock stretches into a few simulated seconds.)"""
        return [min(t for n, t in self.attempts(name) if n == k + 2) for k in range(retries)]

    def peak(self, name: str) -> int:
        """The most attempts the receiver answered in any simulated minute."""
        return busiest([t for _, t in self.attempts(name, reached=True)], MINUTE)

    def tries(self, name: str) -> Counter:
        """Attempts needed per delivery -> how many deliveries needed that many."""
        return Counter(len(e.attempts) for e in self.senders[name].log.values())

    def figure(self):
        """Left: retries sent per simulated minute. Right: what reached the receiver."""
        import matplotlib.pyplot as plt
        import numpy as np
        fig, axes = plt.subplots(1, 2, figsize=(13, 4), layout="constrained", sharex=True)
        end = max(t for name in self.senders for _, t in self.attempts(name)) / MINUTE
        edges = np.arange(0, np.ceil(end) + 1)
        for ax, reached in ((axes[0], None), (axes[1], True)):
            ax.axvspan(self.down[0] / MINUTE, self.down[1] / MINUTE, color="0.9",
                       label="receiver down")
            for name, colour in zip(self.senders, ("tab:brown", "tab:blue")):
                times = [t / MINUTE for n, t in self.attempts(name, reached=reached)
                         if reached or n > 1]
                counts, _ = np.histogram(times, edges)
                ax.stairs(counts, edges, color=colour, linewidth=1.5, label=name)
            ax.set_xlabel("simulated minutes since the deliveries first failed (sender's clock)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        waves = ", ".join(f"{w / MINUTE:.1f}" for w in self.waves())
        axes[0].set_ylabel("retries sent per simulated minute")
        axes[0].set_title(f"Without jitter, waves of retries begin at {waves} minutes")
        axes[1].set_ylabel("requests answered per simulated minute")
        axes[1].set_title(f"At the receiver once back: busiest minute "
                          f"{self.peak('no jitter')} vs {self.peak('full jitter')} requests")
        return fig


def thundering_herd(*, deliveries: int = 60, down_for: float = 12 * MINUTE,
                    policies: dict | None = None, speedup: float = 400,
                    seed: int = 4) -> Herd:
    """``deliveries`` orders reach each of two receivers just as both crash for
    ``down_for`` simulated seconds. Each group retries with its policy (default:
    exponential backoff from 1 minute, capped at 16, without jitter and with full jitter).
    Every delivery of a group is in flight at once (``concurrency=deliveries``).

    Each wait starts when the previous attempt has failed, and failing takes the lab a
    few real milliseconds per burst of requests, which the compressed clock stretches
    ``speedup`` times: so the waves land a little after the policy's nominal times.
    :func:`modelled_peak` is the same herd with failing taking no time at all.
    """
    policies = policies or {
        "no jitter": Exponential(base=MINUTE, cap=16 * MINUTE, retries=12),
        "full jitter": FullJitter(base=MINUTE, cap=16 * MINUTE, retries=12)}
    clock, feed, trace, started = Clock(speedup=speedup), Feed(seed=seed), Trace(), []
    orders = [feed.make("order.created", {"order": 3000 + n}) for n in range(deliveries)]
    servers = {name: _receiver(trace, f"webhook: {name}", started) for name in policies}
    senders = {name: Sender(PROVIDER, servers[name].endpoint_url, policy=policy, clock=clock,
                            seed=seed, concurrency=deliveries, trace=trace,
                            technique=f"webhook: {name}") for name, policy in policies.items()}
    window: dict[str, float] = {}

    async def experiment() -> None:
        outages = [asyncio.ensure_future(_down(s, 0, down_for, clock, window, started))
                   for s in servers.values()]
        try:
            await asyncio.sleep(0)              # the receivers are down before orders arrive
            await asyncio.gather(*(s.deliver(orders) for s in senders.values()), *outages)
        finally:
            for task in outages:
                task.cancel()

    try:
        _run(experiment(), label="a herd of retries", total=deliveries * len(senders),
             done=_finished(*senders.values()), timeout=60)
    finally:
        _stop(started, list(senders.values()))
    start = statistics.median(e.attempts[0].sim + clock.to_sim(e.attempts[0].latency)
                              for s in senders.values() for e in s.log.values())
    return Herd(senders=senders, start=start,
                down=(window["from"] - start, window["to"] - start))


def modelled_peak(policy, *, deliveries: int = 60, down_for: float = 12 * MINUTE,
                  seed: int = 4) -> int:
    """The busiest simulated minute at a recovering receiver, modelled without sockets.

    Every delivery first fails at time 0; each retry goes out exactly its wait
    (drawn from ``policy`` with ``random.Random(seed)``) after the previous
    attempt; the first attempt at or after ``down_for`` is answered.
    """
    rng = random.Random(seed)
    answered = []
    for _ in range(deliveries):
        t = 0.0
        for wait in policy.delays(rng):
            t += wait
            if t >= down_for:
                answered.append(t)
                break
    return busiest(answered, MINUTE)


# -- 5. 429 Retry-After and 410 Gone -----------------------------------------------------


@dataclass(frozen=True)
class Polite:
    """One sender, two endpoints: one busy (429, Retry-After: 120), one deleted (410)."""

    sender: Sender
    busy: str
    deleted: str
    deleted_requests: int
    """Requests the deleted endpoint received in all."""

    def log(self, url: str) -> list[DeliveryLog]:
        return [e for e in self.sender.log.values() if e.url == url]

    @property
    def waits_after_429(self) -> list[float]:
        """Simulated seconds between each busy delivery's first and second attempt."""
        return [e.attempts[1].sim - e.attempts[0].sim for e in self.log(self.busy)]


def listen_to_receiver(*, invoices: int = 5, retry_after: int = 120, speedup: float = 500,
                       seed: int = 4) -> Polite:
    """Deliver ``invoices`` to a busy endpoint, which answers the first try of each with
    ``429`` and ``Retry-After``, and to a deleted one, which answers ``410``. The sender's
    own policy would wait 1 second between tries."""
    clock, feed, trace, started = Clock(speedup=speedup), Feed(seed=seed), Trace(), []
    busy = _receiver(trace, "webhook: busy", started,
                     faults=FailFirst(1, status=429, headers={"Retry-After": str(retry_after)}))
    deleted = _receiver(trace, "webhook: deleted", started, faults=gone())
    sender = Sender(PROVIDER, [busy.endpoint_url, deleted.endpoint_url],
                    policy=Exponential(base=1, cap=1, retries=3), clock=clock, concurrency=1,
                    seed=seed, trace=trace, technique="webhook: polite")
    try:
        sender.run([feed.make("invoice.created", {"invoice": f"in_{10 + n}"})
                    for n in range(invoices)], timeout=30)
    finally:
        _stop(started, [sender])
    return Polite(sender=sender, busy=busy.endpoint_url, deleted=deleted.endpoint_url,
                  deleted_requests=trace.count("request", "webhook: deleted"))


# -- 6. one dead endpoint ----------------------------------------------------------------


@dataclass(frozen=True)
class FanOut:
    """Events fanned out to a dead endpoint and a healthy one."""

    sender: Sender
    dead: str
    healthy: str
    healthy_took: float
    """Real seconds until the healthy endpoint had every event."""
    dead_meanwhile: tuple[str, ...]
    """The state of each delivery to the dead endpoint at that moment."""

    def log(self, url: str) -> list[DeliveryLog]:
        return [e for e in self.sender.log.values() if e.url == url]


def one_dead_endpoint(*, alerts: int = 20, speedup: float = 1000, seed: int = 4) -> FanOut:
    """Send ``alerts`` events to a dead endpoint (nothing listens on its port any more) and
    a healthy one, retrying twice, 300 simulated seconds apart, two requests in flight
    per endpoint; the breaker opens after 5 deliveries in a row exhausted their retries."""
    clock, feed, trace, started = Clock(speedup=speedup), Feed(seed=seed), Trace(), []
    dead = _receiver(trace, "webhook: dead", started)
    dead.stop()                                          # its port now refuses connections
    healthy = _receiver(trace, "webhook: healthy", started)
    sender = Sender(PROVIDER, [dead.endpoint_url, healthy.endpoint_url],
                    policy=FixedSchedule([300, 300]), clock=clock, concurrency=2, seed=seed,
                    trace=trace, technique="webhook: fan-out")
    events = [feed.make("alert.raised", {"alert": n}) for n in range(alerts)]
    try:
        began = time.monotonic()
        for event in events:
            sender.send(event)
        healthy.component.wait_for(alerts, timeout=10)
        took = time.monotonic() - began
        meanwhile = tuple(sender.log[e.id, dead.endpoint_url].state for e in events)
        lab.run(sender.drain(), timeout=30)
    finally:
        _stop(started, [sender])
    return FanOut(sender=sender, dead=dead.endpoint_url, healthy=healthy.endpoint_url,
                  healthy_took=took, dead_meanwhile=meanwhile)


# -- 7. answer first, work afterwards ----------------------------------------------------


@dataclass(frozen=True)
class AnswerFirst:
    """The same slow work done inside the request, and by a background worker."""

    senders: dict[str, Sender]
    """``"works in the request"`` and ``"answers first"``."""
    receivers: dict[str, WebhookReceiver]
    work_done: dict[str, tuple[str, ...]]
    """Receiver -> the delivery id of each piece of work finished, in order."""
    last_done: dict[str, float]
    """Receiver -> real seconds from the first send to the last piece of work finished."""
    timeout: float

    @property
    def waits(self) -> dict[str, list[float]]:
        """How long the provider waited for each attempt's answer (real seconds)."""
        return {name: [a.latency for e in s.log.values() for a in e.attempts]
                for name, s in self.senders.items()}

    def wait_percentile(self, name: str, p: float) -> float:
        """The wait that ``p`` % of ``name``'s attempts did not exceed (nearest rank)."""
        ordered = sorted(self.waits[name])
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def figure(self):
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        from labkit import plots
        fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
        plots.latency_cdf(self.waits, ax=ax,
                          title="How long the provider waited for an answer, per attempt")
        for line, colour in zip(ax.get_lines(), ["tab:red", "tab:green"]):
            line.set(color=colour, linewidth=2)
        ax.axvline(self.timeout * 1000, color="0.3", linestyle=":", label="provider's timeout")
        ax.set_xscale("log")
        ax.set_xlim(5, 2000)
        ax.set_xticks([10, 30, 100, 300, 1000])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("provider-side wait per attempt (ms, log scale)")
        ax.set_ylabel("share of attempts")
        ax.legend(loc="center left")
        return fig


def answer_first(*, reports: int = 6, work: float = 0.6, timeout: float = 0.3,
                 workers: int = 6, speedup: float = 100, seed: int = 4) -> AnswerFirst:
    """Two receivers do ``work`` real seconds per report: one inside the request, one in a
    :class:`~labkit.webhooks.processing.BackgroundWorker` with ``workers`` workers after
    answering 200. The provider waits ``timeout`` seconds for an answer, then retries once,
    10 simulated seconds later. Both receivers keep the safe default: a repeat of a
    delivery still being worked on waits for that work, then is acknowledged."""
    clock, feed, trace, started = Clock(speedup=speedup), Feed(seed=seed), Trace(), []
    done = {"works in the request": [], "answers first": []}
    times: dict[str, list[float]] = {name: [] for name in done}

    def finished(name: str) -> Callable[[Any], None]:
        def record(delivery) -> None:
            done[name].append(delivery.id)
            times[name].append(time.monotonic())
        return record

    worker = BackgroundWorker(slow(work, finished("answers first")), workers=workers)
    servers = {"works in the request": _receiver(trace, "webhook: works in the request",
                                                 started,
                                                 process=slow(work,
                                                              finished("works in the request"))),
               "answers first": _receiver(trace, "webhook: answers first", started,
                                          process=worker)}
    senders = {name: Sender(PROVIDER, server.endpoint_url, policy=FixedSchedule([10]),
                            clock=clock, timeout=(1.0, timeout), seed=seed, trace=trace,
                            technique=f"webhook: {name}") for name, server in servers.items()}
    events = [feed.make("report.requested", {"report": n}) for n in range(reports)]

    async def both() -> None:
        await asyncio.gather(*(s.deliver(events) for s in senders.values()))
        await worker.drain()

    try:
        began = time.monotonic()
        _run(both(), label="slow work, two ways", total=2 * reports,
             done=lambda: sum(map(len, done.values())), timeout=60)
        deadline = time.monotonic() + 10 * work          # work the provider gave up on
        while len(done["works in the request"]) < reports and time.monotonic() < deadline:
            time.sleep(0.02)
        lab.run(worker.stop())
    finally:
        _stop(started, list(senders.values()))
    return AnswerFirst(senders=senders,
                       receivers={name: s.component for name, s in servers.items()},
                       work_done={name: tuple(ids) for name, ids in done.items()},
                       last_done={name: max(t) - began for name, t in times.items() if t},
                       timeout=timeout)


# -- 8. at least once in, once processed -------------------------------------------------


@dataclass(frozen=True)
class AtLeastOnce:
    """Payments to a naive receiver (every copy processed) and to the safe default."""

    sender: Sender
    urls: dict[str, str]
    """``"naive"`` and ``"safe default"`` -> their endpoint URLs."""
    receivers: dict[str, WebhookReceiver]
    charges: dict[str, Counter]
    """Receiver -> order number -> how many times that customer was charged."""
    slow_orders: tuple[int, ...]
    """The orders whose bank call took longer than the provider waits."""

    def log(self, name: str) -> list[DeliveryLog]:
        return [e for e in self.sender.log.values() if e.url == self.urls[name]]

    def figure(self):
        """How many customers were charged once, twice ... by each receiver."""
        import matplotlib.pyplot as plt
        import numpy as np
        fig, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
        most = max(max(c.values()) for c in self.charges.values())
        times = np.arange(1, most + 1)
        for offset, (name, colour) in zip([-0.2, 0.2], [("naive", "tab:red"),
                                                        ("safe default", "tab:green")]):
            counts = self.charges[name]
            heights = [sum(1 for c in counts.values() if c == n) for n in times]
            bars = ax.bar(times + offset, heights, width=0.4, color=colour,
                          label=f"{name} receiver")
            ax.bar_label(bars, fontsize="small")
        ax.set_xticks(times, [f"{n}x" for n in times])
        ax.set_xlabel("times a customer was charged")
        ax.set_ylabel(f"payments (of {len(self.charges['naive'])})")
        ax.set_title(f"Same payments; {len(self.slow_orders)} bank calls slower than the "
                     f"provider waits")
        ax.legend()
        return fig


def at_least_once(*, payments: int = 30, slow_every: int = 3, bank: float = 0.4,
                  timeout: float = 0.25, speedup: float = 1000, seed: int = 4) -> AtLeastOnce:
    """Deliver ``payments`` to two receivers that charge the customer for each delivery
    they process: one naive (``duplicates="process"``), one with the safe default.

    Every ``slow_every``-th customer's bank call takes ``bank`` real seconds, longer than
    the provider's ``timeout``: the provider gives up, though the charge goes through,
    and retries (up to 3 times, 1, 2 and 4 simulated seconds later). To the provider a
    late answer is a lost one.
    """
    clock, feed, trace, started = Clock(speedup=speedup), Feed(seed=seed), Trace(), []
    charges: dict[str, Counter] = {"naive": Counter(), "safe default": Counter()}
    slow_orders = tuple(4000 + n for n in range(payments) if n % slow_every == 0)

    def charge(name: str) -> Callable[[Any], Awaitable[None]]:
        async def call_the_bank(delivery) -> None:
            order = delivery.payload["data"]["order"]
            await asyncio.sleep(bank if order in slow_orders else 0.002)
            charges[name][order] += 1
        return call_the_bank

    servers = {"naive": _receiver(trace, "webhook: naive", started, process=charge("naive"),
                                  duplicates="process"),
               "safe default": _receiver(trace, "webhook: safe default", started,
                                         process=charge("safe default"))}
    sender = Sender(PROVIDER, [s.endpoint_url for s in servers.values()],
                    policy=Exponential(base=1, cap=8, retries=3), clock=clock,
                    timeout=(1.0, timeout), seed=seed, trace=trace,
                    technique="webhook: at least once")
    events = [feed.make("payment.succeeded", {"order": 4000 + n, "amount": 25})
              for n in range(payments)]
    try:
        _run(sender.deliver(events), label="payments with late answers", total=2 * payments,
             done=_finished(sender), timeout=60)
        time.sleep(bank + 0.1)                       # bank calls the provider gave up on
    finally:
        _stop(started, [sender])
    return AtLeastOnce(sender=sender, urls={n: s.endpoint_url for n, s in servers.items()},
                       receivers={n: s.component for n, s in servers.items()},
                       charges=charges, slow_orders=slow_orders)


# -- 9. out of order ---------------------------------------------------------------------


@dataclass(frozen=True)
class Orders:
    """Order updates whose ``paid`` step is retried late, to two receivers."""

    sender: Sender
    arrivals: tuple
    """The deliveries the naive receiver applied, in arrival order."""
    naive: dict[str, str]
    """Order -> the status the receiver that stores the last update ends with."""
    latest: dict[str, str]
    """Order -> the status the LatestWins receiver ends with."""
    latest_wins: LatestWins

    def seen(self, order: str) -> list[str]:
        """The statuses of ``order`` in the order they arrived."""
        return [d.payload["data"]["status"] for d in self.arrivals
                if d.payload["data"]["order"] == order]

    def stamps(self, header: bool) -> dict[tuple[str, str], Any]:
        """(order, status) -> when it happened (the body's ``timestamp``, ISO 8601) or, with
        ``header``, when this attempt was signed (``webhook-timestamp``, Unix seconds)."""
        return {(d.payload["data"]["order"], d.payload["data"]["status"]):
                int(d.headers["webhook-timestamp"]) if header else d.payload["timestamp"]
                for d in self.arrivals}


def out_of_order(*, orders: str = "ABCDE", retry_after: float = 300, speedup: float = 1000,
                 seed: int = 4) -> Orders:
    """Each order goes through ``created``, ``paid``, ``shipped`` (10 simulated seconds
    apart). The first try of every ``paid`` update gets a 500 and is retried
    ``retry_after`` simulated seconds later, long after ``shipped`` arrived. One receiver
    stores whatever arrives; the other applies an update only if its ``version`` is newer
    (:class:`~labkit.webhooks.processing.LatestWins`)."""
    clock, feed, trace, started = Clock(speedup=speedup), Feed(seed=seed), Trace(), []
    naive, latest, arrivals = {}, {}, []

    def hiccup_on_paid() -> Callable:
        first_try = FailFirst(1)
        return lambda d: first_try(d) if d.payload["data"]["status"] == "paid" else None

    def store(state: dict) -> Callable:
        def apply(d) -> None:
            state[d.payload["data"]["order"]] = d.payload["data"]["status"]
        return apply

    def store_last(d) -> None:
        arrivals.append(d)
        store(naive)(d)

    latest_wins = LatestWins(store(latest), key=lambda d: d.payload["data"]["order"],
                             version=lambda d: d.payload["data"]["version"])
    urls = [_receiver(trace, f"webhook: {name}", started, faults=hiccup_on_paid(),
                      process=process).endpoint_url
            for name, process in (("last arrived", store_last), ("latest wins", latest_wins))]
    sender = Sender(PROVIDER, urls, policy=FixedSchedule([retry_after, retry_after]),
                    clock=clock, seed=seed, trace=trace, technique="webhook: order updates")

    async def lifecycle() -> None:
        for version, status in enumerate(["created", "paid", "shipped"], start=1):
            for order in orders:
                sender.send(feed.make("order.updated",
                                      {"order": order, "version": version, "status": status}))
                await clock.sleep(10)
        await sender.drain()

    try:
        lab.run(lifecycle(), timeout=30)
    finally:
        _stop(started, [sender])
    return Orders(sender=sender, arrivals=tuple(arrivals), naive=naive, latest=latest,
                  latest_wins=latest_wins)


# -- 10. the books -----------------------------------------------------------------------


def books(**runs: Any) -> dict[str, dict[str, int]]:
    """Every sender's stats, by experiment: ``books(outage=run1, svix=run2, ...)``.

    Each row adds ``drops``: the ``drop`` records its dead letters left in the trace.
    """
    table = {}
    for name, run in runs.items():
        senders = getattr(run, "senders", None) or {"": run.sender}
        for part, sender in senders.items():
            drops = sender.trace.count("drop", sender.technique)
            table[f"{name}: {part}" if part else name] = {**sender.stats(), "drops": drops}
    return table
