"""The hub: ids, bounded history, cursors, waiters (held, woken, timed out, cancelled, closed)."""

import asyncio
import concurrent.futures
import gc
import socket
import threading
import time
import tracemalloc

import pytest

import labkit.hub as hub_module
import requests

from labkit import lab
from labkit.endpoints import Handler
from labkit.errors import (CursorError, HubError, HubClosedError, LabkitError, LabLoopError,
                           RejectedError)
from labkit.hub import Hub, Item
from labkit.wire import annotate

from helpers import settle


# -- helpers ---------------------------------------------------------------------


async def parked(hub: Hub, count: int) -> None:
    """Let the lab loop run until ``count`` waiters are held (at most 1000 turns)."""
    for _ in range(1000):
        if hub.waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {hub.waiting} of {count} waiters were held")


def live_timers(loop: asyncio.AbstractEventLoop) -> int:
    """The hub's timer callbacks still scheduled on ``loop`` (cancelled ones wait there to be
    purged); timers of other tests sharing the lab loop are not counted."""
    return sum(1 for handle in loop._scheduled
               if not handle.cancelled() and handle._callback is hub_module._wake)


def ids(items) -> list[int]:
    return [item.id for item in items]


@pytest.fixture
def loop_errors():
    """Everything reported to the lab loop's exception handler during the test."""
    loop = lab.run(asyncio.get_running_loop)
    previous = loop.get_exception_handler()
    seen: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)


# -- ids, history, since, missed -------------------------------------------------


def test_ids_increase_from_one_and_since_returns_oldest_first():
    hub = Hub(10, name="letters")
    assert (hub.last_id, hub.first_id, hub.since(0)) == (0, 1, [])
    published = [hub.publish(letter) for letter in "abc"]
    assert ids(published) == [1, 2, 3]
    assert [item.data for item in published] == ["a", "b", "c"]
    assert (hub.last_id, hub.first_id) == (3, 1)
    assert hub.since(0) == published and all(a is b for a, b in zip(hub.since(0), published))
    assert ids(hub.since(1)) == [2, 3]
    assert hub.since(3) == []
    assert ids(hub.since(0, limit=2)) == [1, 2]
    assert ids(hub.since(1, limit=1)) == [2]
    assert hub.since(0, limit=0) == []
    assert published[0].published <= published[1].published <= published[2].published
    assert published[2].published <= time.monotonic()


def test_since_and_missed_match_a_plain_list_for_every_history_cursor_and_limit():
    """The ring buffer against the obvious model, through several wrap-arounds."""
    for history in (1, 2, 3, 5):
        hub = Hub(history)
        everything: list[Item] = []
        for _ in range(13):
            everything.append(hub.publish(len(everything)))
            kept = everything[-history:]
            assert hub.first_id == kept[0].id and hub.last_id == everything[-1].id
            for cursor in range(hub.last_id + 1):
                expected = [item for item in kept if item.id > cursor]
                assert hub.since(cursor) == expected, (history, cursor)
                for limit in (0, 1, 2, 4):
                    assert hub.since(cursor, limit) == expected[:limit], (history, cursor, limit)
                lost = [item for item in everything if item.id > cursor and item not in kept]
                assert hub.missed(cursor) == len(lost), (history, cursor)


def test_history_bound_drops_the_oldest():
    hub = Hub(3)
    for n in range(7):
        hub.publish(n)
    assert (hub.first_id, hub.last_id, hub.history) == (5, 7, 3)
    assert repr(hub) == "<Hub 'hub' ids 5..7 (history 3), 0 waiting>"
    assert [item.data for item in hub.since(0)] == [4, 5, 6]
    assert ids(hub.since(5)) == [6, 7]
    assert (hub.missed(0), hub.missed(3), hub.missed(4), hub.missed(5), hub.missed(7)) == (
        4, 1, 0, 0, 0)
    assert Hub(3).missed(0) == 0


def test_item_is_immutable_apart_from_its_cache():
    item = Hub().publish({"n": 1})
    with pytest.raises(AttributeError):
        item.id = 9
    with pytest.raises(AttributeError):
        item.data = "other"
    with pytest.raises(AttributeError):
        del item.published
    with pytest.raises(AttributeError):
        item.extra = 1  # __slots__: no per-item __dict__
    item.cache["sse"] = b"id: 1\ndata: {}\n\n"
    twin = Item(item.id, {"n": 1}, item.published)
    assert twin == item and hash(twin) == hash(item)  # the cache takes no part
    assert "cache" not in repr(item) and "sse" not in repr(item)
    assert repr(item).startswith("Item(id=1, data={'n': 1}, published=")
    assert Item(2, {"n": 1}, item.published) != item


