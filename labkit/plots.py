"""Charts that compare polling, long polling, SSE, Web Push and webhooks.

Every chart reads a :class:`labkit.trace.Trace`, draws on one matplotlib
Axes and returns it: pass ``ax=`` to place the chart in your own figure, or
leave it out to get a new figure. Times on the x axis are seconds since
``trace.t0`` (or since the timeline's ``start``). A technique has the same colour in every chart
(:func:`technique_color`), so a glance across charts links them up.

How to read each chart:

:func:`timeline`
    A swimlane (sequence) diagram, one row per participant: on top, stars
    when events happen; then per technique its serving side (receiver,
    server, push service) and one row per client. A request is an arrow
    leaning up, its answer an arrow leaning back down, always a little
    later, so even a sub-millisecond loopback exchange shows both; a faded
    answer brought nothing new. A wide pale bar is a request the server held
    open (long polling); a narrow dark bar a connection open from
    ``connect`` to ``disconnect`` (SSE, a push subscription). Diamonds are
    events reaching whoever learns of them, joined by a dotted line to the
    star of when they happened: the length of that line is the latency.
    ``o`` marks a retry, a red ``x`` a drop. Polling looks like a comb of
    arrows that mostly bring nothing; long polling like pale bars that end
    when an event arrives; SSE like one dark bar with diamonds on it.
:func:`latency_cdf`
    For each technique, the share of events (y) that arrived within a given
    latency (x). Further left and steeper is better; a line that reaches 1.0
    only far to the right has a long tail. The legend gives each median
    (p50).
:func:`request_counts`
    How many requests each technique made to deliver the same events.
:func:`bytes_chart`
    Bytes on the wire (requests and responses, headers included), in total
    or per delivered event: the price of asking when nothing is new.
:func:`rate_over_time`
    Records of one kind per time bin, such as the load a webhook receiver
    sees. Synchronised retries show up as tall spikes at the same moments,
    jittered retries as a low, even band. Call it several times on one Axes
    to overlay runs.
:func:`dashboard`
    The timeline, latency CDF, request counts and bytes in one 2x2 figure.

Example::

    from labkit.plots import dashboard, timeline
    timeline(trace, techniques=["long-polling"])
    dashboard(trace)
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, StepPatch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from labkit import techniques as _table
from labkit.errors import LabkitError, RecordKindError
from labkit.trace import KINDS, Record, Trace

__all__ = [
    "technique_color",
    "timeline",
    "latency_cdf",
    "request_counts",
    "bytes_chart",
    "rate_over_time",
    "dashboard",
    "plain_log_ticks",
]

_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6}
_HATCHES = ("", "//", "..", "xx", "\\\\", "++")
_LINESTYLES = ("-", "--", ":", "-.")


def technique_color(technique: str) -> str:
    """The colour of ``technique`` in every chart, from :mod:`labkit.techniques`.

    An unknown name raises :class:`~labkit.errors.UnknownTechniqueError`
    rather than quietly getting a colour of its own.
    """
    return _table.colour(technique)


def plain_log_ticks(axis, *, subs: tuple[float, ...] = (1.0,)) -> None:
    """Label a log-scaled ``axis`` (``ax.xaxis`` or ``ax.yaxis``) in plain numbers.

    Ticks at ``subs`` times each power of ten (``(1, 2, 5)`` for a short
    range), labelled ``1``, ``20``, ``0.005``, ``1,000``, and no minor ticks.
    Matplotlib's own log labels (``10^3``) are typeset as math, which makes a
    chart of several log panels take a second or more to draw.
    """
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
    axis.set_minor_locator(NullLocator())


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _no_data(ax: Axes, note: str = "no data") -> None:
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center",
            color="0.4", fontsize="large")


def _techniques(trace: Trace, techniques: Iterable[str] | None) -> list[str]:
    return trace.techniques() if techniques is None else list(techniques)


def _tick_labels(techs: list[str]) -> list[str]:
    """Short labels for bars, wrapped so that long variant names never overlap."""
    return [textwrap.fill(_table.get(t).tag, 14) for t in techs]


def _known(name: str) -> bool:
    """True if ``name`` is in the technique table (a dict of runs may use free labels)."""
    try:
        _table.get(name)
    except LabkitError:
        return False
    return True


def _plural(kind: str) -> str:
    return "retries" if kind == "retry" else f"{kind}s"


# -- timeline --------------------------------------------------------------


class _Lanes:
    """The rows of a timeline: the event source on top, then per technique its
    serving side and each of its clients, named for the part they play."""

    def __init__(self, trace: Trace, techs: list[str], clients: Sequence[str] | None,
                 source: bool, roles: Mapping[str, str]):
        self.rows: dict[tuple[str, str], int] = {}  # (technique, client) -> row; "" = server
        self.labels: list[str] = ["events happen"] if source else []
        self.techs = techs
        for tech in techs:
            row = _table.get(tech)
            self.rows[(tech, "")] = len(self.labels)
            self.labels.append(f"{row.server} ({row.tag})")
            present = [c for c in trace.clients(tech) if c]
            for client in present if clients is None else [c for c in clients if c in present]:
                self.rows[(tech, client)] = len(self.labels)
                self.labels.append(f"{client} ({roles.get(client, row.client)})")

    def of(self, record: Record) -> int | None:
        return self.rows.get((record.technique, record.client))


class _Window:
    """Which stretch of the trace is drawn, and how far apart an answer is put from
    its request so both stay visible at loopback speed."""

    def __init__(self, trace: Trace, records: list[Record], start: float | None,
                 end: float | None):
        self.origin = trace.t0 if start is None else start
        self.lo = min(trace.t0, min(r.t for r in records)) if start is None else start
        self.hi = max(r.t for r in records) if end is None else end
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0
        self.slant = 0.006 * (self.hi - self.lo)
        """Horizontal run of one arrow: a request leans right on its way up, an
        answer on its way down, so a sub-millisecond exchange is a visible ^."""

    def x(self, t: float) -> float:
        return t - self.origin

    def holds(self, t: float) -> bool:
        return self.lo <= t <= self.hi


def timeline(trace: Trace, *, ax: Axes | None = None, techniques: Iterable[str] | None = None,
             clients: Sequence[str] | None = None, start: float | None = None,
             end: float | None = None, title: str = "Timeline", min_span: float = 0.05,
             max_arrows: int | None = 400, source: bool = True,
             roles: Mapping[str, str] | None = None) -> Axes:
    """Swimlane diagram of who sent what to whom, and when.

    Rows, top to bottom: ``events happen`` (a star when each delivered event
    was created; ``source=False`` leaves it out), then for each technique its
    serving side (``receiver``, ``server``, ``push service`` ...) and its
    clients. A request is an arrow leaning up to the serving side; its
    answer an arrow leaning back down, drawn at least one arrow's width
    later so that a loopback exchange (well under a millisecond) still shows
    both. A faded answer carried no news (an empty poll); a dark dotted one
    was refused or failed (4xx, 5xx) or never came (the client left). A pale bar is a
    request held open at least ``min_span`` seconds (long polling), a dark
    bar a connection open between its ``connect`` and ``disconnect`` (SSE, a
    push subscription). Diamonds are events reaching whoever learns of them,
    ``o`` a retry, a red ``x`` a drop.

    ``techniques`` picks and orders the technique groups (default: all);
    ``clients`` picks and orders client rows; ``roles`` names the part a
    client plays where the technique's usual word is not right
    (``{"shop": "app server"}`` for the one who posts to a push service). ``start``/``end`` bound the
    window on the trace's clock (``trace.t0 + 2``). At most ``max_arrows``
    arrows are drawn, evenly sampled in time (a note says so); ``None``
    draws them all. Bars and markers are never capped.
    """
    techs = _techniques(trace, techniques)
    records = [r for r in trace.records() if r.technique in techs]
    lanes = _Lanes(trace, techs, clients, source, roles or {})
    ax = _new_axes(ax, (10, min(20, 1.5 + 0.4 * len(lanes.labels))))
    ax.set_title(title)
    ax.set_xlabel("time since start (s)" if start is not None else "time since trace start (s)")
    ax.set_ylabel("who")
    if not records:
        _no_data(ax)
        return ax
    window = _Window(trace, records, start, end)
    drawn: dict[str, Artist] = {}  # legend label -> proxy, for what was really drawn
    neutral = technique_color(techs[0]) if len(techs) == 1 else "0.35"
    _draw_bars(ax, records, lanes, window, min_span, neutral, drawn)
    _draw_exchanges(ax, records, lanes, window, max_arrows, neutral, drawn)
    _draw_events(ax, records, lanes, window, source, neutral, drawn)
    _draw_marks(ax, records, lanes, window, drawn)
    _finish(ax, lanes, window, drawn)
    return ax


def _draw_bars(ax: Axes, records: list[Record], lanes: _Lanes, window: _Window,
               min_span: float, neutral: str, drawn: dict) -> None:
    """Held requests (wide, pale) and connections open from connect to disconnect."""
    styles = {"held request": (0.5, 0.3), "open connection": (0.2, 0.8)}  # height, alpha
    bars: dict[tuple[str, str], list] = {}  # (style, technique) -> rectangles

    def add(style: str, record: Record, a: float, b: float) -> None:
        a, b = window.x(max(a, window.lo)), window.x(min(b, window.hi))
        row = lanes.of(record)
        if b > a and row is not None:
            half = styles[style][0] / 2
            bars.setdefault((style, record.technique), []).append(
                [(a, row - half), (a, row + half), (b, row + half), (b, row - half)])

    opened: dict[tuple[str, str], float] = {}
    for r in sorted(records, key=lambda r: r.t):
        if not r.client:
            continue
        if r.kind == "response" and r.duration is not None and r.duration >= min_span:
            add("held request", r, r.t - r.duration, r.t)
        elif r.kind == "connect":
            opened.setdefault((r.technique, r.client), r.t)
        elif r.kind == "disconnect" and (r.technique, r.client) in opened:
            add("open connection", r, opened.pop((r.technique, r.client)), r.t)
    by_key = {(r.technique, r.client): r for r in records}
    for key, t in opened.items():  # never closed: open to the end of the window
        add("open connection", by_key[key], t, window.hi)
    for (style, tech), rects in bars.items():
        alpha = styles[style][1]
        ax.add_collection(PolyCollection(rects, facecolors=technique_color(tech), alpha=alpha,
                                         zorder=1, gid=style))
        drawn[style] = Patch(facecolor=neutral, alpha=alpha, label=style)


def _draw_exchanges(ax: Axes, records: list[Record], lanes: _Lanes, window: _Window,
                    max_arrows: int | None, neutral: str, drawn: dict) -> None:
    """Requests leaning up to the serving side, answers leaning back down after them."""
    arrows = []  # (t drawn, kind, record)
    for r in records:
        if r.kind not in ("request", "response") or not r.client or lanes.of(r) is None:
            continue
        t = r.t
        if r.kind == "response" and r.duration is not None:  # never on top of its request
            t = max(r.t, r.t - r.duration + window.slant)
        if window.holds(r.t):
            arrows.append((t, r.kind, r))
    arrows.sort(key=lambda a: a[0])
    if max_arrows is not None and len(arrows) > max_arrows:
        picks = np.linspace(0, len(arrows) - 1, max_arrows).round().astype(int)
        ax.text(1.0, 1.01, f"arrows: {max_arrows} of {len(arrows)} shown",
                transform=ax.transAxes, ha="right", va="bottom", fontsize="small", color="0.4")
        arrows = [arrows[i] for i in picks]
    for t, kind, r in arrows:
        client, server = lanes.of(r), lanes.rows[(r.technique, "")]
        style = _answer_style(r) if kind == "response" else "request"
        tail, head = (client, server) if kind == "request" else (server, client)
        x = window.x(t)
        ax.annotate("", xy=(x + window.slant, head), xytext=(x, tail), zorder=2, gid=style,
                    arrowprops=dict(arrowstyle="-|>", mutation_scale=9, linewidth=0.9,
                                    shrinkA=0, shrinkB=0, alpha=_ARROWS[style][2],
                                    color=_ARROWS[style][1] or technique_color(r.technique),
                                    linestyle=_ARROWS[style][0]))
    styles = {"request" if kind == "request" else _answer_style(r) for _, kind, r in arrows}
    for style, (line, colour, alpha, label) in _ARROWS.items():
        if style in styles:
            drawn[label] = Line2D([], [], color=colour or neutral, linestyle=line, alpha=alpha,
                                  label=label)


_ARROWS = {  # gid: line style, colour (None: the technique's), alpha, legend label
    "request": ("-", None, 1.0, "request (up to the server)"),
    "response": ("--", None, 1.0, "answer (back down)"),
    "empty response": ("--", None, 0.35, "answer with nothing new"),
    "failed response": (":", "0.15", 1.0, "refused, failed or abandoned"),
}


def _answer_style(record: Record) -> str:
    """How an answer is drawn: refused or failed (4xx, 5xx, none at all), empty, or with news."""
    if record.status is None or record.status >= 400:
        return "failed response"
    return "empty response" if record.events == 0 else "response"


def _draw_events(ax: Axes, records: list[Record], lanes: _Lanes, window: _Window,
                 source: bool, neutral: str, drawn: dict) -> None:
    """Diamonds where events are learned; stars when they happened, joined by a dotted line."""
    delivered = [r for r in records if r.kind == "event" and window.holds(r.t)
                 and lanes.of(r) is not None]
    for tech in lanes.techs:
        mine = [r for r in delivered if r.technique == tech]
        if mine:
            ax.plot([window.x(r.t) for r in mine], [lanes.of(r) for r in mine],
                    linestyle="none", marker="D", markersize=6, markeredgecolor="k",
                    markeredgewidth=0.6, color=technique_color(tech), zorder=4, gid="event")
    if delivered:
        drawn["event learned"] = Line2D([], [], linestyle="none", marker="D", markersize=6,
                                        markeredgecolor="k", color=neutral,
                                        label="event learned")
    happened = [r for r in delivered if source and r.latency is not None]
    if not happened:
        return
    created = {r.event_id or id(r): r.t - r.latency for r in happened}
    ax.plot([window.x(t) for t in created.values()], [0] * len(created), linestyle="none",
            marker="*", markersize=10, color="goldenrod", zorder=4, gid="event created")
    drawn["event happens"] = Line2D([], [], linestyle="none", marker="*", markersize=10,
                                    color="goldenrod", label="event happens")
    if len(happened) <= 60:  # a few dotted waits teach; hundreds only hide the arrows
        for r in happened:
            ax.plot([window.x(r.t - r.latency), window.x(r.t)], [0, lanes.of(r)], color="0.6",
                    linestyle=":", linewidth=0.8, zorder=1, gid="wait")


def _draw_marks(ax: Axes, records: list[Record], lanes: _Lanes, window: _Window,
                drawn: dict) -> None:
    """Retries and drops, on the row of whoever they happened to."""
    for kind, style in (("retry", dict(marker="o", markerfacecolor="none", markeredgecolor="k")),
                        ("drop", dict(marker="x", color="red", markeredgewidth=1.5))):
        points = [(window.x(r.t), lanes.of(r) if r.client else lanes.rows[(r.technique, "")])
                  for r in records if r.kind == kind and window.holds(r.t)]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, linestyle="none", zorder=5, gid=kind, **style)
            drawn[kind] = Line2D([], [], linestyle="none", label=kind, **style)


def _finish(ax: Axes, lanes: _Lanes, window: _Window, drawn: dict) -> None:
    """Row labels, separators between technique groups, limits and the legend."""
    lo, hi = window.x(window.lo), window.x(window.hi)
    ax.hlines(range(len(lanes.labels)), lo, hi, color="0.9", linewidth=0.6, zorder=0)
    for tech in lanes.techs[1:] if lanes.labels[:1] != ["events happen"] else lanes.techs:
        ax.axhline(lanes.rows[(tech, "")] - 0.5, color="0.6", linewidth=0.8)
    ax.set_yticks(range(len(lanes.labels)), lanes.labels)
    ax.set_ylim(len(lanes.labels) - 0.5, -0.5)  # first row on top
    pad = 0.02 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad + window.slant)
    ax.grid(axis="x", alpha=0.3)
    handles = list(drawn.values())
    if len(lanes.techs) > 1:
        handles += [Patch(color=technique_color(t), label=_table.label(t))
                    for t in lanes.techs]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0, fontsize="small")
    else:
        _no_data(ax, "nothing in this window")


# -- latency ---------------------------------------------------------------


def latency_cdf(trace: Trace | Mapping[str, Sequence[float]], *,
                techniques: Iterable[str] | None = None, ax: Axes | None = None,
                title: str = "Event latency (CDF)", unit: str = "ms",
                log: bool = False) -> Axes:
    """Empirical CDF of delivery latency, one step line per technique.

    ``trace`` may also be a dict ``{label: latencies in seconds}`` to compare
    runs (a label that names a technique gets its colour). ``techniques`` picks and orders the lines; ``unit`` is ``"s"``,
    ``"ms"`` or ``"us"``. ``log=True`` puts latency on a log scale, so a
    technique measured in milliseconds and one measured in seconds both stay
    readable on one axis. Lines with no latencies are left out.
    """
    if unit not in _UNITS:
        raise LabkitError(f"unknown unit {unit!r}: use one of {', '.join(_UNITS)}")
    if isinstance(trace, Mapping):
        names = list(trace) if techniques is None else list(techniques)
        series = {name: list(trace.get(name, ())) for name in names}
        colours = {name: _table.colour(name) if _known(name) else None for name in names}
    else:
        series = {name: trace.latencies(name) for name in _techniques(trace, techniques)}
        colours = {name: technique_color(name) for name in series}

    ax = _new_axes(ax, (7, 4))
    ax.set_title(title)
    ax.set_xlabel(f"latency ({unit})")
    ax.set_ylabel("share of events delivered")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    for name, values in series.items():
        if not values:
            continue
        xs = np.sort(np.asarray(values, dtype=float)) * _UNITS[unit]
        ys = np.arange(1, len(xs) + 1) / len(xs)
        p50 = xs[math.ceil(len(xs) / 2) - 1]  # nearest rank, as Trace.latency_percentiles
        ax.step(np.r_[xs[0], xs], np.r_[0.0, ys], where="post", color=colours[name],
                label=f"{_table.label(name) if _known(name) else name} (p50 {p50:.3g} {unit})")
    if log:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis, subs=(1, 2, 5))
    if ax.get_lines():
        ax.legend(loc="lower right")
    else:
        _no_data(ax, "no events delivered")
    return ax


# -- bars ------------------------------------------------------------------


def request_counts(trace: Trace, *, techniques: Iterable[str] | None = None,
                   ax: Axes | None = None, kinds: Sequence[str] = ("request",),
                   title: str = "Requests per technique") -> Axes:
    """Bars of how many records of each kind (default: requests) each technique made.

    Several ``kinds`` give grouped bars, told apart by hatching.
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise RecordKindError(f"unknown record kind {unknown[0]!r}: use one of {', '.join(KINDS)}")
    techs = _techniques(trace, techniques)

    ax = _new_axes(ax, (max(4.0, 2 + 1.2 * len(techs)), 4))
    ax.set_title(title)
    ax.set_xlabel("technique")
    ax.set_ylabel("requests" if kinds == ("request",) else "records (count)")
    if not techs:
        _no_data(ax)
        return ax
    counts = trace.counts()
    width = 0.8 / len(kinds)
    x = np.arange(len(techs))
    for i, kind in enumerate(kinds):
        heights = [counts.get(tech, {}).get(kind, 0) for tech in techs]
        bars = ax.bar(x + (i - (len(kinds) - 1) / 2) * width, heights, width,
                      color=[technique_color(t) for t in techs], edgecolor="white",
                      hatch=_HATCHES[i % len(_HATCHES)], label=kind)
        ax.bar_label(bars, fontsize="small")
    ax.set_xticks(x, _tick_labels(techs))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.12)
    if len(kinds) > 1:
        ax.legend(handles=[Patch(facecolor="0.6", edgecolor="white",
                                 hatch=_HATCHES[i % len(_HATCHES)], label=kind)
                           for i, kind in enumerate(kinds)])
    return ax


