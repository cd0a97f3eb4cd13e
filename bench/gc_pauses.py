"""Bench: how long Python's garbage collector stops the kit while it holds what it recorded.

CPython's cyclic collector stops the whole process while it walks every
object it tracks; a full (generation-2) collection walks all of them. A
receiver that keeps each delivery and each trace record as tracked Python
objects makes every full collection longer as it fills, and that pause lands
in the latencies a lesson measures. This bench measures it.

Each probe is a process of its own, pinned to one core, with labkit and
tornado imported and a :class:`~labkit.webhooks.WebhookReceiver` served (so
the lab loop's thread runs, as in a lesson). It times ``--collections``
forced full collections (``gc.collect()``, the worst case a natural one can
cost; a 64 MB buffer is read before each, so that it starts with cold caches
as a natural one does) twice:

* ``empty``: before anything is recorded: what the interpreter, tornado and
  labkit cost a full collection on their own (the baseline);
* ``holding``: after it has recorded ``--records`` trace records, written
  with :meth:`~labkit.trace.Trace.add` and :meth:`~labkit.trace.Trace.delivered`
  as the wire layer and a technique write them (request, response and event
  records, one client name per request), and then received ``--deliveries``
  GitHub-signed JSON deliveries of about 1 KB over loopback, sent by this
  process on the other core over 16 keep-alive connections, each with its own
  delivery id. The receiver keeps every one, and the wire layer adds a
  ``request`` and a ``response`` record for each: 300,000 records and 100,000
  deliveries held by default.

The kit's share is ``holding`` minus ``empty``, in the same process. The
natural full collections that happen while it fills up are timed too.
``gc.callbacks`` time every collection, in wall time (what a request waiting
behind the collector sees, machine load included) and in the collecting
thread's CPU time (what the collector itself costs). ``tracemalloc``
measures the memory per trace record and per delivery (with its two records),
``gc.get_objects()`` the objects the collector tracks, and the tracked
containers of 10,000 items or more are named: the collector visits each of
their items at every full collection, whatever the items are. With
``--freeze``, each probe calls ``gc.freeze()`` once its imports are done and
its server listens, before it measures anything: what an application could
do about the baseline. ``--rounds`` probes run one after the other.

Exit status 0; 1 if a delivery was not answered 200; 2 if the run exceeded
``--timeout``. The target (no full collection over 5 ms) is reported, not
enforced.

    nice .venv/bin/python bench/gc_pauses.py
    nice .venv/bin/python bench/gc_pauses.py --freeze
    nice .venv/bin/python bench/gc_pauses.py --deliveries 0       # trace records alone
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import platform
import statistics
import sys
import time

from receiver_throughput import (SECRET, load_average, make_bodies, make_requests, pick_cores, pin,
                                 send_all)

SENDERS = 16
"""Keep-alive connections the deliveries arrive on."""
TARGET_MS = 5.0
"""No full collection should stop the kit for longer than this."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="trace records (100000)")
    parser.add_argument("--deliveries", type=int, default=100_000,
                        help="deliveries kept by the receiver (100000)")
    parser.add_argument("--collections", type=int, default=20,
                        help="forced full collections timed before and after filling (20)")
    parser.add_argument("--rounds", type=int, default=3, help="probes, one after the other (3)")
    parser.add_argument("--freeze", action="store_true",
                        help="gc.freeze() in every probe before it records anything")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="abort the whole run after S seconds (1800)")
    args = parser.parse_args(argv)
    if args.records < 0 or args.deliveries < 0 or args.collections < 1 or args.rounds < 1:
        parser.error("need --records >= 0, --deliveries >= 0, --collections >= 1, --rounds >= 1")
    return args


