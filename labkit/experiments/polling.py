"""Lesson 06's experiments: polling and long polling, measured on loopback.

HTTP is request and response: a server with news cannot tell a client that
is not asking. Polling asks again and again; long polling asks once and the
server holds the question until it has an answer. Every experiment here
plays that out with real servers and clients (:mod:`labkit.push.polling`)
reading one :class:`~labkit.hub.Hub`, and returns the trace and the numbers
the lesson asserts on.

==========================  ==================================================================
call                        what it shows
==========================  ==================================================================
``ask_and_wait()``          plain HTTP: a page asks, the server gets news a moment later, and
                            the page learns of it only when it next asks
``weather_app()``           the notes' weather app refreshing every 10 minutes, on a compressed
                            clock with forecasts at random, about one an hour; phones that
                            refresh every 20 to 60 minutes beside it, each interval's numbers
                            beside the theory (:class:`Interval`); ``figure()``,
                            ``tradeoff_figure()``, ``table()``
``chat()``                  the notes' chat over long polling: messages in milliseconds, a
                            burst while a slow phone is between requests (none lost, in
                            order), a member who leaves, a server that stops
``same_events()``           the same few events by polling, long polling and SSE: swimlanes,
                            requests, bytes per event
``clients_at_scale()``      1, 10 and 100 clients of polling and of long polling
                            (:func:`labkit.push.scale.scaling`): requests, bytes, connections,
                            held requests, server CPU and memory
``pros_and_cons(...)``      the notes' pros and cons of each, with this run's numbers
==========================  ==================================================================

**The theory** the weather app is checked against. Forecasts come at random
moments, independently of each other, λ a second on average (a *Poisson
process*, what :func:`labkit.feed.poisson` draws); a phone polls every ``T``
seconds from a moment unrelated to them. Then:

* a forecast waits for the phone's next poll, which is anywhere in the next
  ``T`` seconds with equal chance: the delay is spread evenly over
  ``[0, T]``, its mean ``T / 2``;
* a poll comes back empty when no forecast came in the ``T`` seconds since
  the poll before: that happens with probability ``e^(-λT)``, the share of
  wasted polls to expect;
* a phone makes ``1 / (λT)`` polls per forecast.

For evenly spaced forecasts rarer than the polls (λT < 1) the wasted share
would be ``1 - λT`` instead: exactly one poll per forecast brings it.

Thread-safety: call them from a cell or a script, never from the lab loop
(they wait for the loop).
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from labkit import lab, techniques
from labkit.clock import Clock
from labkit.errors import LabkitError
from labkit.experiments.start import client_session
from labkit.feed import Event, Feed, play, poisson
from labkit.hub import Hub
from labkit.progress import Progress
from labkit.push.polling import (LongPollingClient, PollingClient, PollingServer,
                                 serve_long_polling, serve_polling)
from labkit.push.scale import _until, scaling
from labkit.push.sse import SSEClient, serve_sse
from labkit.trace import Record, Trace

__all__ = ["PAGE", "AskAndWait", "ask_and_wait", "every", "Interval", "Weather", "weather_app",
           "CHAT", "Chat", "chat", "SameEvents", "same_events", "AtScale", "clients_at_scale",
           "pros_and_cons"]

PAGE = "weather page"
"""The client of :func:`ask_and_wait`."""


# -- the problem: plain request and response ---------------------------------------------


@dataclass(frozen=True)
class AskAndWait:
    """What :func:`ask_and_wait` saw (times are ``time.monotonic()``)."""

    trace: Trace
    news: float
    """When the server got the new forecast."""
    asked: tuple[float, ...]
    """When each of the page's requests reached the server."""
    learned: float
    """When the page had the new forecast."""

    @property
    def waited(self) -> float:
        """Seconds from the news reaching the server to the page having it."""
        return self.learned - self.news

    def to_page_meanwhile(self) -> list[Record]:
        """The page's records from the news until its next request: there are none."""
        after = min(t for t in self.asked if t > self.news)
        return [r for r in self.trace.records(client=PAGE) if self.news < r.t < after]

    def figure(self):
        """The exchange as a timeline: the news (a star) waits for the next request."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, ax = plt.subplots(figsize=(10, 2.4), layout="constrained")
        plots.timeline(self.trace, ax=ax, start=self.trace.t0,
                       title=f"Plain HTTP: news at the server, then {self.waited:.1f} s of "
                             f"silence until the page asks again")
        return fig


def ask_and_wait(*, news_at: float = 0.25, ask_again_at: float = 0.75,
                 seed: int = 6) -> AskAndWait:
    """A page loads a forecast; the server gets a new one; the page learns of it when it asks.

    The page asks at once (``GET /forecast?after=0``: the current forecast
    comes back). ``news_at`` seconds later the server has a new forecast and
    no way to send it: the response is over, and nobody is asking. The page
    asks again at ``ask_again_at`` seconds, and only then learns of it. The
    server is a :class:`~labkit.push.polling.PollingServer` recorded as
    technique ``http``: request and response, nothing more.
    """
    hub, feed = Hub(name="forecasts"), Feed(seed=seed, prefix="wx")
    api = PollingServer(hub, path="/forecast")
    api.technique = "http"
    server = lab.serve(api)
    trace, asked, cursor = server.trace, [], 0
    try:
        with client_session(PAGE) as session:
            hub.publish(feed.make("forecast", {"city": "Pune", "sky": "cloudy", "temp": 27}))
            start = time.monotonic()
            for at in (0.0, ask_again_at):
                time.sleep(max(0.0, start + at - time.monotonic()))
                answer = session.get(server.endpoint_url, params={"after": cursor}, timeout=5)
                answer.raise_for_status()
                asked.append(trace.records(kind="request")[-1].t)
                for item in answer.json()["items"]:
                    trace.delivered(Event.from_dict(item["data"]), technique="http",
                                    client=PAGE)
                cursor = answer.json()["next"]
                if len(asked) == 1:
                    time.sleep(max(0.0, start + news_at - time.monotonic()))
                    news = hub.publish(feed.make("forecast", {"city": "Pune", "sky": "rain",
                                                              "temp": 24})).data
    finally:
        server.stop()
    learned = next(r.t for r in trace.records(kind="event") if r.event_id == news.id)
    return AskAndWait(trace, news.created, tuple(asked), learned)


# -- polling: the weather app -------------------------------------------------------------


def every(minutes: float) -> str:
    """The technique of phones refreshing every ``minutes``: ``"polling: every 10 min"``."""
    return f"polling: every {minutes:g} min"


class Interval(NamedTuple):
    """The phones of :func:`weather_app` that refresh every ``minutes``, and the theory.

    Times are simulated seconds; λ is :attr:`rate`, ``T`` :attr:`seconds`.
    """

    minutes: float
    phones: int
    polls: int
    """Polls answered while the forecasts came (all these phones)."""
    empty: int
    """Of those, the polls that brought nothing new."""
    skipped: int
    """Ticks in that window at which no poll went out: the poll before overran them (a
    phone never bursts to catch up). 0 on an idle machine; a busy one can stall the lab loop
    past a tick, which on a compressed clock is tens of milliseconds."""
    delays: tuple[float, ...]
    """From each forecast to each phone having it (every phone, every forecast)."""
    updates: int
    """Forecasts that came."""
    hours: float
    """How long they came for."""

    @property
    def seconds(self) -> float:
        """``T``: seconds between two polls."""
        return self.minutes * 60

    @property
    def rate(self) -> float:
        """λ as it came: forecasts per second over the window."""
        return self.updates / (self.hours * 3600)

    @property
    def wasted(self) -> float:
        """Share of polls that brought nothing new."""
        return self.empty / self.polls

    @property
    def expected_wasted(self) -> float:
        """The theory: ``e^(-λT)``, the chance that no forecast came in one interval."""
        return math.exp(-self.rate * self.seconds)

    @property
    def polls_per_update(self) -> float:
        """Polls each phone made per forecast."""
        return self.polls / self.phones / self.updates

    @property
    def due_per_update(self) -> float:
        """Polls each phone was due to make per forecast: those it made and the ticks it
        :attr:`skipped`; what the theory's ``1 / (λT)`` counts."""
        return (self.polls + self.skipped) / self.phones / self.updates

    @property
    def expected_polls_per_update(self) -> float:
        """The theory: ``1 / (λT)``."""
        return 1 / (self.rate * self.seconds)

    @property
    def mean_delay(self) -> float:
        return statistics.fmean(self.delays)

    @property
    def standard_error(self) -> float:
        """How far the mean of this many delays strays from ``T / 2`` by chance, typically:
        ``T / sqrt(12 n)`` (an even spread over ``[0, T]`` has deviation ``T / sqrt(12)``)."""
        return self.seconds / math.sqrt(12 * len(self.delays))


