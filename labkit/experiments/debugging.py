"""Lesson 05's experiments: make both halves of a webhook visible, and break the path between.

A webhook "doesn't work" and half of the conversation happened on the
provider's servers. The lesson makes each half visible (a request bin, a
relay's log, the receiver's rejections) and reproduces what goes wrong on
the way: delay, loss, a URL that differs behind a tunnel.

==========================  ========================================================
call                        what it does
==========================  ========================================================
``header_notes(captured)``  each header of a captured GitHub delivery, with what it
                            tells you
``run_curl(command)``       runs a command from ``as_curl`` in bash, returns the status
``slow_network()``          the same pushes direct, through a relay, through a slow
                            relay: latency percentiles and a CDF
``lossy_relay()``           pushes through a relay that loses a quarter of them, sent
                            once, then by a sender that retries; a timeline whose
                            lanes say who talks to whom
``doesnt_arrive()``         six ways a webhook "doesn't arrive", each reproduced, with
                            what the provider saw and where the cause shows
==========================  ========================================================

Every request leaves loopback never: the "public" side of a relay is just
another port on 127.0.0.1. Call these from a cell or a script, not from the
lab loop; each stops what it started, also on error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable

import requests

from labkit.clock import Clock
from labkit.debug.relay import serve_relay
from labkit.experiments.start import client_session
from labkit.feed import Feed
from labkit.lab import Server
from labkit.progress import Progress
from labkit.trace import Trace
from labkit.webhooks.backoff import FixedSchedule
from labkit.webhooks.faults import slow
from labkit.webhooks.providers import GitHubProvider, PaymentProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.sender import Sender
from labkit.webhooks.signatures import GitHubSignature, StripeSignature

__all__ = ["GITHUB_SECRET", "HEADER_MEANINGS", "header_notes", "run_curl", "SlowNetwork",
           "slow_network", "Lossy", "lossy_relay", "Checklist", "doesnt_arrive"]

GITHUB_SECRET = "gh-debugging-secret-05"

HEADER_MEANINGS = {
    "user-agent": "who is calling: GitHub-Hookshot/<version>",
    "content-type": "how to parse the body",
    "content-length": "body size in bytes",
    "x-github-event": "the event type: route on it",
    "x-github-delivery": "unique per delivery: deduplicate on it, quote it to support",
    "x-github-hook-id": "which webhook configuration sent it",
    "x-github-hook-installation-target-type": "what the webhook is installed on",
    "x-github-hook-installation-target-id": "...and its id",
    "x-hub-signature": "legacy HMAC-SHA1 of the body with your secret (lesson 03)",
    "x-hub-signature-256": "HMAC-SHA256 of the body with your secret: verify this one",
    "host": "the host:port the sender connected to",
    "x-labkit-client": "labkit's name for the sender in the trace (real providers do not send it)",
}
"""What each header of a GitHub delivery tells the receiver (names in lower case)."""


def header_notes(captured) -> list[tuple[str, str, str]]:
    """(header, value shortened to 50 characters, what it tells you) for each header of
    ``captured`` (a :class:`~labkit.debug.inspector.CapturedRequest`), in arrival order."""
    return [(name, value if len(value) <= 50 else value[:47] + "...",
             HEADER_MEANINGS.get(name.lower(), "added by the HTTP client"))
            for name, value in captured.headers]


def run_curl(command: str) -> str | None:
    """Run ``command`` (from :func:`~labkit.debug.inspector.as_curl`) in bash and return
    the HTTP status curl got, as text; None when this machine has no curl or bash.

    ``NO_PROXY`` keeps curl on loopback even where a proxy is configured.
    """
    if not (shutil.which("curl") and shutil.which("bash")):
        return None
    done = subprocess.run(["bash", "-c", command + " -s -o /dev/null -w '%{http_code}'"],
                          capture_output=True, text=True, timeout=20,
                          env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    return done.stdout


def _github_receiver(trace: Trace, technique: str, started: list[Server], **options) -> Server:
    server = serve_receiver(verifiers=[GitHubSignature(GITHUB_SECRET)], trace=trace,
                            technique=technique, **options)
    started.append(server)
    return server


def _stop(started: list[Server]) -> None:
    for server in started:
        server.stop()


# -- delay -------------------------------------------------------------------------------

ROUTES = ("webhook: direct", "webhook: via a relay", "webhook: via a slow relay")


@dataclass(frozen=True)
class SlowNetwork:
    """The same pushes to three receivers: direct, through a relay, through a slow relay."""

    trace: Trace
    routes: tuple[str, ...]
    """The receivers' technique names, which the latencies are recorded under."""
    delays: tuple[float, ...]
    """The delay the slow relay added to each request (seconds)."""
    latency: float
    jitter: float

    def p50(self) -> dict[str, float]:
        """The median latency (event created to receiver) of each route, in seconds."""
        return {route: self.trace.latency_percentiles(route, (50,))[50] for route in self.routes}

    def figure(self):
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
        plots.latency_cdf(self.trace, techniques=list(self.routes), ax=ax,
                          title="Time from event to receiver: direct, through a relay, "
                                "through a slow relay")
        low, high = (self.latency - self.jitter) * 1000, (self.latency + self.jitter) * 1000
        ax.axvspan(low, high, color="0.9", zorder=0,
                   label=f"delay the slow relay adds ({low:.0f}-{high:.0f} ms)")
        ax.legend(loc="lower right")
        return fig


