"""Bench: Server-Sent Events fan-out, labkit's stream next to plain tornado and aiohttp-sse.

Three servers get the same load, one after the other, each in a process of its
own pinned to one CPU core (the load client is pinned to the other):

* ``labkit``: :class:`~labkit.push.sse.SSEStream` over a :class:`~labkit.hub.Hub`,
  served by :func:`~labkit.push.sse.serve_sse`, so tracing is on (the wire
  layer counts every byte; ``connect``/``disconnect`` are recorded); the events
  come from a :class:`~labkit.feed.Feed` played by :func:`~labkit.feed.play`;
* ``tornado``: a plain tornado ``RequestHandler`` per client that waits for the
  next event, then ``write()`` and ``await flush()`` (each frame is encoded
  once and shared, as in tornado's chat demo);
* ``aiohttp``: ``aiohttp-sse``'s ``sse_response`` per client, ``await
  resp.send(data, id=..., event=...)`` per event, as its README does;
* ``raw`` (only when asked for with ``--servers``): bare asyncio protocols, each
  frame encoded once and ``transport.write`` to every socket: the floor.

The load: ``--clients`` raw asyncio connections (a ``Protocol`` that finds
each event's ``seq`` and ``created`` with one regular expression and
timestamps it on arrival), then ``--events`` events at ``--rate`` per second,
each carrying its publish time (``time.monotonic()``: CLOCK_MONOTONIC, the
same clock in every process on Linux). Every event has the same JSON shape
and size on every server (labkit's feed ``Event``).

Per server and round: events delivered (must be clients x events, each
client's in order), latency p50/p99 from publish to receipt, server CPU
(user + sys from ``/proc/<pid>/stat``) per delivered event over the publishing
window, peak memory (``VmHWM``), and memory per idle client (``VmRSS`` growth
while the clients connect, divided by their number). For labkit, the bytes
the wire layer recorded must equal the bytes the clients received. Rounds
rotate the order of the servers; the summary gives medians. Then one labkit
process holds ``--idle`` idle streams (default 10,000), and one event must
reach all of them.

The machine's load is reported: the load average, and the CPU time that
neither the server nor the load client used during each window ("others").
``bench/long_poll_fanout.py`` measures long polling the same way.

Loopback only. Exit status: 0 if every event reached every client, 1 if not,
2 if the run exceeded ``--timeout``.

    .venv/bin/python bench/sse_fanout.py
    .venv/bin/python bench/sse_fanout.py --servers labkit,raw --rounds 1 --idle 0 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import statistics
import sys
import time

from receiver_throughput import pick_cores, pin

HOST = "127.0.0.1"
PATH = "/events"
PAYLOAD = {"match": "ENG v IND", "score": "187/4", "overs": "32.1"}
"""What every event carries besides its id, type, seq and publish time (a cricket score)."""
RETRY_MS = 3000
EVENT = re.compile(rb'"seq": (\d+), "created": ([0-9.]+), "payload"')
"""One event on the wire: its seq and publish time (the JSON of labkit's feed Event)."""
CONNECT_AT_ONCE = 100
"""Connections opened concurrently (every server listens with a backlog of 128)."""
WARM_CLIENTS = 20
TICK = os.sysconf("SC_CLK_TCK")


class Timeout(Exception):
    """The run went past --timeout."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1_000, help="connected clients (1000)")
    parser.add_argument("--events", type=int, default=200, help="events per round (200)")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every server (3)")
    parser.add_argument("--servers", default="labkit,tornado,aiohttp",
                        help=f"some of {','.join(SERVERS)} (labkit,tornado,aiohttp)")
    parser.add_argument("--idle", type=int, default=10_000,
                        help="idle streams one labkit process must hold; 0 skips it (10000)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="abort the whole run after S seconds (900)")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, run labkit once under cProfile and show where it spends")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown or not args.servers:
        parser.error(f"--servers takes some of {', '.join(SERVERS)}, got {sorted(unknown)}")
    if args.clients < 1 or args.events < 1 or args.rate <= 0 or args.rounds < 1 or args.idle < 0:
        parser.error("need --clients >= 1, --events >= 1, --rate > 0, --rounds >= 1, --idle >= 0")
    return args


def raise_open_files(needed: int) -> str:
    """Raise this process's soft limit on open files towards ``needed`` (within the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return f"open files: soft limit {soft}, hard limit {hard}"


# -- the servers, each run in its own process ------------------------------------------------


def serve_labkit_component(conn, profile: bool, serve, held) -> None:
    """Serve a labkit component and play feed events into its hub when told.

    ``serve(hub)`` starts the server; ``held(server)`` says how many clients it
    holds now. Commands on ``conn``: ``("publish", count, rate)``, ``("open",)``,
    ``("bytes", prefix)`` (response records of clients named ``prefix...``:
    how many, and their bytes), ``("stop",)``.
    """
    import cProfile

    from labkit import lab
    from labkit.feed import Feed, fixed_rate, play
    from labkit.hub import Hub

    hub = Hub(history=1000, name="bench")
    server = serve(hub)
    feed = Feed(seed=1)
    profiler = cProfile.Profile() if profile else None
    conn.send(server.port)
    while True:
        command = conn.recv()
        if command[0] == "publish":
            _, count, rate = command
            if profiler is not None:
                lab.run(profiler.enable)   # the lab thread, where everything is served
            lab.run(play(feed, fixed_rate(rate, count=count), hub.publish, payload=PAYLOAD))
            conn.send("published")
        elif command[0] == "open":
            conn.send(held(server))
        elif command[0] == "bytes":
            answers = [r for r in server.trace.records(kind="response")
                       if r.client.startswith(command[1])]
            conn.send((len(answers), sum(r.bytes for r in answers)))
        else:
            break
    if profiler is not None:
        lab.run(profiler.disable)
    report = {"trace records": len(server.trace)}
    server.stop()
    if profiler is not None:
        report["profile"] = profile_summary(profiler)
    conn.send(report)


def serve_labkit(conn, profile: bool) -> None:
    from labkit.push.sse import serve_sse

    serve_labkit_component(conn, profile, lambda hub: serve_sse(hub, retry=RETRY_MS),
                           lambda server: len(server.component.open_streams()))


def event_dict(seq: int, rng: random.Random) -> dict:
    """The peers' event: the same keys, order and sizes as labkit's feed ``Event``."""
    return {"id": f"evt_{seq:06d}_{rng.getrandbits(32):08x}", "type": "tick", "seq": seq,
            "created": time.monotonic(), "payload": PAYLOAD}


class Board:
    """The peers' shared event list: frames encoded once, and waiters woken once per event."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, bytes]] = []   # (seq, JSON, the whole frame)
        self.waiters: set[asyncio.Future] = set()
        self.rng = random.Random(1)

    def publish(self, seq: int) -> None:
        text = json.dumps(event_dict(seq, self.rng))
        self.events.append((seq, text, f"id: {seq}\nevent: tick\ndata: {text}\n\n".encode()))
        waiters, self.waiters = self.waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def next(self, cursor: int) -> asyncio.Future:
        """A future resolved once there is an event after ``cursor`` (cancel it to leave)."""
        waiter = asyncio.get_running_loop().create_future()
        if cursor < len(self.events):
            waiter.set_result(None)
        else:
            self.waiters.add(waiter)
        return waiter


async def publish_at_rate(count: int, rate: float, publish) -> None:
    """``publish(seq)`` for seq 1..count at ``rate`` per second, timed from the start."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(1, count + 1):
        await asyncio.sleep(start + seq / rate - loop.time())
        publish(seq)


async def serve_peer(conn, start, profile: bool) -> None:
    """What the peers share: start, then answer the parent's commands (as above)."""
    import cProfile

    board, open_streams = Board(), set()
    port, stop = await start(board, open_streams)
    profiler = cProfile.Profile() if profile else None
    conn.send(port)
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command[0] == "publish":
            if profiler is not None:
                profiler.enable()
            await publish_at_rate(command[1], command[2], board.publish)
            conn.send("published")
        elif command[0] == "open":
            conn.send(len(open_streams))
        elif command[0] == "bytes":
            conn.send(None)
        else:
            break
    if profiler is not None:
        profiler.disable()
    await stop()
    conn.send({"profile": profile_summary(profiler)} if profiler is not None else {})


def serve_tornado(conn, profile: bool) -> None:
    import tornado.httpserver
    import tornado.netutil
    import tornado.web
    from tornado.iostream import StreamClosedError

    async def start(board: Board, open_streams: set):
        class PlainStream(tornado.web.RequestHandler):
            waiting: asyncio.Future | None = None

            async def get(self) -> None:
                self.set_header("Content-Type", "text/event-stream")
                self.set_header("Cache-Control", "no-cache")
                self.write(f"retry: {RETRY_MS}\n\n")
                open_streams.add(self)
                cursor = len(board.events)
                try:
                    await self.flush()
                    while True:
                        self.waiting = board.next(cursor)
                        await self.waiting
                        frames = board.events[cursor:]
                        cursor += len(frames)
                        self.write(b"".join(frame for _, _, frame in frames))
                        await self.flush()
                except (StreamClosedError, asyncio.CancelledError):
                    pass
                finally:
                    open_streams.discard(self)

            def on_connection_close(self) -> None:
                if self.waiting is not None:
                    self.waiting.cancel()

        app = tornado.web.Application([(PATH, PlainStream)], log_function=lambda handler: None)
        sockets = tornado.netutil.bind_sockets(0, address=HOST)
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)

        async def stop() -> None:
            server.stop()
            await server.close_all_connections()
        return sockets[0].getsockname()[1], stop

    asyncio.run(serve_peer(conn, start, profile))