@dataclass(frozen=True)
class Weather:
    """What :func:`weather_app` measured; simulated time unless a name says otherwise."""

    trace: Trace
    speedup: float
    hours: float
    updates: int
    """Forecasts published."""
    intervals: dict[float, Interval]
    """By minutes between two refreshes."""
    start: float
    """``time.monotonic()`` when the forecasts started."""
    story: float
    """The refresh interval of the notes' app (minutes); its ``phone 1`` is drawn."""
    round_trip: float
    """Median real seconds from a poll reaching the server to the phone having its news."""

    @property
    def slack(self) -> float:
        """What loopback adds to every delay, in simulated seconds: two legs of a round trip,
        stretched by the clock (:attr:`round_trip` is one leg and the server's part)."""
        return 2 * self.round_trip * self.speedup

    def polls_of(self, phone: str = "phone 1") -> list[Record]:
        """The answers ``phone`` (of the :attr:`story` interval) got while forecasts came."""
        end = self.start + self.hours * 3600 / self.speedup
        return [r for r in self.trace.records(kind="response", technique=every(self.story),
                                              client=phone) if self.start <= r.t <= end]

    def missed_polls(self) -> int:
        """Deliveries that missed a poll: the phone got an empty answer after the forecast came
        and before it had it. 0: every forecast came with the phone's next poll, however late."""
        empty: dict[tuple[str, str], list[float]] = {}
        for r in self.trace.records(kind="response"):
            if r.events == 0:
                empty.setdefault((r.technique, r.client), []).append(r.t)
        return sum(any(r.t - r.latency < t < r.t for t in empty.get((r.technique, r.client), ()))
                   for r in self.trace.records(kind="event"))

    def sim_hours(self, t: float) -> float:
        """Simulated hours since the forecasts started, at monotonic time ``t``."""
        return (t - self.start) * self.speedup / 3600

    def table(self) -> str:
        """Each refresh interval's measurements beside the theory (Markdown)."""
        lines = ["| refresh every | polls | ticks skipped | empty | e^(-λT) | polls per forecast "
                 "| 1/(λT) | mean delay | T/2 | shortest ... longest delay |", "|---" * 10 + "|"]
        for i in self.intervals.values():
            lines.append(
                f"| {i.minutes:g} min | {i.polls} | {i.skipped} | {i.wasted:.2f} | "
                f"{i.expected_wasted:.2f} | "
                f"{i.polls_per_update:.1f} | {i.expected_polls_per_update:.1f} | "
                f"{i.mean_delay / 60:.1f} min | {i.minutes / 2:g} min | "
                f"{min(i.delays) / 60:.1f} ... {max(i.delays) / 60:.1f} min |")
        return "\n".join(lines)

    def figure(self):
        """The notes' app: its timeline in simulated hours, how stale it was, and the delays
        of every phone refreshing every :attr:`story` minutes beside the theory."""
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter

        from labkit import plots
        technique = every(self.story)
        fig = plt.figure(figsize=(12, 6.6), layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.3])
        ax = top.subplots()
        plots.timeline(self.trace, ax=ax, techniques=[technique], clients=["phone 1"],
                       start=self.start, end=self.start + self.hours * 3600 / self.speedup,
                       roles={"phone 1": "weather app"},
                       title=f"The weather app refreshing every {self.story:g} minutes: "
                             f"{self.updates} forecasts in {self.hours:g} hours")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x * self.speedup / 3600:g}"))
        ax.set_xlabel("simulated hours")
        stale, spread = bottom.subplots(1, 2)
        self._draw_staleness(stale, technique)
        self._draw_delays(spread, self.intervals[self.story])
        return fig

    def _draw_staleness(self, ax, technique: str) -> None:
        """A bar per forecast, at the hour it came: the minutes until phone 1 had it."""
        colour = techniques.colour(technique)
        came, behind = [], []
        for r in self.trace.records(kind="event", technique=technique, client="phone 1"):
            came.append(self.sim_hours(r.t - r.latency))
            behind.append(r.latency * self.speedup / 60)
        ax.bar(came, behind, width=self.hours / 60, color=colour, edgecolor="k",
               linewidth=0.5, label="a forecast: minutes until the app showed it")
        ax.plot(came, [0] * len(came), linestyle="none", marker="*", color="goldenrod",
                markersize=10, clip_on=False, label="when it came")
        ax.axhline(self.story, color="0.3", linestyle=":", linewidth=1,
                   label=f"one interval ({self.story:g} min)")
        ax.axhline(self.story / 2, color="0.3", linestyle="--", linewidth=1,
                   label=f"half an interval ({self.story / 2:g} min)")
        ax.set_xlim(0, self.hours)
        ax.set_ylim(0, self.story * 1.45)
        ax.set_xlabel("simulated hours")
        ax.set_ylabel("minutes the app was behind")
        ax.set_title("Staleness: how long each forecast waited for the app's next poll")
        ax.legend(fontsize="small", loc="upper left", ncol=2)

    @staticmethod
    def _draw_delays(ax, interval: Interval) -> None:
        """A histogram of delays over ``[0, T]`` against the flat density of the theory."""
        minutes = [d / 60 for d in interval.delays]
        colour = techniques.colour(every(interval.minutes))
        ax.hist(minutes, bins=6, range=(0, interval.minutes * 1.2), density=True,
                color=colour, alpha=0.6, edgecolor="white",
                label=f"measured ({len(minutes)} deliveries)")
        ax.hlines(1 / interval.minutes, 0, interval.minutes, color="k", linestyle="--",
                  label="theory: evenly spread over [0, T]")
        ax.axvline(interval.mean_delay / 60, color=colour, linewidth=2.5,
                   label=f"measured mean: {interval.mean_delay / 60:.1f} min")
        ax.axvline(interval.minutes / 2, color="k", linestyle=":",
                   label=f"theory: T/2 = {interval.minutes / 2:g} min")
        ax.set_ylim(0, 2.4 / interval.minutes)
        ax.set_xlabel("minutes from a forecast to a phone having it")
        ax.set_ylabel("share of deliveries per minute")
        ax.set_title(f"Delays, {interval.phones} phones refreshing every "
                     f"{interval.minutes:g} min")
        ax.legend(fontsize="small", loc="upper center", ncol=2)

    def tradeoff_figure(self):
        """Mean delay against polls per forecast, and the wasted share against λT: every
        refresh interval measured (dots), the theory (lines)."""
        import matplotlib.pyplot as plt
        import numpy as np

        from labkit import plots
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
        rows = list(self.intervals.values())
        rate = rows[0].rate
        polls = np.geomspace(0.6, max(r.polls_per_update for r in rows) * 1.6, 100)
        left.plot(polls, 1 / (2 * rate * polls) / 60, color="k", linestyle="--",
                  label="theory: mean delay T/2 = 1 / (2λ × polls per forecast)")
        right_x = np.linspace(0, max(r.rate * r.seconds for r in rows) * 1.15, 100)
        right.plot(right_x, np.exp(-right_x), color="k", linestyle="--",
                   label="theory, forecasts at random: e^(-λT)")
        right.plot(right_x, np.clip(1 - right_x, 0, 1), color="0.5", linestyle=":",
                   label="theory, evenly spaced forecasts: 1 - λT")
        for r in rows:
            colour, label = techniques.colour(every(r.minutes)), f"every {r.minutes:g} min"
            mean, lo, hi = r.mean_delay / 60, min(r.delays) / 60, max(r.delays) / 60
            left.errorbar(r.polls_per_update, mean, yerr=[[mean - lo], [hi - mean]], fmt="o",
                          color=colour, markeredgecolor="k", capsize=4)
            left.annotate(label, (r.polls_per_update, mean), xytext=(7, 3),
                          textcoords="offset points", fontsize="small")
            right.plot(r.rate * r.seconds, r.wasted, "o", color=colour, markeredgecolor="k")
            right.annotate(label, (r.rate * r.seconds, r.wasted), xytext=(7, 3),
                           textcoords="offset points", fontsize="small")
        left.set_xscale("log")
        plots.plain_log_ticks(left.xaxis, subs=(1, 2, 5))
        left.set_xlabel("polls per forecast, each phone (log scale)")
        left.set_ylabel("minutes from a forecast to a phone")
        left.set_title("Faster polling: shorter delays, more requests\n"
                       "(dot: mean delay; bar: shortest to longest)")
        left.legend(fontsize="small")
        right.axhline(0.5, color="0.75", linewidth=0.8)
        right.axvline(math.log(2), color="0.75", linewidth=0.8)
        right.text(math.log(2), 0.03, " λT = ln 2", fontsize="small", color="0.4")
        right.set_ylim(0, 1.02)
        right.set_xlabel("λT: forecasts expected per interval")
        right.set_ylabel("share of polls that came back empty")
        right.set_title("Wasted polls: measured (dots) and the theory (lines)")
        right.legend(fontsize="small", loc="upper right")
        return fig