@pytest.mark.parametrize("history", [0, -1, 1.5, "10", True, None])
def test_a_hub_needs_a_whole_number_of_items(history):
    with pytest.raises(HubError, match="history must be a whole number") as caught:
        Hub(history)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, LabkitError)


# -- cursors ---------------------------------------------------------------------


@pytest.fixture
def seven():
    hub = Hub(100, name="seven")
    for n in range(7):
        hub.publish(n)
    return hub


@pytest.mark.parametrize("raw, expected", [
    (None, 7), ("", 7), ("0", 0), (0, 0), ("3", 3), (3, 3), ("7", 7), (7, 7), ("007", 7),
])
def test_cursor_accepts_whole_numbers_up_to_the_last_id(seven, raw, expected):
    assert seven.cursor(raw) == expected


@pytest.mark.parametrize("raw", [
    -1, "-1", "abc", "1.5", " 3", "3 ", "+3", "3\n", "0x3", "1_0", "\u0663", "\u00b2",
    True, 2.0, b"3", [3],
])
def test_cursor_refuses_what_is_not_a_whole_number(seven, raw):
    with pytest.raises(CursorError) as caught:
        seven.cursor(raw)
    error = caught.value
    assert isinstance(error, ValueError) and error.status == 400 and error.reason == "bad_cursor"
    message = str(error)
    assert "whole number from 0 to 7" in message and "'seven'" in message
    assert message.endswith(f"got {raw!r}")


def test_cursor_error_quotes_long_input_cut_short(seven):
    with pytest.raises(CursorError) as caught:
        seven.cursor("x" * 5000)
    message = str(caught.value)
    assert f"got {'x' * 40!r}... (5000 characters)" in message and len(message) < 300


@pytest.mark.parametrize("raw", [8, "8", "123456789", "9" * 5000, 10 ** 5000],
                         ids=["8", "'8'", "nine digits", "5000 digits", "10**5000"])
def test_cursor_from_the_future_says_so(seven, raw):
    with pytest.raises(CursorError, match="comes from the future") as caught:
        seven.cursor(raw)
    message = str(caught.value)
    assert "last event id here is 7" in message and "previous run" in message
    assert len(message) < 300


def test_since_missed_and_wait_check_their_cursor(seven):
    for bad in (-1, "3", 1.0, None):
        with pytest.raises(CursorError, match="whole number >= 0"):
            seven.since(bad)
        with pytest.raises(CursorError):
            seven.missed(bad)
    with pytest.raises(CursorError, match="from the future"):
        seven.since(8)
    with pytest.raises(CursorError, match="from the future"):
        lab.run(seven.wait(8, None), timeout=5)
    for limit in (-1, 1.5, True):
        with pytest.raises(HubError, match="limit"):
            seven.since(0, limit)


# -- waiting ---------------------------------------------------------------------


def test_wait_returns_at_once_when_items_are_pending():
    hub = Hub()
    first, second = hub.publish("a"), hub.publish("b")
    assert lab.run(hub.wait(0, None), timeout=5) == [first, second]
    assert lab.run(hub.wait(1, None), timeout=5) == [second]
    assert hub.waiting == 0


def test_wait_holds_until_a_publish_on_the_lab_loop_and_returns_the_new_items():
    hub = Hub()
    hub.publish("old")

    async def scenario():
        task = asyncio.ensure_future(hub.wait(hub.last_id, None))
        await parked(hub, 1)
        assert not task.done()
        item = hub.publish("new")
        assert hub.waiting == 0  # released by the publish itself
        return item, await task

    item, got = lab.run(scenario(), timeout=5)
    assert got == [item] and got[0] is item and item.data == "new"


@pytest.mark.parametrize("publisher", ["test thread", "other thread"])
def test_wait_wakes_on_a_publish_from_another_thread(publisher):
    hub = Hub()
    pending = lab.submit(hub.wait(0, 30))
    settle(lambda: hub.waiting == 1, "the waiter being held")
    if publisher == "test thread":
        item = hub.publish("from a cell")
    else:
        box = []
        thread = threading.Thread(target=lambda: box.append(hub.publish("from a thread")))
        thread.start()
        thread.join(5)
        item, = box
    assert pending.result(5) == [item]
    assert hub.waiting == 0


def test_wait_times_out_with_nothing_and_leaves_no_timer():
    hub = Hub()

    async def scenario():
        loop = asyncio.get_running_loop()
        before = live_timers(loop)
        started = time.monotonic()
        got = await hub.wait(0, 0.05)
        return got, time.monotonic() - started, live_timers(loop) - before

    got, took, timers_left = lab.run(scenario(), timeout=5)
    assert got == [] and took >= 0.04 and timers_left == 0 and hub.waiting == 0
    assert lab.run(hub.wait(0, 0), timeout=5) == []   # timeout 0: a plain poll


