"""Receiver habits: process once (idempotency), acknowledge fast, keep the latest state.

The three tests in the middle are the lesson's claims measured over real
loopback: a receiver that works inside the request makes the sender time
out and retry, so the work is done twice; idempotency makes it once;
acknowledging first and working in the background avoids the retries.
"""

import asyncio
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from labkit import lab
from labkit.clock import Clock
from labkit.errors import LabkitError
from labkit.feed import Feed
from labkit.webhooks.backoff import FixedSchedule
from labkit.webhooks.faults import slow
from labkit.webhooks.processing import BackgroundWorker, Idempotent, LatestWins
from labkit.webhooks.providers import StandardWebhooksProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.sender import Sender

PROVIDER = StandardWebhooksProvider("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
WORK = 0.3              # real seconds the slow work takes
TIMEOUT = (0.5, 0.15)   # the sender gives up on an answer after 0.15 s


def delivery(id="msg_1", **data):
    """Enough of a Delivery for the wrappers: an id and a Standard Webhooks payload."""
    return SimpleNamespace(id=id, payload={"data": data})


def failing_once():
    calls = []

    async def process(d):
        calls.append(d.id)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise RuntimeError("database unavailable")
    return process, calls


# -- Idempotent ------------------------------------------------------------------------


def test_idempotent_processes_each_delivery_id_once():
    done = []
    once = Idempotent(done.append)

    async def deliver():
        for id in ["a", "b", "a", "a"]:
            await once(delivery(id))

    lab.run(deliver(), timeout=5)
    assert [d.id for d in done] == ["a", "b"]
    assert (once.processed, once.duplicates) == (2, 2)
    with pytest.raises(LabkitError, match="no id"):
        lab.run(once(delivery(None)), timeout=5)


def test_idempotent_forgets_a_failure_so_the_retry_does_the_work():
    process, calls = failing_once()
    once = Idempotent(process)
    with pytest.raises(RuntimeError):
        lab.run(once(delivery()), timeout=5)
    lab.run(once(delivery()), timeout=5)
    assert calls == ["msg_1", "msg_1"] and (once.processed, once.duplicates) == (1, 0)


def test_a_repeat_arriving_mid_work_waits_for_the_outcome():
    process, calls = failing_once()
    once = Idempotent(process)

    async def both_at_once():
        return await asyncio.gather(once(delivery()), once(delivery()), once(delivery()),
                                    return_exceptions=True)

    first, second, third = lab.run(both_at_once(), timeout=5)
    # The first copy failed, so the second did the work and the third is a duplicate:
    # nothing was answered 200 before the work was really done.
    assert isinstance(first, RuntimeError) and second is None and third is None
    assert len(calls) == 2 and (once.processed, once.duplicates) == (1, 1)


# -- the lesson, over the wire ---------------------------------------------------------


def deliver_slowly_processed(process):
    """Send 3 events, one retry each, to a receiver that runs ``process``; return the sender.

    The receiver processes every copy (``duplicates="process"``), so what is measured is
    ``process`` alone (the receiver's own deduplication: test_receiver_duplicates.py)."""
    feed = Feed(4)
    with serve_receiver(process=process, duplicates="process") as server, \
            Sender(PROVIDER, server.endpoint_url, policy=FixedSchedule([300]),
                   clock=Clock(speedup=1000), timeout=TIMEOUT) as sender:
        sender.run([feed.make() for _ in range(3)], timeout=10)
        time.sleep(WORK)         # work the sender stopped waiting for is still going on
    return sender


def test_slow_work_in_the_request_times_out_and_is_done_again():
    done = []
    sender = deliver_slowly_processed(slow(WORK, done.append))
    stats = sender.stats()
    # Every attempt timed out, so the sender retried and gave up; meanwhile the
    # receiver did each event's work once per attempt.
    assert (stats["dead_lettered"], stats["attempts"]) == (3, 6)
    assert all("timeout" in a.error.lower() for e in sender.log.values() for a in e.attempts)
    assert Counter(Counter(d.id for d in done).values()) == {2: 3}


def test_idempotency_turns_the_retries_into_processed_once():
    done = []
    once = Idempotent(slow(WORK, done.append))
    stats = deliver_slowly_processed(once).stats()
    # The first try timed out; the retry found the work done and got its 200 at once.
    assert (stats["delivered"], stats["retries"]) == (3, 3)
    assert len(done) == 3 and len({d.id for d in done}) == 3
    assert (once.processed, once.duplicates) == (3, 3)


def test_fast_acknowledgement_needs_no_retries():
    done = []
    worker = BackgroundWorker(slow(WORK, done.append), workers=3)
    stats = deliver_slowly_processed(worker).stats()
    assert (stats["delivered"], stats["attempts"], stats["retries"]) == (3, 3, 0)
    lab.run(worker.drain(), timeout=5)
    assert len({d.id for d in done}) == len(done) == 3 and worker.processed == 3


# -- BackgroundWorker ------------------------------------------------------------------


def test_background_worker_answers_at_once_and_works_afterwards():
    done = []
    worker = BackgroundWorker(slow(WORK, done.append))
    with serve_receiver(process=worker) as server:
        start = time.monotonic()
        assert PROVIDER.send(server.endpoint_url, Feed().make()).status_code == 200
        assert time.monotonic() - start < WORK and done == []
        lab.run(worker.drain(), timeout=5)
    assert len(done) == 1 and (worker.processed, worker.queued) == (1, 0)


def test_background_worker_keeps_failures_and_stop_returns_unfinished_work():
    def work(d):
        if d.id == "bad":
            raise ValueError("no such order")
    broken = BackgroundWorker(work)

    async def run_broken():
        broken(delivery("bad"))
        broken(delivery("good"))
        await broken.drain()

    lab.run(run_broken(), timeout=5)
    assert broken.processed == 1 and [(d.id, str(e)) for d, e in broken.errors] == [
        ("bad", "no such order")]

    blocked = BackgroundWorker(slow(10))

    async def stop_midway():
        for id in ["a", "b", "c"]:
            blocked(delivery(id))
        await asyncio.sleep(0.01)             # the worker is now busy with "a"
        return await blocked.stop()

    assert [d.id for d in lab.run(stop_midway(), timeout=5)] == ["a", "b", "c"]
    assert blocked.processed == 0 and blocked.queued == 0


# -- LatestWins ------------------------------------------------------------------------


def test_latest_wins_skips_an_older_state_that_arrives_late():
    applied = []
    latest = LatestWins(applied.append, key=lambda d: d.payload["data"]["order"],
                        version=lambda d: d.payload["data"]["version"])
    feed = Feed(5)
    paid = feed.make("order", {"order": "o1", "version": 2, "status": "paid"})
    created = feed.make("order", {"order": "o1", "version": 1, "status": "created"})
    other = feed.make("order", {"order": "o2", "version": 1, "status": "created"})
    with serve_receiver(process=latest) as server:
        for event in [paid, created, other]:                  # "created" arrives last
            assert PROVIDER.send(server.endpoint_url, event).status_code == 200
    assert [d.payload["data"]["status"] for d in applied] == ["paid", "created"]
    assert latest.latest == {"o1": 2, "o2": 1} and (latest.applied, latest.stale) == (2, 1)


def test_latest_wins_undoes_its_claim_when_applying_fails():
    process, calls = failing_once()
    latest = LatestWins(process, key=lambda d: d.payload["data"]["order"],
                        version=lambda d: d.payload["data"]["version"])
    with pytest.raises(RuntimeError):
        lab.run(latest(delivery(order="o1", version=1)), timeout=5)
    assert latest.latest == {}
    lab.run(latest(delivery(order="o1", version=1)), timeout=5)
    assert latest.latest == {"o1": 1} and (latest.applied, latest.stale) == (1, 0)