def weather_app(*, hours: float = 12, intervals: tuple[float, ...] = (10, 20, 30, 60),
                phones: int = 4, per_hour: float = 1.0, speedup: float = 14400,
                story: float = 10, seed: int = 6) -> Weather:
    """The notes' weather app: phones refresh every few minutes; forecasts come about hourly.

    A forecast service (a :class:`~labkit.push.polling.PollingServer` per
    refresh interval, all reading one hub) gets new forecasts at random
    moments, ``per_hour`` an hour on average (seeded Poisson) for ``hours``
    simulated hours. ``phones`` phones refresh every ``m`` minutes for each
    ``m`` in ``intervals``, each started at a seeded random moment of its
    interval, as real phones are. Everything runs on a
    :class:`~labkit.clock.Clock` ``speedup`` times faster than real time (at
    14,400 an hour takes a quarter of a second, 12 hours about 3 s), and runs
    on until every phone has every forecast. Each interval is a technique
    variant (``"polling: every 10 min"``); ``story`` is the notes' interval,
    whose first phone the figure draws.
    """
    if story not in intervals:
        raise LabkitError(f"story ({story!r}) must be one of the intervals {intervals!r}")
    clock, rng = Clock(speedup), random.Random(seed)
    hub, feed, trace = Hub(name="forecasts"), Feed(seed=seed, prefix="wx"), Trace()
    schedule = poisson(per_hour / 3600, duration=hours * 3600, seed=seed)
    with contextlib.ExitStack() as stack:
        phones_of = {}
        for minutes in intervals:
            api = PollingServer(hub, path="/forecast")
            api.technique = every(minutes)
            server = stack.enter_context(lab.serve(api, trace=trace))
            phones_of[minutes] = [stack.enter_context(_phone(
                server.endpoint_url, minutes, k, clock, rng, trace)) for k in range(phones)]
        start = time.monotonic()
        playing = lab.submit(play(feed, schedule, hub.publish, clock=clock, type="forecast",
                                  payload={"city": "Pune"}))
        with Progress(math.ceil(hours), f"{hours:g} simulated hours of forecasts") as bar:
            while not playing.done() and time.monotonic() < start + clock.to_real(
                    hours * 3600) + 5:
                bar.update(int(clock.to_sim(time.monotonic() - start) / 3600))
                time.sleep(0.05)
            playing.result(timeout=5)
            for phone in (p for group in phones_of.values() for p in group):
                phone.wait_for(len(schedule), timeout=clock.to_real(max(intervals) * 60) + 5)
            bar.update(bar.total)
    end = start + clock.to_real(hours * 3600)
    return Weather(trace, speedup, hours, len(schedule),
                   {m: _interval(trace, m, phones_of[m], start, end, clock, len(schedule),
                                 hours) for m in intervals}, start, story, _round_trip(trace))


