"""Tests for labkit.feed: events, the thread-safe Feed, schedules and play()."""

import asyncio
import json
import statistics
import threading
import time

import pytest

from labkit.clock import Clock
from labkit.errors import LabkitError
from labkit.feed import Event, Feed, FeedError, fixed_rate, play, poisson


# -- Event -------------------------------------------------------------------


def test_event_round_trips_through_dict_and_json():
    event = Feed().make("payment.succeeded", {"amount": 1200, "tags": ["a", "b"]})
    data = event.to_dict()
    assert set(data) == {"id", "type", "seq", "created", "payload"}
    assert Event.from_dict(data) == event
    assert Event.from_dict(json.loads(event.to_json())) == event


def test_from_dict_rejects_incomplete_data_clearly():
    with pytest.raises(FeedError, match="need id, type, seq, created, payload"):
        Event.from_dict({"id": "evt_1", "type": "tick"})


def test_event_is_frozen():
    event = Feed().make()
    with pytest.raises(AttributeError):
        event.seq = 99


# -- Feed --------------------------------------------------------------------


def test_make_numbers_events_and_remembers_them():
    feed = Feed()
    before = time.monotonic()
    events = [feed.make() for _ in range(3)]
    assert [e.seq for e in events] == [1, 2, 3]
    assert all(e.type == "tick" and e.payload == {} for e in events)
    assert before <= events[0].created <= events[1].created <= events[2].created <= time.monotonic()
    assert feed.events == events


def test_events_is_a_snapshot():
    feed = Feed()
    feed.make()
    snapshot = feed.events
    feed.make()
    assert len(snapshot) == 1 and len(feed.events) == 2


def test_ids_are_deterministic_given_the_seed():
    one, two = Feed(seed=3), Feed(seed=3)
    assert [one.make().id for _ in range(5)] == [two.make().id for _ in range(5)]
    assert Feed(seed=3).make().id != Feed(seed=4).make().id


def test_ids_carry_prefix_and_seq_and_never_clash_across_prefixes():
    evt, pay = Feed(prefix="evt"), Feed(prefix="pay")
    evt_ids = {evt.make().id for _ in range(100)}
    pay_ids = {pay.make().id for _ in range(100)}
    assert len(evt_ids) == len(pay_ids) == 100
    assert not evt_ids & pay_ids
    first = Feed(prefix="msg").make().id
    assert first.startswith("msg_000001_")


@pytest.mark.parametrize("bad", ["", "evt_", "1evt", "e-v", None])
def test_rejects_bad_prefix(bad):
    with pytest.raises(FeedError, match="prefix"):
        Feed(prefix=bad)


def test_payload_is_copied_as_json():
    payload = {"items": (1, 2), "nested": {"x": 1}}
    event = Feed().make("push", payload)
    payload["nested"]["x"] = 2
    assert event.payload == {"items": [1, 2], "nested": {"x": 1}}


@pytest.mark.parametrize("bad, named", [
    ({"when": {1, 2}}, "set"),
    ({"obj": object()}, "object"),
    ({"x": float("nan")}, "finite float"),
])
def test_rejects_payload_that_is_not_json(bad, named):
    with pytest.raises(FeedError, match="not JSON-serialisable") as info:
        Feed().make("push", bad)
    assert named in str(info.value).lower()
    assert "'push'" in str(info.value)


def test_rejects_payload_that_is_not_a_dict():
    with pytest.raises(FeedError, match="must be a dict, got list"):
        Feed().make("push", [1, 2])


def test_rejects_empty_type():
    with pytest.raises(FeedError, match="type"):
        Feed().make("")


def test_feed_error_is_a_labkit_error():
    assert issubclass(FeedError, LabkitError)


def test_make_is_thread_safe():
    feed = Feed(seed=1)
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(500):
            feed.make()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = feed.events
    assert len(events) == 4000
    assert len({e.id for e in events}) == 4000
    assert [e.seq for e in events] == list(range(1, 4001))


# -- schedules ---------------------------------------------------------------


def test_fixed_rate_by_count():
    assert fixed_rate(4, count=4) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert fixed_rate(1, count=0) == []


def test_fixed_rate_by_duration_includes_the_end():
    assert fixed_rate(2, duration=3) == pytest.approx([0.5, 1, 1.5, 2, 2.5, 3])
    assert len(fixed_rate(0.3, duration=10)) == 3     # float rounding must not lose one
    assert fixed_rate(1, duration=0.5) == []


def test_fixed_rate_spacing_is_even():
    offsets = fixed_rate(10, count=50)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert gaps == pytest.approx([0.1] * 49)


