"""Bench: the delivery invariant at volume, over real loopback sockets.

Sends many events (default 10,000) through the retrying sender to receivers
that fail a share of requests (default 20 %) before processing and lose a
few acknowledgements after it, and deduplicate by delivery id. Then checks
the invariant and prints the numbers:

* every event ends delivered or dead-lettered at every endpoint, none pending;
* each receiver processed every delivered event exactly once, never twice.

Backoff delays run on a compressed clock, so the run's time is the time of
the HTTP requests themselves. Exit status: 0 if the invariant holds, 1 if it
is broken, 2 if the run exceeded ``--timeout``.

    .venv/bin/python bench/delivery_invariant.py
    .venv/bin/python bench/delivery_invariant.py --events 2000 --faults 0.5 --endpoints 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from labkit.clock import Clock
from labkit.feed import Feed
from labkit.webhooks.backoff import FullJitter
from labkit.webhooks.faults import Flaky, LostAck
from labkit.webhooks.processing import Idempotent
from labkit.webhooks.providers import StandardWebhooksProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.sender import DELIVERED, Sender
from labkit.webhooks.signatures import StandardWebhooksSignature

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events to send (10000)")
    parser.add_argument("--faults", type=float, default=0.2,
                        help="share of requests answered 500 before processing (0.2)")
    parser.add_argument("--lost-acks", type=float, default=0.02,
                        help="share of processed requests whose 200 is lost (0.02)")
    parser.add_argument("--endpoints", type=int, default=1, help="receivers to fan out to (1)")
    parser.add_argument("--retries", type=int, default=3, help="retries per delivery (3)")
    parser.add_argument("--concurrency", type=int, default=20,
                        help="requests in flight per endpoint (20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of faults and jitter (0)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="give up after this many real seconds (300)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    processed: list[list[str]] = [[] for _ in range(args.endpoints)]
    dedupers = [Idempotent(lambda d, done=done: done.append(d.id)) for done in processed]
    servers = [serve_receiver(verifiers=[StandardWebhooksSignature(SECRET)],
                              faults=Flaky(args.faults, seed=args.seed + i),
                              process=LostAck(once, args.lost_acks, seed=args.seed + 100 + i))
               for i, once in enumerate(dedupers)]
    feed = Feed(args.seed)
    events = [feed.make("tick", {"n": n}) for n in range(args.events)]
    sender = Sender(StandardWebhooksProvider(SECRET), [s.endpoint_url for s in servers],
                    policy=FullJitter(base=1, cap=60, retries=args.retries),
                    clock=Clock(speedup=10_000), seed=args.seed,
                    concurrency=args.concurrency)
    print(f"{args.events} events to {args.endpoints} endpoint(s), {args.faults:.0%} faults, "
          f"{args.lost_acks:.0%} lost acks, {args.retries} retries, seed {args.seed}")
    start = time.perf_counter()
    try:
        stats = sender.run(events, timeout=args.timeout)
    except TimeoutError:
        print(f"gave up after {args.timeout} s: {sender.stats()}")
        return 2
    finally:
        wall = time.perf_counter() - start
        for server in servers:
            server.stop()
        sender.close()
    broken = check(sender, events, servers, processed)

    rows = [("sent (event x endpoint)", stats["sent"]), ("delivered", stats["delivered"]),
            ("dead-lettered", stats["dead_lettered"]), ("pending", stats["pending"]),
            ("processed", sum(once.processed for once in dedupers)),
            ("  of which dead-lettered", sum(once.processed for once in dedupers)
             - stats["delivered"]),
            ("duplicates suppressed", sum(once.duplicates for once in dedupers)),
            ("attempts", stats["attempts"]), ("retries", stats["retries"]),
            ("wall time (s)", f"{wall:.2f}"),
            ("attempts per second", f"{stats['attempts'] / wall:.0f}")]
    for name, value in rows:
        print(f"{name:<24}{value:>10}")
    print("invariant: " + ("BROKEN\n  " + "\n  ".join(broken) if broken else "holds"))
    return 1 if broken else 0


def check(sender: Sender, events, servers, processed: list[list[str]]) -> list[str]:
    """Every way the invariant is broken, as sentences (empty when it holds)."""
    broken = []
    stats = sender.stats()
    if stats["pending"] or stats["delivered"] + stats["dead_lettered"] != stats["sent"]:
        broken.append(f"deliveries unaccounted for: {stats}")
    if stats["sent"] != len(events) * len(servers):
        broken.append(f"{stats['sent']} deliveries logged, expected {len(events) * len(servers)}")
    for server, done in zip(servers, processed):
        delivered = {e.event.id for e in sender.log.values()
                     if e.url == server.endpoint_url and e.state == DELIVERED}
        twice = [id for id, n in Counter(done).items() if n > 1]
        if twice:
            broken.append(f"{server.endpoint_url}: {len(twice)} events processed twice")
        if delivered - set(done):
            broken.append(f"{server.endpoint_url}: {len(delivered - set(done))} delivered "
                          f"events never processed")
    return broken


if __name__ == "__main__":
    sys.exit(main())
