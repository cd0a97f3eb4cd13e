"""Lesson 09's experiments: every technique on the same events, and the notes' table measured.

The lecture notes end with a summary table (direction, "Real-time?",
"Efficiency", "Use case"), four examples of push and pull, and "In short".
Here each line is an experiment:

======================================  ==========================================================
call                                    what it shows
======================================  ==========================================================
``same_feed()``                         the same seeded events, on one clock, by polling, long
                                        polling, SSE, WebSocket, Web Push and (server to server) a
                                        webhook; then the pages close and a few more events come:
                                        who still gets them. ``figure()``, ``table()``
``efficiency()``                        rare events and frequent ones, by the four page
                                        techniques: requests and bytes per event. ``figure()``
``four_examples()``                     the notes' weather app, chat, cricket score and delivery
                                        alert, each run small. ``figure()``: latency vs bytes
``scaling_by_technique()``              the four page techniques with 1 and with 300 clients (in
                                        a separate process). ``figure()``: CPU, bytes, latency
======================================  ==========================================================

**Bytes.** Every technique's bytes are ``Trace.bytes_total``: requests and
responses, plus the frames of a long-lived connection past HTTP, which the
WebSocket server and the push service (its phones' connections) count
themselves and record on the connection's ``disconnect``. So each
experiment reads the trace once everything it started has stopped, as
``labkit compare`` does.

Every experiment starts what it needs and stops all of it, also when
something fails. Thread-safety: call them from a cell or a script, never
from the lab loop (they block while they wait).
"""

from __future__ import annotations

import contextlib
import html
import time
from dataclasses import dataclass
from typing import NamedTuple

from labkit import lab, techniques
from labkit.clock import REAL_TIME, Clock
from labkit.experiments.webpush import OUT_FOR_DELIVERY, SHOP, _stage
from labkit.feed import Feed, fixed_rate, play, poisson
from labkit.hub import Hub
from labkit.progress import Progress
from labkit.push.polling import LongPollingClient, PollingClient, serve_long_polling, \
    serve_polling
from labkit.push.scale import run_clients, scaling
from labkit.push.sse import SSEClient, serve_sse
from labkit.push.websocket import WebSocketClient, serve_websocket
from labkit.trace import Trace
from labkit.webhooks.receiver import serve_receiver
from labkit.wire import CLIENT_HEADER

__all__ = ["TECHNIQUES", "PAGES", "NOTES", "Notes", "Measured", "Race", "same_feed",
           "SummaryTable", "Efficiency", "efficiency", "Example", "Examples", "four_examples",
           "WEATHER", "Scaling", "scaling_by_technique"]

TECHNIQUES = ("polling", "long-polling", "sse", "websocket", "webpush", "webhook")
"""Every technique of the head to head, in the notes' order (the webhook last: server to
server)."""
PAGES = ("polling", "long-polling", "sse", "websocket")
"""The techniques that need an open page (a running client) to receive anything."""


class Notes(NamedTuple):
    """One row of the lecture notes' summary table, in the notes' own words."""

    direction: str
    real_time: str
    efficiency: str
    use_case: str


NOTES = {
    "polling": Notes("Client → Server", "❌ (delayed)", "Low", "Simple apps"),
    "long-polling": Notes("Client → Server (kept open)", "✅ (near real-time)", "Medium",
                          "Chats, notifications"),
    "sse": Notes("Server → Client", "✅", "High", "Feeds, dashboards"),
    "websocket": Notes("both ways (not in the notes' table)", "—", "—", "—"),
    "webpush": Notes("Server → Client (via provider)", "✅", "Very High",
                     "Alerts, mobile/web apps"),
    "webhook": Notes("Server → Server (from the webhooks section)", "✅ real-time",
                     "simplest, lightweight", "notifications, event triggers, integrations"),
}
"""The notes' summary table (and, for the two it leaves out, what the notes say elsewhere)."""


# -- the same feed, six ways ---------------------------------------------------------------


class Measured(NamedTuple):
    """One technique's numbers in :func:`same_feed`."""

    technique: str
    delivered: int
    """Deliveries while the pages were open (events x receivers)."""
    p50: float
    p99: float
    """Latency percentiles, seconds, from the event's creation to the receiver having it."""
    requests: float
    """HTTP requests per delivery (set-up ones included)."""
    bytes: float
    """Wire bytes per delivery (set-up included; frames included)."""
    held: int
    """Connections or requests the serving side held open once every receiver was ready."""
    closed: int
    """Of the events made after the pages closed, deliveries that still happened."""