def bytes_chart(trace: Trace, *, techniques: Iterable[str] | None = None,
                ax: Axes | None = None, per_event: bool = False,
                title: str | None = None) -> Axes:
    """Bars of wire bytes per technique, or bytes per delivered event.

    Bar values come from :meth:`Trace.bytes_total` / :meth:`Trace.bytes_per_event`;
    a technique that delivered nothing gets an empty bar marked "no events".
    """
    techs = _techniques(trace, techniques)
    ax = _new_axes(ax, (max(4.0, 2 + 1.2 * len(techs)), 4))
    ax.set_title(title or ("Bytes per delivered event" if per_event else "Bytes on the wire"))
    ax.set_xlabel("technique")
    ax.set_ylabel("bytes per delivered event" if per_event else "bytes")
    if not techs:
        _no_data(ax)
        return ax
    values = [trace.bytes_per_event(t) if per_event else trace.bytes_total(t) for t in techs]
    bars = ax.bar(range(len(techs)), [v if math.isfinite(v) else 0 for v in values],
                  color=[technique_color(t) for t in techs])
    ax.bar_label(bars, [f"{v:,.0f} B" if math.isfinite(v) else "no events" for v in values],
                 fontsize="small")
    ax.set_xticks(range(len(techs)), _tick_labels(techs))
    ax.margins(y=0.12)
    return ax