def serve_aiohttp(conn, profile: bool) -> None:
    from aiohttp import web
    from aiohttp_sse import sse_response

    async def start(board: Board, open_streams: set):
        async def events(request: web.Request) -> web.StreamResponse:
            async with sse_response(request) as response:
                open_streams.add(response)
                cursor = len(board.events)
                try:
                    while response.is_connected():
                        await board.next(cursor)
                        for seq, text, _ in board.events[cursor:]:
                            await response.send(text, id=str(seq), event="tick")
                            cursor += 1
                finally:
                    open_streams.discard(response)
            return response

        app = web.Application()
        app.router.add_get(PATH, events)
        # handler_cancellation: a client that leaves cancels its handler at once.
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1], runner.cleanup

    asyncio.run(serve_peer(conn, start, profile))


def serve_raw(conn, profile: bool) -> None:
    async def start(board: Board, open_streams: set):
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache"
                b"\r\nConnection: close\r\n\r\n" + f"retry: {RETRY_MS}\n\n".encode())

        class Raw(asyncio.Protocol):
            def connection_made(self, transport) -> None:
                self.transport, self.seen = transport, b""

            def data_received(self, data: bytes) -> None:
                self.seen += data
                if b"\r\n\r\n" in self.seen and self.transport not in open_streams:
                    self.transport.write(head)
                    open_streams.add(self.transport)

            def connection_lost(self, exc) -> None:
                open_streams.discard(self.transport)

        publish = board.publish

        def publish_to_all(seq: int) -> None:
            publish(seq)
            frame = board.events[-1][2]
            for transport in open_streams:
                transport.write(frame)

        board.publish = publish_to_all
        server = await asyncio.get_running_loop().create_server(Raw, HOST, 0)

        async def stop() -> None:
            server.close()
            for transport in list(open_streams):
                transport.close()
        return server.sockets[0].getsockname()[1], stop

    asyncio.run(serve_peer(conn, start, profile))


