"""The delivering sender: retries, Retry-After, 410, dead letters, redelivery, breakers.

Every test runs the real receiver over loopback and a compressed clock, so
backoff schedules of minutes or hours play out in milliseconds.
"""

import asyncio
import contextlib
import random
import re
import socket
import time
from collections import Counter

import pytest
import tornado.web

from labkit import lab
from labkit.clock import Clock
from labkit.errors import DeliveryError, WaitTimeout
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
    with Sender(PROVIDER, server.endpoint_url, policy=Exponential(retries=3), clock=FAST,
                trace=server.trace) as sender:
        stats = sender.run(batch, timeout=10)
    assert stats == {"events": 5, "sent": 5, "delivered": 5, "dead_lettered": 0,
                     "pending": 0, "attempts": 5, "retries": 0}
    assert sorted(d.id for d in server.component.deliveries) == sorted(e.id for e in batch)
    entry = sender.log[batch[0].id, server.endpoint_url]
    assert (entry.state, entry.delivery_id) == (DELIVERED, batch[0].id)
    [attempt] = entry.attempts
    assert attempt.ok and attempt.status == 200 and attempt.error == "" and attempt.latency > 0
    assert attempt.number == 1 and server.trace.t0 <= attempt.real <= time.monotonic()
    assert server.trace.counts() == {"webhook": {"request": 5, "response": 5}}


def test_fans_out_to_every_endpoint(receiver):
    first, second = receiver(), receiver()
    with Sender(PROVIDER, [first.endpoint_url, second.endpoint_url], policy=NO_RETRY) as sender:
        stats = sender.run(events(4), timeout=10)
    assert (stats["sent"], stats["delivered"]) == (8, 8)
    assert len(first.component.deliveries) == len(second.component.deliveries) == 4


def test_retries_wait_the_policy_delays_on_the_clock(receiver):
    server = receiver(faults=FailFirst(2))
    policy = Exponential(base=20, cap=100, retries=3)          # waits 20, then 40 sim seconds
    with Sender(PROVIDER, server.endpoint_url, policy=policy, clock=FAST,
                trace=server.trace) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["retries"] == 2
    attempts = sender.log[event.id, server.endpoint_url].attempts
    assert [a.status for a in attempts] == [500, 500, 200]
    assert attempts[0].error == "HTTP 500 Internal Server Error"
    gaps = [b.sim - a.sim for a, b in zip(attempts, attempts[1:])]
    assert 20 <= gaps[0] < 20 + 500 and 40 <= gaps[1] < 40 + 500   # 500 = 0.5 s of slack
    retries = server.trace.records(kind="retry")
    assert [r.status for r in retries] == [500, 500]
    assert retries[0].detail.startswith("attempt 2 in 20 s") and retries[0].event_id == event.id
    # The receiver saw the same delivery id three times: twice refused, then accepted.
    seen = [r.headers["webhook-id"] for r in server.component.rejections]
    assert seen == [event.id, event.id] and server.component.deliveries[0].id == event.id


def test_exhausted_retries_dead_letter_then_redeliver_keeps_the_delivery_id(receiver):
    server = receiver(faults=Flaky(1.0))
    with Sender(PROVIDER, server.endpoint_url, policy=Exponential(base=1, retries=2),
                clock=FAST, trace=server.trace) as sender:
        [event] = events(1)
        stats = sender.run([event], timeout=10)
        assert (stats["dead_lettered"], stats["attempts"]) == (1, 3)
        [entry] = sender.dead_letters
        assert (entry.state, entry.reason) == (DEAD_LETTERED, EXHAUSTED)
        [drop] = server.trace.records(kind="drop")
        assert (drop.detail, drop.event_id) == (EXHAUSTED, event.id)
        assert (drop.technique, drop.client) == ("webhook", "sender")    # the defaults

        server.component.faults = None                       # the receiver is fixed
        # On loopback the redelivery may already be done when redeliver() returns.
        assert sender.redeliver(entry) is entry and entry.state in (PENDING, DELIVERED)
        lab.run(sender.drain(), timeout=10)
        assert entry.state == DELIVERED and len(entry.attempts) == 4
        assert server.component.deliveries[0].id == entry.delivery_id == event.id
        with pytest.raises(DeliveryError, match="delivered"):
            sender.redeliver(entry)
    assert sender.dead_letters == [] and "1 delivered, 0 dead-lettered" in sender.report()