@dataclass(frozen=True)
class Race:
    """What :func:`same_feed` measured."""

    trace: Trace
    events: int
    closed_events: int
    receivers: int
    interval: float
    rows: dict[str, Measured]

    def table(self) -> SummaryTable:
        """The notes' summary table beside this run's numbers."""
        return SummaryTable(self)

    def figure(self):
        """Timeline (a lane group per technique) and the latency CDF (log scale)."""
        import matplotlib.pyplot as plt
        from labkit import plots
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 13), layout="constrained",
                                          height_ratios=(3, 1.2))
        plots.timeline(self.trace, ax=top, techniques=TECHNIQUES, max_arrows=300,
                       roles={SHOP: "app server"},
                       title=f"The same {self.events} events, six ways (then the pages close)")
        plots.latency_cdf(self.trace, ax=bottom, techniques=TECHNIQUES, log=True,
                          title="Latency from event to receiver (CDF, log scale)")
        return fig

    def cost_figure(self):
        """Requests and bytes per delivered event, per technique (set-up included)."""
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
        labels = [techniques.label(name) for name in self.rows]
        colours = [techniques.colour(name) for name in self.rows]
        for ax, what, unit in zip(axes, ("requests", "bytes"), ("", " B")):
            values = [getattr(row, what) for row in self.rows.values()]
            ax.barh(labels, values, color=colours, edgecolor="k", linewidth=0.5)
            for k, value in enumerate(values):
                ax.text(value, k, f" {value:.2f}{unit}" if what == "requests"
                        else f" {value:.0f}{unit}", va="center", fontsize="small")
            ax.invert_yaxis()
            ax.set_xlim(0, max(values) * 1.3)
            ax.set_xlabel(f"{what} per delivered event")
            ax.set_title(f"{what.capitalize()} per event ({self.events} events, "
                         f"{self.receivers} receivers each)")
        return fig


_SERVE = {"polling": serve_polling, "long-polling": serve_long_polling, "sse": serve_sse,
          "websocket": serve_websocket}
"""How each page technique is served on a hub."""


def _serve_pages(stack: contextlib.ExitStack, hub: Hub, trace: Trace) -> dict:
    """A server of each page technique on ``hub``, stopped when ``stack`` closes."""
    return {name: stack.enter_context(serve(hub, trace=trace)) for name, serve in _SERVE.items()}


def _pages(urls: dict[str, str], trace: Trace, count: int, interval: float,
           clock: Clock = REAL_TIME) -> list:
    """``count`` clients of each page technique, named by their role (pollers on ``clock``)."""
    clients = []
    for k in range(1, count + 1):
        clients += [
            PollingClient(urls["polling"], trace=trace, name=f"poller-{k}", interval=interval,
                          clock=clock),
            LongPollingClient(urls["long-polling"], trace=trace, name=f"long-poller-{k}"),
            SSEClient(urls["sse"], trace=trace, name=f"sse-page-{k}"),
            WebSocketClient(urls["websocket"], trace=trace, name=f"ws-page-{k}")]
    return clients


def _held(server, trace: Trace, technique: str) -> int:
    """What the serving side holds now: held polls, or connections open in the trace."""
    if hasattr(server.component, "held"):
        return server.component.held
    return trace.count("connect", technique) - trace.count("disconnect", technique)


def _wait_held(servers: dict, trace: Trace, count: int) -> None:
    """Until the held techniques' servers hold ``count`` pages each (at most 5 s)."""
    for _ in range(500):
        if all(_held(servers[n], trace, n) >= count for n in PAGES[1:]):
            return
        time.sleep(0.01)