SERVERS = {"labkit": serve_labkit, "tornado": serve_tornado, "aiohttp": serve_aiohttp,
           "raw": serve_raw}
PEERS = ("tornado", "aiohttp")
"""The servers labkit is measured against; ``raw`` is the floor, not a peer."""


def server_main(serve, conn, core: int | None, files: int, profile: bool) -> None:
    pin(core)
    raise_open_files(files)
    serve(conn, profile)


def profile_summary(profiler) -> list[tuple[str, float, int]]:
    """The functions with the most own time: (where, seconds, calls), largest first."""
    import pstats

    stats = pstats.Stats(profiler).stats
    rows = [(f"{os.path.basename(file)}:{line} {name}", tottime, calls)
            for (file, line, name), (_cc, calls, tottime, _ct, _callers) in stats.items()]
    return sorted(rows, key=lambda row: -row[1])[:25]


class ServerProcess:
    """One server in a process of its own, and the pipe to command it."""

    def __init__(self, name: str, serve, core: int | None, files: int, deadline: float,
                 profile: bool = False):
        self.name, self.deadline = name, deadline
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=server_main, daemon=True,
                                       args=(serve, child, core, files, profile))
        self.process.start()
        self.pid = self.process.pid
        self.port = self.receive(f"the {name} server did not start", 60.0)

    def receive(self, what: str, within: float):
        if not self.pipe.poll(max(0.0, min(within, self.deadline - time.monotonic()))):
            raise Timeout(what)
        return self.pipe.recv()

    def ask(self, *command):
        self.pipe.send(command)
        return self.receive(f"the {self.name} server did not answer {command[0]!r}", 30.0)

    def stop(self) -> dict:
        try:
            return self.ask("stop")
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5)


