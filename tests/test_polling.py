"""Polling and long polling over real loopback sockets: the endpoint, its refusals, the clients."""

import concurrent.futures
import json
import socket
import time

import pytest
import requests

from labkit import Clock, Feed, lab
from labkit.errors import LabkitError
from labkit.hub import Hub
from labkit.push.polling import (MAX_HOLD, LongPollingClient, LongPollingServer, PollingClient,
                                 PollingServer, serve_long_polling, serve_polling)
from labkit.wire import LEFT_EARLY

from helpers import raw_http, settle


pytestmark = pytest.mark.usefixtures("nothing_goes_wrong_quietly")


def held_poll(port, query="after=0&wait=10"):
    """A raw socket with a long poll on its way (the caller closes it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET /poll?{query} HTTP/1.1\r\nHost: x\r\nX-Labkit-Client: raw\r\n\r\n".encode())
    return sock


def read_all(sock):
    """Everything the server sends until it closes (at most 100 reads)."""
    chunks = []
    for _ in range(100):
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# -- polling: the endpoint ---------------------------------------------------------------


def test_a_poll_answers_only_the_items_after_the_cursor_and_marks_empty_answers():
    hub, feed = Hub(), Feed(seed=1)
    with serve_polling(hub) as server:
        url = server.endpoint_url
        first = requests.get(url, timeout=5)
        events = [hub.publish(feed.make("tick", {"n": n})).data for n in range(5)]
        answer = requests.get(url + "?after=2", timeout=5).json()
        last = requests.get(url + "?after=5", timeout=5).json()
    assert first.json() == {"items": [], "next": 0, "missed": 0}
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Cache-Control"] == "no-cache"
    assert [item["id"] for item in answer["items"]] == [3, 4, 5]
    assert [item["data"] for item in answer["items"]] == [e.to_dict() for e in events[2:]]
    assert (answer["next"], answer["missed"]) == (5, 0)
    assert last == {"items": [], "next": 5, "missed": 0}
    assert [r.events for r in server.trace.records(kind="response")] == [0, 3, 0]
    assert server.trace.wasted_share("polling") == pytest.approx(2 / 3)
    assert server.trace.counts()["polling"] == {"request": 3, "response": 3}


def test_items_that_left_the_history_are_counted_as_missed():
    hub = Hub(history=3)
    for n in range(6):
        hub.publish(f"news {n}")
    with serve_polling(hub) as server:
        answer = requests.get(server.endpoint_url + "?after=1", timeout=5).json()
    assert [item["id"] for item in answer["items"]] == [4, 5, 6]
    assert [item["data"] for item in answer["items"]] == ["news 3", "news 4", "news 5"]
    assert (answer["next"], answer["missed"]) == (6, 2)
    [response] = server.trace.records(kind="response")
    assert "2 left the history unseen" in response.detail


@pytest.mark.parametrize("cursor", ["abc", "-1", "4", "1.5", "%201", "99999999999999999999999"])
def test_a_malformed_or_future_cursor_is_a_400_that_says_why(cursor):
    hub = Hub(name="news")
    for n in range(3):
        hub.publish(n)
    with serve_polling(hub) as server:
        refused = requests.get(f"{server.endpoint_url}?after={cursor}", timeout=5)
        still = requests.get(f"{server.endpoint_url}?after=1", timeout=5)
    assert refused.status_code == 400
    body = refused.json()
    assert body["reason"] == "bad_cursor"
    assert "hub 'news'" in body["error"] and ("future" in body["error"] or
                                              "whole number" in body["error"])
    assert [item["id"] for item in still.json()["items"]] == [2, 3]
    assert server.trace.records(kind="response")[0].detail.startswith("bad_cursor")


def test_wrong_methods_bodies_bad_waits_and_garbage_are_refused_and_the_server_keeps_serving():
    hub = Hub()
    with serve_long_polling(hub) as server:
        url = server.endpoint_url
        posted = requests.post(url, data=b"x" * 100, timeout=5)
        head = requests.head(url, timeout=5)
        with_body = raw_http(server.port, b"GET /poll?after=0 HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 5000000\r\n\r\nabc")
        chunked = raw_http(server.port, b"GET /poll HTTP/1.1\r\nHost: x\r\n"
                                        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        bad_wait = requests.get(url + "?after=0&wait=soon", timeout=5)
        infinite = requests.get(url + "?after=0&wait=inf", timeout=5)
        elsewhere = requests.get(server.url + "/nowhere", timeout=5)
        garbage = raw_http(server.port, b"\x16\x03\x01 not http at all\r\n\r\n")
        hub.publish("still here")
        fine = requests.get(url + "?after=0", timeout=5)
    assert posted.status_code == 405 and posted.headers["Allow"] == "GET"
    assert posted.json()["reason"] == "method" and "GET /poll?after=<id>" in posted.json()["error"]
    assert head.status_code == 405
    for answer in (with_body, chunked):
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"Connection: close" in answer and b'"reason": "body"' in answer
    assert bad_wait.status_code == infinite.status_code == 400
    assert bad_wait.json()["reason"] == "bad_wait" and "'soon'" in bad_wait.json()["error"]
    assert elsewhere.status_code == 404 and elsewhere.json()["reason"] == "no_route"
    assert garbage.startswith(b"HTTP/1.1 400")
    assert fine.status_code == 200 and fine.json()["items"][0]["data"] == "still here"


def test_a_polling_server_never_holds_whatever_wait_asks():
    with serve_polling(Hub()) as server:
        answer = requests.get(server.endpoint_url + "?after=0&wait=25", timeout=10)
    assert answer.json()["items"] == []
    [response] = server.trace.records(kind="response")
    assert response.duration < 5.0  # answered at once, not after 25 s


# -- polling: the client ----------------------------------------------------------------


def test_the_weather_app_polls_every_ten_minutes_on_a_compressed_clock():
    clock = Clock(speedup=6000)  # 10 simulated minutes in a tenth of a second
    hub, feed = Hub(), Feed(seed=2)
    with serve_polling(hub) as server:
        client = PollingClient(server.endpoint_url, interval=600, clock=clock,
                               name="weather-app", trace=server.trace)
        with client:
            started = time.monotonic()
            forecasts = [hub.publish(feed.make("forecast", {"temp": t})).data for t in (12, 13)]
            got = client.wait_for(2)
            settle(lambda: client.polls >= 6, "six polls")
            ran = time.monotonic() - started
            polls = client.polls
    assert [r.data for r in got] == forecasts
    assert [r.id for r in got] == [1, 2] and client.cursor == 2
    assert polls <= ran / 0.1 + 3  # one poll per tick, never a burst
    trace = server.trace
    assert set(trace.clients("polling")) == {"weather-app"}
    delivered = trace.records(kind="event")
    assert [r.event_id for r in delivered] == [e.id for e in forecasts]
    assert all(0 <= r.latency < 5 and r.client == "weather-app" for r in delivered)
    assert trace.wasted_share("polling") > 0  # most polls bring nothing new


def test_a_poll_that_overruns_its_ticks_skips_them_and_notes_when_each_was_due():
    with serve_polling(Hub()) as server:
        with PollingClient(server.endpoint_url, interval=0.05, name="stalled") as client:
            settle(lambda: client.polls >= 2, "two polls")
            stalled = time.monotonic()
            lab.run(lambda: time.sleep(0.3))  # the loop stalls: six ticks pass, no poll
            resumed = time.monotonic()
            settle(lambda: client.polls >= 4, "polls after the stall")
            polls, skipped = client.polls, list(client.skipped)
    during = [t for t in skipped if stalled <= t <= resumed + 0.05]
    assert len(during) >= 3  # the late poll served one tick; those after it were skipped
    assert skipped == sorted(skipped)
    steps = [(b - a) / 0.05 for a, b in zip(skipped, skipped[1:])]
    assert all(round(step) >= 1 and step == pytest.approx(round(step), abs=0.01) for step in steps)
    assert polls >= 4  # it went on polling at its ticks, without a burst to catch up


def test_a_client_starts_from_now_or_from_the_cursor_it_is_given():
    hub = Hub()
    for n in range(3):
        hub.publish(f"old {n}")
    with serve_polling(hub) as server:
        with PollingClient(server.endpoint_url, interval=0.05, name="new") as fresh, \
                PollingClient(server.endpoint_url, interval=0.05, name="old", after=1) as behind:
            hub.publish("new")
            assert [r.data for r in fresh.wait_for(1)] == ["new"]
            assert [r.data for r in behind.wait_for(3)] == ["old 1", "old 2", "new"]
    assert fresh.delivered == 0  # none of it was a feed event


def test_client_arguments_are_checked():
    for bad in ({"interval": 0}, {"interval": -1}, {"interval": float("nan")},
                {"phase": 2, "interval": 1}, {"clock": 10}, {"after": -1},
                {"name": ""}):
        with pytest.raises(LabkitError):
            PollingClient("http://127.0.0.1:1/poll", **bad)
    with pytest.raises(LabkitError):
        PollingClient("ftp://127.0.0.1/poll")
    for bad in ({"hold": 0}, {"backoff": 0}):
        with pytest.raises(LabkitError):
            LongPollingClient("http://127.0.0.1:1/poll", **bad)
    for bad in ({"hold": -1}, {"max_hold": MAX_HOLD + 1}, {"path": "poll"}):
        with pytest.raises(LabkitError):
            LongPollingServer(**bad)
    with pytest.raises(LabkitError):
        PollingServer(path="")


# -- long polling ------------------------------------------------------------------------


def test_a_long_poll_is_held_until_an_event_arrives_then_answered_at_once():
    hub, feed = Hub(), Feed(seed=3)
    with serve_long_polling(hub) as server, concurrent.futures.ThreadPoolExecutor(1) as pool:
        asked = pool.submit(requests.get, server.endpoint_url + "?after=0&wait=10", timeout=15)
        settle(lambda: server.component.held == 1 and hub.waiting == 1, "the poll to be held")
        time.sleep(0.05)
        assert not asked.done()
        published = time.monotonic()
        event = hub.publish(feed.make("message", {"text": "hi"})).data
        answer = asked.result(timeout=10)
        took = time.monotonic() - published
    assert answer.json() == {"items": [{"id": 1, "data": event.to_dict()}], "next": 1,
                             "missed": 0}
    assert took < 0.5  # a generous bound: it is a few ms on loopback
    [response] = server.trace.records(kind="response")
    assert response.status == 200 and response.events == 1 and response.duration >= 0.05
    assert server.component.held == 0 and hub.waiting == 0


def test_a_hold_that_runs_out_answers_empty_and_wait_is_capped():
    hub = Hub()
    with serve_long_polling(hub, max_hold=0.2) as server:
        timed_out = requests.get(server.endpoint_url + "?after=0&wait=0.05", timeout=10)
        capped = requests.get(server.endpoint_url + "?after=0&wait=1000", timeout=10)
    assert timed_out.json() == capped.json() == {"items": [], "next": 0, "missed": 0}
    responses = server.trace.records(kind="response")
    assert [r.events for r in responses] == [0, 0]
    assert responses[1].duration < 5.0  # 0.2 s, not 1000 s
    assert server.trace.wasted_share("long-polling") == 1.0


def test_events_published_while_no_request_is_held_all_come_in_the_next_answer_in_order():
    hub, feed = Hub(), Feed(seed=4)
    with serve_long_polling(hub) as server:
        events = [hub.publish(feed.make("message", {"n": n})).data for n in range(6)]
        answer = requests.get(server.endpoint_url + "?after=2&wait=10", timeout=15).json()
    assert [item["id"] for item in answer["items"]] == [3, 4, 5, 6]
    assert [item["data"]["seq"] for item in answer["items"]] == [3, 4, 5, 6]
    assert [item["data"] for item in answer["items"]] == [e.to_dict() for e in events[2:]]
    [response] = server.trace.records(kind="response")
    assert response.events == 4 and response.duration < 5.0


def test_a_chat_client_gets_a_burst_of_messages_in_order_with_none_lost_or_doubled():
    hub, feed = Hub(), Feed(seed=5)
    with serve_long_polling(hub) as server:
        with LongPollingClient(server.endpoint_url, name="chat", trace=server.trace) as client:
            sent = [hub.publish(feed.make("message", {"n": n})).data for n in range(40)]
            got = client.wait_for(40)
    assert [r.id for r in got] == list(range(1, 41))
    assert [r.data for r in got] == sent
    trace = server.trace
    assert [r.event_id for r in trace.records(kind="event")] == [e.id for e in sent]
    answered = [r for r in trace.records(kind="response") if r.status == 200]
    assert sum(r.events for r in answered) == 40
    assert trace.count("request") <= 42  # one per answer and the one still held
    assert not trace.records(kind="connect") and not trace.records(kind="disconnect")


def test_a_client_that_leaves_a_held_poll_leaves_nothing_behind():
    hub = Hub()
    with serve_long_polling(hub) as server:
        sock = held_poll(server.port)
        settle(lambda: server.component.held == 1 and hub.waiting == 1, "the poll to be held")
        sock.close()
        settle(lambda: hub.waiting == 0 and server.component.held == 0, "the wait to end")
        settle(lambda: server.trace.count("response") == 1, "the response record")
        hub.publish("after")
        assert requests.get(server.endpoint_url + "?after=0", timeout=5).status_code == 200
    left = server.trace.records(kind="response")[0]
    assert left.status is None and left.detail == LEFT_EARLY and left.client == "raw"
    assert not server.trace.records(kind="connect")
    assert not server.trace.records(kind="disconnect")


def test_stop_releases_held_polls_at_once_with_a_503_that_says_what_to_do():
    hub = Hub()
    server = serve_long_polling(hub)
    socks = [held_poll(server.port, f"after=0&wait={MAX_HOLD:g}") for _ in range(3)]
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        idle.sendall(b"GET /poll?after=0&wait=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")  # and kept alive
        settle(lambda: server.component.held == 3, "three held polls")
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        answers = [read_all(sock) for sock in socks]
        assert idle.recv(65536) == b""  # the idle keep-alive connection is closed too
    finally:
        for sock in socks + [idle]:
            sock.close()
    assert took < 3.0  # not the 30 s hold
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head
        refusal = json.loads(body)
        assert refusal["reason"] == "stopping" and "after=0" in refusal["error"]
    assert hub.waiting == 0 and not hub.closed  # the hub may feed other servers
    statuses = [r.status for r in server.trace.records(kind="response")]
    assert statuses == [200, 503, 503, 503]


def test_a_closed_hub_answers_503_to_a_long_poll_but_polling_still_reads_its_history():
    hub = Hub()
    hub.publish("last words")
    hub.close()
    with serve_long_polling(hub) as long_server, serve_polling(hub) as short_server:
        held = requests.get(long_server.endpoint_url + "?after=1&wait=5", timeout=10)
        kept = requests.get(short_server.endpoint_url + "?after=0", timeout=5)
    assert held.status_code == 503 and held.json()["reason"] == "closed"
    assert kept.json()["items"] == [{"id": 1, "data": "last words"}]


def test_a_long_poll_client_rides_out_a_restart_on_the_same_port_and_misses_nothing():
    hub, feed = Hub(), Feed(seed=6)
    component = LongPollingServer(hub)
    server = serve_long_polling(component)
    port = server.port
    client = LongPollingClient(server.endpoint_url, name="loyal", trace=server.trace)
    try:
        with client:
            before = [hub.publish(feed.make()).data for _ in range(3)]
            client.wait_for(3)
            server.stop()
            settle(lambda: len(client.errors) >= 1, "the client to notice")
            during = [hub.publish(feed.make()).data for _ in range(3)]
            server = serve_long_polling(component, port=port, trace=server.trace)
            client.wait_for(6, timeout=10)
            after = [hub.publish(feed.make()).data for _ in range(2)]
            got = client.wait_for(8)
    finally:
        server.stop()
    assert [r.data for r in got] == before + during + after
    assert [r.id for r in got] == list(range(1, 9))
    assert server.trace.records(kind="retry", client="loyal")


def test_a_long_poll_client_does_not_hammer_a_server_that_does_not_hold():
    with serve_polling(Hub()) as server:
        with LongPollingClient(server.endpoint_url, hold=0.2, name="eager"):
            time.sleep(0.5)
        requests_made = server.trace.count("request")
    assert 2 <= requests_made <= 9  # about one per 0.1 s (half the hold), not thousands


def test_a_refused_cursor_stops_a_client_for_good_and_says_why():
    with serve_long_polling(Hub()) as server:
        client = LongPollingClient(server.endpoint_url, name="lost", after=99).start()
        try:
            with pytest.raises(LabkitError, match="400.*future"):
                client.wait_for(1)
        finally:
            client.stop()
    assert client.failure and "400" in client.failure
    assert server.trace.count("request") == 1