def same_feed(*, events: int = 12, rate: float = 8.0, interval: float = 0.5,
              receivers: int = 2, closed: int = 3, seed: int = 1) -> Race:
    """The same ``events`` (``rate`` a second, one seeded feed) by every technique at once.

    One hub feeds a polling server (its clients ask every ``interval`` s), a
    long-polling server, an SSE stream and a WebSocket server, each with
    ``receivers`` clients (pages). For each event the shop also sends it by
    Web Push to ``receivers`` phones and POSTs it to a webhook receiver.
    Then every page closes and ``closed`` more events come: only what does
    not need an open page still delivers them. One trace, one clock.
    """
    trace, hub, feed = Trace(), Hub(name="the feed"), Feed(seed=seed)
    phones = tuple(f"phone-{k}" for k in range(1, receivers + 1))
    with contextlib.ExitStack() as stack:
        servers = _serve_pages(stack, hub, trace)
        servers["webhook"] = stack.enter_context(serve_receiver(feed=feed, trace=trace))
        push, app, devices = stack.enter_context(_stage(phones, trace=trace))
        servers["webpush"] = push
        for device in devices:
            device.online()
        pages = _pages({n: s.endpoint_url for n, s in servers.items()}, trace, receivers,
                       interval)
        for page in pages:
            stack.enter_context(page)
        http = lab.run(lab.http_client)
        stack.callback(lab.run, http.close)
        _wait_held(servers, trace, receivers)
        held = {name: _held(servers[name], trace, name) for name in TECHNIQUES}
        with Progress(events + closed, "the same events, six ways") as bar:
            _play(feed, events, rate, hub, app, devices, http, servers["webhook"], bar)
            for client in [*pages, *devices]:
                client.wait_for(events, timeout=events / rate + 5 * interval + 5)
            servers["webhook"].component.wait_for(events)
            before = {name: trace.count("event", name) for name in TECHNIQUES}
            for page in pages:
                page.stop()
            _play(feed, closed, rate, hub, app, devices, http, servers["webhook"], bar)
            for device in devices:
                device.wait_for(events + closed)
            servers["webhook"].component.wait_for(events + closed)
            time.sleep(interval)  # a poll that could still come would have come by now
    rows = {}  # all stopped: every connection's frames are on its disconnect record
    for name in TECHNIQUES:
        delivered = before[name]
        p50, p99 = trace.latency_percentiles(name, (50, 99)).values()
        total = trace.count("event", name)
        rows[name] = Measured(name, delivered, p50, p99, trace.count("request", name) / total,
                              trace.bytes_total(name) / total, held[name], total - delivered)
    return Race(trace, events, closed, receivers, interval, rows)


def _play(feed: Feed, count: int, rate: float, hub: Hub, app, devices: list, http,
          hook, bar: Progress) -> None:
    """``count`` events, ``rate`` a second: into the hub, by Web Push, and to the webhook."""
    start, posts = time.monotonic(), []
    for k in range(count):
        time.sleep(max(0.0, start + (k + 1) / rate - time.monotonic()))
        event = feed.make("order.update", {"title": "Order #4521",
                                           "body": f"update {k + 1}", "icon": "🛵"})
        hub.publish(event)
        posts.append(lab.submit(lambda body=event.to_json(): http.fetch(
            hook.endpoint_url, method="POST", body=body,
            headers={"Content-Type": "application/json", CLIENT_HEADER: SHOP})))
        for device in devices:
            app.send(device.subscription_info, event, ttl=60)
        bar.advance()
    for post in posts:
        post.result(timeout=10)


# -- the notes' table, measured ------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds / 60:,.1f} min"


class SummaryTable:
    """The notes' summary table, each row beside what :func:`same_feed` measured.

    ``str()`` is plain text; a notebook shows ``_repr_html_``. ``rows`` holds
    the cells (a list of dicts, no pandas needed).
    """

    COLUMNS = ("technique", "direction (notes)", "real-time? (notes)", "p50", "p99",
               "requests / event", "bytes / event", "held by server", "app closed",
               "efficiency (notes)", "use case (notes)")

    def __init__(self, race: Race):
        self.rows = []
        for name, m in race.rows.items():
            notes = NOTES[name]
            sent = race.closed_events * (1 if name == "webhook" else race.receivers)
            self.rows.append(dict(zip(self.COLUMNS, (
                techniques.label(name), notes.direction, notes.real_time, _ms(m.p50), _ms(m.p99),
                f"{m.requests:.2f}", f"{m.bytes:,.0f} B", str(m.held), f"{m.closed} of {sent}",
                notes.efficiency, notes.use_case))))

    def __str__(self) -> str:
        widths = {c: max(len(c), *(len(r[c]) for r in self.rows)) for c in self.COLUMNS}
        lines = [" | ".join(c.ljust(widths[c]) for c in self.COLUMNS)]
        lines += [" | ".join(r[c].ljust(widths[c]) for c in self.COLUMNS) for r in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(r[c])}</td>"
                                        for c in self.COLUMNS) + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- rare events and frequent ones ---------------------------------------------------------

RARE = dict(events=3, rate=1 / 60, interval=5.0, clock=Clock(speedup=600), schedule="fixed")
"""One event a minute, a poll every 5 s (played 600 times faster)."""
FREQUENT = dict(events=20, rate=40.0, interval=0.5)
"""Forty events a second, a poll every half second."""