def _phone(url: str, minutes: float, k: int, clock: Clock, rng: random.Random,
           trace: Trace) -> PollingClient:
    phone = PollingClient(url, interval=minutes * 60, clock=clock, after=0, trace=trace,
                          phase=rng.uniform(0, minutes * 60), name=f"phone {k + 1}")
    phone.technique = every(minutes)
    return phone


def _interval(trace: Trace, minutes: float, group: list[PollingClient], start: float,
              end: float, clock: Clock, updates: int, hours: float) -> Interval:
    technique = every(minutes)
    polls = [r for r in trace.records(kind="response", technique=technique)
             if start <= r.t <= end]
    skipped = sum(start <= t <= end for phone in group for t in phone.skipped)
    delays = tuple(clock.to_sim(r.latency) for r in trace.records(kind="event",
                                                                  technique=technique))
    return Interval(minutes, len(group), len(polls), sum(1 for r in polls if r.events == 0),
                    skipped, delays, updates, hours)


def _round_trip(trace: Trace) -> float:
    """Median real seconds from a poll that brought news reaching the server to the phone
    having that news (the answer's way back, and the server's part)."""
    asked: dict[tuple[str, str], float] = {}
    legs = []
    for r in trace.records():
        key = (r.technique, r.client)
        if r.kind == "request":
            asked[key] = r.t
        elif r.kind == "event" and key in asked:
            legs.append(r.t - asked[key])
    return statistics.median(legs)


