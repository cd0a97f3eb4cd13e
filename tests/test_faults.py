"""Faulty receivers: seeded 500s, 429 + Retry-After, 410, slow work, lost acks, outages."""

import socket
import time
from types import SimpleNamespace

import pytest
import requests

from labkit import lab
from labkit.clock import Clock
from labkit.errors import LabkitError
from labkit.feed import Feed
from labkit.webhooks.backoff import FixedSchedule
from labkit.webhooks.faults import (
    FailFirst, Flaky, LostAck, combine, gone, outage, rate_limited, slow)
from labkit.webhooks.providers import StandardWebhooksProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.sender import DELIVERED, Sender

PROVIDER = StandardWebhooksProvider("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def delivery(id="msg_1"):
    """Enough of a Delivery for the faults hooks, which only read the id."""
    return SimpleNamespace(id=id)


def wait_until_refused(port, within=2.0):
    """Wait until nothing accepts connections on ``port`` (the outage has begun)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.005)
    raise AssertionError(f"port {port} still accepts connections after {within} s")


def test_flaky_fails_a_seeded_share_of_requests():
    flaky = Flaky(0.2, seed=5)
    answers = [flaky(delivery()) for _ in range(2000)]
    failures = [a for a in answers if a is not None]
    assert 0.17 < len(failures) / 2000 < 0.23 and flaky.injected == len(failures)
    assert all(a == (500, {}) for a in failures)
    again = Flaky(0.2, seed=5)
    assert [again(delivery()) for _ in range(2000)] == answers      # same seed, same failures
    assert Flaky(0.0)(delivery()) is None and Flaky(1.0)(delivery()) == (500, {})
    with pytest.raises(LabkitError):
        Flaky(1.5)


def test_rate_limited_and_gone_answer_what_providers_react_to():
    assert rate_limited(30)(delivery()) == (429, {"Retry-After": "30"})
    assert gone()(delivery()) == (410, {})


def test_fail_first_counts_tries_per_delivery_id():
    fail = FailFirst(2, status=503)
    assert [fail(delivery("a")) for _ in range(3)] == [(503, {}), (503, {}), None]
    assert fail(delivery("b")) == (503, {})


def test_combine_asks_each_hook_in_turn():
    hook = combine(FailFirst(1, status=429), Flaky(1.0, status=500))
    assert [hook(delivery())[0] for _ in range(2)] == [429, 500]
    assert combine(Flaky(0.0))(delivery()) is None


def test_slow_work_keeps_the_provider_waiting():
    done = []
    with serve_receiver(process=slow(0.3, done.append)) as server:
        start = time.monotonic()
        assert PROVIDER.send(server.endpoint_url, Feed().make()).status_code == 200
        assert time.monotonic() - start >= 0.3 and len(done) == 1


def test_lost_ack_does_the_work_then_answers_500():
    done = []
    lost = LostAck(done.append, rate=1.0)
    with serve_receiver(process=lost) as server:
        event = Feed().make()
        assert PROVIDER.send(server.endpoint_url, event).status_code == 500
        assert PROVIDER.send(server.endpoint_url, event).status_code == 500
    assert [d.id for d in done] == [event.id, event.id] and lost.lost == 2


def test_outage_really_stops_the_server_and_brings_it_back_on_the_same_port():
    clock = Clock(speedup=1000)
    server = serve_receiver()
    back = lab.submit(outage(server, 300, clock=clock))         # 0.3 real seconds
    wait_until_refused(server.port)
    with pytest.raises(requests.ConnectionError):
        PROVIDER.send(server.endpoint_url, Feed().make(), timeout=1)
    with back.result(timeout=5) as restarted:
        assert (restarted.port, restarted.component) == (server.port, server.component)
        assert PROVIDER.send(restarted.endpoint_url, Feed(1).make()).status_code == 200
        assert len(server.component.deliveries) == 1


def test_a_sender_with_retries_rides_out_an_outage():
    clock = Clock(speedup=1000)
    server = serve_receiver()
    feed = Feed(2)
    with Sender(PROVIDER, server.endpoint_url, policy=FixedSchedule([100] * 6), clock=clock,
                trace=server.trace) as sender:
        back = lab.submit(outage(server, 250, clock=clock))
        wait_until_refused(server.port)
        stats = sender.run([feed.make() for _ in range(10)], timeout=10)
    with back.result(timeout=5) as restarted:
        assert (stats["delivered"], stats["dead_lettered"]) == (10, 0) and stats["retries"] >= 10
        assert len(restarted.component.deliveries) == 10
        errors = {a.error for e in sender.log.values() for a in e.attempts if not a.ok}
        assert all("refused" in error.lower() for error in errors)
        assert all(e.state == DELIVERED for e in sender.log.values())