@dataclass(frozen=True)
class Efficiency:
    """Requests and bytes per event, rare versus frequent events, per page technique."""

    requests: dict[str, dict[str, float]]
    """``requests["rare"]["polling"]``: requests per delivered event."""
    bytes: dict[str, dict[str, float]]

    def figure(self):
        """Requests and bytes per event, rare and frequent side by side (log scale)."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
        for ax, what in zip(axes, ("requests", "bytes")):
            values = getattr(self, what)
            for k, case in enumerate(("rare", "frequent")):
                ys = [values[case][name] for name in PAGES]
                xs = [i + (k - 0.5) * 0.38 for i in range(len(PAGES))]
                ax.bar(xs, ys, width=0.38, color=[techniques.colour(n) for n in PAGES],
                       alpha=1.0 if case == "rare" else 0.45, edgecolor="k", linewidth=0.5,
                       label=f"{case} events")
                for x, y in zip(xs, ys):
                    ax.text(x, y, f"{y:.2g}", ha="center", va="bottom", fontsize="x-small")
            ax.set_xticks(range(len(PAGES)), [techniques.label(n) for n in PAGES])
            ax.set_yscale("log")
            plots.plain_log_ticks(ax.yaxis, subs=(1, 2, 5))
            ax.set_ylabel(f"{what} per delivered event (log)")
            ax.legend(fontsize="small", title="dark: one a minute; pale: 40 a second",
                      title_fontsize="x-small")
        fig.suptitle("What 'efficiency' means depends on how often something happens")
        return fig


def efficiency(*, seed: int = 1) -> Efficiency:
    """Each page technique with one client, once with :data:`RARE` events, once :data:`FREQUENT`.

    In each case one hub feeds the four servers, each with its one client,
    and the seeded events are played once for all four: one set-up and one
    schedule per case, not one per technique. Each technique's requests and
    bytes are its own, as ``run_clients(name, clients=1, seed=seed, **RARE)``
    counts them (the exercises measure them that way).
    """
    requests, size = {}, {}
    with Progress(2, "rare and frequent events") as bar:
        for case, options in (("rare", RARE), ("frequent", FREQUENT)):
            trace = _one_page_each(seed=seed, **options)
            requests[case] = {name: trace.count("request", name) / trace.count("event", name)
                              for name in PAGES}
            size[case] = {name: trace.bytes_per_event(name) for name in PAGES}
            bar.advance()
    return Efficiency(requests, size)


def _one_page_each(*, events: int, rate: float, interval: float, seed: int,
                   clock: Clock = REAL_TIME, schedule: str = "poisson") -> Trace:
    """One page of each technique on one hub, ``events`` played once; every page got each."""
    trace, hub, feed = Trace(), Hub(name="the feed"), Feed(seed=seed)
    offsets = poisson(rate, count=events, seed=seed) if schedule == "poisson" \
        else fixed_rate(rate, count=events)
    with contextlib.ExitStack() as stack:
        servers = _serve_pages(stack, hub, trace)
        pages = _pages({n: s.endpoint_url for n, s in servers.items()}, trace, 1, interval,
                       clock)
        for page in pages:
            stack.enter_context(page)
        _wait_held(servers, trace, 1)
        lab.run(play(feed, offsets, hub.publish, clock=clock))
        for page in pages:
            page.wait_for(events, timeout=clock.to_real(offsets[-1] + 2 * interval) + 10)
    return trace


# -- the notes' four examples --------------------------------------------------------------


class Example(NamedTuple):
    """One of the notes' examples, run small."""

    product: str
    technique: str
    p50: float
    """Median latency in the product's own time (seconds)."""
    p99: float
    """99th percentile latency, in the product's own time (seconds)."""
    bytes: float
    """Wire bytes per delivered event."""


