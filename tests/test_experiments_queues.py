"""Lesson 01's Redis experiments, on the embedded broker and, when ``LABKIT_REDIS_URL`` is set,
on that real Redis server (the same code either way)."""

from __future__ import annotations

import os

import pytest

from labkit import lab, redis_queue
from labkit.errors import BrokerUnavailable
from labkit.experiments.queues import crash_on_redis, fan_out, outage_on_redis

BROKERS = ["embedded"] + ([os.environ["LABKIT_REDIS_URL"]]
                          if os.environ.get("LABKIT_REDIS_URL") else [])


@pytest.fixture(params=BROKERS)
def url(request):
    yield request.param
    assert redis_queue.running_consumers() == []
    assert lab.running_servers() == []


def test_outage_on_redis_loses_no_order_while_direct_calls_fail(url):
    run = outage_on_redis(url=url)
    assert len(run.in_window) == 10 and run.failed == run.in_window
    assert run.processed == run.sent and len(run.sent) == 20
    assert run.after == {"length": 20, "waiting": 0, "in_flight": 0, "acked": 20, "dead": 0}
    assert run.waiting_at_restart == 10
    assert all(run.published_at[i] < run.received_at[i] for i in run.in_window)
    assert run.trace.count("drop", technique="direct") == 10


def test_fan_out_every_group_gets_all_and_members_share(url):
    run = fan_out(orders=12, groups={"emails": 3, "analytics": 1}, url=url)
    assert run.seen_by("emails") == run.seen_by("analytics") == list(run.sent)
    shares = [len(run.received["emails", f"emails-{n}"]) for n in (1, 2, 3)]
    assert sum(shares) == 12 and min(shares) > 0
    assert len(run.received["analytics", "analytics-1"]) == 12
    assert all(s["acked"] == 12 and s["in_flight"] == 0 for s in run.after.values())
    assert run.trace.count("request", technique="queue") == 12 + 2 * 12  # 12 XADD, 24 XACK


def test_fan_out_figure_has_one_bar_per_consumer():
    import matplotlib
    matplotlib.use("Agg")
    run = fan_out(orders=4, groups={"a": 2, "b": 1})
    fig = run.figure()
    assert len(fig.axes[0].patches) == 3
    assert sorted(p.get_height() for p in fig.axes[0].patches) == [2, 2, 4]


def test_crash_on_redis_hands_the_pending_message_to_another_consumer(url):
    run = crash_on_redis(orders=3, crash=2, claim_after=0.2, url=url)
    assert run.processed == {7001: ("email-1", 1), 7002: ("email-2", 2),
                             7003: ("email-2", 1)}
    assert run.redelivered_after >= 0.2
    assert run.trace.count("retry") == 1
    assert run.after["acked"] == 3 and run.after["in_flight"] == 0


def test_unreachable_broker_is_a_clear_error():
    with pytest.raises(BrokerUnavailable, match="127.0.0.1:1"):
        fan_out(orders=1, url="redis://127.0.0.1:1/0")