class Collections:
    """Every full collection of this process: wall and CPU seconds, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._started = (0.0, 0.0)
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
        else:
            self.wall.append(time.perf_counter() - self._started[0])
            self.cpu.append(time.thread_time() - self._started[1])

    def since(self, start: int) -> dict:
        wall, cpu = self.wall[start:], self.cpu[start:]
        return {"count": len(wall), "wall max": max(wall, default=0.0),
                "wall median": statistics.median(wall) if wall else 0.0,
                "cpu max": max(cpu, default=0.0),
                "cpu median": statistics.median(cpu) if cpu else 0.0}


def fill_trace(trace, count: int) -> None:
    """``count`` records as a served technique writes them: request, response, then an event.

    The wire layer names a client ``ip:port``, one string per request shared
    by its records; here 16 requests per connection. Numbers vary as real ones do.
    """
    from types import SimpleNamespace

    event = SimpleNamespace(id="", created=time.monotonic())
    client = ""
    for n in range(count):
        step = n % 3
        if step == 0:
            client = f"127.0.0.1:{40000 + n // 48}"     # one name per request, as wire makes it
            trace.add("request", technique="webhook", client=client, t=time.monotonic(),
                      bytes=1200 + n % 97)
        elif step == 1:
            trace.add("response", technique="webhook", client=client, status=200,
                      bytes=90 + n % 7, duration=0.0004 + n % 13 * 1e-5, events=1, detail="")
        else:
            event.id = f"evt_{n:07d}"
            trace.delivered(event, technique="webhook", detail=f"from {client}")


def forced(collections: Collections, count: int, cold: bytearray) -> dict:
    """Time ``count`` forced full collections, each after reading ``cold``.

    Reading a buffer larger than the caches first makes each collection start
    with cold caches, as a natural one does after the process served requests.
    """
    start = len(collections.wall)
    for _ in range(count):
        cold.count(b"\1")
        gc.collect()
    return collections.since(start)


def big_containers(least: int = 10_000) -> list[str]:
    """The tracked containers with at least ``least`` items: each costs every full collection
    a visit per item, whatever the items are."""
    found = sorted(((len(obj), type(obj).__name__) for obj in gc.get_objects()
                    if isinstance(obj, (list, tuple, dict, set, frozenset)) and len(obj) >= least),
                   reverse=True)
    return [f"{kind} of {size:,}" for size, kind in found]


def probe(conn, core: int | None, args: argparse.Namespace) -> None:
    """One probe process: serve a receiver, time full collections, fill it, time them again.

    The parent sends the deliveries over loopback once told the port.
    """
    pin(core)
    collections = Collections()
    import tracemalloc

    from labkit.webhooks import GitHubSignature, WebhookReceiver, serve_receiver

    cold = bytearray(64 << 20)
    receiver = WebhookReceiver([GitHubSignature(SECRET)])
    server = serve_receiver(receiver)
    gc.collect()
    if args.freeze:
        gc.freeze()
    tracked = len(gc.get_objects())
    report = {"empty": forced(collections, args.collections, cold)}
    natural = len(collections.wall)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fill_trace(server.trace, args.records)
    after_trace = tracemalloc.get_traced_memory()[0]
    conn.send(server.port)
    conn.recv()                                       # the parent has sent the deliveries
    gc.collect()
    after_deliveries = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    report["natural"] = collections.since(natural)
    report["records"], report["deliveries"] = len(server.trace), len(receiver.deliveries)
    report["bytes/record"] = (after_trace - before) / max(1, args.records)
    report["bytes/delivery"] = (after_deliveries - after_trace) / max(1, args.deliveries)
    gc.collect()
    report["tracked objects added"] = len(gc.get_objects()) - tracked
    report["big containers"] = big_containers()
    report["holding"] = forced(collections, args.collections, cold)
    server.stop()
    conn.send(report)


def receive(conn, process, what: str, deadline: float):
    """The probe's next message; TimeoutError if it dies or the deadline passes first."""
    while not conn.poll(0.5):
        if not process.is_alive():
            raise TimeoutError(f"the probe died before {what} (exit code {process.exitcode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the probe took too long before {what}")
    return conn.recv()