# -- over time -------------------------------------------------------------


def rate_over_time(trace: Trace, *, kind: str = "request",
                   techniques: Iterable[str] | None = None, bin_width: float = 1.0,
                   ax: Axes | None = None, title: str | None = None,
                   label: str | None = None) -> Axes:
    """Step line of how many ``kind`` records fell in each ``bin_width``-second bin.

    One line per technique in ``techniques``, or one line for all records
    when it is None. Call again with the same ``ax`` to overlay another run;
    a repeated colour gets a new line style. ``label`` names the lines
    (default: each technique's label, or "all techniques").
    """
    if kind not in KINDS:
        raise RecordKindError(f"unknown record kind {kind!r}: use one of {', '.join(KINDS)}")
    if not bin_width > 0:
        raise LabkitError(f"bin_width must be a positive number of seconds, not {bin_width!r}")
    noun = _plural(kind)
    ax = _new_axes(ax, (8, 3.5))
    ax.set_title(title or f"{noun.capitalize()} over time")
    ax.set_xlabel("time since trace start (s)")
    ax.set_ylabel(f"{noun} per second" if bin_width == 1 else f"{noun} per {bin_width:g} s")
    lines = [None] if techniques is None else list(techniques)
    for tech in lines:
        times = np.array([r.t - trace.t0 for r in trace.records(kind=kind, technique=tech)])
        if len(times):
            name = label or (_table.label(tech) if tech else "all techniques")
            _stairs(ax, times, bin_width, technique_color(tech) if tech else "0.2", name)
    if not ax.patches:
        _no_data(ax, f"no {noun} recorded")
        return ax
    # Fix the floor at 0 but let the top follow every series drawn so far, so a
    # taller run overlaid later is not cut off.
    ax.relim()
    ax.autoscale(axis="y")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def _stairs(ax: Axes, times: np.ndarray, bin_width: float, color: str, label: str) -> None:
    """One binned count line; a colour already on ``ax`` gets the next line style."""
    index = np.floor(times / bin_width).astype(int)
    counts = np.bincount(index - index.min())
    edges = (index.min() + np.arange(len(counts) + 1)) * bin_width
    same = sum(1 for p in ax.patches
               if isinstance(p, StepPatch) and p.get_edgecolor() == to_rgba(color))
    ax.stairs(counts, edges, color=color, linestyle=_LINESTYLES[same % len(_LINESTYLES)],
              linewidth=1.5, label=label)


# -- all together ----------------------------------------------------------


def dashboard(trace: Trace, techniques: Iterable[str] | None = None) -> Figure:
    """A 2x2 figure: timeline, latency CDF, request counts and bytes."""
    techs = _techniques(trace, techniques)
    fig, axes = plt.subplots(2, 2, figsize=(15, 10), layout="constrained")
    timeline(trace, ax=axes[0, 0], techniques=techs)
    latency_cdf(trace, techniques=techs, ax=axes[0, 1])
    request_counts(trace, techniques=techs, ax=axes[1, 0])
    bytes_chart(trace, techniques=techs, ax=axes[1, 1])
    return fig