# -- long polling: a chat ------------------------------------------------------------------

CHAT = (("carla", "Anyone up for lunch?"), ("dev", "Sure, 1 pm?"),
        ("carla", "The usual place?"), ("dev", "yes"), ("dev", "booking"), ("dev", "a table"),
        ("dev", "for four"), ("dev", "done"), ("carla", "See you there!"))
"""Who says what in :func:`chat`, in order (the burst is the short lines)."""


@dataclass(frozen=True)
class Chat:
    """What :func:`chat` saw: ``ana`` reads at once, ``ben`` on a slow phone."""

    trace: Trace
    sent: tuple[Event, ...]
    """Every message, in the order it was posted."""
    burst: tuple[Event, ...]
    """The messages posted while ben was between two requests."""
    held_at_burst: tuple[int, ...]
    """How many requests the server held as each burst message came."""
    pause: float
    """Seconds ben's phone spends on an answer before it asks again."""
    received: dict[str, tuple[str, ...]] = field(repr=False)
    """Each member's messages (event ids), in the order they arrived."""

    def latencies(self, member: str) -> list[float]:
        """Seconds from each message being posted to ``member`` having it."""
        return [r.latency for r in self.trace.records(kind="event", client=member)]

    def p50(self, member: str) -> float:
        """``member``'s median latency, in seconds."""
        return statistics.median(self.latencies(member))

    def exchanges(self, member: str) -> list[tuple[Record, Record]]:
        """``member``'s requests paired with their responses, in order."""
        records = self.trace.records(client=member)
        requests = [r for r in records if r.kind == "request"]
        responses = [r for r in records if r.kind == "response"]
        return list(zip(requests, responses))

    def burst_answer(self) -> tuple[Record, Record, Record]:
        """Ben's answer before the burst, and the request and answer that carried it."""
        pairs = self.exchanges("ben")
        first = min(e.created for e in self.burst)
        k = next(k for k, (_, answer) in enumerate(pairs) if answer.t > first)
        return pairs[k - 1][1], pairs[k][0], pairs[k][1]

    def left(self) -> Record:
        """Ana's last response: the request she left while the server held it."""
        return self.exchanges("ana")[-1][1]

    def stopped(self) -> Record:
        """Ben's last response: the held request the stopping server answered."""
        return self.exchanges("ben")[-1][1]

    def figure(self):
        """The chat as a timeline: held requests (pale bars) that end when a message comes."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, ax = plt.subplots(figsize=(12, 3.3), layout="constrained")
        plots.timeline(self.trace, ax=ax, start=self.trace.t0,
                       roles={"ana": "chat page", "ben": "slow phone"},
                       title="A chat over long polling: each held request ends when a message "
                             "comes; ben's phone is slow, so a burst waits for his next request")
        return fig


def chat(*, pause: float = 0.3, burst: int = 5, seed: int = 6) -> Chat:
    """The notes' simple chat: two members long-poll a chat room while others post to it.

    ``ana`` asks again as soon as an answer comes; ``ben``'s phone spends
    ``pause`` seconds on each answer first. Three messages come while both
    are waiting; then, just after ben's answer, ``burst`` short messages
    come 20 ms apart, all while ben has no request at the server; then ana
    leaves (her held request is abandoned), one more message comes, and the
    server stops while ben's request is held (it answers 503).
    """
    if not 1 <= burst <= len(CHAT) - 4 or burst * 0.02 >= pause / 2:
        raise LabkitError(f"burst is 1 to {len(CHAT) - 4} messages, posted 20 ms apart within "
                          f"the first half of ben's pause ({pause!r} s)")
    hub, feed = Hub(name="chat room"), Feed(seed=seed, prefix="msg")
    server = serve_long_polling(hub)
    trace, lines, sent, held = server.trace, iter(CHAT[:3 + burst] + CHAT[-1:]), [], []
    ana = LongPollingClient(server.endpoint_url, name="ana", trace=trace)
    ben = LongPollingClient(server.endpoint_url, name="ben", pause=pause, trace=trace)

    def post() -> None:
        who, text = next(lines)
        sent.append(hub.publish(feed.make("message", {"from": who, "text": text})).data)
        bar.advance()

    def waiting(count: int) -> None:
        _until(lambda: server.component.held == count, 5,
               lambda: f"the server holds {server.component.held} requests, not {count}")

    with Progress(4 + burst, "a chat over long polling: messages posted") as bar:
        try:
            for member in (ana, ben):
                member.start()
            for count in range(3):
                for member in (ana, ben):
                    member.wait_for(count)
                waiting(2)  # both asked again: ben's phone is done with the last answer
                time.sleep(0.1)
                post()
            ben.wait_for(3)
            waiting(1)  # ana asks again at once; ben's phone is busy with the answer
            for _ in range(burst):
                held.append(server.component.held)
                post()
                time.sleep(0.02)
            ben.wait_for(3 + burst)
            waiting(2)
            time.sleep(0.15)
            ana.stop()  # ana closes the chat while her request is held
            post()
            ben.wait_for(4 + burst)
            waiting(1)
            time.sleep(0.15)
            server.stop()  # while ben's request is held
        finally:
            ana.stop()
            ben.stop()
            server.stop()
    received = {m.name: tuple(r.data.id for r in m.received) for m in (ana, ben)}
    return Chat(trace, tuple(sent), tuple(sent[3:3 + burst]), tuple(held), pause, received)


# -- the same events, three ways -----------------------------------------------------------


@dataclass(frozen=True)
class SameEvents:
    """What :func:`same_events` measured."""

    trace: Trace
    events: int
    interval: float
    """Seconds between two polls of the polling client."""
    window: tuple[float, float]
    """``time.monotonic()`` when the clients were ready and when the last one had it all."""

    def requests(self, technique: str) -> int:
        return self.trace.count("request", technique)

    def p50(self, technique: str) -> float:
        """Median seconds from an event to the client having it."""
        return self.trace.latency_percentiles(technique, (50,))[50]

    def bytes_per_event(self, technique: str) -> float:
        return self.trace.bytes_per_event(technique)

    def figure(self):
        """Swimlanes of polling and long polling for the same events; requests; bytes per
        event, SSE's beside them."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig = plt.figure(figsize=(12, 7.6), layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.3, 1])
        lanes = top.subplots(2, 1, sharex=True)
        start, end = self.window
        for ax, technique, title in (
                (lanes[0], "polling", f"Polling every {self.interval * 1000:.0f} ms: most "
                                      f"answers bring nothing (faded)"),
                (lanes[1], "long-polling", "Long polling: each request is held (pale bar) "
                                           "until an event comes")):
            plots.timeline(self.trace, ax=ax, techniques=[technique], start=start,
                           end=end, title=title)
        lanes[0].set_xlabel("")
        left, right = bottom.subplots(1, 2)
        plots.request_counts(self.trace, ax=left, techniques=["polling", "long-polling", "sse"],
                             title=f"Requests to deliver the same {self.events} events")
        plots.bytes_chart(self.trace, ax=right, per_event=True,
                          techniques=["polling", "long-polling", "sse"],
                          title="Bytes on the wire per delivered event")
        return fig


