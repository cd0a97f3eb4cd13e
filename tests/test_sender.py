"""The delivering sender: retries, Retry-After, 410, dead letters, redelivery, breakers.

Every test runs the real receiver over loopback and a compressed clock, so
backoff schedules of minutes or hours play out in milliseconds.
"""

import random
import time

import pytest
import tornado.web

from labkit import lab
from labkit.clock import Clock
from labkit.errors import DeliveryError
from labkit.feed import Feed, fixed_rate, play
from labkit.webhooks.backoff import NO_RETRY, SVIX, Exponential, FixedSchedule
from labkit.webhooks.faults import FailFirst, Flaky, gone
from labkit.webhooks.faults import slow as slow_work
from labkit.webhooks.providers import StandardWebhooksProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.sender import (
    DEAD_LETTERED, DELIVERED, DISABLED, EXHAUSTED, GONE, PENDING, Sender)
from labkit.webhooks.signatures import StandardWebhooksSignature

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PROVIDER = StandardWebhooksProvider(SECRET)      # delivery id = event id
FAST = Clock(speedup=1000)                       # one simulated second = one real ms


@pytest.fixture
def receiver():
    """Start signature-checking receivers; stop them all after the test."""
    servers = []

    def start(**kwargs):
        server = serve_receiver(verifiers=[StandardWebhooksSignature(SECRET)], **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def events(count, seed=0, **payload):
    feed = Feed(seed)
    return [feed.make("tick", dict(payload, n=i)) for i in range(count)]


def closed_port_url():
    """A URL nobody listens on: a server's port, right after it stopped."""
    server = lab.serve([])
    server.stop()
    return server.url + "/webhook"


def test_delivers_every_event_once_with_the_providers_delivery_id(receiver):
    server = receiver()
    batch = events(5)
    with Sender(PROVIDER, server.webhook_url, policy=Exponential(retries=3), clock=FAST,
                trace=server.trace) as sender:
        stats = sender.run(batch, timeout=10)
    assert stats == {"events": 5, "sent": 5, "delivered": 5, "dead_lettered": 0,
                     "pending": 0, "attempts": 5, "retries": 0}
    assert sorted(d.id for d in server.receiver.deliveries) == sorted(e.id for e in batch)
    entry = sender.log[batch[0].id, server.webhook_url]
    assert (entry.state, entry.delivery_id) == (DELIVERED, batch[0].id)
    [attempt] = entry.attempts
    assert attempt.ok and attempt.status == 200 and attempt.error == "" and attempt.latency > 0
    assert server.trace.counts() == {"webhook": {"request": 5, "response": 5}}


def test_fans_out_to_every_endpoint(receiver):
    first, second = receiver(), receiver()
    with Sender(PROVIDER, [first.webhook_url, second.webhook_url], policy=NO_RETRY) as sender:
        stats = sender.run(events(4), timeout=10)
    assert (stats["sent"], stats["delivered"]) == (8, 8)
    assert len(first.receiver.deliveries) == len(second.receiver.deliveries) == 4


def test_retries_wait_the_policy_delays_on_the_clock(receiver):
    server = receiver(faults=FailFirst(2))
    policy = Exponential(base=20, cap=100, retries=3)          # waits 20, then 40 sim seconds
    with Sender(PROVIDER, server.webhook_url, policy=policy, clock=FAST,
                trace=server.trace) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["retries"] == 2
    attempts = sender.log[event.id, server.webhook_url].attempts
    assert [a.status for a in attempts] == [500, 500, 200]
    assert attempts[0].error == "HTTP 500 Internal Server Error"
    gaps = [b.sim - a.sim for a, b in zip(attempts, attempts[1:])]
    assert 20 <= gaps[0] < 20 + 500 and 40 <= gaps[1] < 40 + 500   # 500 = 0.5 s of slack
    retries = server.trace.records(kind="retry")
    assert [r.status for r in retries] == [500, 500]
    assert retries[0].detail.startswith("attempt 2 in 20 s") and retries[0].event_id == event.id
    # The receiver saw the same delivery id three times: twice refused, then accepted.
    seen = [r.headers["webhook-id"] for r in server.receiver.rejections]
    assert seen == [event.id, event.id] and server.receiver.deliveries[0].id == event.id


def test_exhausted_retries_dead_letter_then_redeliver_keeps_the_delivery_id(receiver):
    server = receiver(faults=Flaky(1.0))
    with Sender(PROVIDER, server.webhook_url, policy=Exponential(base=1, retries=2),
                clock=FAST, trace=server.trace) as sender:
        [event] = events(1)
        stats = sender.run([event], timeout=10)
        assert (stats["dead_lettered"], stats["attempts"]) == (1, 3)
        [entry] = sender.dead_letters
        assert (entry.state, entry.reason) == (DEAD_LETTERED, EXHAUSTED)
        [drop] = server.trace.records(kind="drop")
        assert (drop.detail, drop.event_id) == (EXHAUSTED, event.id)

        server.receiver.faults = None                       # the receiver is fixed
        # On loopback the redelivery may already be done when redeliver() returns.
        assert sender.redeliver(entry) is entry and entry.state in (PENDING, DELIVERED)
        lab.run(sender.drain(), timeout=10)
        assert entry.state == DELIVERED and len(entry.attempts) == 4
        assert server.receiver.deliveries[0].id == entry.delivery_id == event.id
        with pytest.raises(DeliveryError, match="delivered"):
            sender.redeliver(entry)
    assert sender.dead_letters == [] and "1 delivered, 0 dead-lettered" in sender.report()


def test_redirects_are_failures_and_are_not_followed(receiver):
    server = receiver()

    class Moved(tornado.web.RequestHandler):
        def post(self):
            self.redirect(server.webhook_url, status=308)

    with lab.serve([("/old", Moved)]) as old, \
            Sender(PROVIDER, old.url + "/old", policy=NO_RETRY) as sender:
        assert sender.run(events(1), timeout=10)["dead_lettered"] == 1
    [entry] = sender.dead_letters
    assert entry.attempts[0].status == 308 and entry.attempts[0].error.startswith("HTTP 308")
    assert server.receiver.deliveries == []


def test_refused_connections_and_timeouts_are_failures(receiver):
    refused = closed_port_url()
    slow = receiver(process=slow_work(1.0))
    with Sender(PROVIDER, [refused, slow.webhook_url], policy=NO_RETRY,
                timeout=(0.5, 0.2)) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["dead_lettered"] == 2
    no_answer = sender.log[event.id, refused].attempts[0]
    assert no_answer.status is None and "refused" in no_answer.error.lower()
    too_slow = sender.log[event.id, slow.webhook_url].attempts[0]
    assert too_slow.status is None and "timeout" in too_slow.error.lower()
    assert 0.15 < too_slow.latency < 0.9


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_stretches_the_wait_up_to_a_cap(receiver, status):
    asks_50 = receiver(faults=FailFirst(1, status=status, headers={"Retry-After": "50"}))
    asks_forever = receiver(faults=FailFirst(1, status=status, headers={"Retry-After": "99999"}))
    policy = Exponential(base=1, cap=1, retries=1)              # would wait 1 sim second
    with Sender(PROVIDER, [asks_50.webhook_url, asks_forever.webhook_url], policy=policy,
                clock=FAST, max_retry_after=200) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["delivered"] == 2

    def gap(url):
        first, second = sender.log[event.id, url].attempts
        return second.sim - first.sim

    assert 50 <= gap(asks_50.webhook_url) < 50 + 500
    assert 200 <= gap(asks_forever.webhook_url) < 200 + 500


def test_gone_disables_the_endpoint_and_dead_letters_what_was_pending(receiver):
    healthy, removed = receiver(), receiver(faults=gone())
    urls = [healthy.webhook_url, removed.webhook_url]
    with Sender(PROVIDER, urls, policy=Exponential(retries=5), clock=FAST,
                concurrency=1) as sender:
        batch = events(5)
        stats = sender.run(batch, timeout=10)
        assert (stats["delivered"], stats["dead_lettered"], stats["retries"]) == (5, 5, 0)
        assert {e.reason for e in sender.dead_letters} == {GONE}
        # One request learnt the endpoint is gone; the four queued behind it were never sent.
        assert sum(len(e.attempts) for e in sender.dead_letters) == 1
        assert sender.disabled_endpoints == {removed.webhook_url: GONE}
        assert f"disabled: {removed.webhook_url} (gone)" in sender.report()

        late = sender.send(events(1, seed=1)[0])          # new events skip it, visibly
        lab.run(sender.drain(), timeout=10)
        assert [(e.state, e.reason, len(e.attempts)) for e in late] == [
            (DELIVERED, "", 1), (DEAD_LETTERED, GONE, 0)]

        with pytest.raises(DeliveryError, match="enable"):
            sender.redeliver(sender.dead_letters[0])
        removed.receiver.faults = None
        sender.enable(removed.webhook_url)
        for entry in sender.dead_letters:
            sender.redeliver(entry)
        lab.run(sender.drain(), timeout=10)
        assert sender.stats()["dead_lettered"] == 0 and sender.disabled_endpoints == {}
    assert len(removed.receiver.deliveries) == 6


def test_a_dead_endpoint_never_delays_a_healthy_one(receiver):
    healthy, dead = receiver(), closed_port_url()
    batch = events(20)
    with Sender(PROVIDER, [dead, healthy.webhook_url], policy=FixedSchedule([400, 400]),
                clock=FAST, concurrency=2) as sender:
        for event in batch:
            sender.send(event)
        deadline = time.monotonic() + 5
        while len(healthy.receiver.deliveries) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        # Every healthy delivery is done while the dead endpoint's are still waiting to retry.
        assert len(healthy.receiver.deliveries) == 20
        assert all(sender.log[e.id, dead].state == PENDING for e in batch)
        lab.run(sender.drain(), timeout=10)
    # Five exhausted deliveries in a row opened its breaker (one more may have been on
    # its last attempt then); the rest were cut short.
    reasons = [sender.log[e.id, dead].reason for e in batch]
    exhausted = reasons.count(EXHAUSTED)
    assert exhausted in (5, 6) and reasons.count(DISABLED) == 20 - exhausted
    assert sender.disabled_endpoints == {dead: DISABLED}


def test_breaker_opens_after_consecutive_exhausted_deliveries(receiver):
    server = receiver(faults=Flaky(1.0))
    with Sender(PROVIDER, server.webhook_url, policy=NO_RETRY, concurrency=1,
                breaker_threshold=3, trace=server.trace) as sender:
        batch = events(10)
        stats = sender.run(batch, timeout=10)
        assert (stats["dead_lettered"], stats["attempts"]) == (10, 3)
        reasons = [sender.log[e.id, server.webhook_url].reason for e in batch]
        assert reasons == [EXHAUSTED] * 3 + [DISABLED] * 7
        assert sender.disabled_endpoints == {server.webhook_url: DISABLED}
        assert server.trace.count("drop") == 10 and server.trace.count("request") == 3

        server.receiver.faults = None
        sender.enable(server.webhook_url)
        for entry in sender.dead_letters:
            sender.redeliver(entry)
        lab.run(sender.drain(), timeout=10)
        assert sender.stats()["delivered"] == 10
    assert sorted(d.id for d in server.receiver.deliveries) == sorted(e.id for e in batch)


def test_only_retries_that_go_out_are_counted_and_traced(receiver):
    server = receiver(faults=Flaky(1.0))
    with Sender(PROVIDER, server.webhook_url, policy=FixedSchedule([5, 100, 100]),
                clock=FAST, concurrency=1, breaker_threshold=1, trace=server.trace) as sender:
        stats = sender.run(events(5), timeout=10)
    # The first delivery to exhaust its retries opens the breaker; the last retry
    # the others were waiting for is cut short, so it must not count as sent.
    attempts = sorted(len(e.attempts) for e in sender.log.values())
    assert attempts[0] < attempts[-1] == 4, attempts
    first_attempts = sum(1 for e in sender.log.values() if e.attempts)
    assert stats["retries"] == stats["attempts"] - first_attempts
    assert server.trace.count("retry") == stats["retries"]
    assert server.trace.count("request") == stats["attempts"]
    assert stats["dead_lettered"] == 5


def test_the_senders_requests_retries_and_drops_share_its_name(receiver):
    server = receiver(faults=FailFirst(1))
    with Sender(PROVIDER, server.webhook_url, policy=Exponential(retries=1), clock=FAST,
                trace=server.trace, client="github") as sender:
        sender.run(events(1), timeout=10)
    assert set(server.trace.clients()) == {"github"}
    assert [r.kind for r in server.trace.records() if r.kind in ("retry", "request")] == [
        "request", "retry", "request"]


def test_a_success_resets_the_breaker(receiver):
    server = receiver(faults=lambda d: (500, {}) if d.payload["data"]["n"] % 3 else None)
    with Sender(PROVIDER, server.webhook_url, policy=NO_RETRY, concurrency=1,
                breaker_threshold=3) as sender:
        stats = sender.run(events(12), timeout=10)               # ok, fail, fail, ok, ...
    assert (stats["delivered"], stats["dead_lettered"]) == (4, 8)
    assert sender.disabled_endpoints == {}


def test_svixs_27_hour_schedule_plays_out_in_a_second(receiver):
    server = receiver(faults=Flaky(1.0))
    clock = Clock(speedup=200_000)
    start = time.monotonic()
    with Sender(PROVIDER, server.webhook_url, policy=SVIX, clock=clock, seed=7) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["attempts"] == 8
    assert time.monotonic() - start < 3
    attempts = sender.log[event.id, server.webhook_url].attempts
    planned = sum(SVIX.delays(random.Random(7)))      # the sender's first draw, same seed
    assert planned <= attempts[-1].sim - attempts[0].sim < planned + clock.to_sim(1.0)
    assert planned > 0.8 * 27 * 3600


def test_play_publishes_through_the_sender(receiver):
    server = receiver()
    with Sender(PROVIDER, server.webhook_url, policy=NO_RETRY) as sender:
        feed = Feed(3)

        async def publish_all():
            await play(feed, fixed_rate(10, count=5), sender.send, clock=FAST)
            await sender.drain()

        lab.run(publish_all(), timeout=10)
    assert sender.stats()["delivered"] == 5
    assert sorted(d.id for d in server.receiver.deliveries) == sorted(e.id for e in feed.events)


def test_refuses_what_would_break_the_accounting(receiver):
    server = receiver()
    with Sender(PROVIDER, server.webhook_url, policy=NO_RETRY) as sender:
        [event] = events(1)
        sender.run([event], timeout=10)
        with pytest.raises(DeliveryError, match="redeliver"):
            sender.send(event)
    for endpoints in ([], ["http://a/", "http://a/"]):
        with pytest.raises(DeliveryError):
            Sender(PROVIDER, endpoints, policy=NO_RETRY)
