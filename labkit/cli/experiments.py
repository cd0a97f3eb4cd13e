"""``labkit run``, ``labkit compare`` and ``labkit scaling``: clients at scale, from a terminal.

All three are :func:`labkit.push.scale.run_clients`, the very call lesson
09 makes, once per technique and number of clients, with the same seeded
events each time (same ``--seed``, same schedule, same event ids):

===========================================  ============================================
``labkit run sse --clients 100``             one technique, one row
``labkit compare polling long-polling sse``  one row per technique; ``compare all`` runs
                                             every technique the kit simulates
``labkit scaling polling sse --clients       one row per technique and number of clients
1,10,100``
===========================================  ============================================

What a row says (``--format json`` prints :meth:`ScaleResult.row` itself):

================  ===============================================================
delivered         events that reached their clients, of clients x events asked for
requests          HTTP requests on the wire, set-up included (a WebSocket's upgrade
                  is one)
bytes/event       wire bytes (requests, responses, WebSocket and push frames) per
                  delivery
p50, p99 (ms)     latency from the event's publication to its receipt
connections       most TCP connections open to the server at once
held              most requests or streams the server held open at once
server CPU (ms)   CPU time of the lab thread while the events were delivered
================  ===============================================================

A client is whoever should learn of the events: a page (polling, long
polling, SSE, WebSocket), a phone (``webpush``: the site's application
server sends each event to each phone through the push service) or a
webhook receiver (``webhook``: the provider POSTs each event to each
subscribed receiver). Where a column means something else for one of
these, the table's footnote says so (:data:`FOOTNOTES`).

``--trace out.csv`` (or ``.json``) writes every record of every run into
one file; in a sweep each run is named as a variant, ``"polling: 10
clients"``, so its records stay apart. ``--chart out.png`` (or ``.svg``)
draws :mod:`labkit.cli.charts`. If any run left an event undelivered the
table and the files are still written, the shortfall is said on stderr, and
the command exits with 1.

Thread-safety: runs in the main thread; ``run_clients`` uses the lab loop.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

from labkit.cli import arguments
from labkit.cli.textbar import TextBar
from labkit.errors import LabkitError, UsageError
from labkit.feed import fixed_rate, poisson
from labkit.push.scale import MAX_CLIENTS, SETUPS, ScaleResult, WebPushSite, run_clients
from labkit.trace import Trace

__all__ = ["add_commands", "format_table", "COLUMNS", "FOOTNOTES"]

COLUMNS: dict[str, Callable[[ScaleResult], str]] = {
    "technique": lambda r: r.technique,
    "clients": lambda r: f"{r.clients:,}",
    "delivered": lambda r: f"{r.deliveries:,}/{r.clients * r.events:,}",
    "requests": lambda r: f"{r.requests:,}",
    "bytes/event": lambda r: _number(r.bytes_per_event, "{:,.0f}"),
    "p50 (ms)": lambda r: _number(r.latency[50] * 1e3, "{:.3g}"),
    "p99 (ms)": lambda r: _number(r.latency[99] * 1e3, "{:.3g}"),
    "connections": lambda r: "-" if r.peak_connections is None else f"{r.peak_connections:,}",
    "held": lambda r: f"{r.peak_held:,}",
    "server CPU (ms)": lambda r: f"{r.server_cpu * 1e3:,.1f}",
}
"""The printed table: a column's title, and how a result fills its cell."""
SWEEP_COLUMNS = dict(COLUMNS, **{"memory (KiB)": lambda r: f"{r.memory / 1024:,.0f}"})
"""A sweep adds the memory the clients' connections took."""
FOOTNOTES = {
    "webpush": "webpush: requests are each phone's subscribe and connect, then one POST per "
               "event and phone from the application server (pywebpush) to the push service; "
               "bytes include the push frames and the phones' acks; connections are the "
               f"phones' plus the application server's (up to "
               f"{WebPushSite.threads}: it posts from {WebPushSite.threads} threads); server CPU "
               f"adds those threads'",
    "webhook": "webhook: nobody holds a connection (connections '-', held 0): the provider "
               "opens one to a receiver for each delivery; requests are each receiver's "
               "subscription (POST /hooks), then one signed POST per event and receiver; "
               "server CPU is the provider's and the receivers'",
}
"""What a column means for a technique whose clients are not pages, printed under the table."""