def same_events(*, events: int = 5, rate: float = 3.0, interval: float = 0.05,
                seed: int = 6) -> SameEvents:
    """The same ``events`` seeded events (``rate`` a second, at random) reach three clients.

    One hub feeds a polling server (its client asks every ``interval`` s),
    a long-polling server and an SSE stream (lesson 07), all recording into
    one trace, so requests, bytes and latencies compare like for like.
    """
    hub, feed, trace = Hub(name="news"), Feed(seed=seed), Trace()
    with contextlib.ExitStack() as stack:
        polling, long_polling, sse = (stack.enter_context(serve(hub, trace=trace)) for serve in
                                      (serve_polling, serve_long_polling, serve_sse))
        clients = [stack.enter_context(client) for client in (
            PollingClient(polling.endpoint_url, interval=interval, name="poller", trace=trace),
            LongPollingClient(long_polling.endpoint_url, name="long-poller", trace=trace),
            SSEClient(sse.endpoint_url, name="sse-page", trace=trace))]
        start = time.monotonic()
        playing = lab.submit(play(feed, poisson(rate, count=events, seed=seed), hub.publish))
        with Progress(events, "the same events to three clients") as bar:
            for count in range(1, events + 1):
                for client in clients:
                    client.wait_for(count, timeout=events / rate + 10)
                bar.update(count)
        playing.result(timeout=5)
        end = time.monotonic()
    return SameEvents(trace, events, interval, (start, end))


