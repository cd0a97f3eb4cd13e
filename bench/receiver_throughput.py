"""Bench: how many signed webhooks per second labkit's receiver verifies, next to plain tornado.

Two receivers get the same load, one after the other, each in a process of its
own pinned to one CPU core (the load generator is pinned to another):

* ``labkit``: a :class:`~labkit.webhooks.WebhookReceiver` verifying
  ``X-Hub-Signature-256`` with :class:`~labkit.webhooks.GitHubSignature`, served
  by :func:`labkit.webhooks.serve_receiver`, so every request is also traced
  (the wire layer counts its bytes and writes request/response records) and
  every accepted delivery is parsed and recorded;
* ``plain``: a bare tornado ``RequestHandler`` doing the same check by hand
  (HMAC-SHA256 over the raw body, ``hmac.compare_digest``, 401 on mismatch)
  and parsing the JSON body, nothing else.

The load: ``--senders`` concurrent keep-alive HTTP/1.1 connections (raw asyncio
streams, requests prepared in advance, so the sender side stays cheap) share
``--deliveries`` deliveries of about ``--size`` bytes, one in ``--forged-every``
signed with the wrong secret. Every forged delivery must be refused (401) and
every genuine one accepted (200); the receiver's own counts are checked too.
Each round measures both receivers, alternating which goes first; the summary
gives medians over rounds and the ratio labkit / plain. ``--profile`` then runs
each receiver once more under cProfile (on the thread that serves requests) and
says where the time goes, per delivery.

Loopback only. Exit status: 0 if every status was right, 1 if any was wrong, 2
if the run exceeded ``--timeout``.

    .venv/bin/python bench/receiver_throughput.py
    .venv/bin/python bench/receiver_throughput.py --deliveries 20000 --rounds 5 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time

SECRET = "bench-webhook-secret"
WRONG_SECRET = "not-the-secret"
HOST = "127.0.0.1"
WARMUP = 200
"""Genuine deliveries sent (and checked) before the clock starts, to open connections and warm caches."""


class Timeout(Exception):
    """The run went past --timeout."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=5_000, help="deliveries per measurement (5000)")
    parser.add_argument("--senders", type=int, default=16, help="concurrent keep-alive connections (16)")
    parser.add_argument("--size", type=int, default=1_024, help="approximate body size in bytes (1024)")
    parser.add_argument("--forged-every", type=int, default=10,
                        help="one delivery in N is signed with the wrong secret (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each measuring both receivers (3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="abort the whole run after S seconds (120)")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, profile each receiver once and show where the time goes")
    parser.add_argument("--seed", type=int, default=1, help="seed for the bodies (1)")
    args = parser.parse_args(argv)
    if args.deliveries < 1 or args.senders < 1 or args.size < 64 or args.forged_every < 2 or args.rounds < 1:
        parser.error("need --deliveries >= 1, --senders >= 1, --size >= 64, --forged-every >= 2, --rounds >= 1")
    return args


# -- cores ------------------------------------------------------------------------------


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


# -- the two receivers, each run in its own process -----------------------------------------


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
    import cProfile

    from labkit import lab
    from labkit.webhooks import GitHubSignature, WebhookReceiver, serve_receiver

    receiver = WebhookReceiver([GitHubSignature(SECRET)])
    server = serve_receiver(receiver)
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        lab.run(profiler.enable)          # profile the lab thread, where every request is served
    conn.send(server.port)
    conn.recv()                           # "stop"
    if profiler is not None:
        lab.run(profiler.disable)
    report = {"accepted": len(receiver.deliveries), "refused": len(receiver.rejections),
              "trace records": len(server.trace)}
    server.stop()
    if profiler is not None:
        report["profile"] = _profile_summary(profiler, report["accepted"] + report["refused"])
    conn.send(report)