def slow_network(*, events: int = 30, latency: float = 0.06, jitter: float = 0.04,
                 seed: int = 5) -> SlowNetwork:
    """Send ``events`` signed GitHub pushes to each of three receivers, interleaved (so any
    hiccup of the machine hits all three alike): one called directly, one through a plain
    relay, one through a relay adding ``latency`` +/- ``jitter`` seconds."""
    feed, trace, started = Feed(seed=seed), Trace(), []
    receivers = [_github_receiver(trace, route, started, feed=feed) for route in ROUTES]
    github = GitHubProvider(GITHUB_SECRET)
    try:
        plain = serve_relay(receivers[1].url, trace=trace, technique="relay: plain")
        started.append(plain)
        slow_relay = serve_relay(receivers[2].url, latency=latency, jitter=jitter, seed=seed,
                                 trace=trace, technique="relay: slow")
        started.append(slow_relay)
        urls = [receivers[0].endpoint_url, plain.component.public(receivers[1].endpoint_url),
                slow_relay.component.public(receivers[2].endpoint_url)]
        with client_session("github") as session, \
                Progress(events, "pushes on three routes") as bar:
            for _ in range(events):
                for url in urls:
                    github.send(url, feed.make("push"), session=session).raise_for_status()
                bar.advance()
        delays = tuple(exchange.delay for exchange in slow_relay.component.log)
    finally:
        _stop(started)
    return SlowNetwork(trace=trace, routes=ROUTES, delays=delays, latency=latency,
                       jitter=jitter)


# -- loss --------------------------------------------------------------------------------

SENDS_ONCE = ("relay: github → relay", "webhook: relay → receiver")


@dataclass(frozen=True)
class Lossy:
    """Pushes through a relay that loses some: sent once, then by a sender that retries."""

    trace: Trace
    """The pushes sent once: the relay's and the receiver's records."""
    provider_saw: tuple[Any, ...]
    """What the provider got for each push sent once: a status, or "connection closed"."""
    received: int
    """How many of those the receiver accepted."""
    relay_counts: dict[str, int]
    """The relay's log of those pushes, counted by outcome (forwarded, dropped)."""
    retrying: Sender
    """The sender that then pushed through the same relay, retrying (its log and stats)."""

    @property
    def lost(self) -> int:
        return self.provider_saw.count("connection closed")

    def figure(self):
        """The pushes sent once, as a timeline: github → relay → receiver."""
        import matplotlib.pyplot as plt

        from labkit import plots, techniques
        fig, ax = plt.subplots(figsize=(11, 4.2), layout="constrained")
        plots.timeline(self.trace, ax=ax, techniques=list(SENDS_ONCE),
                       title=f"Through a lossy relay: {self.lost} of {len(self.provider_saw)} "
                             f"requests lost (red x); the receiver saw the other {self.received}")
        # The relay forwards the X-Labkit-Client header with the request, so the receiver's
        # records name the provider; on that hop the one calling the receiver is the relay.
        receiver = techniques.get(SENDS_ONCE[1])
        labels = [label.get_text() for label in ax.get_yticklabels()]
        hop = labels.index(f"{receiver.server} ({receiver.tag})")
        ax.set_yticks(ax.get_yticks(), labels[:hop + 1] + [
            label.replace("github ", "relay ", 1) for label in labels[hop + 1:]])
        ax.set_xlabel("time since the first request (s)")
        return fig


def lossy_relay(*, events: int = 20, drop: float = 0.25, retries: int = 6,
                seed: int = 5) -> Lossy:
    """Push ``events`` GitHub events through a relay that loses a share ``drop`` of the
    requests (it closes the connection: the provider sees a network error), each sent once.
    Then push as many through a second relay just as lossy, with a sender retrying up to
    ``retries`` times, one simulated second apart on a clock 100 times faster than real."""
    feed, trace, started = Feed(seed=seed), Trace(), []
    github = GitHubProvider(GITHUB_SECRET)

    def path(trace: Trace, names: tuple[str, str], seed: int) -> tuple[Server, str]:
        receiver = _github_receiver(trace, names[1], started, feed=feed)
        relay = serve_relay(receiver.url, drop=drop, seed=seed, trace=trace, technique=names[0])
        started.append(relay)
        return receiver, relay.component.public(receiver.endpoint_url)

    try:
        receiver, url = path(trace, SENDS_ONCE, seed)
        saw = []
        with client_session("github") as session:
            for _ in range(events):
                try:
                    saw.append(github.send(url, feed.make("push"), session=session,
                                           timeout=2).status_code)
                except requests.ConnectionError:
                    saw.append("connection closed")
        counts = started[-1].component.counts()
        retry_trace = Trace()
        _, retry_url = path(retry_trace, ("relay: lossy", "webhook: behind it"), seed + 1)
        with Sender(github, [retry_url], policy=FixedSchedule([1.0] * retries),
                    clock=Clock(speedup=100), trace=retry_trace, technique="webhook: retrying",
                    seed=seed, timeout=(1.0, 2.0)) as retrying:
            retrying.run([feed.make("push") for _ in range(events)], timeout=30)
    finally:
        _stop(started)
    return Lossy(trace=trace, provider_saw=tuple(saw),
                 received=receiver.component.counts["accepted"], relay_counts=counts,
                 retrying=retrying)