_EXAMPLES = {
    "run": """examples:
  labkit run sse --clients 100 --events 50
  labkit run polling --clients 10 --events 20 --interval 0.5 --trace polling.csv
  labkit run websocket --clients 1000 --load process --chart websocket.svg""",
    "compare": """examples:
  labkit compare polling long-polling sse websocket webpush webhook --clients 10
  labkit compare all --clients 100 --trace head-to-head.json --chart head-to-head.png
  labkit compare polling sse --format json > rows.json""",
    "scaling": """examples:
  labkit scaling polling sse --clients 1,10,100,1000 --interval 2 --chart scaling.png
  labkit scaling websocket --clients 10,100,1000 --load process --format json""",
}


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``run``, ``compare`` and ``scaling`` to the top-level parser's commands."""
    shared = _shared_options()
    simulated = ", ".join(SETUPS)
    run = commands.add_parser(
        "run", parents=[shared], epilog=_EXAMPLES["run"], help="run one technique with N clients",
        description=textwrap.fill(f"Serve one technique, run N clients, deliver the same "
                                  f"seeded events, and print what it cost. Techniques: "
                                  f"{simulated}."))
    run.add_argument("technique", type=arguments.technique, metavar="TECHNIQUE",
                     help=simulated)
    _clients_option(run)
    run.set_defaults(handler=lambda args: _experiment(args, [args.technique], [args.clients]))

    compare = commands.add_parser(
        "compare", parents=[shared], epilog=_EXAMPLES["compare"],
        help="the same events by several techniques, side by side",
        description=textwrap.fill(f"Run each technique with the same clients and the same "
                                  f"seeded events, one after the other, and print one row "
                                  f"each. Techniques: {simulated}, or 'all'."))
    compare.add_argument("techniques", nargs="+", metavar="TECHNIQUE", type=_technique_or_all,
                         help=f"{simulated}, or all")
    _clients_option(compare)
    compare.set_defaults(handler=lambda args: _experiment(args, _listed(args.techniques),
                                                          [args.clients]))

    scaling = commands.add_parser(
        "scaling", parents=[shared], epilog=_EXAMPLES["scaling"],
        help="each technique with 1, 10, 100, 1000 ... clients",
        description=textwrap.fill(f"Run each technique once per number of clients and print "
                                  f"one row per run. Techniques: {simulated}, or 'all'."))
    scaling.add_argument("techniques", nargs="+", metavar="TECHNIQUE", type=_technique_or_all,
                         help=f"{simulated}, or all")
    scaling.add_argument("--clients", type=arguments.client_counts, default=[1, 10, 100, 1000],
                         metavar="N,N,...",
                         help="numbers of clients, comma-separated (default: 1,10,100,1000)")
    scaling.set_defaults(handler=lambda args: _experiment(args, _listed(args.techniques),
                                                          args.clients, sweep=True))
    for parser in (run, compare, scaling):
        parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _shared_options() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    events = shared.add_argument_group("the events (the same for every technique)")
    events.add_argument("--events", type=arguments.whole(1, 1_000_000), default=20, metavar="N",
                        help="events to deliver to every client (default: 20)")
    events.add_argument("--rate", type=arguments.positive, default=10.0, metavar="R",
                        help="events per second (default: 10)")
    events.add_argument("--seed", type=arguments.whole(0, 2 ** 32), default=0, metavar="S",
                        help="seed of the event schedule and of the clients' phases "
                             "(default: 0)")
    events.add_argument("--schedule", choices=("poisson", "fixed"), default="poisson",
                        help="random (Poisson) arrivals or evenly spaced (default: poisson)")
    how = shared.add_argument_group("how the clients run")
    how.add_argument("--interval", type=arguments.seconds(3600), default=1.0, metavar="SECONDS",
                     help="polling: seconds between two polls of a client (default: 1)")
    how.add_argument("--hold", type=arguments.seconds(30), default=20.0, metavar="SECONDS",
                     help="long polling: longest the server holds a poll (default: 20)")
    how.add_argument("--load", choices=("inline", "process"), default="inline",
                     help="clients on the server's loop, or in a separate process so the "
                          "server's CPU is its own (default: inline)")
    how.add_argument("--timeout", type=arguments.seconds(24 * 3600), metavar="SECONDS",
                     help="bound on one run's delivery (default: the schedule + 10 s)")
    out = shared.add_argument_group("output")
    out.add_argument("--trace", type=arguments.output(".csv", ".json"), metavar="FILE",
                     help="write every record of every run to FILE (.csv or .json)")
    out.add_argument("--chart", type=arguments.output(".png", ".svg"), metavar="FILE",
                     help="draw the charts to FILE (.png or .svg)")
    out.add_argument("--format", choices=("text", "json"), default="text",
                     help="print an aligned table, or the rows as JSON (default: text)")
    return shared


def _clients_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=arguments.whole(1, MAX_CLIENTS), default=10,
                        metavar="N", help="simulated clients (default: 10)")


def _technique_or_all(text: str) -> str:
    return text if text == "all" else arguments.technique(text)


def _listed(names: list[str]) -> list[str]:
    """The techniques named, ``all`` expanded; a name given twice is a usage error."""
    listed = [name for given in names for name in (SETUPS if given == "all" else [given])]
    twice = sorted({name for name in listed if listed.count(name) > 1})
    if twice:
        raise UsageError(f"{', '.join(twice)} listed twice: each technique runs once")
    return listed


