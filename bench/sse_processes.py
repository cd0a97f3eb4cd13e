"""Bench: SSE deliveries per second with one and with two server processes behind one Redis.

A real ``redis-server`` is started on a free loopback port (no persistence)
and stopped, by its PID, at the end. Each measurement starts ``N`` server
processes (1, then 2), each a :class:`~labkit.experiments.processes.ServerProcess`:
a :class:`~labkit.redis_hub.RedisHub` on one fresh stream, served by
:func:`~labkit.push.sse.serve_sse` with tracing on, exactly as in the lesson.
``--clients`` raw asyncio SSE connections in this process are spread evenly
over the servers (client ``k`` on server ``k % N``). A further process of the
same kind, with no clients, is the publisher (as an application's back end
would be): it publishes ``--events`` feed events back to back (each
``XADD`` awaited, then its own mirror), and every server's reader brings
them into its mirror and fans them out to its clients. (A server that also
publishes waits for its own fan-out before its next publish, so the
publisher's place would change what is measured.)

The figure: deliveries (clients x events) divided by the time from the
publish command to the last event reaching the last client. A server that
falls behind writes several events in one chunk, so deliveries per second
can far exceed what one write per event would allow; the publisher's pace
(one XADD and one XREAD round trip per event) is then what bounds it, and
the CPU columns show whether the servers had any to spare. Each client
must get exactly ``--events`` events, the last one the last published id.
Also per measurement: the CPU seconds the server processes, the load client
(this process) and redis-server used meanwhile (``/proc/<pid>/stat``), as a
share of the window, so a reader can see which side ran out of CPU. The
configurations alternate in order from round to round; the summary gives the
median of ``--rounds`` rounds.

Loopback only; every wait is bounded. Exit status 0 when every client got
every event in every measurement, 1 otherwise, 2 if something timed out.

    .venv/bin/python bench/sse_processes.py
    .venv/bin/python bench/sse_processes.py --clients 1000 --events 500 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

from labkit.experiments.processes import ServerProcess
from labkit.feed import Feed
from labkit.redis_queue import delete_queue
from receiver_throughput import cpu_seconds, load_average
from redis_queue import start_redis

CONNECT_AT_ONCE = 100
"""Connections opened concurrently (servers listen with a backlog of 128)."""
FRAME = b"\nid: "
"""How every event frame starts on the wire (after the previous frame or a chunk-size line)."""
LAST_ID = re.compile(rb"\nid: (\d+)\n")
KEPT = 1024
"""Bytes of each stream's end kept to read its last id from."""