def test_poisson_repeats_with_the_same_seed_only():
    assert poisson(5, count=100, seed=1) == poisson(5, count=100, seed=1)
    assert poisson(5, count=100, seed=1) != poisson(5, count=100, seed=2)
    assert poisson(5, duration=10, seed=4) == poisson(5, duration=10, seed=4)


def test_poisson_mean_gap_is_one_over_rate():
    offsets = poisson(4.0, count=10_000, seed=42)
    gaps = [b - a for a, b in zip([0.0] + offsets, offsets)]
    assert len(offsets) == 10_000
    assert all(g > 0 for g in gaps)
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.05)
    # exponential gaps: standard deviation equals the mean
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.1)


def test_poisson_by_duration_stays_inside_and_has_about_rate_times_duration():
    offsets = poisson(50, duration=100, seed=3)
    assert offsets == sorted(offsets)
    assert 0 < offsets[0] and offsets[-1] <= 100
    assert len(offsets) == pytest.approx(5000, rel=0.05)


def test_poisson_duration_and_count_draw_the_same_arrivals():
    by_duration = poisson(3, duration=20, seed=9)
    assert poisson(3, count=len(by_duration), seed=9) == by_duration


@pytest.mark.parametrize("schedule", [fixed_rate, poisson])
@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0, "count": 1}, "rate"),
    ({"rate": -1, "count": 1}, "rate"),
    ({"rate": float("inf"), "count": 1}, "rate"),
    ({"rate": 1}, "exactly one"),
    ({"rate": 1, "count": 1, "duration": 1}, "exactly one"),
    ({"rate": 1, "count": -1}, "count"),
    ({"rate": 1, "count": 2.5}, "count"),
    ({"rate": 1, "duration": -1}, "duration"),
])
def test_schedules_reject_bad_arguments(schedule, kwargs, message):
    with pytest.raises(FeedError, match=message):
        schedule(**kwargs)


# -- play --------------------------------------------------------------------


def test_play_publishes_in_order_on_time():
    feed = Feed()
    clock = Clock(speedup=100)
    schedule = [1.0, 2.0, 5.0]        # simulated seconds: 10, 20, 50 ms real
    seen = []

    def publish(event):
        seen.append((event, time.monotonic()))

    async def main():
        t0 = time.monotonic()
        events = await play(feed, schedule, publish, clock=clock, type="push", payload={"n": 1})
        return t0, events, time.monotonic() - t0

    t0, events, elapsed = asyncio.run(main())
    assert [e for e, _ in seen] == events == feed.events
    assert [e.seq for e in events] == [1, 2, 3]
    assert all(e.type == "push" and e.payload == {"n": 1} for e in events)
    for offset, (_, at) in zip(schedule, seen):
        assert at - t0 >= clock.to_real(offset) - 0.002
    assert 0.05 <= elapsed < 0.5


def test_play_awaits_async_publish_before_the_next_event():
    order = []

    async def publish(event):
        order.append(("start", event.seq))
        await asyncio.sleep(0.005)
        order.append(("end", event.seq))

    events = asyncio.run(play(Feed(), [0, 0, 0], publish, clock=Clock(speedup=1000)))
    assert [e.seq for e in events] == [1, 2, 3]
    assert order == [("start", 1), ("end", 1), ("start", 2), ("end", 2), ("start", 3), ("end", 3)]


def test_play_does_not_drift_when_publishing_is_slow():
    clock = Clock(speedup=10)
    starts = []

    def publish(event):
        starts.append(time.monotonic())
        time.sleep(0.08)

    async def main():
        t0 = time.monotonic()
        await play(Feed(), [1, 2, 3], publish, clock=clock)     # due at 0.1, 0.2, 0.3 s real
        return t0

    t0 = asyncio.run(main())
    # waits count from the start, so the 80 ms publishes do not push the last
    # event to 0.1 + 2 * (0.08 + 0.1) = 0.46 s
    assert 0.3 - 0.002 <= starts[-1] - t0 < 0.4


def test_play_defaults_to_real_time_and_accepts_any_iterable():
    got = []
    events = asyncio.run(play(Feed(), iter([0.0, 0.01]), got.append))
    assert got == events and len(events) == 2


def test_play_rejects_unsorted_or_negative_schedules():
    with pytest.raises(FeedError, match="increasing"):
        asyncio.run(play(Feed(), [2, 1], print))
    with pytest.raises(FeedError, match=">= 0"):
        asyncio.run(play(Feed(), [-1, 1], print))