# -- the checklist -----------------------------------------------------------------------


@dataclass(frozen=True)
class Checklist:
    """Failures reproduced live: what went wrong, what the provider saw, where to look,
    and what it says there."""

    rows: tuple[tuple[str, Any, str, str], ...]

    def saw(self) -> dict[str, Any]:
        """What went wrong -> what the provider's delivery log would show."""
        return {what: saw for what, saw, _, _ in self.rows}

    def says(self) -> dict[str, str]:
        """What went wrong -> what the place to look says about it."""
        return {what: evidence for what, _, _, evidence in self.rows}

    def __str__(self) -> str:
        head = ("what went wrong", "the provider saw", "look in", "what it says there")
        rows = [head] + [tuple(map(str, row)) for row in self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3]
                         for row in rows)


def _provider_view(send: Callable[[], requests.Response]) -> Any:
    """What a provider's delivery log would show: the status it got, or the error."""
    try:
        return send().status_code
    except requests.Timeout:
        return "timeout"
    except requests.ConnectionError:
        return "connection error"


def doesnt_arrive(*, seed: int = 5) -> Checklist:
    """Reproduce six reasons a webhook "doesn't arrive", each on its own receiver or relay,
    and note what the provider would see and where the cause becomes visible."""
    feed, trace, started = Feed(seed=seed), Trace(), []
    github = GitHubProvider(GITHUB_SECRET)
    pay_secret = "whsec_debugging_lesson_05"
    rows = []

    def case(what: str, send: Callable, where: str, evidence: Callable[[], str]) -> None:
        rows.append((what, _provider_view(send), where, evidence()))

    def serve(kind: Callable[..., Server], *args, **options) -> Server:
        server = kind(*args, trace=trace, **options)
        started.append(server)
        return server

    try:
        hooks = _github_receiver(trace, "webhook: receiver", started)
        tunnel = serve(serve_relay, hooks.url, technique="relay: tunnel")
        shop = serve(serve_receiver, verifiers=[StripeSignature(pay_secret)],
                     technique="webhook: shop")
        slow_hooks = serve(serve_receiver, process=slow(0.6), technique="webhook: slow")
        stopped = serve_receiver()                  # a local server you stopped...
        stopped.stop()
        orphan = serve(serve_relay, stopped.url, technique="relay: orphan")   # ...tunnel still up
        black_hole = serve(serve_relay, hooks.url, drop=1.0, technique="relay: black hole")
        stale = PaymentProvider(pay_secret, clock=lambda: time.time() - 900)

        def last(relay: Server):
            return relay.component.log[-1]

        case("wrong path in the webhook URL",
             lambda: github.send(tunnel.url + "/webhok", feed.make("push")), "tunnel log",
             lambda: f"target answered {last(tunnel).target_status} for "
                     f"{last(tunnel).request.path}")
        case("wrong secret",
             lambda: GitHubProvider("last-years-secret").send(
                 tunnel.component.public(hooks.endpoint_url), feed.make("push")),
             "receiver's rejections", lambda: hooks.component.rejections[-1].reason)
        case("receiver too slow for the provider",
             lambda: requests.post(slow_hooks.endpoint_url, json={"id": "evt_slow"}, timeout=0.2),
             "receiver's deliveries",
             lambda: f"it arrived anyway ({slow_hooks.component.wait_for(1)[0].id}): "
                     f"a retry would be a repeat")
        case("tunnel up, local server down",
             lambda: github.send(orphan.url + "/webhook", feed.make("push")), "tunnel log",
             lambda: f"{last(orphan).outcome}: connection "
                     f"{'refused' if 'refused' in last(orphan).detail else '?'}")
        case("request lost on the network",
             lambda: github.send(black_hole.url + "/webhook", feed.make("push")),
             "tunnel log (if it got that far)",
             lambda: f"{last(black_hole).outcome}, never forwarded")
        case("sender's clock 15 minutes behind",
             lambda: stale.send(shop.endpoint_url, feed.make("payment")),
             "receiver's rejections", lambda: shop.component.rejections[-1].reason)
        time.sleep(0.7)                    # the slow receiver's work the provider gave up on
    finally:
        _stop(started)
    return Checklist(rows=tuple(rows))