# -- clients at scale ----------------------------------------------------------------------


@dataclass(frozen=True)
class AtScale:
    """What :func:`clients_at_scale` measured: one :meth:`~labkit.push.scale.ScaleResult.row`
    per technique and number of clients."""

    rows: dict[tuple[str, int], dict]
    clients: tuple[int, ...]
    events: int
    rate: float
    interval: float
    load: str

    def get(self, technique: str, what: str) -> list:
        """``what`` (a column of the rows) for ``technique``, one value per number of clients."""
        return [self.rows[(technique, n)][what] for n in self.clients]

    def table(self) -> str:
        """The main columns, one row per run (Markdown)."""
        columns = ("requests", "bytes", "connections", "held", "server CPU (s)",
                   "memory (bytes)", "p50 latency (s)")
        lines = ["| technique | clients | " + " | ".join(columns) + " |",
                 "|---" * (len(columns) + 2) + "|"]
        for (technique, count), row in self.rows.items():
            cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else f"{row[c]:,}"
                     if isinstance(row[c], int) else str(row[c]) for c in columns]
            lines.append(f"| {techniques.label(technique)} | {count:,} | " + " | ".join(cells)
                         + " |")
        return "\n".join(lines)

    def figure(self):
        """Eight panels against the number of clients (log scales): requests, bytes on the
        wire, open connections, held requests, server CPU, CPU per delivery, server memory,
        p50 latency."""
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
        fig, axes = plt.subplots(2, 4, figsize=(14, 6.6), layout="constrained")
        panels = (("requests", "requests", 1), ("bytes", "bytes on the wire", 1),
                  ("connections", "open TCP connections", 1),
                  ("held", "requests held open", 1), ("server CPU (s)", "server CPU (s)", 1),
                  ("CPU/event (µs)", "server CPU per delivery (µs)", 1),
                  ("memory (bytes)", "server memory (KB)", 1 / 1024),
                  ("p50 latency (s)", "p50 latency (ms)", 1000))
        for ax, (column, title, factor) in zip(axes.flat, panels):
            for technique, marker, size in (("polling", "o", 9), ("long-polling", "s", 5)):
                values = [math.nan if v is None else v * factor
                          for v in self.get(technique, column)]
                ax.plot(self.clients, values, marker=marker, markersize=size,
                        color=techniques.colour(technique), label=techniques.label(technique))
            ax.set_xscale("log")
            if column == "held":
                ax.set_yscale("symlog", linthresh=1)
                ax.set_ylim(bottom=-0.3)
            else:
                ax.set_yscale("log")
            if column != "held":  # ticks at 1, 2, 5 x 10^k, in plain numbers: quick to draw
                ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
                axis.set_minor_locator(NullLocator())
            ax.set_title(title)
            ax.set_xlabel("clients")
            ax.grid(alpha=0.3)
        axes.flat[0].legend()
        where = "a separate process" if self.load == "process" else "the lab loop"
        fig.suptitle(f"{self.events} events at {self.rate:g} a second, polls every "
                     f"{self.interval:g} s; the clients run in {where}")
        return fig


