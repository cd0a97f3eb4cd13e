"""A hub shared by servers through Redis: RedisHub, served by SSE and long polling.

Tests that talk to a broker take the ``redis_url`` fixture (tests/conftest.py): once on
the embedded broker (fakeredis, in this process: two *servers* in one process) and once
on the real server at ``$LABKIT_TEST_REDIS_URL``. The tests marked ``real`` below start
two *server processes* with subprocess: only a real server can be shared between processes.
"""

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
import uuid

import pytest

from labkit import Feed, lab
from labkit.errors import (BrokerUnavailable, CursorError, HubClosedError, HubError,
                           LabkitError, LabLoopError)
from labkit.experiments.processes import ServerProcess, two_processes
from labkit.feed import fixed_rate, play
from labkit.hub import Hub
from labkit.push.polling import LongPollingClient, serve_long_polling
from labkit.push.sse import SSEClient, serve_sse
from labkit.redis_hub import RedisHub
from labkit.redis_queue import (EMBEDDED, URL_VARIABLE, connect, delete_queue,
                                embedded_broker)

from helpers import raw_http

real = pytest.mark.parametrize("redis_url", ["real"], indirect=True)
"""Only against the real server (two processes cannot share the embedded broker)."""


pytestmark = pytest.mark.usefixtures("nothing_goes_wrong_quietly")


@pytest.fixture
def stream(redis_url):
    """A stream name no other test uses; deleted afterwards (a real server keeps it)."""
    name = f"test-hub-{uuid.uuid4().hex[:12]}"
    yield name
    delete_queue(name, url=redis_url)


@contextlib.contextmanager
def two_hubs(url, stream, **options):
    """Two RedisHubs on one stream, as two servers (or processes) would each have."""
    with RedisHub(stream, url=url, name="one", **options) as one, \
            RedisHub(stream, url=url, name="two", **options) as two:
        yield one, two


@contextlib.contextmanager
def running(*things):
    """Stop every client and server given, also when the test fails."""
    try:
        yield things
    finally:
        for thing in things:
            thing.stop()


@contextlib.contextmanager
def reader_paused(hub):
    """Hold back ``hub``'s reader, as if its process were a moment behind the others."""
    task = hub._task
    for _ in range(100):  # a cancel can get lost in fakeredis just as a read starts
        lab.run(task.cancel)
        lab.run(asyncio.wait([task], timeout=0.05))
        if task.done():
            break
    assert task.done(), "the reader stopped"
    try:
        yield
    finally:
        lab.run(lambda: setattr(hub, "_task", asyncio.ensure_future(hub._read())))


