"""Bench: how long Python's garbage collector stops the kit while it holds what it recorded.

CPython's cyclic collector stops the whole process while it walks every
object it tracks; a full (generation-2) collection walks all of them. A
receiver that keeps each delivery and each trace record as tracked Python
objects makes every full collection longer as it fills, and that pause lands
in the latencies a lesson measures. And even a kit that adds nothing pays for
what the process already holds: the interpreter with tornado and labkit
imported (about 32,000 tracked objects), a Jupyter kernel with numpy and
matplotlib (about 95,000). So the lab loop, when it starts, collects once
and calls ``gc.freeze()`` (see :mod:`labkit.lab`): what is alive then is
never walked again. This bench measures both sides of that, in two modes:

* ``freeze``: the lab as it ships (``LABKIT_GC_FREEZE`` unset);
* ``no-freeze``: ``LABKIT_GC_FREEZE=0``, the lab leaves the collector alone
  (the kit before the freeze, and what a user who turns it off gets).

Each probe is a process of its own, pinned to one core. With ``--kernel`` it
first loads what a student's kernel holds before the lab starts (IPython's
shell, numpy, matplotlib with a figure drawn and kept). It then serves a
:class:`~labkit.webhooks.WebhookReceiver` (the lab loop starts here, so the
freeze happens here) and times ``--collections`` forced full collections
(``gc.collect()``, the worst case a natural one can cost; a 64 MB buffer is
read before each, so that it starts with cold caches as a natural one does)
twice:

* ``empty``: before anything is recorded;
* ``holding``: after it has recorded ``--records`` trace records, written
  with :meth:`~labkit.trace.Trace.add` and :meth:`~labkit.trace.Trace.delivered`
  as the wire layer and a technique write them (request, response and event
  records, one client name per request), and then received ``--deliveries``
  GitHub-signed JSON deliveries of about 1 KB over loopback, sent by this
  process on the other core over 16 keep-alive connections, each with its own
  delivery id. The receiver keeps every one, and the wire layer adds a
  ``request`` and a ``response`` record for each: 300,000 records and 100,000
  deliveries held by default.

The natural collections while it fills up are timed too, full ones and young
ones (generations 0 and 1) apart. ``gc.callbacks`` time every collection, in
wall time (what a request waiting behind the collector sees, machine load
included) and in the collecting thread's CPU time (what the collector itself
costs). ``tracemalloc`` measures the memory per trace record and per delivery
(with its two records), ``gc.get_objects()`` the objects the collector
tracks, and the tracked containers of 10,000 items or more are named: the
collector visits each of their items at every full collection.

What the freeze costs: an object alive at the freeze that later becomes
garbage in a reference cycle is never freed. At the end each probe stops its
server, drops it and the receiver (and, with ``--kernel``, closes the
figure), collects, then unfreezes and collects once more with
``gc.DEBUG_SAVEALL``: what that second collection finds is exactly the
garbage the freeze kept alive; its size (the objects and what only they
refer to, by ``sys.getsizeof``) is printed in MB, with the frozen objects'
count and size. The one collection the lab runs when it starts is timed too.

Exit status 0; 1 if a delivery was not answered 200; 2 if the run exceeded
``--timeout``. The target (no collection over 5 ms) is reported, not enforced.

    nice .venv/bin/python bench/gc_pauses.py
    nice .venv/bin/python bench/gc_pauses.py --kernel --deliveries 20000
    nice .venv/bin/python bench/gc_pauses.py --modes no-freeze --deliveries 0   # records alone
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
"""No collection should stop the kit for longer than this."""
MODES = {"freeze": "1", "no-freeze": "0"}
"""Each mode's value of ``LABKIT_GC_FREEZE`` in the probe."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="trace records (100000)")
    parser.add_argument("--deliveries", type=int, default=100_000,
                        help="deliveries kept by the receiver (100000)")
    parser.add_argument("--collections", type=int, default=20,
                        help="forced full collections timed before and after filling (20)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="probes per mode, the modes taking turns (3)")
    parser.add_argument("--modes", default="freeze,no-freeze",
                        help="comma-separated, from: freeze (the lab as it ships), no-freeze "
                             "(LABKIT_GC_FREEZE=0) (both)")
    parser.add_argument("--kernel", action="store_true",
                        help="load what a Jupyter kernel holds before the lab starts")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="abort the whole run after S seconds (1800)")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes takes a comma-separated list from {', '.join(MODES)}")
    if args.records < 0 or args.deliveries < 0 or args.collections < 1 or args.rounds < 1:
        parser.error("need --records >= 0, --deliveries >= 0, --collections >= 1, --rounds >= 1")
    return args


