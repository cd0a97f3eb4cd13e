"""Bench: signed webhooks per second and their latency, labkit's receiver next to plain tornado.

Two receivers get the same load, one after the other, each in a process of its
own pinned to one CPU core (the load generator is pinned to another):

* ``labkit``: a :class:`~labkit.webhooks.WebhookReceiver` verifying
  ``X-Hub-Signature-256`` with :class:`~labkit.webhooks.GitHubSignature`, served
  by :func:`labkit.webhooks.serve_receiver`, so every request is also traced
  (the wire layer counts its bytes and writes request/response records) and
  every accepted delivery is parsed and kept; its process runs the lab as it
  ships, so the lab loop's start collects and freezes what exists
  (:mod:`labkit.lab`; ``LABKIT_GC_FREEZE=0`` in the environment turns it off);
* ``plain``: a bare tornado ``RequestHandler`` doing the same check by hand
  (HMAC-SHA256 over the raw body, ``hmac.compare_digest``, 401 on mismatch)
  and parsing the JSON body, nothing else.

The load: for each count in ``--senders`` (default 1, 16 and 64), that many
concurrent keep-alive HTTP/1.1 connections (raw asyncio streams, requests
prepared in advance, so the sender side stays cheap) share ``--deliveries``
deliveries of about ``--size`` bytes, one in ``--forged-every`` signed with the
wrong secret. Every forged delivery must be refused (401) and every genuine
one accepted (200); the receiver's own counts are checked too. Each delivery's
latency is timed by its sender, from the first byte written to the last byte
of the answer read. Each round measures both receivers, alternating which goes
first; the summary gives, per sender count, medians over rounds of the rate
and of p50/p99/max latency, and the ratios labkit / plain. The target: rate
ratio at least 1.00 and p99 ratio at most 1.20 at every sender count. On a
shared machine the load changes from one measurement to the next, so the
summary also gives the median of each round's own ratio (its two
measurements ran back to back).

Each server also reports its CPU time per delivery (user + system, from
``/proc``: what a delivery costs it, whatever else the machine runs; the
ratio of these is the fairest comparison on a busy machine; the summary
splits it into user and system time), its full
(generation-2) garbage collections while it served, the longest of them,
and its peak memory. The machine is shared, so
the load average and the CPU time other processes used during each
measurement ("others", in cores) are printed with it.

``--interleave N`` measures the two in turns instead: both receivers run at
once (each in its own process, both pinned to the server core, one busy at a
time), each keeps its senders' connections open, and they take turns of N
deliveries (A B B A A B ...) until each has had all of its own. A busy spell
of the shared machine then falls on both alike, which one-after-the-other
measurements seconds apart cannot promise; the figures are sums over each
receiver's turns. Use it to tell a real difference from the machine's noise.

Each server's minor page faults per delivery are printed too: memory touched
for the first time (a receiver that keeps what it received asks for some),
which the kernel serves in system time (about 2 us a page on the machine the
docs' figures come from).

``--overhead`` then measures what the kit's bookkeeping adds to one exchange.
One process, pinned like the others, serves the plain handler three ways on
the lab loop: ``bare`` (tornado's own HTTP server), ``wired`` (through
:func:`labkit.lab.serve`: the wire layer counts the exchange and writes its
``request`` and ``response`` records) and ``traced`` (the same, and the
handler calls :meth:`~labkit.trace.Trace.delivered`, as a technique does for
each event that reaches it). One sender sends batches of 250 requests to
each in turn (10 batches per round), so the machine's changing load falls on
all three alike; the medians over batches of the p50 differences are the
time the wire layer and the trace add to an exchange. The in-process cost of
the three trace calls alone is timed too. ``--profile`` runs each receiver
once more under cProfile, at the largest sender count, and says where the
time goes.

Loopback only. Exit status: 0 if every status was right, 1 if any was wrong, 2
if the run exceeded ``--timeout``. The targets are reported, not enforced.

    nice .venv/bin/python bench/receiver_throughput.py --overhead
    nice .venv/bin/python bench/receiver_throughput.py --senders "" --overhead --rounds 7
    .venv/bin/python bench/receiver_throughput.py --senders 64 --rounds 5 --profile
    nice .venv/bin/python bench/receiver_throughput.py --rounds 7 --interleave 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import hmac
import json
import math
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import time
from types import SimpleNamespace

SECRET = "bench-webhook-secret"
WRONG_SECRET = "not-the-secret"
HOST = "127.0.0.1"
WARMUP = 200
"""Genuine deliveries sent (and checked) before the clock starts: connections open, caches warm."""
TARGET_RATE, TARGET_P99 = 1.00, 1.20
"""labkit / plain: at least this rate ratio, at most this p99 ratio."""
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Timeout(Exception):
    """The run went past --timeout."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=5_000,
                        help="deliveries per measurement (5000)")
    parser.add_argument("--senders", default="1,16,64",
                        help="comma-separated counts of concurrent keep-alive senders (1,16,64); "
                             "empty: no throughput part")
    parser.add_argument("--size", type=int, default=1_024,
                        help="approximate body size in bytes (1024)")
    parser.add_argument("--forged-every", type=int, default=10,
                        help="one delivery in N is signed with the wrong secret (10)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds per sender count, each measuring both receivers (5)")
    parser.add_argument("--interleave", type=int, default=0, metavar="N",
                        help="run both receivers at once and measure them in turns of N "
                             "deliveries (0: one after the other, the default)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="abort the whole run after S seconds (900)")
    parser.add_argument("--overhead", action="store_true",
                        help="afterwards, measure what tracing adds to one exchange")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, profile each receiver once and show where the time goes")
    parser.add_argument("--seed", type=int, default=1, help="seed for the bodies (1)")
    args = parser.parse_args(argv)
    try:
        args.senders = [int(n) for n in args.senders.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--senders needs comma-separated integers, not {args.senders!r}")
    if (args.deliveries < 1 or min(args.senders, default=1) < 1 or args.size < 64
            or args.forged_every < 2 or args.rounds < 1 or args.interleave < 0):
        parser.error("need --deliveries >= 1, --senders >= 1, --size >= 64, --forged-every >= 2, "
                     "--rounds >= 1, --interleave >= 0")
    return args


# -- cores and the machine's load ----------------------------------------------------------


def pick_cores() -> tuple[int | None, int | None, str]:
    """(server core, load core, note). None when the machine cannot give each its own core."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None, "no CPU pinning on this platform: numbers are noisier"
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None, f"only {len(cores)} core available: server and load share it"
    return cores[0], cores[1], f"server on core {cores[0]}, load generator on core {cores[1]}"


def pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of process ``pid`` (all its threads), in seconds."""
    fields = _stat(pid)
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def page_faults(pid: int) -> int:
    """Minor page faults of process ``pid`` so far: each is a page of memory touched for the
    first time (or again after it went back to the system), work the kernel does in its
    system time."""
    return int(_stat(pid)[7])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    return sum(cpu_times(pid))


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class OthersMeter:
    """CPU time that processes other than ours used during a window, in cores."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.started = time.monotonic()
        self.busy = machine_busy() - self._ours()

    def _ours(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def cores(self) -> float:
        elapsed = time.monotonic() - self.started
        return max(0.0, machine_busy() - self._ours() - self.busy) / elapsed if elapsed else 0.0


# -- what a server reports about itself --------------------------------------------------


class PauseLog:
    """Every garbage collection of this process, timed with ``gc.callbacks``."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def restart(self) -> None:
        """Forget what was timed so far (the collection the lab loop runs when it starts)."""
        for pauses in self.pauses.values():
            pauses.clear()

    def report(self) -> dict:
        full = self.pauses[2]
        every = [p for pauses in self.pauses.values() for p in pauses]
        return {"full collections": len(full), "longest full (ms)": max(full, default=0) * 1e3,
                "longest any (ms)": max(every, default=0) * 1e3,
                "peak memory (MB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# -- the receivers, each run in its own process ----------------------------------------------


def _expected_signature(body: bytes, key: bytes) -> bytes:
    return ("sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()).encode()


def _profile_summary(profiler, deliveries: int) -> list[tuple[str, float]]:
    """Own time (tottime) per area of code, in microseconds per delivery, largest first."""
    import pstats

    stats = pstats.Stats(profiler)
    areas: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        areas[_area(filename, function)] = areas.get(_area(filename, function), 0.0) + tottime
    return sorted(((area, seconds / deliveries * 1e6) for area, seconds in areas.items()),
                  key=lambda item: -item[1])


def _area(filename: str, function: str) -> str:
    """The area of code a profiled function belongs to, for the where-the-time-goes table."""
    path = filename.replace("\\", "/")
    if "/labkit/" in path:
        return "labkit/" + path.rsplit("/labkit/", 1)[1]
    if "/tornado/" in path:
        return "tornado/" + path.rsplit("/tornado/", 1)[1]
    if "/asyncio/" in path:
        return "asyncio (event loop)"
    if filename == "~":                                   # C functions
        if "poll" in function:
            return "epoll wait (idle)"
        if "socket" in function:
            return "socket send/recv (C)"
        if "hashlib" in function or "hmac" in function or "compare_digest" in function:
            return "hmac / hashlib (C)"
        if "json" in function or "scanner" in function:
            return "json (C)"
        if "re.Pattern" in function or "_sre" in function:
            return "re (C)"
        return "other C built-ins"
    if path.endswith("/receiver_throughput.py"):
        return "the plain handler (this file)"
    parts = path.removesuffix(".py").rsplit("/", 2)
    module = parts[-2] if parts[-1] == "__init__" and len(parts) > 1 else parts[-1]
    return f"stdlib {module}"


def run_labkit(conn, core: int | None, profile: bool) -> None:
    """Serve labkit's receiver until told to stop; report its counts (and profile)."""
    pin(core)
    pauses = PauseLog()
    import cProfile

    from labkit import lab
    from labkit.webhooks import GitHubSignature, WebhookReceiver, serve_receiver

    receiver = WebhookReceiver([GitHubSignature(SECRET)])
    server = serve_receiver(receiver)
    pauses.restart()                      # the server listens: time what happens while it serves
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        lab.run(profiler.enable)          # profile the lab thread, where every request is served
    conn.send(server.port)
    conn.recv()                           # "stop"
    if profiler is not None:
        lab.run(profiler.disable)
    counts = receiver.counts               # every one, remembered or not
    report = {"accepted": counts["accepted"], "refused": counts["rejected"],
              "trace records": len(server.trace), **pauses.report()}
    server.stop()
    if profiler is not None:
        report["profile"] = _profile_summary(profiler, report["accepted"] + report["refused"])
    conn.send(report)


def plain_handler(counts: dict, trace=None):
    """The plain receiver: tornado's ``RequestHandler`` doing the HMAC check by hand.

    With a ``trace``, each accepted delivery is also recorded as an event
    delivered (``Trace.delivered``), as a technique records what reaches it.
    """
    import tornado.web

    key = SECRET.encode()
    event = SimpleNamespace(id="bench", created=time.monotonic())

    class PlainReceiver(tornado.web.RequestHandler):
        def post(self) -> None:
            body = self.request.body
            given = self.request.headers.get("X-Hub-Signature-256", "").encode()
            if not hmac.compare_digest(given, _expected_signature(body, key)):
                counts["refused"] += 1
                self.set_status(401)
                self.finish("mismatch\n")
                return
            json.loads(body)
            counts["accepted"] += 1
            if trace is not None:
                trace.delivered(event, technique="webhook", client="bench")
            self.set_status(200)
            self.finish()

    return PlainReceiver


def run_plain(conn, core: int | None, profile: bool) -> None:
    """Serve a bare tornado handler doing the same HMAC check until told to stop."""
    pin(core)
    pauses = PauseLog()
    import cProfile

    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    counts = {"accepted": 0, "refused": 0}

    async def main() -> None:
        app = tornado.web.Application([("/webhook", plain_handler(counts))],
                                      log_function=lambda handler: None)
        sockets = tornado.netutil.bind_sockets(0, address=HOST)
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        conn.send(sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        if profiler is not None:
            profiler.disable()
        server.stop()
        report = {**counts, **pauses.report()}
        if profiler is not None:
            report["profile"] = _profile_summary(profiler, counts["accepted"] + counts["refused"])
        conn.send(report)

    asyncio.run(main())


def run_pair(conn, core: int | None) -> None:
    """Serve the plain handler three ways on one lab loop, for ``--overhead``.

    ``bare``: tornado's own HTTP server, nothing of the kit's; ``wired``:
    through :func:`labkit.lab.serve`, so the wire layer counts each exchange
    and writes its request and response records; ``traced``: the same, and
    the handler calls :meth:`~labkit.trace.Trace.delivered` as a technique
    does for each event that reaches it.
    """
    pin(core)
    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    from labkit import lab
    from labkit.trace import Trace

    counts = {"accepted": 0, "refused": 0}
    trace = Trace()
    app = tornado.web.Application([("/webhook", plain_handler(counts))],
                                  log_function=lambda handler: None)
    sockets = tornado.netutil.bind_sockets(0, address=HOST)
    bare = lab.run(lambda: tornado.httpserver.HTTPServer(app))
    lab.run(lambda: bare.add_sockets(sockets))
    wired = lab.serve([("/webhook", plain_handler(counts))], technique="webhook", trace=trace)
    traced = lab.serve([("/webhook", plain_handler(counts, trace))], technique="webhook",
                       trace=trace)
    conn.send({"bare": sockets[0].getsockname()[1], "wired": wired.port, "traced": traced.port})
    conn.recv()                           # "stop"
    report = {**counts, "trace records": len(trace)}
    wired.stop()
    traced.stop()
    lab.run(bare.stop)
    conn.send(report)


RECEIVERS = {"labkit": run_labkit, "plain": run_plain}


# -- the load -------------------------------------------------------------------------------


def make_bodies(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` JSON bodies of about ``size`` bytes, like a small event notification."""
    rng = random.Random(seed)
    bodies = []
    for n in range(count):
        head = {"id": f"evt_{n:07d}", "type": "order.updated", "created": 1_700_000_000 + n,
                "data": {"order": rng.randrange(10**6),
                         "status": rng.choice(["paid", "packed", "shipped"])}}
        text = json.dumps(head, separators=(",", ":"))
        pad = max(0, size - len(text) - len(',"note":""'))
        head["note"] = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(pad))
        bodies.append(json.dumps(head, separators=(",", ":")).encode())
    return bodies


def make_requests(bodies: list[bytes], port: int, forged_every: int,
                  first: int = 0) -> tuple[list[bytes], list[int]]:
    """Raw HTTP/1.1 requests and the status each must get (every N-th forged: 401).

    Delivery ids count from ``first``: each is new to the receiver, which
    acknowledges a repeated id without keeping it again.
    """
    good, bad = SECRET.encode(), WRONG_SECRET.encode()
    raw, expected = [], []
    for n, body in enumerate(bodies):
        forged = n % forged_every == forged_every - 1
        signature = _expected_signature(body, bad if forged else good).decode()
        raw.append((f"POST /webhook HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: bench\r\n"
                    f"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
                    f"X-GitHub-Delivery: bench-{first + n:07d}\r\n"
                    f"X-Hub-Signature-256: {signature}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        expected.append(401 if forged else 200)
    return raw, expected


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response and return its status code."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the receiver closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_senders(port: int, senders: int) -> list[Connection]:
    """``senders`` keep-alive connections to ``port``."""
    return list(await asyncio.gather(*(asyncio.open_connection(HOST, port)
                                       for _ in range(senders))))


async def close_senders(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in connections),
                         return_exceptions=True)


async def send_over(connections: list[Connection],
                    raw: list[bytes]) -> tuple[list[int], list[float]]:
    """Send every request, each connection taking the next as soon as it is free.

    Returns the statuses and the latencies (seconds), in request order.
    """
    statuses = [0] * len(raw)
    latencies = [0.0] * len(raw)
    work = iter(range(len(raw)))
    clock = time.perf_counter

    async def sender(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for index in work:                # one shared iterator: whoever is free takes the next
            started = clock()
            writer.write(raw[index])
            statuses[index] = await read_status(reader)
            latencies[index] = clock() - started

    await asyncio.gather(*(sender(*connection) for connection in connections))
    return statuses, latencies


async def send_all(port: int, raw: list[bytes], senders: int) -> tuple[list[int], list[float]]:
    """Send every request over ``senders`` new keep-alive connections, then close them."""
    connections = await open_senders(port, senders)
    try:
        return await send_over(connections, raw)
    finally:
        await close_senders(connections)


def nearest_rank(sorted_values: list[float], p: int) -> float:
    """The ``p``-th percentile by nearest rank (as :class:`labkit.trace.Trace` computes it)."""
    return sorted_values[max(1, math.ceil(len(sorted_values) * p / 100)) - 1]


class ServerProcess:
    """One receiver (``labkit`` or ``plain``) in a process of its own, pinned to ``core``.

    ``with ServerProcess(...) as server``: started, ``server.port`` known;
    ``server.stop()`` returns its report; leaving the block ends the process.
    """

    def __init__(self, kind: str, core: int | None, deadline: float, profile: bool = False):
        self.kind, self.deadline = kind, deadline
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=RECEIVERS[kind], args=(child, core, profile),
                                       daemon=True)

    def __enter__(self) -> "ServerProcess":
        self.process.start()
        if not self.conn.poll(max(0.0, min(30.0, self.deadline - time.monotonic()))):
            self.__exit__()
            raise Timeout(f"the {self.kind} receiver did not start in time")
        self.port = self.conn.recv()
        self.pid = self.process.pid
        return self

    def stop(self) -> dict:
        self.conn.send("stop")
        if not self.conn.poll(max(1.0, min(30.0, self.deadline - time.monotonic()))):
            raise Timeout(f"the {self.kind} receiver did not report in time")
        return self.conn.recv()

    def __exit__(self, *_exc) -> None:
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


class Usage:
    """What a server process spent while it was being measured, summed over windows."""

    def __init__(self, pid: int):
        self.pid = pid
        self.elapsed = self.user = self.system = 0.0
        self.faults = 0

    def __enter__(self) -> "Usage":
        self._user, self._system = cpu_times(self.pid)
        self._faults = page_faults(self.pid)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_exc) -> None:
        self.elapsed += time.perf_counter() - self._started
        user, system = cpu_times(self.pid)
        self.user += user - self._user
        self.system += system - self._system
        self.faults += page_faults(self.pid) - self._faults


def measurement(kind: str, statuses: list[int], latencies: list[float], expected: list[int],
           warm: list[int], usage: Usage, others: float, report: dict) -> dict:
    """One measurement: rates, latency percentiles, CPU per delivery, and the checks."""
    n = len(statuses)
    forged = expected.count(401)
    wrong = sum(1 for got, want in zip(statuses, expected) if got != want)
    wrong += sum(1 for got in warm if got != 200)
    counts_ok = (report["accepted"] == n - forged + len(warm) and report["refused"] == forged)
    ordered = sorted(latencies)
    return {"kind": kind, "deliveries": n, "elapsed": usage.elapsed,
            "rate": n / usage.elapsed, "p50": nearest_rank(ordered, 50),
            "p99": nearest_rank(ordered, 99), "max": ordered[-1], "others": others,
            "cpu": (usage.user + usage.system) / n, "user": usage.user / n,
            "sys": usage.system / n, "faults": usage.faults / n,
            "wrong": wrong, "counts_ok": counts_ok, "report": report}


def run_bounded(coroutine, deadline: float, what: str):
    """Run ``coroutine`` to its end, or raise Timeout at ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        coroutine.close()
        raise Timeout("out of time before sending")
    try:
        return asyncio.run(asyncio.wait_for(coroutine, remaining))
    except asyncio.TimeoutError:
        raise Timeout(f"{what} did not answer every delivery in time") from None


def measure(kind: str, args, bodies: list[bytes], senders: int, cores, deadline: float,
            profile: bool = False) -> dict:
    """Start one receiver process, warm it up, time the deliveries, check every status."""
    with ServerProcess(kind, cores[0], deadline, profile) as server:
        warm_raw, _ = make_requests(bodies[:WARMUP], server.port, forged_every=10**9)
        raw, expected = make_requests(bodies[WARMUP:], server.port, args.forged_every,
                                      first=WARMUP)
        warm, _ = run_bounded(send_all(server.port, warm_raw, senders), deadline,
                              f"the {kind} receiver")
        others = OthersMeter([os.getpid(), server.pid])
        with Usage(server.pid) as usage:
            statuses, latencies = run_bounded(send_all(server.port, raw, senders), deadline,
                                              f"the {kind} receiver")
        others_cores = others.cores()
        report = server.stop()
    return measurement(kind, statuses, latencies, expected, warm, usage, others_cores, report)


def measure_interleaved(kinds: tuple[str, ...], args, bodies: list[bytes], senders: int, cores,
                        deadline: float, first: str) -> dict[str, dict]:
    """Both receivers up at once, measured in turns of ``--interleave`` deliveries each.

    Each keeps its ``senders`` connections open throughout; the turns go
    A B B A A B ..., starting with ``first``, so a busy spell of the machine
    falls on both alike. Every figure is summed over a receiver's turns.
    """
    order = (first,) + tuple(kind for kind in kinds if kind != first)
    batch = args.interleave
    with contextlib.ExitStack() as stack:
        servers = {kind: stack.enter_context(ServerProcess(kind, cores[0], deadline))
                   for kind in order}
        work = {}
        for kind, server in servers.items():
            warm_raw, _ = make_requests(bodies[:WARMUP], server.port, forged_every=10**9)
            raw, expected = make_requests(bodies[WARMUP:], server.port, args.forged_every,
                                          first=WARMUP)
            work[kind] = (warm_raw, raw, expected)
        usage = {kind: Usage(server.pid) for kind, server in servers.items()}

        async def turns() -> dict[str, tuple[list[int], list[int], list[float]]]:
            pools = {kind: await open_senders(server.port, senders)
                     for kind, server in servers.items()}
            got = {kind: ([], [], []) for kind in order}
            try:
                for kind in order:
                    got[kind][0][:] = (await send_over(pools[kind], work[kind][0]))[0]
                total = len(work[first][1])
                for turn, start in enumerate(range(0, total, batch)):
                    for kind in (order if turn % 2 == 0 else order[::-1]):
                        with usage[kind]:
                            statuses, latencies = await send_over(
                                pools[kind], work[kind][1][start:start + batch])
                        got[kind][1].extend(statuses)
                        got[kind][2].extend(latencies)
            finally:
                for pool in pools.values():
                    await close_senders(pool)
            return got

        others = OthersMeter([os.getpid(), *(server.pid for server in servers.values())])
        got = run_bounded(turns(), deadline, "a receiver")
        others_cores = others.cores()
        reports = {kind: server.stop() for kind, server in servers.items()}
    return {kind: measurement(kind, got[kind][1], got[kind][2], work[kind][2], got[kind][0],
                              usage[kind], others_cores, reports[kind]) for kind in order}


# -- the run --------------------------------------------------------------------------------


def compare(kinds: tuple[str, str], args, bodies, senders: int, cores, deadline: float,
            rounds: int) -> tuple[dict[str, list[dict]], int]:
    """``rounds`` rounds measuring both ``kinds``, alternating which goes first; print each."""
    print(f"{'round':>5}  {'server':<7} {'senders':>7} {'req/s':>7} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'cpu us':>6} {'wrong':>5} {'others':>6}  "
          f"server: gc, memory")
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    failures = 0
    for round_ in range(1, rounds + 1):
        order = kinds if round_ % 2 else kinds[::-1]
        if args.interleave:
            measured = measure_interleaved(kinds, args, bodies, senders, cores, deadline,
                                           first=order[0])
        else:
            measured = {kind: measure(kind, args, bodies, senders, cores, deadline)
                        for kind in order}
        for kind in order:
            result = measured[kind]
            results[kind].append(result)
            failures += result["wrong"] + (0 if result["counts_ok"] else 1)
            report = result["report"]
            print(f"{round_:>5}  {kind:<7} {senders:>7} {result['rate']:>7,.0f} "
                  f"{result['p50'] * 1e3:>7.2f} {result['p99'] * 1e3:>7.2f} "
                  f"{result['max'] * 1e3:>7.1f} {result['cpu'] * 1e6:>6.0f} {result['wrong']:>5} "
                  f"{result['others']:>6.2f}  "
                  f"{report['full collections']} full gc (longest "
                  f"{report['longest full (ms)']:.1f} ms), {report['peak memory (MB)']:.0f} MB"
                  f"{'' if result['counts_ok'] else '  <- counts do not match'}", flush=True)
    return results, failures


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def summarize(table: dict[int, dict[str, list[dict]]]) -> bool:
    """Print the medians and ratios per sender count; True if every target was met."""
    print()
    print("medians over rounds; ratio = labkit / plain (higher rate, lower latency is better)")
    print(f"{'senders':>7}  {'labkit req/s':>12} {'plain req/s':>11} {'ratio':>5}   "
          f"{'p50 ms labkit/plain':>19}   {'p99 ms labkit/plain':>19} {'ratio':>5}   "
          f"{'max ms labkit/plain':>19}   {'server cpu us':>13} {'ratio':>5}")
    met = True
    for senders, results in table.items():
        lab_, plain = results["labkit"], results["plain"]
        rate = median_of(lab_, "rate") / median_of(plain, "rate")
        p99 = median_of(lab_, "p99") / median_of(plain, "p99")
        met = met and rate >= TARGET_RATE and p99 <= TARGET_P99
        pair = {key: f"{median_of(lab_, key) * 1e3:.2f} / {median_of(plain, key) * 1e3:.2f}"
                for key in ("p50", "p99", "max")}
        cpu = (median_of(lab_, "cpu") * 1e6, median_of(plain, "cpu") * 1e6)
        print(f"{senders:>7}  {median_of(lab_, 'rate'):>12,.0f} {median_of(plain, 'rate'):>11,.0f} "
              f"{rate:>5.2f}   {pair['p50']:>19}   {pair['p99']:>19} {p99:>5.2f}   "
              f"{pair['max']:>19}   {f'{cpu[0]:.0f} / {cpu[1]:.0f}':>13} "
              f"{cpu[0] / cpu[1]:>5.2f}")
    print("server cpu us = the server process's CPU time per delivery (user + system): what "
          "each costs\nwhatever else the machine runs; its ratio is labkit's cost over plain's")
    print()
    print("the same, round by round: each round's labkit / plain (the two measured back to "
          "back, so under\nmuch the same load), medians over rounds; the CPU split, and minor "
          "page faults per delivery")
    print(f"{'senders':>7}  {'rate ratio':>10} {'p99 ratio':>9} {'cpu ratio':>9}   "
          f"{'user us labkit/plain':>20}   {'sys us labkit/plain':>19}   "
          f"{'page faults labkit/plain':>24}")
    met_paired = True
    for senders, results in table.items():
        rounds = list(zip(results["labkit"], results["plain"]))

        def paired(key: str) -> float:
            return statistics.median(a[key] / b[key] for a, b in rounds)

        split = {key: f"{median_of(results['labkit'], key) * 1e6:.0f} / "
                      f"{median_of(results['plain'], key) * 1e6:.0f}" for key in ("user", "sys")}
        faults = (f"{median_of(results['labkit'], 'faults'):.2f} / "
                  f"{median_of(results['plain'], 'faults'):.2f}")
        print(f"{senders:>7}  {paired('rate'):>10.2f} {paired('p99'):>9.2f} {paired('cpu'):>9.2f}"
              f"   {split['user']:>20}   {split['sys']:>19}   {faults:>24}")
        met_paired = met_paired and paired("rate") >= TARGET_RATE and paired("p99") <= TARGET_P99
    target = (f"target (rate ratio >= {TARGET_RATE:.2f} and p99 ratio <= {TARGET_P99:.2f} at "
              f"every sender count)")
    print(f"{target}, on the medians: {'met' if met else 'MISSED'}; on the round-by-round "
          f"ratios: {'met' if met_paired else 'MISSED'}")
    return met


def trace_call_cost(repeat: int = 20_000) -> float:
    """Microseconds the three trace calls of one traced exchange take, in process (median of 5)."""
    from labkit.trace import Trace

    event = SimpleNamespace(id="evt_1", created=time.monotonic())
    samples = []
    for _ in range(5):
        trace = Trace()
        started = time.perf_counter()
        for _ in range(repeat):
            trace.add("request", technique="webhook", client="127.0.0.1:5000", t=started,
                      bytes=1300)
            trace.delivered(event, technique="webhook", client="bench")
            trace.add("response", technique="webhook", client="127.0.0.1:5000", status=200,
                      bytes=100, duration=0.001, events=1, detail="")
        samples.append((time.perf_counter() - started) / repeat * 1e6)
    return statistics.median(samples)


OVERHEAD_BATCH = 250
"""Requests per batch in ``--overhead``; the three servers take turns, batch by batch."""


def overhead(args, bodies, cores, deadline: float) -> int:
    """Part 2: what the wire layer and the trace add to one exchange's latency (1 sender)."""
    sides = ("bare", "wired", "traced")
    batches = 10 * args.rounds
    print()
    print(f"what the kit's bookkeeping adds to one exchange: the plain handler served bare, "
          f"wired (lab.serve:\nwire counts it, writes request/response records) and traced "
          f"(also Trace.delivered); one process,\n1 sender, {batches} batches of "
          f"{OVERHEAD_BATCH} requests per server, taking turns")
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=run_pair, args=(child, cores[0]), daemon=True)
    process.start()
    latencies: dict[str, list[float]] = {side: [] for side in sides}
    batch_p50: dict[str, list[float]] = {side: [] for side in sides}
    cpu = dict.fromkeys(sides, 0.0)
    wrong = 0
    try:
        if not parent.poll(max(0.0, min(30.0, deadline - time.monotonic()))):
            raise Timeout("the overhead servers did not start in time")
        ports = parent.recv()
        raw = {side: make_requests(bodies[:OVERHEAD_BATCH], ports[side], 10**9)[0]
               for side in sides}
        for side in sides:                # warm up: connections, caches
            asyncio.run(send_all(ports[side], raw[side][:WARMUP], 1))
        others = OthersMeter([os.getpid(), process.pid])
        for batch in range(batches):
            for side in sides[batch % 3:] + sides[:batch % 3]:
                if time.monotonic() > deadline:
                    raise Timeout("out of time measuring the overhead")
                used = cpu_seconds(process.pid)
                statuses, taken = asyncio.run(send_all(ports[side], raw[side], 1))
                cpu[side] += cpu_seconds(process.pid) - used
                wrong += sum(1 for status in statuses if status != 200)
                latencies[side] += taken
                batch_p50[side].append(nearest_rank(sorted(taken), 50))
        others_cores = others.cores()
        parent.send("stop")
        if parent.poll(30):
            parent.recv()
    finally:
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)

    requests_ = batches * OVERHEAD_BATCH
    p50 = {side: nearest_rank(sorted(latencies[side]), 50) for side in sides}
    print(f"{'server':<7} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>7}")
    for side in sides:
        print(f"{side:<7} {p50[side] * 1e3:>7.3f} "
              f"{nearest_rank(sorted(latencies[side]), 99) * 1e3:>7.3f} "
              f"{cpu[side] / requests_ * 1e6:>7.0f}")

    def added(side: str, base: str) -> float:
        """Median over batches of the p50 difference, batch by batch (seconds)."""
        return statistics.median(a - b for a, b in zip(batch_p50[side], batch_p50[base]))

    wire, delivered = added("wired", "bare"), added("traced", "wired")
    total = added("traced", "bare")
    print(f"added per exchange (median over batches of the p50 difference): wire {wire * 1e6:.0f} "
          f"us, Trace.delivered {delivered * 1e6:.0f} us, together {total * 1e6:.0f} us; server "
          f"CPU {(cpu['traced'] - cpu['bare']) / requests_ * 1e6:.0f} us; others "
          f"{others_cores:.2f} cores")
    cost = trace_call_cost()
    print(f"in process, Trace.add x2 + Trace.delivered: {cost:.1f} us per exchange")
    print(f"share of a 1 ms latency (lessons report p50s of 1.6 ms and more): "
          f"{total / 1e-3:.1%} measured over loopback, {cost * 1e-6 / 1e-3:.1%} for the trace "
          f"calls alone (target: under 5 %)")
    return wrong


def profile_both(args, bodies, cores, deadline: float) -> int:
    """Profile each receiver once at the largest sender count (64 without ``--senders``)."""
    n = min(args.deliveries, 3_000)
    senders = max(args.senders, default=64)
    print()
    print(f"where the server's time goes, under cProfile ({n} deliveries each, {senders} senders; "
          f"own time per delivery in microseconds; profiling inflates every number):")
    profiles, failures = {}, 0
    for kind in ("labkit", "plain"):
        short = argparse.Namespace(**{**vars(args), "deliveries": n})
        result = measure(kind, short, bodies[:WARMUP + n], senders, cores, deadline, profile=True)
        failures += result["wrong"]
        profiles[kind] = dict(result["report"]["profile"])
    areas = sorted(set(profiles["labkit"]) | set(profiles["plain"]),
                   key=lambda a: -(profiles["labkit"].get(a, 0) + profiles["plain"].get(a, 0)))
    print(f"  {'area':<36} {'labkit':>8} {'plain':>8} {'extra':>8}")
    rest = [0.0, 0.0]
    for area in areas:
        a, b = profiles["labkit"].get(area, 0.0), profiles["plain"].get(area, 0.0)
        if max(a, b) >= 2.0:
            print(f"  {area:<36} {a:>8.1f} {b:>8.1f} {a - b:>+8.1f}")
        else:
            rest = [rest[0] + a, rest[1] + b]
    print(f"  {'everything else':<36} {rest[0]:>8.1f} {rest[1]:>8.1f} {rest[0] - rest[1]:>+8.1f}")
    busy = {k: sum(v for a, v in p.items() if a != "epoll wait (idle)")
            for k, p in profiles.items()}
    print(f"  {'total, idle excluded':<36} {busy['labkit']:>8.1f} {busy['plain']:>8.1f} "
          f"{busy['labkit'] - busy['plain']:>+8.1f}")
    return failures


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.timeout
    cores = pick_cores()
    pin(cores[1])                                      # this process is the load generator
    bodies = make_bodies(WARMUP + args.deliveries, args.size, args.seed)

    import tornado
    print(f"receiver throughput: {args.deliveries} deliveries of ~{args.size} B per measurement "
          f"(+{WARMUP} warm-up), 1 in {args.forged_every} forged, senders "
          f"{', '.join(map(str, args.senders)) or 'none'}, {args.rounds} rounds")
    print(f"python {platform.python_version()}, tornado {tornado.version}, {os.cpu_count()} "
          f"CPUs; {cores[2]}; load average {load_average()}")
    print("others = CPU time used by other processes during the measurement, in cores")
    print()

    failures = 0
    try:
        table = {}
        for senders in args.senders:
            table[senders], failed = compare(("labkit", "plain"), args, bodies, senders, cores,
                                             deadline, args.rounds)
            failures += failed
        if table:
            summarize(table)
        if args.overhead:
            failures += overhead(args, bodies, cores, deadline)
        if args.profile:
            failures += profile_both(args, bodies, cores, deadline)
    except Timeout as exc:
        print(f"\nabort: {exc} (--timeout {args.timeout:g} s)", file=sys.stderr)
        return 2
    print(f"\nload average at the end: {load_average()}")
    if failures:
        print(f"\nFAIL: {failures} deliveries got the wrong status or the counts did not match",
              file=sys.stderr)
        return 1
    print("ok: every forged delivery was refused with 401 and every genuine one accepted with 200")
    return 0


if __name__ == "__main__":
    sys.exit(main())