def settle(check, what, seconds=10.0):
    """Wait (bounded) until ``check()`` holds."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        time.sleep(0.005)


def on_broker(url, work):
    """``work(client)`` (a coroutine function) with a raw redis.asyncio client."""
    async def run():
        client = await connect(url)
        try:
            return await work(client)
        finally:
            await client.aclose()
    return lab.run(run())


def other_connections(url):
    """How many clients the real Redis server has, besides the one asking."""
    return len(on_broker(url, lambda client: client.client_list())) - 1


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sse_ids(client):
    return [int(m.last_event_id) for m in client.events]


def kept(hub):
    return [(item.id, item.data) for item in hub.since(0)]


# -- the hub underneath: ids from elsewhere ---------------------------------------------


def test_a_hub_takes_ids_from_elsewhere_and_a_skipped_stretch_counts_as_missed():
    hub = Hub(history=3, name="mirror")
    for n in range(1, 5):
        hub.publish(n)
    assert hub.publish(5, id=5).id == 5, "the next id, given explicitly"
    item = hub.publish("after a gap", id=9)
    assert (item.id, hub.first_id, hub.last_id) == (9, 9, 9)
    assert hub.since(0) == [item] and hub.missed(0) == 8 and hub.missed(5) == 3
    for n in range(10, 15):  # the ring wraps around from its new start
        hub.publish(n)
    assert [(i.id, i.data) for i in hub.since(0)] == [(12, 12), (13, 13), (14, 14)]
    assert [i.id for i in hub.since(12)] == [13, 14] and hub.missed(0) == 11
    assert [i.id for i in hub.since(11, limit=2)] == [12, 13]
    for bad in (14, 3, -1, True, "15", 15.0):
        with pytest.raises(HubError, match="greater than the last id"):
            hub.publish("no", id=bad)
    assert hub.last_id == 14


# -- two servers on one stream ---------------------------------------------------------


def test_clients_spread_over_two_servers_each_get_every_event_once_and_in_order(redis_url,
                                                                                 stream):
    feed = Feed(seed=1)
    with two_hubs(redis_url, stream) as hubs:
        servers = [serve_sse(hub, retry=100) for hub in hubs] + \
                  [serve_long_polling(hub) for hub in hubs]
        sse = [SSEClient(servers[n % 2].endpoint_url, name=f"sse-{n}") for n in range(6)]
        polls = [LongPollingClient(servers[2 + n % 2].endpoint_url, name=f"poll-{n}", hold=5,
                                   after=0) for n in range(4)]
        with running(*servers), running(*sse, *polls):
            for client in sse + polls:
                client.start()
            for client in sse:
                client.wait_open()
            settle(lambda: all(p.ready for p in polls), "every long poll to be asked")
            events = [feed.make("news") for _ in range(30)]
            ids = [hubs[k % 2].publish(event).id for k, event in enumerate(events)]
            for client in sse:
                client.wait_for(30)
            for client in polls:
                client.wait_for(30)
    assert ids == list(range(1, 31))
    for client in sse:
        assert sse_ids(client) == ids, client.name
        assert [json.loads(m.data)["id"] for m in client.events] == [e.id for e in events]
    for client in polls:
        assert [(r.id, r.data) for r in client.received] == list(zip(ids, events)), client.name


def test_ids_agree_and_a_publish_from_one_server_reaches_the_clients_of_the_other(redis_url,
                                                                                  stream):
    with two_hubs(redis_url, stream) as (one, two), serve_sse(two) as server, \
            SSEClient(server.endpoint_url) as client:
        item = one.publish({"from": "one"})
        [message] = client.wait_for(1)
        assert message.last_event_id == str(item.id) == "1"
        assert json.loads(message.data) == {"from": "one"}
        mixed = [one.publish("a"), two.publish("b"), one.publish("c")]
        assert [i.id for i in mixed] == [2, 3, 4]
        settle(lambda: one.last_id == two.last_id == 4, "both mirrors to have id 4")
        assert kept(one) == kept(two) == [(1, {"from": "one"}), (2, "a"), (3, "b"), (4, "c")]
        with RedisHub(stream, url=redis_url) as late:  # a server started later
            assert kept(late) == kept(one) and late.last_id == 4


def test_publishers_racing_on_both_servers_get_distinct_consecutive_ids(redis_url, stream):
    with two_hubs(redis_url, stream) as hubs:
        got = {}

        def publish_many(hub):
            got[hub.name] = [hub.publish(f"{hub.name} {n}").id for n in range(40)]

        threads = [threading.Thread(target=publish_many, args=(hub,)) for hub in hubs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(got["one"] + got["two"]) == list(range(1, 81))
        for name, ids in got.items():
            assert ids == sorted(ids), f"{name}'s publishes keep their order"
        settle(lambda: hubs[0].last_id == hubs[1].last_id == 80, "both mirrors to have all")
        assert kept(hubs[0]) == kept(hubs[1])
        for hub in hubs:
            mine = [data for _, data in kept(hubs[0]) if data.startswith(hub.name)]
            assert mine == [f"{hub.name} {n}" for n in range(40)]


def test_a_client_that_moves_to_the_other_server_resumes_from_its_last_event_id(redis_url,
                                                                                 stream):
    with two_hubs(redis_url, stream) as (one, two), \
            serve_sse(one, retry=100) as first, serve_sse(two, retry=100) as second, \
            serve_long_polling(one) as first_polls, serve_long_polling(two) as second_polls:
        with SSEClient(first.endpoint_url, name="mover") as before, \
                LongPollingClient(first_polls.endpoint_url, name="poller", hold=5,
                                  after=0) as polled:
            for n in range(1, 6):
                one.publish(f"event {n}")
            before.wait_for(5)
            polled.wait_for(5)
        for n in range(6, 9):  # published while the clients move
            two.publish(f"event {n}")
        with SSEClient(second.endpoint_url, name="mover", trace=second.trace,
                       last_event_id=before.last_event_id) as after, \
                LongPollingClient(second_polls.endpoint_url, name="poller", hold=5,
                                  after=polled.cursor) as moved:
            one.publish("event 9")
            after.wait_for(4)
            moved.wait_for(4)
    assert sse_ids(before) + sse_ids(after) == list(range(1, 10))
    assert [m.data for m in before.events + after.events] == [f"event {n}" for n in range(1, 10)]
    assert [r.id for r in polled.received + moved.received] == list(range(1, 10))
    [opened] = second.trace.records(kind="connect")
    assert opened.client == "mover" and opened.detail == "resuming after id 5"


def test_a_client_ahead_of_this_servers_copy_is_accepted_when_the_stream_has_its_id(redis_url,
                                                                                    stream):
    with two_hubs(redis_url, stream) as (one, two), serve_sse(two, retry=100) as server, \
            serve_long_polling(two) as polls:
        one.publish("first")
        settle(lambda: two.last_id == 1, "two's mirror to have id 1")
        ahead = SSEClient(server.endpoint_url, last_event_id="2")
        poller = LongPollingClient(polls.endpoint_url, after=2, hold=5)
        with running(ahead, poller):
            with reader_paused(two):
                one.publish("second")  # the stream and one have id 2; two's mirror does not
                assert two.last_id == 1
                assert two.cursor("2") == 2 and two.since(2) == [] and two.missed(2) == 0
                with pytest.raises(CursorError, match="from the future"):
                    two.cursor("3")
                refused = raw_http(server.port, b"GET /events HTTP/1.1\r\nHost: x\r\n"
                                                b"Last-Event-ID: 3\r\n\r\n")
                assert refused.startswith(b"HTTP/1.1 400") and b"bad_cursor" in refused
                ahead.start().wait_open()  # a 400 would have stopped it for good
                poller.start()
                settle(lambda: two.waiting == 2, "the stream and the poll to wait on two")
                assert two.last_id == 1
            settle(lambda: two.last_id == 2, "two's reader to catch up")
            one.publish("third")
            ahead.wait_for(1)
            poller.wait_for(1)
    assert [(m.last_event_id, m.data) for m in ahead.events] == [("3", "third")]
    assert [(r.id, r.data) for r in poller.received] == [(3, "third")]
    assert poller.failure is None and poller.errors == []


def test_the_history_bound_and_missed_are_the_same_on_every_server(redis_url, stream):
    with two_hubs(redis_url, stream, history=5) as hubs:
        for n in range(1, 13):
            hubs[n % 2].publish(f"event {n}")
        settle(lambda: hubs[0].last_id == hubs[1].last_id == 12, "both mirrors to have all")
        with RedisHub(stream, url=redis_url, history=5) as late:
            for hub in (*hubs, late):
                assert (hub.first_id, hub.last_id) == (8, 12), hub.name
                assert [i.id for i in hub.since(0)] == [8, 9, 10, 11, 12]
                assert [hub.missed(c) for c in (0, 3, 7, 12)] == [7, 4, 0, 0]
        assert on_broker(redis_url, lambda client: client.xlen(stream)) == 5
        with serve_sse(hubs[1]) as server, \
                SSEClient(server.endpoint_url, last_event_id="2") as client:
            got = client.wait_for(6)
    assert [m.type for m in got] == ["gap"] + ["message"] * 5
    assert json.loads(got[0].data) == {"missed": 5, "from": 3, "to": 7}
    assert [m.last_event_id for m in got] == ["7", "8", "9", "10", "11", "12"]


def test_events_played_on_the_lab_loop_arrive_as_equal_feed_events(redis_url, stream):
    with two_hubs(redis_url, stream) as (one, two), serve_long_polling(two) as server, \
            LongPollingClient(server.endpoint_url, hold=5, after=0) as client:
        events = lab.run(play(Feed(seed=2), fixed_rate(500, count=10), one.publish))
        got = client.wait_for(10)
    assert [r.data for r in got] == events, "created times included"
    assert [i.data for i in two.since(0)] == events


def test_stopping_releases_every_task_waiter_and_connection(redis_url, stream):
    before = None if redis_url == EMBEDDED else other_connections(redis_url)
    hub = RedisHub(stream, url=redis_url)
    sse, polls = serve_sse(hub), serve_long_polling(hub)
    streaming = SSEClient(sse.endpoint_url, reconnection_time=30)
    polling = LongPollingClient(polls.endpoint_url, hold=20)
    with running(streaming, polling):
        streaming.start().wait_open()
        polling.start()
        settle(lambda: hub.waiting == 2, "the stream's fan-out and the poll to wait on the hub")
        hub.publish("one")
        polling.wait_for(1)
        sse.stop()
        polls.stop()
        settle(lambda: hub.waiting == 0, "the servers to stop waiting on the hub")
        assert hub.reading
        hub.close()
        assert hub.closed and not hub.reading and hub.waiting == 0
        with pytest.raises(HubClosedError):
            hub.publish("too late")
        hub.close()  # again: nothing happens
    assert on_broker(redis_url, lambda client: client.xlen(stream)) == 1, \
        "the stream stays for the other servers"
    if before is not None:
        settle(lambda: other_connections(redis_url) == before, "every connection to close")


# -- bad input and an absent broker -----------------------------------------------------


def test_an_unreachable_broker_is_a_clear_error_naming_the_url_and_what_to_do():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(BrokerUnavailable) as caught:
        RedisHub("news", url=url)
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Redis broker at {url}")
    assert "redis-server" in message and URL_VARIABLE in message and "embedded" in message
    with pytest.raises(LabkitError) as caught:
        ServerProcess("news", url=url)
    assert f"BrokerUnavailable: cannot reach the Redis broker at {url}" in str(caught.value)
    with pytest.raises(LabkitError, match="embedded broker lives inside this process"):
        ServerProcess("news", url=EMBEDDED)


def test_while_the_broker_is_down_publishes_fail_clearly_and_readers_catch_up_after():
    broker, stream = embedded_broker(), f"test-hub-{uuid.uuid4().hex[:12]}"
    try:
        with two_hubs(EMBEDDED, stream) as (one, two):
            one.publish("before")
            settle(lambda: two.last_id == 1, "two's mirror to have id 1")
            try:
                with reader_paused(two):
                    one.publish("ahead")  # id 2: two's mirror does not have it yet
                    broker.connected = False
                    with pytest.raises(CursorError, match="could not say") as caught:
                        two.cursor("2")
                    assert (caught.value.status, caught.value.reason) == \
                        (503, "broker_unavailable"), "the server's trouble, not the client's"
                with pytest.raises(BrokerUnavailable, match="switched off"):
                    one.publish("during")
                settle(lambda: one.errors and two.errors, "the readers to notice", 15)
                assert (one.last_id, two.last_id) == (2, 1), "what they had, they keep serving"
            finally:
                broker.connected = True
            assert two.publish("after").id == 3
            settle(lambda: one.last_id == 3, "one's reader to carry on")
            assert kept(one) == kept(two) == [(1, "before"), (2, "ahead"), (3, "after")]
    finally:
        delete_queue(stream)


def test_bad_input_is_a_clear_error():
    stream = f"test-hub-{uuid.uuid4().hex[:12]}"
    with pytest.raises(HubError, match="stream name"):
        RedisHub("no spaces")
    with pytest.raises(HubError, match="history"):
        RedisHub(stream, history=0)
    with pytest.raises(LabLoopError, match="from a cell or a script"):
        lab.run(lambda: RedisHub(stream))
    on_broker(EMBEDDED, lambda client: client.set(stream, "a string"))
    with pytest.raises(HubError, match="is not a stream"):
        RedisHub(stream, url=EMBEDDED)
    delete_queue(stream, url=EMBEDDED)
    try:
        with RedisHub(stream, url=EMBEDDED) as hub:
            for data in (object(), b"bytes", float("nan")):
                with pytest.raises(HubError, match="cannot reach the other processes"):
                    hub.publish(data)
            hub.publish("one")
            for raw in ("abc", "-1", "1.0", -1, True, "2", "9" * 21, 2 ** 70):
                with pytest.raises(CursorError):
                    hub.cursor(raw)
            assert hub.cursor("") == hub.cursor(None) == hub.cursor("1") == 1
            on_broker(EMBEDDED, lambda client: client.xadd(stream, {"x": "y"}, id="5-0"))
            settle(lambda: hub.last_id == 5, "an entry another program wrote to arrive")
            assert hub.since(1)[0].data == {"x": "y"} and hub.missed(1) == 3
            on_broker(EMBEDDED, lambda client: client.xadd(stream, {"x": "z"}, id="5-1"))
            settle(lambda: hub.errors, "an entry with an id a RedisHub never writes")
            assert "5-1" in hub.errors[0] and hub.last_id == 5
            assert hub.publish("next").id == 6
    finally:
        delete_queue(stream, url=EMBEDDED)


# -- two server processes (a real Redis server) ----------------------------------------


@real
def test_clients_spread_over_two_processes_get_every_event_once_in_order(redis_url, stream):
    feed = Feed(seed=4)
    with ServerProcess(stream, url=redis_url, name="p1") as p1, \
            ServerProcess(stream, url=redis_url, name="p2") as p2:
        processes = (p1, p2)
        assert len({p1.pid, p2.pid, os.getpid()}) == 3
        sse = [SSEClient(processes[n % 2].sse_url, name=f"sse-{n}") for n in range(4)]
        polls = [LongPollingClient(processes[n % 2].long_polling_url, name=f"poll-{n}",
                                   hold=5, after=0) for n in range(2)]
        with running(*sse, *polls):
            for client in sse + polls:
                client.start()
            for client in sse:
                client.wait_open()
            settle(lambda: all(p.ready for p in polls), "every long poll to be asked")
            events = [feed.make("news") for _ in range(20)]
            ids = [processes[k % 2].publish([e])[0] for k, e in enumerate(events)]
            for client in sse + polls:
                client.wait_for(20)
        settle(lambda: all(p.state()["last_id"] == 20 for p in processes), "both mirrors")
        states = [p.state(cursors=(0, 5)) for p in processes]
    assert ids == list(range(1, 21))
    for client in sse:
        assert sse_ids(client) == ids, client.name
        assert [json.loads(m.data)["id"] for m in client.events] == [e.id for e in events]
    for client in polls:
        assert [(r.id, r.data) for r in client.received] == list(zip(ids, events)), client.name
    assert states[0]["items"] == states[1]["items"] == [[n, e.id] for n, e in zip(ids, events)]
    assert states[0]["missed"] == states[1]["missed"] == {"0": 0, "5": 0}


@real
def test_a_client_moving_to_the_other_process_resumes_and_stopping_releases_all(redis_url,
                                                                                stream):
    before = other_connections(redis_url)
    p1 = ServerProcess(stream, url=redis_url, name="p1", history=50)
    p2 = ServerProcess(stream, url=redis_url, name="p2", history=50)
    try:
        feed = Feed(seed=5)
        events = [feed.make("news") for _ in range(9)]
        with SSEClient(p1.sse_url, name="mover", reconnection_time=0.05) as first:
            p2.publish(events[:3])  # from the other process
            first.wait_for(3)
            assert p1.end() == 1  # the connection drops; it reconnects to p1 and resumes
            p2.publish(events[3:5])
            first.wait_for(5)
        p1.publish(events[5:7])  # while it moves to p2
        with SSEClient(p2.sse_url, name="mover", last_event_id=first.last_event_id) as second:
            p1.publish(events[7:])
            second.wait_for(4)
    finally:
        left = [p1.stop(), p2.stop()]
    received = first.events + second.events
    assert [m.last_event_id for m in received] == [str(n) for n in range(1, 10)]
    assert [json.loads(m.data)["id"] for m in received] == [e.id for e in events]
    assert left == [{"closed": True, "waiting": 0, "reading": False, "exit": 0}] * 2
    settle(lambda: other_connections(redis_url) == before, "every connection to close")


# -- the lesson's experiment -----------------------------------------------------------


def test_the_two_servers_experiment_shows_every_client_got_every_event(redis_url,
                                                                       monkeypatch):
    if redis_url == EMBEDDED:
        monkeypatch.delenv(URL_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(URL_VARIABLE, redis_url)
    result = two_processes(clients=8, events=12, seed=3)
    assert result.processes == (redis_url != EMBEDDED)
    assert (result.pids[0] != result.pids[1]) == result.processes
    assert ("processes" if result.processes else "in this process") in result.mode
    assert result.published == tuple(range(1, 13)) and result.published_by == (0, 1) * 6
    assert result.clients_per_server == (4, 4) and result.moved == ("client-00", "client-01")
    assert result.events_per_client == {f"client-{n:02d}": 12 for n in range(8)}
    assert result.every_event_once_in_order and result.mirrors_agree
    assert len(result.trace.latencies("sse")) == 8 * 12
    fig = result.figure()
    assert len(fig.axes) == 2 and "Every client got every event" in fig.axes[1].get_title()
    import matplotlib.pyplot as plt
    plt.close(fig)