class Collections:
    """Every collection of this process, by generation: wall and CPU seconds (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.wall: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.cpu: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = (0.0, 0.0)
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
        else:
            self.wall[info["generation"]].append(time.perf_counter() - self._started[0])
            self.cpu[info["generation"]].append(time.thread_time() - self._started[1])

    def mark(self) -> dict[int, int]:
        """How many collections of each generation so far (for :meth:`since`)."""
        return {generation: len(times) for generation, times in self.wall.items()}

    def since(self, mark: dict[int, int]) -> dict:
        """Full collections since ``mark`` (count, wall and CPU median and max) and young ones
        (generations 0 and 1: count, wall and CPU max)."""
        wall, cpu = self.wall[2][mark[2]:], self.cpu[2][mark[2]:]
        young_wall = self.wall[0][mark[0]:] + self.wall[1][mark[1]:]
        young_cpu = self.cpu[0][mark[0]:] + self.cpu[1][mark[1]:]
        return {"count": len(wall), "wall median": statistics.median(wall) if wall else 0.0,
                "wall max": max(wall, default=0.0),
                "cpu median": statistics.median(cpu) if cpu else 0.0,
                "cpu max": max(cpu, default=0.0), "young count": len(young_wall),
                "young wall max": max(young_wall, default=0.0),
                "young cpu max": max(young_cpu, default=0.0)}


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
    mark = collections.mark()
    for _ in range(count):
        cold.count(b"\1")
        gc.collect()
    return collections.since(mark)


def big_containers(least: int = 10_000) -> list[str]:
    """The tracked containers with at least ``least`` items: each costs every full collection
    a visit per item, whatever the items are."""
    found = sorted(((len(obj), type(obj).__name__) for obj in gc.get_objects()
                    if isinstance(obj, (list, tuple, dict, set, frozenset)) and len(obj) >= least),
                   reverse=True)
    return [f"{kind} of {size:,}" for size, kind in found]


def size_of(objects: list) -> int:
    """Bytes of ``objects`` and of the untracked objects (strings, numbers) they refer to."""
    seen: set[int] = set()
    total = 0
    for obj in objects:
        for part in (obj, *gc.get_referents(obj)):
            if id(part) not in seen and (part is obj or not gc.is_tracked(part)):
                seen.add(id(part))
                total += sys.getsizeof(part)
    return total


def frozen_size() -> int:
    """Bytes of what is frozen (its objects and the untracked objects they refer to).

    ``gc.get_objects()`` does not list the frozen generation, so this unfreezes,
    measures and freezes again: the same objects (and the few made since) end frozen.
    """
    gc.unfreeze()
    try:
        return size_of(gc.get_objects())
    finally:
        gc.freeze()


def load_kernel() -> list:
    """What a student's kernel holds before the lab starts: IPython's shell, numpy,
    matplotlib (Agg) with one figure drawn and kept, as a notebook keeps its figures."""
    import matplotlib
    import numpy
    from IPython.core.interactiveshell import InteractiveShell

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    InteractiveShell.instance()
    figure, axes = plt.subplots()
    x = numpy.arange(1_000)
    axes.plot(x, numpy.sin(x / 50))
    figure.canvas.draw()
    return [figure]


def kept_alive() -> dict:
    """The garbage only the freeze keeps: collect what is not frozen, then unfreeze and
    collect with ``DEBUG_SAVEALL``, which keeps what it finds in ``gc.garbage`` to be measured."""
    gc.collect()
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return {"objects": len(garbage), "bytes": size_of(garbage)}


def probe(conn, core: int | None, mode: str, args: argparse.Namespace) -> None:
    """One probe process: serve a receiver, time full collections, fill it, time them again,
    then drop it all and measure what the freeze kept alive.

    The parent sends the deliveries over loopback once told the port.
    """
    pin(core)
    os.environ["LABKIT_GC_FREEZE"] = MODES[mode]      # read when labkit.lab is imported
    collections = Collections()
    import tracemalloc

    kernel = load_kernel() if args.kernel else []
    from labkit.webhooks import GitHubSignature, WebhookReceiver, serve_receiver

    cold = bytearray(64 << 20)
    receiver = WebhookReceiver([GitHubSignature(SECRET)], keep=None)   # hold them all
    mark = collections.mark()
    started = time.perf_counter()
    server = serve_receiver(receiver)                 # the lab loop starts: collect, freeze
    report = {"start ms": (time.perf_counter() - started) * 1e3,
              "start full cpu ms": collections.since(mark)["cpu max"] * 1e3,
              "frozen objects": gc.get_freeze_count(),
              "frozen MB": frozen_size() / 1e6 if gc.get_freeze_count() else 0.0}
    tracked = len(gc.get_objects())
    report["tracked"] = tracked
    report["empty"] = forced(collections, args.collections, cold)
    natural = collections.mark()
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
    del server, receiver                              # what a notebook drops when it is done
    if kernel:
        import matplotlib.pyplot as plt
        plt.close("all")
        kernel.clear()
    alive = kept_alive()
    report["kept alive"], report["kept alive MB"] = alive["objects"], alive["bytes"] / 1e6
    conn.send(report)


def receive(conn, process, what: str, deadline: float):
    """The probe's next message; TimeoutError if it dies or the deadline passes first."""
    while not conn.poll(0.5):
        if not process.is_alive():
            raise TimeoutError(f"the probe died before {what} (exit code {process.exitcode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the probe took too long before {what}")
    return conn.recv()