def test_wait_refuses_a_bad_timeout_and_any_loop_but_the_labs():
    hub = Hub()
    for timeout in (-1, float("nan"), "5", True):
        with pytest.raises(HubError, match="timeout"):
            lab.run(hub.wait(0, timeout), timeout=5)
    with pytest.raises(LabLoopError, match="lab loop"):
        asyncio.run(hub.wait(0, 0))


def test_publishes_while_no_one_waits_all_come_with_the_next_wait():
    hub = Hub()
    first = hub.publish(1)
    assert lab.run(hub.wait(0, 1), timeout=5) == [first]
    later = [hub.publish(n) for n in (2, 3, 4)]
    assert lab.run(hub.wait(first.id, 1), timeout=5) == later


def test_a_stream_of_waits_sees_every_item_exactly_once_in_order():
    """An SSE-like reader (a loop of wait) while a thread publishes as fast as it can."""
    hub = Hub(1000)
    total = 300

    async def reader():
        cursor, seen = 0, []
        for _ in range(total + 10):
            items = await hub.wait(cursor, 5)
            seen.extend(item.data for item in items)
            if items:
                cursor = items[-1].id
            if len(seen) >= total:
                break
        return seen

    pending = lab.submit(reader())
    for n in range(total):
        hub.publish(n)
    assert pending.result(10) == list(range(total))


def test_ten_thousand_waiters_are_woken_by_one_publish_with_the_same_item():
    hub = Hub(100)
    hub.publish("before")
    count = 10_000
    reads = []
    since = hub.since
    hub.since = lambda cursor, limit=None: reads.append(cursor) or since(cursor, limit)

    async def scenario():
        loop = asyncio.get_running_loop()
        timers = live_timers(loop)
        tasks = [asyncio.ensure_future(hub.wait(1, 60)) for _ in range(count)]
        await parked(hub, count)
        held = hub.waiting
        item = hub.publish("news")
        results = await asyncio.gather(*tasks)
        return held, item, results, live_timers(loop) - timers

    held, item, results, timers_left = lab.run(scenario(), timeout=60)
    assert held == count and hub.waiting == 0 and timers_left == 0
    assert len(results) == count
    assert all(len(got) == 1 and got[0] is item for got in results)
    # each waiter read the shared history twice (before parking, after waking), nothing more
    assert len(reads) == 2 * count


def test_a_cancelled_waiter_leaves_nothing_behind(loop_errors):
    hub = Hub()

    async def scenario():
        loop = asyncio.get_running_loop()
        timers = live_timers(loop)
        leaving = [asyncio.ensure_future(hub.wait(0, 60)) for _ in range(50)]
        staying = [asyncio.ensure_future(hub.wait(0, None)) for _ in range(50)]
        await parked(hub, 100)
        held, timers_held = hub.waiting, live_timers(loop) - timers
        for task in leaving:  # clients leaving: on_connection_close cancels their task
            task.cancel()
        await asyncio.gather(*leaving, return_exceptions=True)
        after_leaving, timers_after = hub.waiting, live_timers(loop) - timers
        item = hub.publish("for those who stayed")
        results = await asyncio.gather(*staying)
        return held, timers_held, after_leaving, timers_after, item, results, leaving

    held, timers_held, after_leaving, timers_after, item, results, leaving = lab.run(
        scenario(), timeout=10)
    assert (held, timers_held) == (100, 50)
    assert (after_leaving, timers_after) == (50, 0)
    assert all(task.cancelled() for task in leaving)
    assert all(got == [item] for got in results) and hub.waiting == 0
    del leaving
    gc.collect()
    lab.run(asyncio.sleep(0.01), timeout=5)  # let anything left over run and report
    assert loop_errors == []


def test_a_publish_right_after_a_cancel_skips_the_leaving_waiter(loop_errors):
    """Cancel and publish in the same turn of the loop, before the cancelled task has run."""
    hub = Hub()

    async def scenario():
        leaving = asyncio.ensure_future(hub.wait(0, 60))
        staying = asyncio.ensure_future(hub.wait(0, 60))
        await parked(hub, 2)
        leaving.cancel()
        item = hub.publish("in the same turn")
        outcome = await asyncio.gather(leaving, staying, return_exceptions=True)
        return item, outcome

    item, (left, stayed) = lab.run(scenario(), timeout=5)
    assert isinstance(left, asyncio.CancelledError) and stayed == [item]
    assert hub.waiting == 0 and loop_errors == []


# -- closing ---------------------------------------------------------------------


def test_close_releases_every_waiter_and_refuses_publishes():
    hub = Hub(name="closing")
    pending = [lab.submit(hub.wait(0, 60)) for _ in range(5)]
    settle(lambda: hub.waiting == 5, "five waiters being held")
    hub.close()  # from the test's thread
    for future in pending:
        with pytest.raises(HubClosedError, match="'closing' was closed"):
            future.result(5)
    assert hub.waiting == 0 and hub.closed
    with pytest.raises(HubClosedError, match="is closed"):
        hub.publish("late")
    with pytest.raises(HubClosedError):
        lab.run(lambda: hub.publish("late, from the lab loop"), timeout=5)
    hub.close()
    lab.run(hub.aclose(), timeout=5)  # idempotent, both ways
    assert hub.last_id == 0


