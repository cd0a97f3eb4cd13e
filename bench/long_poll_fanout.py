"""Bench: long polling fan-out, labkit's long-polling server next to its SSE stream.

The same load as ``bench/sse_fanout.py`` (whose machinery this script
reuses): each server in a process of its own pinned to one core, the load
client on the other, ``--clients`` clients, ``--events`` events at ``--rate``
per second, each carrying its publish time. Two labkit servers, tracing on:

* ``long-polling``: :class:`~labkit.push.polling.LongPollingServer` served by
  :func:`~labkit.push.polling.serve_long_polling`. Each client keeps one
  HTTP/1.1 connection and asks ``GET /poll?after=<cursor>&wait=25`` again as
  soon as it has its answer, with the ``next`` cursor the answer gave;
* ``sse``: :class:`~labkit.push.sse.SSEStream`, for comparison.

Per server: events delivered (must be all, each client's in order), latency
p50/p99 from publish to receipt, server CPU per delivered event, peak memory,
memory per idle client (for long polling: per held request), requests per
delivered event, and whether the wire layer's recorded bytes equal what the
clients received (for long polling, once every client has left).

    .venv/bin/python bench/long_poll_fanout.py
    .venv/bin/python bench/long_poll_fanout.py --rounds 1 --clients 200 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

from receiver_throughput import pick_cores, pin
from sse_fanout import (HEADER, HOST, ROW, Client, Listener, Timeout, describe_machine,
                        fan_out, medians_of, print_profile, print_row,
                        problems_of, raise_open_files, serve_labkit, serve_labkit_component,
                        verdict)

POLL_PATH = "/poll"
HOLD = 25
"""Seconds a client lets the server hold its poll (the server's cap is 30)."""
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
NEXT = re.compile(rb'"next": (\d+)')


def serve_long_polling(conn, profile: bool) -> None:
    from labkit.push.polling import serve_long_polling as serve

    serve_labkit_component(conn, profile, lambda hub: serve(hub),
                           lambda server: server.component.held)


SERVERS = {"long-polling": serve_long_polling, "sse": serve_labkit}


def per_event(result: dict) -> str:
    """The extra column: requests per delivered event."""
    return f" {result['requests'] / max(result['delivered'], 1):>7.3f}"


class Poller(Client):
    """A long-polling client: ask, read the answer, ask again at once with ``next``."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.ask(None)

    def ask(self, after: int | None) -> None:
        target = POLL_PATH if after is None else f"{POLL_PATH}?after={after}&wait={HOLD}"
        self.transport.write(f"GET {target} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                             f"X-Labkit-Client: {self.name}\r\n\r\n".encode())
        self.load.requests += 1

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.load.received += len(data)
        buffer = self.buffer + data
        while True:
            end = buffer.find(b"\r\n\r\n")
            length = CONTENT_LENGTH.search(buffer, 0, end + 2) if end >= 0 else None
            if length is None or len(buffer) < end + 4 + int(length[1]):
                break
            head, body = buffer[:end], buffer[end + 4:end + 4 + int(length[1])]
            buffer = buffer[end + 4 + int(length[1]):]
            cursor = NEXT.search(body)
            if head[9:12] != b"200" or cursor is None:
                self.load.failures.append(f"{head[:40]!r}: {body[:200]!r}")
                self.transport.close()
                return
            self.tally(body, now)
            self.ask(int(cursor[1]))
        self.buffer = buffer


CLIENTS = {"long-polling": Poller, "sse": Listener}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1_000, help="connected clients (1000)")
    parser.add_argument("--events", type=int, default=200, help="events per round (200)")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over both servers (3)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="abort the whole run after S seconds (600)")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, run long polling once under cProfile")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.events < 1 or args.rate <= 0 or args.rounds < 1:
        parser.error("need --clients >= 1, --events >= 1, --rate > 0, --rounds >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.timeout
    cores = pick_cores()
    pin(cores[1])                                  # this process is the load client
    files = raise_open_files(args.clients + 500)
    print(f"long polling fan-out: {args.clients:,} clients, {args.events} events at "
          f"{args.rate:g}/s, {args.rounds} rounds")
    describe_machine(cores, files)
    print()
    print(ROW.format(*HEADER) + f" {'req/ev':>7}")

    results: dict[str, list[dict]] = {name: [] for name in SERVERS}
    failures = 0
    try:
        for round_ in range(1, args.rounds + 1):
            names = list(SERVERS) if round_ % 2 else list(SERVERS)[::-1]
            for name in names:
                result = asyncio.run(fan_out(name, SERVERS[name], args, cores, deadline,
                                             kind=CLIENTS[name]))
                results[name].append(result)
                print_row(round_, result, per_event(result))
                problems = problems_of(result)
                if problems:
                    failures += 1
                    print(f"       ^ {'; '.join(problems)}")
        print()
        print(f"medians of {args.rounds} rounds:")
        print(ROW.format(*HEADER) + f" {'req/ev':>7}")
        medians = {name: medians_of(rows) for name, rows in results.items()}
        for name, row in medians.items():
            print_row("", row, per_event(min(results[name], key=lambda r: r["requests"])))
        long_poll, sse = medians["long-polling"], medians["sse"]
        print(f"long polling / SSE: CPU per delivery {long_poll['cpu_us'] / sse['cpu_us']:.1f}x, "
              f"p50 {long_poll['p50'] / sse['p50']:.1f}x, p99 {long_poll['p99'] / sse['p99']:.1f}x "
              f"(req/ev: requests per delivered event, connecting included; the round with "
              f"the fewest)")
        if args.profile:
            print()
            short = argparse.Namespace(**{**vars(args), "events": min(args.events, 100)})
            result = asyncio.run(fan_out("long-polling", serve_long_polling, short, cores,
                                         deadline, kind=Poller, profile=True))
            print_profile(result)
    except Timeout as exc:
        print(f"\nabort: {exc} (--timeout {args.timeout:g} s)", file=sys.stderr)
        return 2
    return verdict(failures)


if __name__ == "__main__":
    sys.exit(main())