def run_probe(args, mode: str, raw_for, core, deadline: float) -> dict:
    """Start a probe, send it the deliveries when it asks, return its report."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=probe, args=(child, core, mode, args), daemon=True)
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
STATS = ("wall median", "wall max", "cpu median", "cpu max", "young wall max", "young cpu max")


def summarize(mode: str, reports: list[dict], args) -> None:
    """Print one mode's medians over probes, its memory figures and the target."""
    def median(phase: str, stat: str) -> float:
        return statistics.median(r[phase][stat] for r in reports)

    def typical(key: str) -> float:
        return statistics.median(r[key] for r in reports)

    print(f"\n{mode}: medians over {len(reports)} probes (ms); empty = before anything is "
          f"recorded, holding = after, natural = while filling; young = generations 0 and 1")
    print(f"  {'':<26} " + " ".join(f"{s:>14}" for s in STATS))
    for phase in PHASES:
        print(f"  {phase:<26} " + " ".join(f"{ms(median(phase, s)):>14}" for s in STATS))
    print(f"  {'the kit (holding - empty)':<26} " + " ".join(
        f"{ms(median('holding', s) - median('empty', s)):>14}" for s in STATS[:4]))
    first = reports[0]
    print(f"  held at the end: {first['records']:,} trace records, {first['deliveries']:,} "
          f"deliveries; tracked objects at the start {typical('tracked'):,.0f}, added "
          f"+{typical('tracked objects added'):,.0f}; containers of 10,000 items or more: "
          + (", ".join(first["big containers"]) or "none"))
    per_delivery = (f"; {typical('bytes/delivery'):.0f} B per delivery, with its 2 trace "
                    f"records and its id kept to spot repeats" if args.deliveries else "")
    print(f"  memory: {typical('bytes/record'):.0f} B per trace record{per_delivery}")
    print(f"  lab start: {typical('start ms'):.0f} ms (its full collection "
          f"{typical('start full cpu ms'):.1f} ms CPU); frozen: {typical('frozen objects'):,.0f} "
          f"objects, {typical('frozen MB'):.1f} MB; kept alive by the freeze once all was "
          f"dropped: {typical('kept alive'):,.0f} objects, {typical('kept alive MB'):.2f} MB")
    worst = max(max(r["holding"]["wall max"], r["natural"]["wall max"]) for r in reports)
    worst_cpu = max(max(r["holding"]["cpu max"], r["natural"]["cpu max"]) for r in reports)
    young = max(r["natural"]["young wall max"] for r in reports)
    young_cpu = max(r["natural"]["young cpu max"] for r in reports)
    met = max(worst_cpu, young_cpu) * 1e3 <= TARGET_MS
    print(f"  target (no collection over {TARGET_MS:g} ms while holding them): longest full "
          f"{ms(worst)} ms wall, {ms(worst_cpu)} ms CPU; longest young {ms(young)} ms wall, "
          f"{ms(young_cpu)} ms CPU: {'met' if met else 'MISSED'} (by CPU time)")


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
          f"{args.collections} forced full collections before and after; modes "
          f"{', '.join(args.modes)}, {args.rounds} probes each, taking turns"
          + ("; a kernel's load (IPython, numpy, matplotlib) first" if args.kernel else ""))
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs; probes on core "
          f"{server_core}; load average {load_average()}  ({note})")
    print()
    print(f"{'probe':>5}  {'mode':<9} {'phase':<8} {'full':>4} "
          + " ".join(f"{s + ' ms':>17}" for s in STATS) + f" {'young':>6}")
    reports: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    wrong = 0
    try:
        for round_ in range(1, args.rounds + 1):
            for mode in (args.modes if round_ % 2 else args.modes[::-1]):
                report = run_probe(args, mode, raw_for, server_core, deadline)
                reports[mode].append(report)
                wrong += report["wrong"]
                for phase in PHASES:
                    stats = report[phase]
                    print(f"{round_:>5}  {mode:<9} {phase:<8} {stats['count']:>4} "
                          + " ".join(f"{ms(stats[s]):>17}" for s in STATS)
                          + f" {stats['young count']:>6}", flush=True)
    except TimeoutError as exc:
        print(f"\nabort: {exc} (--timeout {args.timeout:g} s)", file=sys.stderr)
        return 2
    for mode in args.modes:
        summarize(mode, reports[mode], args)
    print(f"\nload average at the end: {load_average()}")
    if wrong:
        print(f"\nFAIL: {wrong} deliveries were not answered 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
