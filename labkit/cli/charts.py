"""The charts ``labkit compare`` and ``labkit scaling`` write, as PNG or SVG files.

The command draws them off-screen (it selects matplotlib's Agg backend: no
window, no display needed), each technique in its colour from
:mod:`labkit.techniques`, as in every lesson:

======================  ======================================================================
:func:`comparison`      three panels: the latency CDF (:func:`labkit.plots.latency_cdf`, log
                        scale, so milliseconds and seconds both read), the requests each
                        technique made (:func:`labkit.plots.request_counts`), and the bytes
                        per delivered event, from the runs' own totals (WebSocket frames
                        included, as in the printed table)
:func:`scaling`         four panels against the number of clients (log scale): p50 and p99
                        latency, requests per delivered event, bytes per delivered event,
                        server CPU per delivered event
:func:`save`            writes a figure; the file's ending (.png, .svg) picks the format
======================  ======================================================================

Thread-safety: matplotlib figures are not thread-safe; call these from one thread.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from labkit import plots, techniques
from labkit.push.scale import ScaleResult
from labkit.trace import Trace

__all__ = ["comparison", "scaling", "save"]


def comparison(trace: Trace, results: list[ScaleResult]) -> Figure:
    """Latency CDF, requests, and bytes per delivered event of one run per technique."""
    names = [r.technique for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained")
    plots.latency_cdf(trace, techniques=names, ax=axes[0], log=True)
    if axes[0].get_legend() is not None:
        axes[0].legend(loc="best")  # the curves sit left and right: keep off all of them
    plots.request_counts(trace, techniques=names, ax=axes[1])
    per_event = [r.bytes_per_event for r in results]
    bars = axes[2].bar(range(len(names)), [v if math.isfinite(v) else 0 for v in per_event],
                       color=[techniques.colour(n) for n in names])
    axes[2].bar_label(bars, [f"{v:,.0f} B" if math.isfinite(v) else "no events"
                             for v in per_event], fontsize="small")
    axes[2].set_xticks(range(len(names)), [textwrap.fill(techniques.get(n).tag, 10)
                                           for n in names])
    axes[2].set(title="Bytes per delivered event", xlabel="technique",
                ylabel="wire bytes per delivered event")
    axes[2].margins(y=0.12)
    first = results[0]
    fig.suptitle(f"{first.clients:,} clients, {first.events:,} events each (same seeded "
                 f"events for every technique)")
    return fig


def scaling(results: list[ScaleResult]) -> Figure:
    """Latency, requests, bytes and CPU per delivered event against the number of clients."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), layout="constrained")
    panels = (
        (axes[0, 0], "Latency", "latency (ms)"),
        (axes[0, 1], "Requests per delivered event", "requests / delivery"),
        (axes[1, 0], "Bytes per delivered event", "wire bytes / delivery"),
        (axes[1, 1], "Server CPU per delivered event", "CPU µs / delivery"),
    )
    for name in dict.fromkeys(r.technique for r in results):
        runs = [r for r in results if r.technique == name]
        clients = [r.clients for r in runs]
        style = {"color": techniques.colour(name), "marker": "o"}
        label = techniques.label(name)
        axes[0, 0].plot(clients, [r.latency[99] * 1e3 for r in runs], label=f"{label} p99",
                        **style)
        axes[0, 0].plot(clients, [r.latency[50] * 1e3 for r in runs], linestyle="--",
                        label=f"{label} p50", **style)
        axes[0, 1].plot(clients, [_per(r.requests, r) for r in runs], label=label, **style)
        axes[1, 0].plot(clients, [_per(r.bytes, r) for r in runs], label=label, **style)
        axes[1, 1].plot(clients, [_per(r.server_cpu * 1e6, r) for r in runs], label=label,
                        **style)
    counts = sorted({r.clients for r in results})
    for ax, title, ylabel in panels:
        ax.set(title=title, xlabel="clients", ylabel=ylabel, xscale="log")
        ax.set_xticks(counts, [f"{count:,}" for count in counts])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[0, 0].set_yscale("log")
    first = results[0]
    fig.suptitle(f"{first.events:,} events to every client, the same for every run")
    return fig


def _per(total: float, result: ScaleResult) -> float:
    return total / result.deliveries if result.deliveries else math.nan


def save(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` in the format its ending names, and free it."""
    try:
        fig.savefig(path, format=path.suffix.lower().lstrip("."), dpi=110)
    finally:
        plt.close(fig)