@dataclass(frozen=True)
class Examples:
    """What :func:`four_examples` measured, by product."""

    rows: dict[str, Example]

    def figure(self):
        """Every example as a labelled point: latency against bytes per event (log-log)."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
        for ex in self.rows.values():
            ax.scatter(ex.p50, ex.bytes, s=90, color=techniques.colour(ex.technique),
                       edgecolor="k", zorder=3)
            ax.annotate(f"{ex.product}\n({techniques.label(ex.technique)})", (ex.p50, ex.bytes),
                        textcoords="offset points", xytext=(8, 4), fontsize="small")
        ax.set_xscale("log")
        ax.set_yscale("log")
        plots.plain_log_ticks(ax.xaxis)
        plots.plain_log_ticks(ax.yaxis)
        ax.set_xlim(1e-4, 1e4)
        ax.set_ylim(50, 2e4)
        ax.set_xlabel("median latency, seconds (log; the weather app in its own time)")
        ax.set_ylabel("bytes per delivered event (log)")
        ax.set_title("The notes' four examples: pull is late, push is prompt")
        return fig


WEATHER = dict(clients=20, events=1, rate=1 / 600, interval=600, clock=Clock(speedup=1200),
               schedule="fixed")
"""The weather app: 20 phones polling every 10 minutes, a new forecast after 10 minutes (every
phone has started polling by then), played 1,200 times faster (10 minutes pass in 0.5 s).
Each phone polls at its own seeded phase, so the waits spread over a whole interval and their
median is near half of it; a faster clock would turn the loop's real jitter (milliseconds)
into simulated minutes."""


def four_examples(*, seed: int = 1) -> Examples:
    """The notes' weather app, chat, cricket score and delivery alert, each run small.

    Weather: :data:`WEATHER` (latency given in the app's own time). Chat: long
    polling, 2 people, 6 messages, 20 a second. Cricket: SSE, 3 viewers, a ball
    every 0.05 s. Delivery alert: Web Push, 3 alerts to one phone.
    """
    runs = (("weather app", "polling", WEATHER),
            ("simple chat", "long-polling", dict(clients=2, events=6, rate=20.0)),
            ("cricket score", "sse", dict(clients=3, events=10, rate=20.0)))
    rows = {}
    with Progress(len(runs) + 1, "the notes' four examples") as bar:
        for product, name, options in runs:
            result = run_clients(name, seed=seed, **options)
            scale = options.get("clock", Clock()).speedup
            rows[product] = Example(product, name, result.latency[50] * scale,
                                    result.latency[99] * scale, result.bytes_per_event)
            bar.advance()
        rows["delivery alert"] = _alerts(3, seed)
        bar.advance()
    return Examples(rows)


def _alerts(count: int, seed: int) -> Example:
    trace, feed = Trace(), Feed(seed=seed)
    with _stage(trace=trace) as (_server, app, (phone,)):
        phone.online()
        for _ in range(count):
            app.send(phone.subscription_info, feed.make("order.update", OUT_FOR_DELIVERY))
        phone.wait_for(count)
    p50, p99 = trace.latency_percentiles("webpush", (50, 99)).values()
    return Example("delivery alert", "webpush", p50, p99, trace.bytes_per_event("webpush"))


# -- scaling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scaling:
    """What :func:`scaling_by_technique` measured: rows by technique, one per client count."""

    rows: dict[str, list[dict]]
    """``rows["sse"]``: :meth:`labkit.push.scale.ScaleResult.row` dicts, fewest clients first."""

    @property
    def largest(self) -> dict[str, dict]:
        """Each technique's row with the most clients."""
        return {name: table[-1] for name, table in self.rows.items()}

    def figure(self):
        """Server CPU per delivery, bytes per delivery and p50 latency against clients."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
        for ax, column, label in zip(axes, ("CPU/event (µs)", "bytes/event", "p50 latency (s)"),
                                     ("server CPU per delivery, µs (log)", "bytes per delivery",
                                      "p50 latency, s (log)")):
            for name, table in self.rows.items():
                ax.plot([r["clients"] for r in table], [r[column] for r in table], "o-",
                        color=techniques.colour(name), label=techniques.label(name))
            ax.set_xscale("log")
            plots.plain_log_ticks(ax.xaxis)
            if column != "bytes/event":
                ax.set_yscale("log")
                plots.plain_log_ticks(ax.yaxis, subs=(1, 2, 5))
            ax.set_xlabel("clients (log)")
            ax.set_title(label)
        axes[1].set_ylim(bottom=0)
        axes[0].legend(fontsize="small")
        most = max(r["clients"] for table in self.rows.values() for r in table)
        fig.suptitle(f"From 1 to {most:,} clients (the clients in a separate process)")
        return fig


def scaling_by_technique(clients: tuple[int, ...] = (1, 300), *, events: int = 3,
                         rate: float = 20.0, interval: float = 0.5, seed: int = 1,
                         names: tuple[str, ...] = PAGES) -> Scaling:
    """Each technique in ``names`` with each number of ``clients``, run in a separate process.

    :func:`labkit.push.scale.scaling`: one ``run_clients`` per technique and count,
    ``load="process"``, so the server's CPU is the server's alone:
    ``events`` events at ``rate`` a second, polls every ``interval`` s.
    Memory is not measured (``memory=False``): tracing every allocation would
    slow the server while the clients connect, and the lesson does not read
    it. Each run starts a Python process (about half a second), so a lesson
    keeps to two counts; ``bench/`` (``docs/benchmarks.md``) goes to 1,000
    clients.
    """
    rows = {}
    with Progress(len(names), "1 to many clients") as bar:
        for name in names:
            rows[name] = scaling(name, clients, events=events, rate=rate, interval=interval,
                                 load="process", seed=seed, memory=False)
            bar.advance()
    return Scaling(rows)