def run_plain(conn, core: int | None, profile: bool) -> None:
    """Serve a bare tornado handler doing the same HMAC check until told to stop."""
    pin(core)
    import cProfile

    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    key = SECRET.encode()
    counts = {"accepted": 0, "refused": 0}

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
            self.set_status(200)
            self.finish()

    async def main() -> None:
        app = tornado.web.Application([("/webhook", PlainReceiver)], log_function=lambda handler: None)
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
        report = dict(counts)
        if profiler is not None:
            report["profile"] = _profile_summary(profiler, counts["accepted"] + counts["refused"])
        conn.send(report)

    asyncio.run(main())


RECEIVERS = {"labkit": run_labkit, "plain": run_plain}


# -- the load -------------------------------------------------------------------------------


def make_bodies(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` JSON bodies of about ``size`` bytes, like a small event notification."""
    rng = random.Random(seed)
    bodies = []
    for n in range(count):
        head = {"id": f"evt_{n:07d}", "type": "order.updated", "created": 1_700_000_000 + n,
                "data": {"order": rng.randrange(10**6), "status": rng.choice(["paid", "packed", "shipped"])}}
        text = json.dumps(head, separators=(",", ":"))
        pad = max(0, size - len(text) - len(',"note":""'))
        head["note"] = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(pad))
        bodies.append(json.dumps(head, separators=(",", ":")).encode())
    return bodies


def make_requests(bodies: list[bytes], port: int, forged_every: int) -> tuple[list[bytes], list[int]]:
    """Raw HTTP/1.1 requests and the status each must get (every N-th forged: 401)."""
    good, bad = SECRET.encode(), WRONG_SECRET.encode()
    raw, expected = [], []
    for n, body in enumerate(bodies):
        forged = n % forged_every == forged_every - 1
        signature = _expected_signature(body, bad if forged else good).decode()
        raw.append((f"POST /webhook HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: bench\r\n"
                    f"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
                    f"X-GitHub-Delivery: bench-{n:07d}\r\nX-Hub-Signature-256: {signature}\r\n"
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


async def send_all(port: int, raw: list[bytes], senders: int) -> list[int]:
    """Send every request over ``senders`` keep-alive connections; return the statuses in order."""
    statuses = [0] * len(raw)
    work = iter(range(len(raw)))

    async def sender() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for index in work:            # one shared iterator: whoever is free takes the next
                writer.write(raw[index])
                statuses[index] = await read_status(reader)
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(sender() for _ in range(senders)))
    return statuses


def measure(kind: str, args, bodies: list[bytes], cores, deadline: float, profile: bool = False) -> dict:
    """Start one receiver process, warm it up, time the deliveries, check every status."""
    server_core, _load_core, _ = cores
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=RECEIVERS[kind], args=(child, server_core, profile), daemon=True)
    process.start()
    try:
        if not parent.poll(max(0.0, min(30.0, deadline - time.monotonic()))):
            raise Timeout(f"the {kind} receiver did not start in time")
        port = parent.recv()
        warm_raw, warm_expected = make_requests(bodies[:WARMUP], port, forged_every=10**9)
        raw, expected = make_requests(bodies[WARMUP:], port, args.forged_every)

        def run(requests_: list[bytes]) -> list[int]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout("out of time before sending")
            try:
                return asyncio.run(asyncio.wait_for(send_all(port, requests_, args.senders), remaining))
            except asyncio.TimeoutError:
                raise Timeout(f"the {kind} receiver did not answer every delivery in time") from None

        warm = run(warm_raw)
        started = time.perf_counter()
        statuses = run(raw)
        elapsed = time.perf_counter() - started
        parent.send("stop")
        if not parent.poll(max(1.0, min(30.0, deadline - time.monotonic()))):
            raise Timeout(f"the {kind} receiver did not report in time")
        report = parent.recv()
    finally:
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)

    forged = expected.count(401)
    wrong = sum(1 for got, want in zip(statuses, expected) if got != want)
    wrong += sum(1 for got in warm if got != 200)
    counts_ok = (report["accepted"] == len(expected) - forged + len(warm_expected)
                 and report["refused"] == forged)
    return {"kind": kind, "deliveries": len(raw), "forged": forged, "elapsed": elapsed,
            "rate": len(raw) / elapsed, "wrong": wrong, "counts_ok": counts_ok, "report": report,
            "refused_ok": sum(1 for got, want in zip(statuses, expected) if want == 401 and got == 401),
            "accepted_ok": sum(1 for got, want in zip(statuses, expected) if want == 200 and got == 200)}


# -- the run --------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.timeout
    cores = pick_cores()
    pin(cores[1])                                      # this process is the load generator
    bodies = make_bodies(WARMUP + args.deliveries, args.size, args.seed)

    import tornado
    print(f"receiver throughput: {args.deliveries} deliveries of ~{args.size} B per measurement "
          f"(+{WARMUP} warm-up), 1 in {args.forged_every} forged, {args.senders} keep-alive senders, "
          f"{args.rounds} rounds")
    print(f"python {platform.python_version()}, tornado {tornado.version}, {os.cpu_count()} CPUs; {cores[2]}")
    print()
    print(f"{'round':>5}  {'receiver':<8} {'deliveries/s':>12} {'time (s)':>9} {'200 ok':>7} {'401 ok':>7} "
          f"{'wrong':>6}  server counts")

    results: dict[str, list[float]] = {"labkit": [], "plain": []}
    ratios, failures = [], 0
    try:
        for round_ in range(1, args.rounds + 1):
            order = ("labkit", "plain") if round_ % 2 else ("plain", "labkit")
            rates = {}
            for kind in order:
                result = measure(kind, args, bodies, cores, deadline)
                rates[kind] = result["rate"]
                results[kind].append(result["rate"])
                bad = result["wrong"] + (0 if result["counts_ok"] else 1)
                failures += bad
                counts = ", ".join(f"{k} {v}" for k, v in result["report"].items())
                print(f"{round_:>5}  {kind:<8} {result['rate']:>12,.0f} {result['elapsed']:>9.2f} "
                      f"{result['accepted_ok']:>7} {result['refused_ok']:>7} {result['wrong']:>6}  "
                      f"{counts}{'' if result['counts_ok'] else '  <- counts do not match'}")
            ratios.append(rates["labkit"] / rates["plain"])

        labkit, plain = statistics.median(results["labkit"]), statistics.median(results["plain"])
        print()
        print(f"median verified deliveries/s: labkit {labkit:,.0f}, plain tornado {plain:,.0f}")
        print(f"labkit / plain: {labkit / plain:.2f} (ratio of medians); per round: "
              + ", ".join(f"{r:.2f}" for r in ratios))
        print(f"per delivery: labkit {1e6 / labkit:,.0f} us, plain {1e6 / plain:,.0f} us, "
              f"difference {1e6 / labkit - 1e6 / plain:,.0f} us")

        if args.profile:
            n = min(args.deliveries, 3_000)
            print()
            print(f"where the server's time goes, under cProfile ({n} deliveries each; own time per "
                  f"delivery in microseconds; profiling inflates every number):")
            profiles = {}
            for kind in ("labkit", "plain"):
                short = argparse.Namespace(**{**vars(args), "deliveries": n})
                result = measure(kind, short, bodies[:WARMUP + n], cores, deadline, profile=True)
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
            busy = {k: sum(v for a, v in p.items() if a != "epoll wait (idle)") for k, p in profiles.items()}
            print(f"  {'total, idle excluded':<36} {busy['labkit']:>8.1f} {busy['plain']:>8.1f} "
                  f"{busy['labkit'] - busy['plain']:>+8.1f}")
    except Timeout as exc:
        print(f"\nabort: {exc} (--timeout {args.timeout:g} s)", file=sys.stderr)
        return 2

    if failures:
        print(f"\nFAIL: {failures} deliveries got the wrong status or the counts did not match", file=sys.stderr)
        return 1
    print("\nok: every forged delivery was refused with 401 and every genuine one accepted with 200")
    return 0


if __name__ == "__main__":
    sys.exit(main())