class Timeout(Exception):
    """A wait went past its bound."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="SSE clients in all (1000)")
    parser.add_argument("--events", type=int, default=2000, help="events per round (2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per configuration (3)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one measurement may take at most (120)")
    args = parser.parse_args(argv)
    if args.clients < 2 or args.events < 1 or args.rounds < 1:
        parser.error("need --clients >= 2, --events >= 1, --rounds >= 1")
    return args


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                         timeout=10).stdout.split()
    return f"redis-server {out[2].removeprefix('v=')}" if len(out) > 2 else "redis-server"


class Listener(asyncio.Protocol):
    """One SSE client: asks once, then counts event frames (and keeps the stream's end)."""

    def __init__(self, tally: Tally, port: int, name: str):
        self.tally, self.port, self.name = tally, port, name
        self.head = b""
        self.open = self.done = False
        self.count = 0
        self.recent = b""
        """The last bytes received: the last event's id is read from them at the end."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAccept: "
                        f"text/event-stream\r\nX-Labkit-Client: {self.name}\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 200"):
                self.tally.failures.append(f"{self.name}: {self.head[:40]!r}")
            self.open = True
            self.tally.opened += 1
            data = self.head[end + 2:]  # keep a "\r\n" before the first chunk
        text = self.recent[-(len(FRAME) - 1):] + data  # a frame's start cut by a read
        self.count += text.count(FRAME)
        self.recent = (self.recent + data)[-KEPT:]
        if self.count >= self.tally.events and not self.done:
            self.tally.finished(self)

    def last_id(self) -> int | None:
        ids = LAST_ID.findall(self.recent)
        return int(ids[-1]) if ids else None

    def connection_lost(self, exc) -> None:
        if not self.tally.closing:
            self.tally.failures.append(f"{self.name}: the connection closed early ({exc})")
            self.tally.all_done.set()


class Tally:
    """Every client's counts for one measurement."""

    def __init__(self, clients: int, events: int):
        self.clients, self.events = clients, events
        self.opened = 0
        self.done = 0
        self.failures: list[str] = []
        self.last_at = 0.0
        self.all_done = asyncio.Event()
        self.closing = False

    def finished(self, client: Listener) -> None:
        client.done = True
        self.done += 1
        if self.done == self.clients:
            self.last_at = time.monotonic()
            self.all_done.set()


async def until(check, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise Timeout(what)
        await asyncio.sleep(0.01)


async def measure(count: int, url: str, redis_pid: int, args: argparse.Namespace) -> dict:
    """One measurement with ``count`` server processes (and the publisher)."""
    loop = asyncio.get_running_loop()
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    processes: list[ServerProcess] = []
    tally = Tally(args.clients, args.events)
    clients: list[Listener] = []
    try:
        for name in ["publisher"] + [f"server {n + 1}" for n in range(count)]:
            processes.append(await loop.run_in_executor(None, lambda name=name: ServerProcess(
                stream, url=url, history=args.events, name=name)))
        publisher, servers = processes[0], processes[1:]
        gate = asyncio.Semaphore(CONNECT_AT_ONCE)

        async def connect(k: int) -> None:
            port = urlsplit(servers[k % count].sse_url).port
            async with gate:
                _, client = await loop.create_connection(
                    lambda: Listener(tally, port, f"c{k:05d}"), "127.0.0.1", port)
            clients.append(client)

        await asyncio.gather(*(connect(k) for k in range(args.clients)))
        await until(lambda: tally.opened == args.clients or tally.failures,
                    "every stream to open", 30)
        for n, server in enumerate(servers):   # and each server counts them as open
            share = len(range(n, args.clients, count))
            await until(lambda s=server, c=share: s.state()["open"] == c,
                        f"{server.name} to hold its streams", 30)
        feed = Feed(seed=1)
        events = [feed.make("news", {"n": k}) for k in range(args.events)]
        pids = [p.pid for p in processes] + [os.getpid(), redis_pid]
        before = [cpu_seconds(pid) for pid in pids]
        started = time.monotonic()
        published = loop.run_in_executor(None, publisher.publish, events)
        try:
            await asyncio.wait_for(tally.all_done.wait(), args.timeout)
        except asyncio.TimeoutError:
            tally.failures.append(f"only {tally.done} of {args.clients} clients got every "
                                  f"event within {args.timeout:g} s")
        window = (tally.last_at or time.monotonic()) - started
        cpu = [(cpu_seconds(pid) - b) / window for pid, b in zip(pids, before)]
        ids = await asyncio.wait_for(published, args.timeout)
        wrong = [c.name for c in clients if c.count != args.events or c.last_id() != ids[-1]]
        if wrong:
            tally.failures.append(f"{len(wrong)} clients missed, repeated or ended on the "
                                  f"wrong event, e.g. {wrong[0]}")
        return {"servers": count, "rate": args.clients * args.events / window,
                "events_rate": args.events / window,
                "us_per_delivery": sum(cpu[1:-2]) * window / (args.clients * args.events) * 1e6,
                "window": window, "failures": tally.failures, "publisher_cpu": cpu[0],
                "server_cpu": cpu[1:-2], "client_cpu": cpu[-2], "redis_cpu": cpu[-1]}
    finally:
        tally.closing = True
        for client in clients:
            client.transport.close()
        for process in processes:
            await loop.run_in_executor(None, process.stop)
        delete_queue(stream, url=url)


def row(result: dict, label: str) -> str:
    servers = " + ".join(f"{c:.2f}" for c in result["server_cpu"])
    return (f"{label:<8} {result['servers']:>7} {result['rate']:>13,.0f} "
            f"{result['events_rate']:>9,.0f} {result['window']:>8.2f} {servers:>12} "
            f"{result['us_per_delivery']:>6.2f} {result['publisher_cpu']:>9.2f} "
            f"{result['client_cpu']:>6.2f} {result['redis_cpu']:>5.2f}")


HEADER = (f"{'round':<8} {'servers':>7} {'deliveries/s':>13} {'events/s':>9} "
          f"{'window s':>8} {'server CPU':>12} {'us/del':>6} {'publisher':>9} {'client':>6} "
          f"{'redis':>5}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.clients + 200 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.clients + 200, hard))
    url, redis = start_redis()
    results: dict[int, list[dict]] = {1: [], 2: []}
    failed = 0
    try:
        print(f"SSE across server processes: {args.clients} clients spread over them, "
              f"{args.events} events published back to back by a publisher process, "
              f"median of "
              f"{args.rounds} rounds; {redis_version()} on loopback; Python "
              f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
              f"{load_average()}")
        print("(CPU columns: share of one core each process used during the window; us/del: "
              "the servers' CPU microseconds per delivery)")
        print(HEADER)
        for round_ in range(1, args.rounds + 1):
            for count in ((1, 2) if round_ % 2 else (2, 1)):
                result = asyncio.run(measure(count, url, redis.pid, args))
                results[count].append(result)
                print(row(result, str(round_)), flush=True)
                if result["failures"]:
                    failed += 1
                    print(f"         ^ {'; '.join(result['failures'][:3])}")
    except Timeout as exc:
        print(f"abort: {exc} did not happen in time", file=sys.stderr)
        return 2
    finally:
        redis.kill()
        redis.wait(10)
    print("medians:")
    medians = {}
    for count, rows in results.items():
        median = {key: statistics.median(r[key] for r in rows)
                  for key in ("rate", "events_rate", "window", "us_per_delivery",
                              "publisher_cpu", "client_cpu", "redis_cpu")}
        median["server_cpu"] = [statistics.median(r["server_cpu"][n] for r in rows)
                                for n in range(count)]
        medians[count] = {**median, "servers": count}
        print(row(medians[count], "median"))
    print(f"two processes / one: {medians[2]['rate'] / medians[1]['rate']:.2f} x the "
          f"deliveries per second; per round: " + ", ".join(
              f"{b['rate'] / a['rate']:.2f}" for a, b in zip(results[1], results[2])))
    print(f"load average after: {load_average()}")
    if failed:
        print(f"FAIL: {failed} measurements lost or repeated events", file=sys.stderr)
        return 1
    print("ok: every client got every event once, ending on the last id published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