def test_wait_on_a_closed_hub_raises_even_with_items_pending():
    hub = Hub()
    hub.publish("kept")
    hub.close()
    with pytest.raises(HubClosedError):
        lab.run(hub.wait(0, None), timeout=5)
    assert [item.data for item in hub.since(0)] == ["kept"]  # reading still works


def test_aclose_on_the_lab_loop_returns_once_the_waiters_have_left():
    hub = Hub()

    async def scenario():
        tasks = [asyncio.ensure_future(hub.wait(0, None)) for _ in range(20)]
        await parked(hub, 20)
        await hub.aclose()
        return [task.done() for task in tasks], await asyncio.gather(*tasks,
                                                                     return_exceptions=True)

    done, outcomes = lab.run(scenario(), timeout=10)
    assert all(done) and hub.waiting == 0
    assert all(isinstance(outcome, HubClosedError) for outcome in outcomes)


# -- memory ----------------------------------------------------------------------


def test_a_full_history_of_100_000_items_stays_small():
    """Bytes per kept item, the hub's own cost (the published data is one shared object)."""
    count = 100_000
    hub = Hub(count)
    payload = {"same": "object"}

    def fill():
        for _ in range(count):
            hub.publish(payload)

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        lab.run(fill, timeout=60)
        per_item = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert (hub.first_id, hub.last_id) == (1, count)
    assert per_item < 300, f"{per_item:.0f} bytes per item"
    hub.publish(payload)
    assert (hub.first_id, hub.last_id) == (2, count + 1)


# -- over a real socket -------------------------------------------------------------


class LongPoll(Handler):
    """GET /poll?after=<cursor>&hold=<s>: the items after the cursor, held until there are some."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.waiting: asyncio.Task | None = None

    async def get(self) -> None:
        try:
            cursor = self.hub.cursor(self.get_query_argument("after", None))
        except CursorError as exc:
            return self.refuse(exc)
        hold = float(self.get_query_argument("hold", "30"))
        self.waiting = asyncio.ensure_future(self.hub.wait(cursor, hold))
        try:
            items = await self.waiting
        except asyncio.CancelledError:  # the client left
            return
        except HubClosedError as exc:
            return self.refuse(RejectedError("closed", str(exc), status=503))
        annotate(self, events=len(items))
        self.answer(200, {"items": [{"id": item.id, "data": item.data} for item in items]})

    def on_connection_close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()


@pytest.fixture
def poll_server():
    hub = Hub(name="poll")
    server = lab.serve([("/poll", LongPoll, {"hub": hub})], technique="long-polling")
    server.on_stop(hub.aclose)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield hub, server, pool
        server.stop()


def test_long_poll_over_a_socket_gets_the_event_published_after_it_arrived(poll_server):
    hub, server, pool = poll_server
    answer = pool.submit(requests.get, server.url + "/poll?after=0&hold=10", timeout=10)
    settle(lambda: hub.waiting == 1, "the long poll being held")
    assert not answer.done()
    item = hub.publish({"n": 1})
    response = answer.result(10)
    assert response.status_code == 200
    assert response.json() == {"items": [{"id": item.id, "data": {"n": 1}}]}
    assert hub.waiting == 0
    too_new = requests.get(server.url + "/poll?after=5", timeout=5)
    assert too_new.status_code == 400 and too_new.json()["reason"] == "bad_cursor"
    assert "from the future" in too_new.json()["error"]
    timed_out = requests.get(server.url + "/poll?hold=0.05", timeout=5)
    assert timed_out.json() == {"items": []}


def test_a_client_leaving_early_leaves_no_waiter(poll_server, loop_errors):
    hub, server, _ = poll_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /poll?hold=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        settle(lambda: hub.waiting == 1, "the long poll being held")
    settle(lambda: hub.waiting == 0, "the waiter leaving with its client")
    assert hub.publish("after they left").id == 1
    gc.collect()
    assert loop_errors == []


def test_stopping_the_server_releases_a_waiting_client(poll_server):
    hub, server, pool = poll_server
    answer = pool.submit(requests.get, server.url + "/poll?hold=60", timeout=10)
    settle(lambda: hub.waiting == 1, "the long poll being held")
    server.stop()
    response = answer.result(10)
    assert response.status_code == 503 and response.json()["reason"] == "closed"
    assert hub.closed and hub.waiting == 0
    with pytest.raises(HubClosedError):
        hub.publish("too late")