def test_redirects_are_failures_and_are_not_followed(receiver):
    server = receiver()

    class Moved(tornado.web.RequestHandler):
        def post(self):
            self.redirect(server.endpoint_url, status=308)

    with lab.serve([("/old", Moved)]) as old, \
            Sender(PROVIDER, old.url + "/old", policy=NO_RETRY) as sender:
        assert sender.run(events(1), timeout=10)["dead_lettered"] == 1
    [entry] = sender.dead_letters
    assert entry.attempts[0].status == 308 and entry.attempts[0].error.startswith("HTTP 308")
    assert server.component.deliveries == []


@pytest.mark.parametrize("status", [300, 304, 400, 404, 500])
def test_any_status_outside_2xx_is_a_failure(receiver, status):
    server = receiver(faults=FailFirst(1, status=status))
    with Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["dead_lettered"] == 1
    [attempt] = sender.log[event.id, server.endpoint_url].attempts
    assert attempt.status == status and not attempt.ok and attempt.error.startswith(
        f"HTTP {status} ")


@contextlib.contextmanager
def never_accepting():
    """A loopback URL whose listener never accepts: its backlog is full, so a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}/webhook"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def test_the_connect_timeout_ends_a_connect_long_before_the_total_timeout():
    with never_accepting() as url, Sender(PROVIDER, url, policy=NO_RETRY,
                                          timeout=(0.2, 5.0)) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["dead_lettered"] == 1
    [attempt] = sender.log[event.id, url].attempts
    assert attempt.status is None and "Timeout while connecting" in attempt.error
    assert 0.15 < attempt.latency < 2.5          # the connect timeout, not the total's 5 s


def test_an_error_without_text_is_named_by_its_kind(receiver, monkeypatch):
    class Broken:
        async def fetch(self, request, raise_error):
            raise ConnectionResetError()          # str() of it is ""

    server = receiver()
    with Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY) as sender:
        monkeypatch.setattr(sender, "_http", Broken)
        [event] = events(1)
        sender.run([event], timeout=10)
    [attempt] = sender.log[event.id, server.endpoint_url].attempts
    assert (attempt.status, attempt.error) == (None, "ConnectionResetError")


def test_refused_connections_and_timeouts_are_failures(receiver):
    refused = closed_port_url()
    slow = receiver(process=slow_work(1.0))
    with Sender(PROVIDER, [refused, slow.endpoint_url], policy=NO_RETRY,
                timeout=(0.5, 0.2)) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["dead_lettered"] == 2
    no_answer = sender.log[event.id, refused].attempts[0]
    # The error is what the OS and tornado said, not merely the exception's class name.
    assert no_answer.status is None and "Connection refused" in no_answer.error
    too_slow = sender.log[event.id, slow.endpoint_url].attempts[0]
    assert too_slow.status is None and "Timeout during request" in too_slow.error
    assert 0.15 < too_slow.latency < 0.9


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_stretches_the_wait_up_to_a_cap(receiver, status):
    asks_50 = receiver(faults=FailFirst(1, status=status, headers={"Retry-After": "50"}))
    asks_forever = receiver(faults=FailFirst(1, status=status, headers={"Retry-After": "99999"}))
    policy = Exponential(base=1, cap=1, retries=1)              # would wait 1 sim second
    with Sender(PROVIDER, [asks_50.endpoint_url, asks_forever.endpoint_url], policy=policy,
                clock=FAST, max_retry_after=200) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["delivered"] == 2

    def gap(url):
        first, second = sender.log[event.id, url].attempts
        return second.sim - first.sim

    assert 50 <= gap(asks_50.endpoint_url) < 50 + 500
    assert 200 <= gap(asks_forever.endpoint_url) < 200 + 500


def test_gone_disables_the_endpoint_and_dead_letters_what_was_pending(receiver):
    healthy, removed = receiver(), receiver(faults=gone())
    urls = [healthy.endpoint_url, removed.endpoint_url]
    with Sender(PROVIDER, urls, policy=Exponential(retries=5), clock=FAST,
                concurrency=1) as sender:
        batch = events(5)
        stats = sender.run(batch, timeout=10)
        assert (stats["delivered"], stats["dead_lettered"], stats["retries"]) == (5, 5, 0)
        assert {e.reason for e in sender.dead_letters} == {GONE}
        # One request learnt the endpoint is gone; the four queued behind it were never sent.
        assert sum(len(e.attempts) for e in sender.dead_letters) == 1
        assert sender.disabled_endpoints == {removed.endpoint_url: GONE}
        assert f"disabled: {removed.endpoint_url} (gone)" in sender.report()

        late = sender.send(events(1, seed=1)[0])          # new events skip it, visibly
        lab.run(sender.drain(), timeout=10)
        assert [(e.state, e.reason, len(e.attempts)) for e in late] == [
            (DELIVERED, "", 1), (DEAD_LETTERED, GONE, 0)]

        with pytest.raises(DeliveryError, match="enable"):
            sender.redeliver(sender.dead_letters[0])
        removed.component.faults = None
        sender.enable(removed.endpoint_url)
        for entry in sender.dead_letters:
            sender.redeliver(entry)
        lab.run(sender.drain(), timeout=10)
        assert sender.stats()["dead_lettered"] == 0 and sender.disabled_endpoints == {}
    assert len(removed.component.deliveries) == 6


def test_a_dead_endpoint_never_delays_a_healthy_one(receiver):
    healthy, dead = receiver(), closed_port_url()
    batch = events(20)
    with Sender(PROVIDER, [dead, healthy.endpoint_url], policy=FixedSchedule([400, 400]),
                clock=FAST, concurrency=2) as sender:
        for event in batch:
            sender.send(event)
        deadline = time.monotonic() + 5
        while len(healthy.component.deliveries) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        # Every healthy delivery is done while the dead endpoint's are still waiting to retry.
        assert len(healthy.component.deliveries) == 20
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
    with Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY, concurrency=1,
                breaker_threshold=3, trace=server.trace) as sender:
        batch = events(10)
        stats = sender.run(batch, timeout=10)
        assert (stats["dead_lettered"], stats["attempts"]) == (10, 3)
        reasons = [sender.log[e.id, server.endpoint_url].reason for e in batch]
        assert reasons == [EXHAUSTED] * 3 + [DISABLED] * 7
        assert sender.disabled_endpoints == {server.endpoint_url: DISABLED}
        assert server.trace.count("drop") == 10 and server.trace.count("request") == 3

        server.component.faults = None
        sender.enable(server.endpoint_url)
        for entry in sender.dead_letters:
            sender.redeliver(entry)
        lab.run(sender.drain(), timeout=10)
        assert sender.stats()["delivered"] == 10
    assert sorted(d.id for d in server.component.deliveries) == sorted(e.id for e in batch)


def test_only_retries_that_go_out_are_counted_and_traced(receiver):
    server = receiver(faults=Flaky(1.0))
    with Sender(PROVIDER, server.endpoint_url, policy=FixedSchedule([5, 100, 100]),
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
    server = receiver(faults=Flaky(1.0))                  # every attempt fails: a drop at the end
    with Sender(PROVIDER, server.endpoint_url, policy=Exponential(retries=1), clock=FAST,
                trace=server.trace, client="github") as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["dead_lettered"] == 1
    mine = [r for r in server.trace.records() if r.kind in ("request", "retry", "drop")]
    assert [r.kind for r in mine] == ["request", "retry", "request", "drop"]
    assert {(r.technique, r.client) for r in mine} == {("webhook", "github")}
    assert [r.event_id for r in mine if r.kind != "request"] == [event.id, event.id]
    assert set(server.trace.clients()) == {"github"}


def test_re_enabling_an_endpoint_forgets_its_failures_and_its_wake_up(receiver):
    server = receiver(faults=Flaky(1.0))
    url = server.endpoint_url
    with Sender(PROVIDER, url, policy=FixedSchedule([50]), clock=FAST, concurrency=1,
                breaker_threshold=2) as sender:
        sender.run(events(2), timeout=10)
        assert sender.disabled_endpoints == {url: DISABLED}
        lab.run(lambda: sender.enable(url))              # from the lab loop, as from a cell
        # One more failure is the first in a row again: the breaker stays closed ...
        [event] = events(1, seed=1)
        sender.run([event], timeout=10)
        late = sender.log[event.id, url]
        assert (late.reason, sender.disabled_endpoints) == (EXHAUSTED, {})
        # ... and the retry waited its 50 simulated seconds: the disabling's wake-up is gone.
        first, second = late.attempts
        assert second.sim - first.sim >= 50
        sender.run(events(1, seed=2), timeout=10)        # the second in a row opens it again
        assert sender.disabled_endpoints == {url: DISABLED}


def test_concurrency_caps_the_requests_in_flight_to_each_endpoint(receiver):
    in_flight, peak = Counter(), Counter()

    def held(name):
        async def work(delivery):
            in_flight[name] += 1
            peak[name] = max(peak[name], in_flight[name])
            await asyncio.sleep(0.2)              # long enough for every allowed request
            in_flight[name] -= 1
        return work

    a, b, c = receiver(process=held("a")), receiver(process=held("b")), receiver(
        process=held("c"))
    with Sender(PROVIDER, [a.endpoint_url, b.endpoint_url], policy=NO_RETRY,
                concurrency=3) as sender:
        assert sender.run(events(12), timeout=10)["delivered"] == 24
    with Sender(PROVIDER, c.endpoint_url, policy=NO_RETRY) as sender:   # the default: 10
        assert sender.run(events(12), timeout=10)["delivered"] == 12
    assert peak == {"a": 3, "b": 3, "c": 10}


def test_defaults_breaker_after_five_and_retry_after_capped_at_an_hour(receiver):
    server = receiver(faults=Flaky(1.0))
    with Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY, concurrency=1) as sender:
        assert (sender.breaker_threshold, sender.max_retry_after) == (5, 3600)
        batch = events(7)
        sender.run(batch, timeout=10)
    reasons = [sender.log[e.id, server.endpoint_url].reason for e in batch]
    assert reasons == [EXHAUSTED] * 5 + [DISABLED] * 2


def test_report_lists_counts_dead_letters_by_reason_and_disabled_endpoints(receiver):
    failing, removed, healthy = receiver(faults=Flaky(1.0)), receiver(faults=gone()), receiver()
    urls = [failing.endpoint_url, removed.endpoint_url, healthy.endpoint_url]
    with Sender(PROVIDER, urls, policy=NO_RETRY, concurrency=1) as sender:
        sender.run(events(3), timeout=10)
        assert sender.report() == "\n".join([
            "9 deliveries of 3 events to 3 endpoint(s): 3 delivered, 6 dead-lettered, "
            "0 pending",
            "7 attempts, 0 retries (no_retry policy)",     # 3 + 1 (then gone) + 3
            "dead letters: 3 retries exhausted, 3 gone",
            f"disabled: {removed.endpoint_url} (gone)",
        ])


def test_run_gives_up_waiting_at_its_timeout_and_the_deliveries_go_on(receiver):
    server = receiver(process=slow_work(0.5))
    with Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY) as sender:
        with pytest.raises(WaitTimeout):
            sender.run(events(1), timeout=0.05)
        lab.run(sender.drain(), timeout=10)
        assert sender.stats()["delivered"] == 1


def test_a_sender_closes_unused_and_works_again_after_closing(receiver):
    Sender(PROVIDER, "http://127.0.0.1:9/hook", policy=NO_RETRY).close()   # never sent
    server = receiver()
    sender = Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY)
    with sender:
        sender.run(events(1), timeout=10)
    assert sender.run(events(1, seed=1), timeout=10)["delivered"] == 2       # a new client
    sender.close()


def test_a_success_resets_the_breaker(receiver):
    server = receiver(faults=lambda d: (500, {}) if d.payload["data"]["n"] % 3 else None)
    with Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY, concurrency=1,
                breaker_threshold=3) as sender:
        stats = sender.run(events(12), timeout=10)               # ok, fail, fail, ok, ...
    assert (stats["delivered"], stats["dead_lettered"]) == (4, 8)
    assert sender.disabled_endpoints == {}


def planned_waits(trace) -> list[str]:
    """The waits the sender announced in its retry records, as it wrote them."""
    return [re.match(r"attempt \d+ in (\S+) s,", r.detail)[1] for r in trace.records(kind="retry")]


def test_svixs_27_hour_schedule_plays_out_in_a_second(receiver):
    server = receiver(faults=Flaky(1.0))
    clock = Clock(speedup=200_000)
    start = time.monotonic()
    with Sender(PROVIDER, server.endpoint_url, policy=SVIX, clock=clock, seed=7,
                trace=server.trace) as sender:
        [event] = events(1)
        assert sender.run([event], timeout=10)["attempts"] == 8
    assert time.monotonic() - start < 3
    planned = SVIX.delays(random.Random(7))           # the sender's first draw, same seed
    assert planned_waits(server.trace) == [f"{w:.3g}" for w in planned]
    attempts = sender.log[event.id, server.endpoint_url].attempts
    gaps = [b.sim - a.sim for a, b in zip(attempts, attempts[1:])]
    assert all(gap >= wait - 1e-3 for gap, wait in zip(gaps, planned))   # each wait kept
    assert sum(planned) > 0.8 * 27 * 3600


@pytest.mark.parametrize("seed", [7, 8, None], ids=["seed-7", "seed-8", "default-0"])
def test_the_seed_decides_the_jittered_schedule(receiver, seed):
    server = receiver(faults=Flaky(1.0))
    policy = FixedSchedule([100, 100, 100], jitter=0.5)
    chosen = {} if seed is None else {"seed": seed}
    with Sender(PROVIDER, server.endpoint_url, policy=policy, clock=Clock(speedup=100_000),
                trace=server.trace, **chosen) as sender:
        [event] = events(1)
        sender.run([event], timeout=10)
    seed = 0 if seed is None else seed
    mine = policy.delays(random.Random(seed))
    other = policy.delays(random.Random(seed + 1))
    assert planned_waits(server.trace) == [f"{w:.3g}" for w in mine]
    # The two seeds' waits differ far more than the 3 significant digits shown.
    assert all(abs(a - b) > 1 for a, b in zip(mine, other))
    attempts = sender.log[event.id, server.endpoint_url].attempts
    gaps = [b.sim - a.sim for a, b in zip(attempts, attempts[1:])]
    assert all(gap >= wait - 1e-3 for gap, wait in zip(gaps, mine))


@pytest.mark.parametrize("kwargs", [
    {"concurrency": 0}, {"concurrency": -1}, {"concurrency": 1.5}, {"concurrency": True},
    {"breaker_threshold": 0}, {"breaker_threshold": 2.0},
])
def test_concurrency_and_breaker_threshold_must_be_whole_numbers_of_at_least_one(kwargs):
    [(name, value)] = kwargs.items()
    with pytest.raises(DeliveryError, match=rf"{name} must be a whole number >= 1, got "
                                            rf"{re.escape(repr(value))}:"):
        Sender(PROVIDER, "http://127.0.0.1:9/hook", policy=NO_RETRY, **kwargs)


def test_play_publishes_through_the_sender(receiver):
    server = receiver()
    with Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY) as sender:
        feed = Feed(3)

        async def publish_all():
            await play(feed, fixed_rate(10, count=5), sender.send, clock=FAST)
            await sender.drain()

        lab.run(publish_all(), timeout=10)
    assert sender.stats()["delivered"] == 5
    assert sorted(d.id for d in server.component.deliveries) == sorted(e.id for e in feed.events)


def test_refuses_what_would_break_the_accounting(receiver):
    server = receiver()
    with Sender(PROVIDER, server.endpoint_url, policy=NO_RETRY) as sender:
        [event] = events(1)
        sender.run([event], timeout=10)
        with pytest.raises(DeliveryError, match="redeliver"):
            sender.send(event)
    for endpoints in ([], ["http://a/", "http://a/"]):
        with pytest.raises(DeliveryError, match="^give one or more distinct endpoint URLs, got"):
            Sender(PROVIDER, endpoints, policy=NO_RETRY)
