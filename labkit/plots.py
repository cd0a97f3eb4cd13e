"""Charts that compare polling, long polling, SSE, Web Push and webhooks.

Every chart reads a :class:`labkit.trace.Trace`, draws on one matplotlib
Axes and returns it: pass ``ax=`` to place the chart in your own figure, or
leave it out to get a new figure. Times on the x axis are seconds since
``trace.t0`` (or since the timeline's ``start``). A technique has the same colour in every chart
(:func:`technique_color`), so a glance across charts links them up.

How to read each chart:

:func:`timeline`
    A swimlane (sequence) diagram, one row per participant: a ``server``
    row per technique, then one row per client. Solid arrows up are
    requests, dashed arrows down are responses. A wide pale bar on a client
    row is a request the server held open (long polling); a narrow dark bar
    is an open stream (SSE, a push subscription). ``|`` ticks are events
    reaching the client, ``o`` marks a retry, a red ``x`` a drop. Polling
    looks like a comb of arrows that mostly bring nothing; long polling like
    pale bars that end when an event arrives; SSE like one dark bar with
    ticks on it.
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
    timeline(trace, technique="long-polling")
    dashboard(trace)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, StepPatch
from matplotlib.ticker import MaxNLocator

from labkit.errors import LabkitError
from labkit.trace import KINDS, Trace

__all__ = [
    "technique_color",
    "timeline",
    "latency_cdf",
    "request_counts",
    "bytes_chart",
    "rate_over_time",
    "dashboard",
]

_KNOWN_COLORS = {
    "polling": "tab:blue",
    "long-polling": "tab:orange",
    "sse": "tab:green",
    "webpush": "tab:purple",
    "webhook": "tab:brown",
    "websocket": "tab:pink",
}
# Red is kept for drops, so no technique gets it.
# Only colours strong enough to read as a thin line on white.
_SPARE_COLORS = ("tab:olive", "tab:cyan", "tab:gray", "#1f3d7a", "#8c6d31", "#2e7d32",
                 "#6a1b9a", "#00695c", "#ad1457", "#4e342e")
_spare_assigned: dict[str, str] = {}

_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6}
_HATCHES = ("", "//", "..", "xx", "\\\\", "++")
_LINESTYLES = ("-", "--", ":", "-.")


def technique_color(technique: str) -> str:
    """The colour of ``technique`` in every chart.

    Known techniques have a fixed colour; any other name gets the next spare
    colour the first time it is seen and keeps it.
    """
    if technique in _KNOWN_COLORS:
        return _KNOWN_COLORS[technique]
    if technique not in _spare_assigned:
        _spare_assigned[technique] = _SPARE_COLORS[len(_spare_assigned) % len(_SPARE_COLORS)]
    return _spare_assigned[technique]


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _no_data(ax: Axes, note: str = "no data") -> None:
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center",
            color="0.4", fontsize="large")


def _techniques(trace: Trace, techniques: Iterable[str] | None) -> list[str]:
    return trace.techniques() if techniques is None else list(techniques)


def _plural(kind: str) -> str:
    return "retries" if kind == "retry" else f"{kind}s"


# -- timeline --------------------------------------------------------------


def timeline(trace: Trace, *, ax: Axes | None = None,
             technique: str | Sequence[str] | None = None,
             clients: Sequence[str] | None = None, start: float | None = None,
             end: float | None = None, title: str = "Timeline", min_span: float = 0.05,
             max_arrows: int | None = 400) -> Axes:
    """Swimlane diagram of who sent what to whom, and when.

    ``technique`` is one name or several (default: all); ``clients`` picks
    and orders the client rows (default: all, in order of appearance; pick a
    few to keep a big run readable). ``start``/``end`` bound the window on
    the trace's clock (``Record.t``, e.g. ``trace.t0 + 2``); x is seconds
    since ``start``, or since ``trace.t0`` without one. Responses open for at
    least ``min_span`` seconds are drawn as held-request bars. At most
    ``max_arrows`` request/response arrows are drawn, evenly sampled in time
    (a note says so when some are left out); ``None`` draws them all. Bars,
    ticks and markers are never capped.
    """
    techs = [technique] if isinstance(technique, str) else _techniques(trace, technique)
    records = [r for r in trace.records() if r.technique in techs]

    lanes: dict[tuple[str, str], int] = {}  # (technique, client) -> row; client "" is the server
    labels: list[str] = []
    for tech in techs:
        lanes[(tech, "")] = len(labels)
        labels.append(f"server ({tech})")
        present = [c for c in trace.clients(tech) if c]
        for client in present if clients is None else [c for c in clients if c in present]:
            lanes[(tech, client)] = len(labels)
            labels.append(client if len(techs) == 1 else f"{client} ({tech})")

    ax = _new_axes(ax, (10, min(20, 1.5 + 0.4 * len(labels))))
    ax.set_title(title)
    ax.set_xlabel("time since start (s)" if start is not None else "time since trace start (s)")
    ax.set_ylabel("participant")
    if not records:
        _no_data(ax)
        return ax

    origin = trace.t0 if start is None else start
    lo = min(trace.t0, min(r.t for r in records)) if start is None else start
    hi = max(r.t for r in records) if end is None else end
    if hi <= lo:
        hi = lo + 1.0
    inside = [r for r in records if lo <= r.t <= hi and (r.technique, r.client) in lanes]
    drawn: dict[str, object] = {}  # legend label -> proxy artist, for what was drawn
    neutral = technique_color(techs[0]) if len(techs) == 1 else "0.35"  # legend colour

    # Bars on client rows: held requests (wide, pale) and open streams (narrow, dark).
    styles = {"held request": (0.5, 0.3), "open stream": (0.2, 0.8)}  # height, alpha
    bars: dict[tuple[str, str], list] = {}  # (style, technique) -> rectangle corners

    def add_bar(style: str, key: tuple[str, str], a: float, b: float) -> None:
        a, b = max(a, lo) - origin, min(b, hi) - origin
        if b > a:
            y, half = lanes[key], styles[style][0] / 2
            bars.setdefault((style, key[0]), []).append(
                [(a, y - half), (a, y + half), (b, y + half), (b, y - half)])

    opened: dict[tuple[str, str], float] = {}
    for r in sorted(records, key=lambda r: r.t):
        key = (r.technique, r.client)
        if not r.client or key not in lanes:
            continue
        if r.kind == "response" and r.duration is not None and r.duration >= min_span:
            add_bar("held request", key, r.t - r.duration, r.t)
        elif r.kind == "connect":
            opened.setdefault(key, r.t)
        elif r.kind == "disconnect":  # one without a connect was open since the window began
            add_bar("open stream", key, opened.pop(key, lo), r.t)
    for key, t in opened.items():  # never closed: open to the end
        add_bar("open stream", key, t, hi)
    for (style, tech), rects in bars.items():
        alpha = styles[style][1]
        ax.add_collection(PolyCollection(rects, facecolors=technique_color(tech), alpha=alpha,
                                         zorder=1, gid=style))
        drawn[style] = Patch(facecolor=neutral, alpha=alpha, label=style)

    # Arrows: requests up to the server row, responses back down.
    arrows = sorted((r.t, r.kind, r.technique, r.client) for r in inside
                    if r.kind in ("request", "response") and r.client)
    shown = arrows
    if max_arrows is not None and len(arrows) > max_arrows:
        shown = [arrows[i] for i in np.linspace(0, len(arrows) - 1, max_arrows).round().astype(int)]
        ax.text(1.0, 1.01, f"arrows: {len(shown)} of {len(arrows)} shown", transform=ax.transAxes,
                ha="right", va="bottom", fontsize="small", color="0.4")
    for t, kind, tech, client in shown:
        rows = (lanes[(tech, client)], lanes[(tech, "")])
        tail, head = rows if kind == "request" else rows[::-1]
        ax.annotate("", xy=(t - origin, head), xytext=(t - origin, tail), zorder=2, gid=kind,
                    arrowprops=dict(arrowstyle="-|>", mutation_scale=8, linewidth=0.8,
                                    shrinkA=0, shrinkB=0, color=technique_color(tech),
                                    linestyle="-" if kind == "request" else "--"))
    for kind, label, marker, style in (("request", "request (client → server)", "^", "-"),
                                       ("response", "response (server → client)", "v", "--")):
        if any(a[1] == kind for a in shown):
            drawn[label] = Line2D([], [], color=neutral, linestyle=style, marker=marker,
                                  label=label)

    # Points: delivered events per technique, then retries and drops.
    def place(rs: list) -> tuple[list[float], list[int]]:
        return [r.t - origin for r in rs], [lanes[(r.technique, r.client)] for r in rs]

    for tech in techs:
        events = [r for r in inside if r.kind == "event" and r.technique == tech]
        if events:
            ax.plot(*place(events), linestyle="none", marker="|", markersize=12,
                    markeredgewidth=1.5, color=technique_color(tech), zorder=3, gid="event")
            drawn["event delivered"] = Line2D([], [], color=neutral, linestyle="none", marker="|",
                                              markersize=12, markeredgewidth=1.5,
                                              label="event delivered")
    for kind, style in (("retry", dict(marker="o", markerfacecolor="none", markeredgecolor="k")),
                        ("drop", dict(marker="x", color="red", markeredgewidth=1.5))):
        points = [r for r in inside if r.kind == kind]
        if points:
            ax.plot(*place(points), linestyle="none", zorder=4, gid=kind, **style)
            drawn[kind] = Line2D([], [], linestyle="none", label=kind, **style)

    ax.hlines(range(len(labels)), lo - origin, hi - origin, color="0.9", linewidth=0.6, zorder=0)
    for tech in techs[1:]:
        ax.axhline(lanes[(tech, "")] - 0.5, color="0.6", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first row on top
    pad = 0.02 * (hi - lo)
    ax.set_xlim(lo - origin - pad, hi - origin + pad)
    ax.grid(axis="x", alpha=0.3)

    handles = list(drawn.values())
    if len(techs) > 1:
        handles += [Patch(color=technique_color(t), label=t) for t in techs]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0, fontsize="small")
    else:
        _no_data(ax, "nothing in this window")
    return ax


# -- latency ---------------------------------------------------------------


def latency_cdf(trace: Trace | Mapping[str, Sequence[float]], *,
                techniques: Iterable[str] | None = None, ax: Axes | None = None,
                title: str = "Event latency (CDF)", unit: str = "ms",
                log: bool = False) -> Axes:
    """Empirical CDF of delivery latency, one step line per technique.

    ``trace`` may also be a dict ``{label: latencies in seconds}`` to compare
    runs. ``techniques`` picks and orders the lines; ``unit`` is ``"s"``,
    ``"ms"`` or ``"us"``. ``log=True`` puts latency on a log scale, so a
    technique measured in milliseconds and one measured in seconds both stay
    readable on one axis. Lines with no latencies are left out.
    """
    if unit not in _UNITS:
        raise LabkitError(f"unknown unit {unit!r}: use one of {', '.join(_UNITS)}")
    if isinstance(trace, Mapping):
        names = list(trace) if techniques is None else list(techniques)
        series = {name: list(trace.get(name, ())) for name in names}
    else:
        series = {name: trace.latencies(name) for name in _techniques(trace, techniques)}

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
        ax.step(np.r_[xs[0], xs], np.r_[0.0, ys], where="post", color=technique_color(name),
                label=f"{name} (p50 {p50:.3g} {unit})")
    if log:
        ax.set_xscale("log")
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
        raise LabkitError(f"unknown record kind {unknown[0]!r}: use one of {', '.join(KINDS)}")
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
    ax.set_xticks(x, techs)
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
    ax.set_xticks(range(len(techs)), techs)
    ax.margins(y=0.12)
    return ax


# -- over time -------------------------------------------------------------


def rate_over_time(trace: Trace, *, kind: str = "request", technique: str | None = None,
                   bin_width: float = 1.0, ax: Axes | None = None, title: str | None = None,
                   label: str | None = None) -> Axes:
    """Step line of how many ``kind`` records fell in each ``bin_width``-second bin.

    Call again with the same ``ax`` to overlay another technique or run; a
    repeated colour gets a new line style. ``label`` names the line (default:
    the technique, or "all techniques").
    """
    if kind not in KINDS:
        raise LabkitError(f"unknown record kind {kind!r}: use one of {', '.join(KINDS)}")
    if not bin_width > 0:
        raise LabkitError(f"bin_width must be a positive number of seconds, not {bin_width!r}")
    noun = _plural(kind)
    times = np.array([r.t - trace.t0 for r in trace.records(kind=kind, technique=technique)])

    ax = _new_axes(ax, (8, 3.5))
    ax.set_title(title or f"{noun.capitalize()} over time")
    ax.set_xlabel("time since trace start (s)")
    ax.set_ylabel(f"{noun} per second" if bin_width == 1 else f"{noun} per {bin_width:g} s")
    if not len(times):
        _no_data(ax, f"no {noun} recorded")
        return ax
    index = np.floor(times / bin_width).astype(int)
    counts = np.bincount(index - index.min())
    edges = (index.min() + np.arange(len(counts) + 1)) * bin_width
    color = technique_color(technique) if technique else "0.2"
    same = sum(1 for p in ax.patches
               if isinstance(p, StepPatch) and p.get_edgecolor() == to_rgba(color))
    ax.stairs(counts, edges, color=color, linestyle=_LINESTYLES[same % len(_LINESTYLES)],
              linewidth=1.5, label=label or technique or "all techniques")
    # Fix the floor at 0 but let the top follow every series drawn so far, so a
    # taller run overlaid later is not cut off.
    ax.relim()
    ax.autoscale(axis="y")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


# -- all together ----------------------------------------------------------


def dashboard(trace: Trace, techniques: Iterable[str] | None = None) -> Figure:
    """A 2x2 figure: timeline, latency CDF, request counts and bytes."""
    techs = _techniques(trace, techniques)
    fig, axes = plt.subplots(2, 2, figsize=(15, 10), layout="constrained")
    timeline(trace, ax=axes[0, 0], technique=techs)
    latency_cdf(trace, techniques=techs, ax=axes[0, 1])
    request_counts(trace, techniques=techs, ax=axes[1, 0])
    bytes_chart(trace, techniques=techs, ax=axes[1, 1])
    return fig