# -- running -------------------------------------------------------------------------------


def _experiment(args: argparse.Namespace, names: list[str], counts: list[int], *,
                sweep: bool = False) -> int:
    inline_only = [name for name in names if SETUPS[name].site]
    if args.load == "process" and inline_only:
        raise UsageError(f"--load process: {', '.join(inline_only)} runs inline only (its "
                         f"clients hand the server side their address within one process)")
    options = {"events": args.events, "rate": args.rate, "seed": args.seed,
               "schedule": args.schedule, "interval": args.interval, "hold": args.hold,
               "load": args.load, "timeout": args.timeout}
    runs = [(name, count) for name in names for count in counts]
    trace = Trace()  # every run's records, in one file (created first: t0 is the start)
    merge = args.trace is not None or (args.chart is not None and not sweep)
    results: list[ScaleResult] = []
    problems: list[str] = []
    with TextBar(len(runs)) as bar:
        for name, count in runs:
            bar.start(f"{name}, {count:,} clients", _expected_seconds(args, count))
            try:
                result = run_clients(name, count, **options)
            except (UsageError, ValueError):
                raise  # an argument that cannot work: exit 2, from main
            except LabkitError as exc:  # the run failed: say so after what did run
                problems.append(f"{name} with {count:,} clients failed: {exc}")
                break
            if merge:
                _copy(result.trace, trace, f"{name}: {count} clients" if sweep else name)
            results.append(result)
    problems[:0] = [f"{r.technique} with {r.clients:,} clients delivered {r.deliveries:,} of "
                    f"{r.clients * r.events:,} events within the bound ({r.seconds:.1f} s)"
                    for r in results if not r.complete]
    if results:
        _report(args, trace, results, sweep)
    for problem in problems:
        print(f"labkit {args.command}: {' '.join(problem.split())}", file=sys.stderr)
    return 1 if problems else 0


def _report(args: argparse.Namespace, trace: Trace, results: list[ScaleResult],
            sweep: bool) -> None:
    """Print the table (or JSON) and write the files asked for."""
    if args.format == "json":
        print(json.dumps([_plain(r.row()) for r in results], indent=1))
    else:
        print(format_table(results, SWEEP_COLUMNS if sweep else COLUMNS))
        shown = dict.fromkeys(r.technique for r in results)
        for name in (name for name in shown if name in FOOTNOTES):
            print(textwrap.fill(FOOTNOTES[name], 100, initial_indent="* ",
                                subsequent_indent="  "))
    written = _write(args, trace, results, sweep)
    if args.format == "text":
        for path in written:
            print(f"wrote {path}")


def _expected_seconds(args: argparse.Namespace, clients: int) -> float:
    """About how long one run takes: its schedule, plus starting the clients."""
    schedule = poisson(args.rate, count=args.events, seed=args.seed) \
        if args.schedule == "poisson" else fixed_rate(args.rate, count=args.events)
    return schedule[-1] + 0.5 + clients / 500


def _copy(source: Trace, into: Trace, technique: str) -> None:
    """Add every record of ``source`` to ``into`` under ``technique``, times unchanged."""
    for r in source.records():
        into.add(r.kind, technique=technique, client=r.client, t=r.t, status=r.status,
                 bytes=r.bytes, duration=r.duration, latency=r.latency, events=r.events,
                 event_id=r.event_id, detail=r.detail)


def _write(args: argparse.Namespace, trace: Trace, results: list[ScaleResult],
           sweep: bool) -> list[Path]:
    written = []
    try:
        if args.trace is not None:
            if args.trace.suffix.lower() == ".json":
                trace.to_json(args.trace)
            else:
                trace.to_csv(args.trace)
            written.append(args.trace)
        if args.chart is not None:
            import matplotlib  # loaded only when a chart is asked for
            matplotlib.use("Agg")  # files only: no window, no display needed
            from labkit.cli import charts
            charts.save(charts.scaling(results) if sweep else charts.comparison(trace, results),
                        args.chart)
            written.append(args.chart)
    except OSError as exc:
        raise LabkitError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return written


# -- printing ------------------------------------------------------------------------------


def format_table(results: list[ScaleResult], columns: dict[str, Callable] = COLUMNS) -> str:
    """The results as an aligned plain-text table: text columns to the left, numbers right."""
    rows = [list(columns)] + [[cell(r) for cell in columns.values()] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join("  ".join(text.ljust(width) if i == 0 else text.rjust(width)
                               for i, (text, width) in enumerate(zip(row, widths)))
                     for row in rows)


def _number(value: float, form: str) -> str:
    return form.format(value) if math.isfinite(value) else "-"


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row JSON can carry: NaN and infinity (nothing delivered) become null."""
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in row.items()}
