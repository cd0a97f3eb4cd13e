"""Lesson 00's experiment: a shop posts order updates to a webhook receiver.

The smallest whole experiment the kit runs, and the shape of every other:
events happen at the moments of a seeded schedule, a mechanism carries each
one (here a plain ``POST`` per event), the receiver records when it learned
of it, and the trace holds every request and answer with its bytes.

=======================  ===================================================
call                     what it shows
=======================  ===================================================
``shop_sends_updates()``  15 events at 20 per second on average (a Poisson
                          schedule, seed 7), one ``POST`` each; the result
                          has the answers, the bytes and a two-panel chart
``timeline_marks(ax)``    what a :func:`labkit.plots.timeline` drew, counted
                          by kind, so a lesson can assert what its chart shows
``arrow_starts(ax)``      where the timeline's arrows start, by kind
``client_session(name)``  a ``requests`` session the trace names ``name``
=======================  ===================================================

Knobs worth turning: ``rate`` (events per second), ``count``, ``seed``, and
``payload_bytes`` (pads each event's payload, to see the headers' share of
the bytes shrink).

Example::

    run = shop_sends_updates(rate=200)
    run.statuses[:3], run.median_latency      # ([200, 200, 200], 0.0021)
    run.figure()

Thread-safety: call it from a cell or a script, not from the lab loop (it
blocks while the shop sleeps between events).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import requests

from labkit.feed import Feed, poisson
from labkit.trace import Trace
from labkit.webhooks.receiver import serve_receiver
from labkit.wire import CLIENT_HEADER

__all__ = ["ShopRun", "shop_sends_updates", "timeline_marks", "arrow_starts",
           "client_session"]


@dataclass(frozen=True)
class ShopRun:
    """What :func:`shop_sends_updates` measured."""

    trace: Trace
    """Every request, answer and delivered event of the run."""
    statuses: tuple[int, ...]
    """The status of each answer, in sending order."""
    answer_bodies: tuple[bytes, ...]
    """The body of each answer (a webhook receiver's answer is a bare status)."""
    body_bytes: tuple[int, ...]
    """The JSON body of each request, in bytes."""
    request_bytes: tuple[int, ...]
    """Each request as it crossed the wire: request line, headers, blank line and body."""
    deliveries: int
    """How many deliveries the receiver accepted."""

    @property
    def header_shares(self) -> tuple[float, ...]:
        """For each request, the share of its bytes that is not the body (0.62 = 62 %)."""
        return tuple(1 - body / wire for body, wire in zip(self.body_bytes, self.request_bytes))

    @property
    def median_latency(self) -> float:
        """p50 of the time from an event's creation to the receiver having it, in seconds."""
        return self.trace.latency_percentiles("webhook", (50,))[50]

    def figure(self):
        """The timeline of the run beside its latency CDF."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained",
                                          width_ratios=[1.7, 1])
        plots.timeline(self.trace, ax=left,
                       title=f"A shop sends {len(self.statuses)} order updates to a receiver")
        plots.latency_cdf(self.trace, ax=right, title="From the update to the receiver having it")
        return fig


def shop_sends_updates(*, rate: float = 20.0, count: int = 15, seed: int = 7,
                       payload_bytes: int = 0) -> ShopRun:
    """Start a receiver, POST ``count`` order updates to it on a Poisson schedule, stop it.

    Each event is made (``feed.make``) at its moment of the schedule and
    posted at once with ``requests``, under the client name ``shop``; so
    its latency is the time one ``POST`` takes to reach the receiver.
    ``payload_bytes`` adds a ``note`` of that many characters to each payload.
    """
    feed = Feed(seed=seed)
    schedule = poisson(rate, count=count, seed=seed)
    replies: list[requests.Response] = []
    server = serve_receiver(feed=feed)
    try:
        with client_session("shop") as shop:
            start = time.monotonic()
            for n, offset in enumerate(schedule):
                time.sleep(max(0.0, start + offset - time.monotonic()))
                payload = {"order": 1000 + n, "status": "packed"}
                if payload_bytes:
                    payload["note"] = "x" * payload_bytes
                event = feed.make("order.updated", payload)
                replies.append(shop.post(server.endpoint_url, json=event.to_dict(), timeout=5))
    finally:
        server.stop()
    requests_seen = server.trace.records(kind="request")
    return ShopRun(trace=server.trace,
                   statuses=tuple(r.status_code for r in replies),
                   answer_bodies=tuple(r.content for r in replies),
                   body_bytes=tuple(len(r.request.body) for r in replies),
                   request_bytes=tuple(r.bytes for r in requests_seen),
                   deliveries=server.component.counts["accepted"])


def client_session(name: str) -> requests.Session:
    """A ``requests`` session whose requests the trace names ``name`` (``X-Labkit-Client``)."""
    session = requests.Session()
    session.headers[CLIENT_HEADER] = name
    return session


def timeline_marks(ax) -> Counter:
    """What :func:`labkit.plots.timeline` drew on ``ax``, counted by kind.

    Keys: ``request``, ``response`` and ``empty response`` (arrows; an empty
    response is a faded answer that brought nothing new), ``event created``
    (stars), ``event`` (diamonds where an event was learned), ``wait``
    (dotted lines from star to diamond), ``retry`` and ``drop`` (marks).
    """
    marks: Counter = Counter()
    for arrow in ax.texts:
        if arrow.get_gid():
            marks[arrow.get_gid()] += 1
    for line in ax.lines:
        gid = line.get_gid()
        if gid == "wait":
            marks[gid] += 1
        elif gid:
            marks[gid] += len(line.get_xdata())
    return marks


def arrow_starts(ax) -> dict[str, list[float]]:
    """Where the timeline's arrows on ``ax`` start (x), by kind, from left to right."""
    starts: dict[str, list[float]] = {}
    for arrow in ax.texts:
        if arrow.get_gid():
            starts.setdefault(arrow.get_gid(), []).append(arrow.xyann[0])
    return {kind: sorted(xs) for kind, xs in starts.items()}