def run_probe(args, raw_for, core, deadline: float) -> dict:
    """Start a probe, send it the deliveries when it asks, return its report."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=probe, args=(child, core, args), daemon=True)
    process.start()
    try:
        port = receive(parent, process, "it listened", deadline)
        remaining = deadline - time.monotonic()
        try:
            statuses, _ = asyncio.run(asyncio.wait_for(
                send_all(port, raw_for(port), SENDERS), max(0.0, remaining)))
        except asyncio.TimeoutError:
            raise TimeoutError("the probe did not take every delivery in time") from None
        wrong = sum(1 for status in statuses if status != 200)
        parent.send("sent")
        return {**receive(parent, process, "it reported", deadline), "wrong": wrong}
    finally:
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


PHASES = ("empty", "holding", "natural")
STATS = ("wall median", "wall max", "cpu median", "cpu max")


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.timeout
    server_core, load_core, note = pick_cores()
    pin(load_core)                                    # this process sends the deliveries
    bodies = make_bodies(1_000, 1_024, seed=1)
    copies = -(-args.deliveries // len(bodies))

    def raw_for(port: int) -> list[bytes]:
        """The deliveries, each with its own id (the receiver keeps a repeat only once)."""
        return make_requests((bodies * copies)[:args.deliveries], port, forged_every=10**9)[0]

    print(f"gc pauses: {args.records:,} trace records written directly, then {args.deliveries:,} "
          f"deliveries over loopback ({SENDERS} senders; the wire layer adds 2 records each); "
          f"{args.collections} forced full collections before and after, {args.rounds} probes"
          + (", gc.freeze() before anything" if args.freeze else ""))
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs; probes on core "
          f"{server_core}; load average {load_average()}  ({note})")
    print()
    print(f"{'probe':>5}  {'phase':<8} {'count':>5} " + " ".join(f"{s + ' ms':>14}" for s in STATS)
          + f" {'tracked +':>10} {'B/record':>9} {'B/delivery':>11}")
    reports, wrong = [], 0
    try:
        for round_ in range(1, args.rounds + 1):
            report = run_probe(args, raw_for, server_core, deadline)
            reports.append(report)
            wrong += report["wrong"]
            for phase in PHASES:
                stats = report[phase]
                extra = (f" {report['tracked objects added']:>10,} {report['bytes/record']:>9.0f} "
                         f"{report['bytes/delivery']:>11.0f}" if phase == "holding" else "")
                print(f"{round_:>5}  {phase:<8} {stats['count']:>5} "
                      + " ".join(f"{ms(stats[s]):>14}" for s in STATS) + extra, flush=True)
    except TimeoutError as exc:
        print(f"\nabort: {exc} (--timeout {args.timeout:g} s)", file=sys.stderr)
        return 2

    def median(phase: str, stat: str) -> float:
        return statistics.median(r[phase][stat] for r in reports)

    print()
    print("medians over probes (ms); empty = before anything is recorded, holding = after; "
          "natural = while filling")
    print(f"  {'':<24} " + " ".join(f"{s:>11}" for s in STATS))
    for phase in PHASES:
        print(f"  {phase:<24} " + " ".join(f"{ms(median(phase, s)):>11}" for s in STATS))
    print(f"  {'the kit (holding - empty)':<24} " + " ".join(
        f"{ms(median('holding', s) - median('empty', s)):>11}" for s in STATS))
    print(f"held at the end: {reports[0]['records']:,} trace records, "
          f"{reports[0]['deliveries']:,} deliveries; objects the collector tracks: "
          f"+{statistics.median(r['tracked objects added'] for r in reports):,.0f}")
    print("tracked containers of 10,000 items or more, walked item by item by every full "
          "collection: " + (", ".join(reports[0]["big containers"]) or "none"))
    per_delivery = (f"; {statistics.median(r['bytes/delivery'] for r in reports):.0f} B per "
                    f"delivery, with its 2 trace records and its id kept to spot repeats (its "
                    f"body: {statistics.mean(len(b) for b in bodies):.0f} B)"
                    if args.deliveries else "")
    print(f"memory: {statistics.median(r['bytes/record'] for r in reports):.0f} B per trace "
          f"record{per_delivery}")
    worst = max(max(r["holding"]["wall max"], r["natural"]["wall max"]) for r in reports)
    worst_cpu = max(max(r["holding"]["cpu max"], r["natural"]["cpu max"]) for r in reports)
    print(f"target (no full collection over {TARGET_MS:g} ms while holding them): longest "
          f"{ms(worst)} ms wall, {ms(worst_cpu)} ms CPU; of which the kit's "
          f"{ms(median('holding', 'cpu max') - median('empty', 'cpu max'))} ms (CPU max, "
          f"holding - empty)")
    print(f"load average at the end: {load_average()}")
    if wrong:
        print(f"\nFAIL: {wrong} deliveries were not answered 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