# -- /proc --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_kb(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of process ``pid`` in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# -- the load client ---------------------------------------------------------------------------


class Load:
    """Every client's tally for one measurement."""

    def __init__(self, clients: int, events: int):
        self.clients, self.events = clients, events
        self.latencies: list[float] = []
        self.out_of_order = 0
        self.failures: list[str] = []
        self.received = 0
        """Bytes received, headers included."""
        self.requests = 0
        self.finished = 0
        self.all_finished = asyncio.Event()
        self.closing = False


class Client(asyncio.Protocol):
    """What the load's clients share: a tally of events, in order, each timestamped."""

    def __init__(self, load: Load, name: str, port: int):
        self.load, self.name, self.port = load, name, port
        self.transport = None
        self.buffer = b""
        self.count = 0
        self.expect = 0
        self.done = False

    def tally(self, data: bytes, now: float) -> int:
        """Count the events in ``data``; return where the last one ended (0: none)."""
        load, last = self.load, 0
        for match in EVENT.finditer(data):
            seq = int(match[1])
            load.latencies.append(now - float(match[2]))
            if self.expect and seq != self.expect:
                load.out_of_order += 1
            self.expect = seq + 1
            self.count += 1
            last = match.end()
        if last and self.count >= load.events and not self.done:
            self.done = True
            load.finished += 1
            if load.finished == load.clients:
                load.all_finished.set()
        return last

    def connection_lost(self, exc) -> None:
        if not self.load.closing:
            self.load.failures.append(f"a connection closed early: {exc or 'by the server'}")
            self.load.all_finished.set()


class Listener(Client):
    """An SSE client: one request, then every event of the endless answer."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nAccept: "
                        f"text/event-stream\r\nX-Labkit-Client: {self.name}\r\n\r\n".encode())
        self.load.requests += 1
        self.head = True

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.load.received += len(data)
        buffer = self.buffer + data
        if self.head:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if buffer[9:12] != b"200":
                self.load.failures.append(buffer[:end].split(b"\r\n")[0].decode("latin-1"))
            self.head = False
            buffer = buffer[end + 4:]
        last = self.tally(buffer, now)
        self.buffer = buffer[last:] if last else buffer


async def connect_all(port: int, load: Load, count: int, prefix: str, kind=Listener) -> list:
    """Open ``count`` clients named ``prefix00000``..., CONNECT_AT_ONCE at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one(n: int) -> Client:
        async with gate:
            _, client = await loop.create_connection(
                lambda: kind(load, f"{prefix}{n:05d}", port), HOST, port)
        return client

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def close_all(load: Load, clients: list) -> None:
    """Close every client, and let the loop send the closes (before a blocking pipe read)."""
    load.closing = True
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    await asyncio.sleep(0.2)