def clients_at_scale(clients: tuple[int, ...] = (1, 10, 100), *, events: int = 6,
                     rate: float = 24.0, interval: float = 0.25, load: str = "process",
                     seed: int = 6) -> AtScale:
    """1, 10 and 100 simulated clients of polling, then of long polling, on the same events.

    Each run is :func:`labkit.push.scale.scaling` with one number of clients:
    ``events`` evenly spaced events at ``rate`` a second, polling clients
    asking every ``interval`` s. ``load="process"`` runs the clients in a
    separate process, so server CPU and memory are the server's alone.
    """
    rows = {}
    with Progress(2 * len(clients), "polling, then long polling, at scale") as bar:
        for technique in ("polling", "long-polling"):
            for count in clients:
                rows[(technique, count)], = scaling(
                    technique, (count,), events=events, rate=rate, interval=interval,
                    schedule="fixed", load=load, seed=seed)
                bar.advance()
    return AtScale(rows, tuple(clients), events, rate, interval, load)


# -- the notes' pros and cons -------------------------------------------------------------


def pros_and_cons(weather: Weather, chat_run: Chat, same: SameEvents, scale: AtScale) -> str:
    """The lecture notes' pros and cons of polling and long polling, each with this run's
    numbers (Markdown)."""
    story = weather.intervals[weather.story]
    most, poll_rows = max(scale.clients), scale.rows[("polling", max(scale.clients))]
    lp_rows = scale.rows[("long-polling", most)]
    rows = [
        ("polling", "pro: simple to implement",
         f"the server keeps nothing per client between polls: **{poll_rows['held']}** requests "
         f"held with {most} clients; each poll is one GET with a cursor", "true"),
        ("polling", "con: server may not have updates → wasted requests",
         f"**{story.wasted:.0%}** of the weather app's polls came back empty (theory "
         f"e^(-λT) = {story.expected_wasted:.0%})", "true"),
        ("polling", "con: scales poorly",
         f"{most} clients made **{poll_rows['requests']:,}** requests in "
         f"{poll_rows['seconds']:.1f} s for {scale.events} events: the cost is clients ÷ "
         f"interval, news or not", "true"),
        ("long polling", "pro: efficient, reduces wasted requests",
         f"**{same.requests('long-polling')}** requests for {same.events} events against "
         f"polling's **{same.requests('polling')}**, each in ms; but with events faster than the "
         f"polls ({scale.rate:g}/s, polls every {scale.interval:g} s) long polling made "
         f"**{lp_rows['requests']:,}** to polling's {poll_rows['requests']:,}", "partly"),
        ("long polling", "con: server must keep many open connections",
         f"**{lp_rows['held']}** requests held for {most} clients, "
         f"{lp_rows['memory (bytes)'] / most / 1024:.0f} KB of server memory each; with "
         f"keep-alive polling kept **{poll_rows['connections']}** connections open too",
         "partly"),
        ("long polling", "con: still a hacky way to simulate push",
         f"every message is a whole HTTP exchange: **{same.bytes_per_event('long-polling'):.0f} "
         f"B** per event against SSE's **{same.bytes_per_event('sse'):.0f} B**; ben's burst "
         f"waited up to {max(chat_run.latencies('ben')) * 1000:.0f} ms for his next request",
         "true"),
    ]
    lines = ["| technique | the notes say | this run measured | verdict |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
