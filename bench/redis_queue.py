"""Bench: messages per second through a Redis Streams queue, embedded and real.

One producer sends ``--messages`` messages of ``--size`` bytes to a queue
(``XADD``, one after the other, each awaited) while one consumer of one
group reads (``XREADGROUP``, ``--batch`` at a time), processes (does
nothing) and acknowledges (``XACK``) them, both through
:mod:`labkit.redis_queue` with a trace recording every step, as in a lesson.
The rate is messages / (last acknowledgement - first send). Each broker runs
``--rounds`` rounds after one untimed warm-up round; the table gives the
median and every round. Every round checks that the consumer got each
message exactly once, in order.

Brokers:

* ``embedded``: fakeredis in this process. It shares the lab loop's thread
  with the producer and the consumer, so one core does everything.
* ``redis``: a real redis-server on loopback: the one at ``--redis-url`` (or
  ``$LABKIT_REDIS_URL``), else one this script starts on a free port
  (``redis-server`` must be on PATH) and stops, by its PID, at the end.

Loopback only; every wait is bounded by ``--timeout``. Exit status 0 when
every round delivered every message once and in order, 1 otherwise.

    .venv/bin/python bench/redis_queue.py
    .venv/bin/python bench/redis_queue.py --messages 20000 --batch 50
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid

from labkit import Trace, lab
from labkit.redis_queue import (EMBEDDED, URL_VARIABLE, Consumer, Producer, connect,
                                delete_queue)

WARMUP = 200
"""Messages of the untimed round each broker gets first."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5_000, help="messages per round (5000)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message (1024)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per broker (3)")
    parser.add_argument("--batch", type=int, default=1,
                        help="messages the consumer takes per read (1, the kit's default)")
    parser.add_argument("--redis-url", default=os.environ.get(URL_VARIABLE),
                        help=f"a running Redis server (default ${URL_VARIABLE}; "
                             f"else one is started)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one round may take at most (120)")
    return parser.parse_args(argv)


def one_round(url: str, messages: int, size: int, batch: int, timeout: float) -> float:
    """Send and consume ``messages`` messages; return messages per second."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    bodies = [f"{n:08d}".ljust(size, "x") for n in range(messages)]
    trace = Trace()
    consumer = Consumer(queue, "bench", lambda message: None, url=url, trace=trace,
                        name="consumer", batch=batch, block=0.1).start()
    producer = Producer(queue, url=url, trace=trace, name="producer")

    async def produce() -> float:
        await producer.asend("connect first")  # opening the connection is not timed
        started = time.monotonic()
        for body in bodies:
            await producer.asend(body)
        return started

    try:
        started = lab.run(produce(), timeout=timeout)
        done = consumer.wait_for(messages + 1, timeout=timeout)
        acks = trace.records(kind="request", client="consumer")
        if [m.body for m in done[1:]] != bodies or len(acks) != messages + 1:
            raise SystemExit(f"round on {url}: messages lost, repeated or out of order")
    finally:
        consumer.stop()
        producer.close()
        delete_queue(queue, url=url)
    return messages / (acks[-1].t - started)


async def server_version(url: str) -> str:
    """The version the Redis server at ``url`` reports."""
    client = await connect(url)
    try:
        return (await client.info("server"))["redis_version"]
    finally:
        await client.aclose()


def start_redis() -> tuple[str, subprocess.Popen]:
    """A redis-server of our own on a free loopback port, no persistence."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", process
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait(10)
    raise SystemExit(f"redis-server did not answer on port {port} within 10 s")


def main(argv=None) -> int:
    args = parse_args(argv)
    started = None
    url = args.redis_url
    if not url and shutil.which("redis-server"):
        url, started = start_redis()
    brokers = [("embedded (fakeredis)", EMBEDDED)]
    if url:
        brokers.append((f"redis-server {lab.run(server_version(url))}", url))
    print(f"{args.messages} messages of {args.size} bytes, one producer, one consumer "
          f"(batch {args.batch}), median of {args.rounds} rounds; Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs")
    try:
        for label, broker in brokers:
            one_round(broker, WARMUP, args.size, args.batch, args.timeout)
            rates = [one_round(broker, args.messages, args.size, args.batch, args.timeout)
                     for _ in range(args.rounds)]
            rounds = ", ".join(f"{r:,.0f}" for r in rates)
            print(f"{label:<24} {statistics.median(rates):>10,.0f} messages/s   ({rounds})")
        if not url:
            print("redis-server: not measured (no --redis-url and redis-server not on PATH)")
    finally:
        if started is not None:
            started.kill()
            started.wait(10)
        lab.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