# -- one measurement ---------------------------------------------------------------------------


async def until(check, what: str, seconds: float, deadline: float) -> None:
    """Wait (bounded by ``seconds`` and the run's deadline) until ``check()`` holds."""
    limit = min(time.monotonic() + seconds, deadline)
    while not check():
        if time.monotonic() > limit:
            raise Timeout(what)
        await asyncio.sleep(0.02)


async def connect_idle(server: ServerProcess, count: int, deadline: float, kind) -> tuple:
    """Warm the server up, then connect ``count`` clients; (clients, load, RSS growth in kB)."""
    warm = Load(WARM_CLIENTS, 0)
    clients = await connect_all(server.port, warm, WARM_CLIENTS, "warm", kind)
    await until(lambda: server.ask("open") == WARM_CLIENTS, "warm-up clients", 30, deadline)
    await close_all(warm, clients)
    await until(lambda: server.ask("open") == 0, "warm-up clients to leave", 30, deadline)
    await asyncio.sleep(0.3)
    before = memory_kb(server.pid, "VmRSS")
    load = Load(count, 0)
    clients = await connect_all(server.port, load, count, "c", kind)
    await until(lambda: server.ask("open") == count or load.failures,
                f"{count} clients held by the {server.name} server", 60 + count / 100, deadline)
    await asyncio.sleep(0.5)
    return clients, load, memory_kb(server.pid, "VmRSS") - before


async def fan_out(name: str, serve, args, cores, deadline: float, kind=Listener,
                  profile: bool = False) -> dict:
    """One server: connect the clients, publish, count and time every delivery."""
    server = ServerProcess(name, serve, cores[0], args.clients + 200, deadline, profile)
    try:
        clients, load, grown = await connect_idle(server, args.clients, deadline, kind)
        load.events = args.events
        cpu, busy, mine = cpu_seconds(server.pid), machine_busy(), own_cpu()
        started = time.monotonic()
        server.pipe.send(("publish", args.events, args.rate))
        try:
            await until(load.all_finished.is_set, "", args.events / args.rate + 30, deadline)
        except Timeout:
            pass                              # reported below as events not delivered
        server.receive(f"the {name} server did not finish publishing", 60)
        elapsed = time.monotonic() - started
        cpu, busy = cpu_seconds(server.pid) - cpu, machine_busy() - busy
        mine = own_cpu() - mine
        peak = memory_kb(server.pid, "VmHWM")
        await close_all(load, clients)
        recorded = None
        for _ in range(50):                   # the wire layer records each stream as it ends
            recorded = server.ask("bytes", "c")
            if recorded is None or recorded[0] >= args.clients:
                break
            await asyncio.sleep(0.1)
        report = server.stop()
    finally:
        if server.process.is_alive():
            server.process.terminate()
    delivered = len(load.latencies)
    latencies = sorted(load.latencies)
    return {"kind": name, "delivered": delivered, "expected": args.clients * args.events,
            "out_of_order": load.out_of_order, "failures": load.failures,
            "p50": quantile(latencies, 0.50), "p99": quantile(latencies, 0.99),
            "cpu_us": cpu / max(delivered, 1) * 1e6, "cpu": cpu, "elapsed": elapsed,
            "peak_mb": peak / 1024, "idle_kb": grown / args.clients, "requests": load.requests,
            "client_share": mine / elapsed, "others": max(0.0, busy - cpu - mine) / elapsed,
            "received": load.received, "recorded": recorded, "report": report}


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


def problems_of(result: dict) -> list[str]:
    """What went wrong in one measurement (nothing, when every event arrived in order)."""
    problems = result["failures"][:3]
    if result["out_of_order"]:
        problems.append(f"{result['out_of_order']} events out of order")
    if result["delivered"] != result["expected"]:
        problems.append(f"{result['expected'] - result['delivered']:,} events missing")
    recorded = result["recorded"]
    if recorded is not None and recorded[1] != result["received"]:
        problems.append(f"the wire layer recorded {recorded[1]:,} bytes, the clients received "
                        f"{result['received']:,}")
    return problems


async def hold_idle(args, cores, deadline: float) -> dict:
    """One labkit process holds ``--idle`` streams; then one event must reach every one."""
    server = ServerProcess("labkit", serve_labkit, cores[0], args.idle + 200, deadline)
    try:
        clients, load, grown = await connect_idle(server, args.idle, deadline, Listener)
        held = server.ask("open")
        load.events = 1
        cpu = cpu_seconds(server.pid)
        server.pipe.send(("publish", 1, 1000.0))
        try:
            await until(load.all_finished.is_set, "", 30, deadline)
        except Timeout:
            pass
        server.receive("the labkit server did not publish", 30)
        cpu = cpu_seconds(server.pid) - cpu
        peak = memory_kb(server.pid, "VmHWM")
        await close_all(load, clients)
        server.stop()
    finally:
        if server.process.is_alive():
            server.process.terminate()
    latencies = sorted(load.latencies)
    return {"held": held, "delivered": len(latencies), "failures": load.failures,
            "idle_kb": grown / args.idle, "peak_mb": peak / 1024, "cpu": cpu,
            "p50": quantile(latencies, 0.5), "last": latencies[-1] if latencies else float("nan")}


# -- the run ---------------------------------------------------------------------------------


ROW = "{:>5}  {:<12} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>7}"
HEADER = ("round", "server", "delivered", "p50 ms", "p99 ms", "CPU us/ev", "peak MB", "KB/idle",
          "client", "others")
MEDIANS = ("p50", "p99", "cpu_us", "peak_mb", "idle_kb", "client_share", "others")


def print_row(round_: object, result: dict, extra: str = "") -> None:
    print(ROW.format(round_, result["kind"], f"{result['delivered']:,}",
                     f"{result['p50'] * 1e3:.1f}", f"{result['p99'] * 1e3:.1f}",
                     f"{result['cpu_us']:.1f}", f"{result['peak_mb']:.1f}",
                     f"{result['idle_kb']:.1f}", f"{result['client_share']:.0%}",
                     f"{result['others']:.0%}") + extra, flush=True)


def medians_of(rows: list[dict]) -> dict:
    """Medians over rounds; ``delivered`` is the lowest round's (every round must be whole)."""
    return {"kind": rows[0]["kind"], "delivered": min(row["delivered"] for row in rows),
            **{key: statistics.median(row[key] for row in rows) for key in MEDIANS}}


def describe_machine(cores, files: str) -> None:
    import aiohttp
    import aiohttp_sse
    import tornado
    print(f"python {platform.python_version()}, tornado {tornado.version}, aiohttp "
          f"{aiohttp.__version__}, aiohttp-sse {aiohttp_sse.__version__}, {os.cpu_count()} CPUs; "
          f"{cores[2]}; {files}")
    print(f"load average before: {load_average()}")


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.timeout
    cores = pick_cores()
    pin(cores[1])                                  # this process is the load client
    files = raise_open_files(max(args.clients, args.idle) + 500)
    print(f"SSE fan-out: {args.clients:,} clients, {args.events} events at {args.rate:g}/s, "
          f"{args.rounds} rounds")
    describe_machine(cores, files)
    print()
    print(ROW.format(*HEADER))

    results: dict[str, list[dict]] = {kind: [] for kind in args.servers}
    failures = 0
    try:
        for round_ in range(1, args.rounds + 1):
            shift = (round_ - 1) % len(args.servers)
            for kind in args.servers[shift:] + args.servers[:shift]:
                result = asyncio.run(fan_out(kind, SERVERS[kind], args, cores, deadline))
                results[kind].append(result)
                print_row(round_, result)
                problems = problems_of(result)
                if problems:
                    failures += 1
                    print(f"       ^ {'; '.join(problems)}")

        print()
        print(f"medians of {args.rounds} rounds:")
        print(ROW.format(*HEADER))
        medians = {kind: medians_of(rows) for kind, rows in results.items()}
        for row in medians.values():
            print_row("", row)
        peers = [kind for kind in medians if kind in PEERS]
        if "labkit" in medians and peers:
            best = min(peers, key=lambda kind: medians[kind]["cpu_us"])
            ratio = medians["labkit"]["cpu_us"] / medians[best]["cpu_us"]
            print(f"CPU per delivery, labkit / better peer ({best}): {ratio:.2f} "
                  f"(target <= 0.50); per round: "
                  + ", ".join(f"{a['cpu_us'] / b['cpu_us']:.2f}"
                              for a, b in zip(results["labkit"], results[best])))
            p99 = sorted(medians[kind]["p99"] * 1e3 for kind in peers)
            print(f"p99: labkit {medians['labkit']['p99'] * 1e3:.1f} ms, peers "
                  + " and ".join(f"{value:.1f}" for value in p99) + " ms")
        if "labkit" in results:
            print("wire bytes (labkit): recorded " + ", ".join(
                f"{r['recorded'][1]:,}" for r in results["labkit"]) + "; received " + ", ".join(
                f"{r['received']:,}" for r in results["labkit"]))
        print("(delivered: the lowest round; client: share of a core the load client used; "
              "others: CPU that neither used, in cores)")

        if args.idle:
            print()
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft < args.idle + 100:
                print(f"idle streams: skipped, {files} allows fewer than {args.idle + 100} "
                      f"open files")
            else:
                idle = asyncio.run(hold_idle(args, cores, deadline))
                ok = idle["held"] == args.idle and idle["delivered"] == args.idle
                failures += 0 if ok and not idle["failures"] else 1
                print(f"idle streams: one labkit process held {idle['held']:,} of {args.idle:,}; "
                      f"{idle['idle_kb']:.1f} KB each (RSS growth / streams), peak "
                      f"{idle['peak_mb']:.0f} MB; one event reached {idle['delivered']:,} of them "
                      f"(p50 {idle['p50'] * 1e3:.0f} ms, last {idle['last'] * 1e3:.0f} ms, "
                      f"server CPU {idle['cpu'] * 1e3:.0f} ms)"
                      + (f"; {idle['failures'][:3]}" if idle["failures"] else ""))

        if args.profile:
            print()
            short = argparse.Namespace(**{**vars(args), "events": min(args.events, 100)})
            result = asyncio.run(fan_out("labkit", serve_labkit, short, cores, deadline,
                                         profile=True))
            print_profile(result)
    except Timeout as exc:
        print(f"\nabort: {exc} (--timeout {args.timeout:g} s)", file=sys.stderr)
        return 2
    return verdict(failures)


def verdict(failures: int) -> int:
    """Say how the run ended; the exit status (1 if any measurement lost or misordered)."""
    print(f"\nload average after: {load_average()}")
    if failures:
        print(f"\nFAIL: {failures} measurements lost, reordered or miscounted events",
              file=sys.stderr)
        return 1
    print("ok: every event reached every client, in order")
    return 0


def print_profile(result: dict) -> None:
    delivered = max(result["delivered"], 1)
    print(f"{result['kind']} under cProfile ({result['delivered']:,} deliveries; own time per "
          f"delivery in us, calls per delivery; profiling inflates every number):")
    for where, seconds, calls in result["report"]["profile"]:
        print(f"  {seconds / delivered * 1e6:8.2f} {calls / delivered:7.2f}  {where}")


if __name__ == "__main__":
    sys.exit(main())
