"""The broker, its consumer and the direct service, over real loopback sockets."""

import asyncio
import socket
import threading
import time

import pytest
import requests

from labkit import CLIENT_HEADER, Feed, Trace, lab
from labkit.errors import LabkitError
from labkit.wire import LEFT_EARLY
from labkit.queues import (MAX_WAIT, Broker, Consumer, DirectService, Message, running_consumers,
                           serve_broker)


def publish(server, body, queue="jobs"):
    response = requests.post(f"{server.url}/queues/{queue}", data=body, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def receive(server, queue="jobs", client="reader", **params):
    response = requests.get(f"{server.url}/queues/{queue}", params=params, timeout=15,
                            headers={CLIENT_HEADER: client})
    assert response.status_code == 200, response.text
    return response.json()


def ack(server, message_id, queue="jobs"):
    return requests.delete(f"{server.url}/queues/{queue}/{message_id}", timeout=5).status_code


def wait_until(condition, timeout=5.0):
    """Poll ``condition`` (bounded); True once it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def held(server, client):
    """True once ``client``'s receive has arrived at the broker (and is being held)."""
    return any(r.client == client for r in server.trace.records(kind="request"))


def in_background(function):
    """Run ``function`` in a thread; return (thread, list that receives its result)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    return thread, result


# -- the broker ------------------------------------------------------------------


def test_publish_answers_201_with_an_id_and_receive_hands_out_in_fifo_order():
    with serve_broker() as server:
        ids = [publish(server, f"order {n}") for n in range(10)]
        assert len(set(ids)) == 10
        first = receive(server, max=3)
        rest = receive(server, max=100)
    assert [m["id"] for m in first + rest] == ids
    assert [m["body"] for m in first] == ["order 0", "order 1", "order 2"]
    assert all(m["attempts"] == 1 for m in first + rest)


def test_publish_returns_while_no_consumer_exists_and_the_message_waits():
    with serve_broker() as server:
        response = requests.post(server.url + "/queues/emails", data="", timeout=5)
        assert response.status_code == 201
        assert response.headers["Location"] == f"/queues/emails/{response.json()['id']}"
        # nobody has ever asked for this queue: the message is simply stored
        assert server.component.stats("emails") == {"depth": 1, "in_flight": 0, "published": 1,
                                                 "delivered": 0, "acked": 0}
        assert receive(server, "emails") == [{"id": response.json()["id"], "body": "",
                                              "attempts": 1}]


def test_queues_are_independent():
    with serve_broker() as server:
        publish(server, "a", queue="left")
        publish(server, "b", queue="right")
        assert [m["body"] for m in receive(server, "right", max=10)] == ["b"]
        assert [m["body"] for m in receive(server, "left", max=10)] == ["a"]
        assert server.component.queues() == ["left", "right"]


def test_a_received_message_is_in_flight_until_acked_then_gone():
    with serve_broker() as server:
        message_id = publish(server, "x")
        assert receive(server)[0]["id"] == message_id
        assert receive(server) == [], "a leased message is not handed out twice"
        assert requests.get(server.url + "/queues/jobs/stats", timeout=5).json() == {
            "depth": 0, "in_flight": 1, "published": 1, "delivered": 1, "acked": 0}
        assert ack(server, message_id) == 204
        assert ack(server, message_id) == 404, "an acked message is gone"
        assert server.component.stats("jobs")["acked"] == 1
        assert server.component.stats("jobs")["in_flight"] == 0


def test_an_unacked_message_comes_back_after_the_visibility_timeout_with_attempts_2():
    with serve_broker(visibility_timeout=0.3) as server:
        message_id = publish(server, "resize photo 7")
        assert receive(server) == [{"id": message_id, "body": "resize photo 7", "attempts": 1}]
        # nobody acks; a held receive wakes when the lease runs out
        again = receive(server, wait=MAX_WAIT, client="second")
        answer, = server.trace.records(kind="response", client="second")
        retry, = server.trace.records(kind="retry")
    assert again == [{"id": message_id, "body": "resize photo 7", "attempts": 2}]
    assert answer.duration < MAX_WAIT / 2, "woken by the lease running out, not by its own wait"
    assert retry.client == "second" and retry.detail == f"{message_id} redelivered, attempt 2"


def test_a_redelivered_message_keeps_its_place_at_the_front():
    with serve_broker(visibility_timeout=0.2) as server:
        ids = [publish(server, str(n)) for n in range(3)]
        assert receive(server)[0]["id"] == ids[0]          # leased, never acked
        assert wait_until(lambda: server.component.stats("jobs")["in_flight"] == 0)
        again = receive(server, max=10)
    assert [(m["id"], m["attempts"]) for m in again] == [(ids[0], 2), (ids[1], 1), (ids[2], 1)]


def test_a_long_poll_wakes_when_a_message_arrives():
    with serve_broker() as server:
        thread, result = in_background(lambda: receive(server, wait=MAX_WAIT, client="waiter"))
        assert wait_until(lambda: held(server, "waiter"))
        message_id = publish(server, "hello")
        thread.join(MAX_WAIT + 5)
        answer = server.trace.records(kind="response", client="waiter")
    # had it not woken, it would have answered [] when its wait ran out
    assert result == [[{"id": message_id, "body": "hello", "attempts": 1}]]
    assert answer[0].events == 1


def test_a_long_poll_answers_an_empty_list_when_its_wait_runs_out():
    with serve_broker() as server:
        assert receive(server, wait=0.2, client="patient") == []
        assert receive(server, client="impatient") == [], "wait defaults to 0: answer at once"
        patient, impatient = server.trace.records(kind="response")
    assert patient.events == impatient.events == 0, "an empty receive is a wasted request"
    assert patient.duration > impatient.duration
    assert patient.duration >= 0.15


def test_a_wait_above_the_cap_is_capped_not_refused():
    with serve_broker() as server:
        thread, result = in_background(lambda: receive(server, wait=3600, client="greedy"))
        assert wait_until(lambda: held(server, "greedy"))
        publish(server, "wake up")
        thread.join(MAX_WAIT + 5)
    assert [m["body"] for m in result[0]] == ["wake up"]


def test_stopping_the_server_releases_a_held_receive():
    server = serve_broker()
    thread, result = in_background(
        lambda: requests.get(server.url + "/queues/jobs?wait=10", timeout=30,
                             headers={CLIENT_HEADER: "held"}))
    assert wait_until(lambda: held(server, "held"))
    server.stop()
    thread.join(8)  # a receive that was not released would be held for 10 s
    assert not thread.is_alive(), "stop() must release a held receive"
    assert result[0].status_code == 503
    assert "stopping" in result[0].json()["error"]
    assert server not in lab.running_servers()


def test_a_client_that_leaves_a_long_poll_is_not_leased_the_next_message():
    with serve_broker() as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /queues/jobs?wait=10 HTTP/1.1\r\nHost: lab\r\n"
                         b"X-Labkit-Client: leaver\r\n\r\n")
            assert wait_until(lambda: held(server, "leaver"))
        left = lambda: [r for r in server.trace.records(kind="response", client="leaver")
                        if r.status is None and r.detail.endswith(LEFT_EARLY)]
        assert wait_until(left)
        assert not server.trace.records(kind="disconnect")  # one meaning: not an open stream
        message_id = publish(server, "for someone still here")
        taken = receive(server)
    assert taken == [{"id": message_id, "body": "for someone still here", "attempts": 1}]


BAD_REQUESTS = {
    "unknown route": ("get", "/nope", {}, 404, "no endpoint"),
    "queue name with a slash": ("get", "/queues/a/b/c", {}, 404, "no endpoint"),
    "unknown message id": ("delete", "/queues/jobs/msg_999999", {}, 404, "msg_999999"),
    "wrong method": ("put", "/queues/jobs", {}, 405, "PUT is not allowed"),
    "wait not a number": ("get", "/queues/jobs?wait=soon", {}, 400, "wait must be"),
    "negative wait": ("get", "/queues/jobs?wait=-1", {}, 400, "wait must be"),
    "wait not finite": ("get", "/queues/jobs?wait=nan", {}, 400, "wait must be"),
    "max zero": ("get", "/queues/jobs?max=0", {}, 400, "max must be"),
    "max not whole": ("get", "/queues/jobs?max=2.5", {}, 400, "max must be"),
    "body too large": ("post", "/queues/jobs", {"data": b"x" * 2000}, 413, "1000-byte limit"),
    "chunked body too large": ("post", "/queues/jobs",
                               {"data": (b"x" * 600 for _ in range(2))}, 413, "1200 bytes"),
    "body not UTF-8": ("post", "/queues/jobs", {"data": b"\xff\xfe\x00"}, 400, "UTF-8"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_gets_a_clear_status_and_the_broker_keeps_serving(case):
    method, path, kwargs, status, words = BAD_REQUESTS[case]
    with serve_broker(max_body=1000) as server:
        response = requests.request(method, server.url + path, timeout=5, **kwargs)
        assert response.status_code == status
        assert words in response.json()["error"]
        assert response.headers["Content-Type"] == "application/json"
        message_id = publish(server, "still fine")
        assert receive(server) == [{"id": message_id, "body": "still fine", "attempts": 1}]
        refused = server.trace.records(kind="response")[0]
    assert refused.status == status and refused.detail, "the reason is in the trace"


def test_a_full_queue_refuses_with_503_until_a_message_is_acked():
    with serve_broker(max_messages=2) as server:
        first = publish(server, "1")
        publish(server, "2")
        response = requests.post(server.url + "/queues/jobs", data="3", timeout=5)
        assert response.status_code == 503 and "full" in response.json()["error"]
        receive(server)
        assert ack(server, first) == 204
        publish(server, "3")


def test_trace_records_every_exchange_with_its_meaning():
    with serve_broker() as server:
        message_id = publish(server, "x")
        receive(server, client="reader")
        receive(server, client="reader")
        ack(server, message_id)
        details = [r.detail for r in server.trace.records(kind="response")]
        events = [r.events for r in server.trace.records(kind="response")]
    assert details == [f"published {message_id}", message_id, "", f"acked {message_id}"]
    assert events == [None, 1, 0, None], "receives say how many messages they carried"
    assert server.trace.wasted_share("queue") == 0.5


def test_history_shows_the_depth_growing_while_nobody_consumes():
    with serve_broker() as server:
        ids = [publish(server, str(n)) for n in range(4)]
        receive(server, max=2)
        ack(server, ids[0])
        history = server.component.history("jobs")
    assert [(s.depth, s.in_flight) for s in history] == [(1, 0), (2, 0), (3, 0), (4, 0),
                                                          (2, 2), (2, 1)]
    assert [s.t for s in history] == sorted(s.t for s in history)
    assert server.component.history("never-used") == []


def test_broker_refuses_an_impossible_visibility_timeout():
    with pytest.raises(LabkitError, match="visibility_timeout"):
        Broker(visibility_timeout=0)


def test_message_event_is_the_feed_event_the_body_carries():
    event = Feed(seed=1).make("order.paid", {"order": 7})
    assert Message("m", event.to_json(), 1).event == event
    for body in ("", "hello", "[1, 2]", '{"id": "x"}'):
        assert Message("m", body, 1).event is None


# -- the consumer ----------------------------------------------------------------


def test_consumer_processes_each_message_in_publish_order_and_acks_it():
    seen = []
    with serve_broker() as server:
        ids = [publish(server, f"order {n}") for n in range(20)]
        with Consumer(server.url, "jobs", seen.append, wait=0.2) as consumer:
            done = consumer.wait_for(20)
        stats = server.component.stats("jobs")
    assert [m.id for m in seen] == [m.id for m in done] == ids
    assert stats == {"depth": 0, "in_flight": 0, "published": 20, "delivered": 20, "acked": 20}
    assert not consumer.running and consumer not in running_consumers()


def test_messages_published_while_no_consumer_runs_are_all_processed_when_one_starts():
    seen = []
    with serve_broker() as server:
        consumer = Consumer(server.url, "jobs", seen.append, wait=0.2).start()
        first = [publish(server, f"before {n}") for n in range(5)]
        consumer.wait_for(5)
        consumer.stop()
        during = [publish(server, f"during {n}") for n in range(10)]
        assert server.component.stats("jobs")["depth"] == 10, "nobody consumes: they wait"
        consumer.start()
        consumer.wait_for(15)
        consumer.stop()
    assert [m.id for m in seen] == first + during, "nothing lost, nothing reordered"
    assert all(m.attempts == 1 for m in seen)


def test_a_stopped_consumer_holds_no_lease():
    with serve_broker() as server:
        consumer = Consumer(server.url, "jobs", lambda m: None, wait=0.3).start()
        assert wait_until(lambda: held(server, "consumer"))
        consumer.stop()
        publish(server, "after the stop")
        stats = server.component.stats("jobs")
    assert stats["depth"] == 1 and stats["in_flight"] == 0, stats


def test_a_failing_process_is_not_acked_and_the_message_comes_back():
    calls = []

    def process(message):
        calls.append((message.body, message.attempts))
        if message.body == "b" and message.attempts == 1:
            raise RuntimeError("the worker crashed before it could ack")

    with serve_broker(visibility_timeout=1.0) as server:  # ample time to finish "c" first
        for body in "abc":
            publish(server, body)
        with Consumer(server.url, "jobs", process, wait=0.2) as consumer:
            consumer.wait_for(3)
        retries = server.trace.records(kind="retry")
    assert calls == [("a", 1), ("b", 1), ("c", 1), ("b", 2)]
    assert [(m.body, m.attempts) for m in consumer.processed] == [("a", 1), ("c", 1), ("b", 2)]
    assert [(m.body, error) for m, error in consumer.failures] == \
        [("b", "RuntimeError('the worker crashed before it could ack')")]
    assert len(retries) == 1 and retries[0].client == "consumer"


def test_an_async_process_with_concurrency_runs_side_by_side():
    busy, peak = [0], [0]

    async def process(message):
        busy[0] += 1
        peak[0] = max(peak[0], busy[0])
        await asyncio.sleep(0.05)
        busy[0] -= 1

    with serve_broker() as server:
        ids = {publish(server, str(n)) for n in range(12)}
        with Consumer(server.url, "jobs", process, concurrency=3, wait=0.2) as consumer:
            done = consumer.wait_for(12)
        clients = {r.client for r in server.trace.records(kind="request")} - {""}
    assert {m.id for m in done} == ids
    assert peak[0] >= 2, "three workers should overlap"
    assert {"consumer-1", "consumer-2", "consumer-3"} <= clients


def test_consumer_records_feed_events_as_delivered_with_their_latency():
    feed = Feed(seed=3)
    trace = Trace()
    with serve_broker(trace=trace) as server:
        events = [feed.make("email.requested", {"to": f"user{n}"}) for n in range(3)]
        for event in events:
            publish(server, event.to_json())
        publish(server, "not an event")
        with Consumer(server.url, "jobs", lambda m: None, trace=trace, name="mailer",
                      wait=0.2) as consumer:
            consumer.wait_for(4)
    delivered = trace.records(kind="event")
    assert [r.event_id for r in delivered] == [e.id for e in events]
    assert all(r.client == "mailer" and r.technique == "queue" for r in delivered)
    assert all(r.latency >= 0 for r in delivered)


def test_a_consumer_outlives_a_broker_that_goes_away_and_stops_promptly():
    server = serve_broker()
    consumer = Consumer(server.url, "jobs", lambda m: None, wait=0.5).start()
    assert wait_until(lambda: held(server, "consumer"))
    server.stop()
    assert wait_until(lambda: len(consumer.errors) >= 2), "it keeps trying, with back-off"
    assert consumer.running
    consumer.stop(timeout=5)
    assert not consumer.running
    assert any("503" in e for e in consumer.errors), consumer.errors


def test_consumer_arguments_are_checked_and_wait_for_explains_a_timeout():
    with pytest.raises(LabkitError, match="queue names"):
        Consumer("http://127.0.0.1:1", "no/slashes", print)
    with pytest.raises(LabkitError, match="concurrency"):
        Consumer("http://127.0.0.1:1", "jobs", print, concurrency=0)
    with pytest.raises(LabkitError, match="wait"):
        Consumer("http://127.0.0.1:1", "jobs", print, wait=60)
    with serve_broker() as server:
        with Consumer(server.url, "jobs", print, wait=0.2) as consumer:
            with pytest.raises(LabkitError, match="already running"):
                consumer.start()
            with pytest.raises(TimeoutError, match="only 0 of 1"):
                consumer.wait_for(1, timeout=0.2)


# -- the direct service ------------------------------------------------------------


def test_a_direct_call_returns_only_after_the_processing_is_done():
    order = []

    async def process(message):
        await asyncio.sleep(0.2)
        order.append("processed")

    with DirectService(process) as service:
        started = time.monotonic()
        response = requests.post(service.url, data="resize photo.jpg", timeout=5)
        order.append("caller got its answer")
        elapsed = time.monotonic() - started
    assert response.status_code == 204
    assert order == ["processed", "caller got its answer"]
    assert elapsed >= 0.15, "the caller waited for the work"


def test_a_direct_service_answers_the_result_or_500_and_keeps_serving():
    def process(message):
        if message.body == "boom":
            raise ValueError("bad photo")
        return {"id": message.id, "size": len(message.body)}

    with DirectService(process, path="/resize") as service:
        assert service.url.endswith("/resize")
        ok = requests.post(service.url, data="abc", timeout=5)
        broken = requests.post(service.url, data="boom", timeout=5)
        again = requests.post(service.url, data="abcd", timeout=5)
        lost = requests.post(service.url.replace("/resize", "/other"), data="x", timeout=5)
    assert ok.json() == {"id": "call_000001", "size": 3}
    assert broken.status_code == 500 and "bad photo" in broken.json()["error"]
    assert again.json() == {"id": "call_000003", "size": 4}
    assert lost.status_code == 404 and "POST /resize" in lost.json()["error"]


def test_a_call_to_a_stopped_service_fails_and_works_again_after_start():
    with DirectService() as service:
        url = service.url
        assert requests.post(url, data="1", timeout=5).status_code == 204
        service.stop()
        with pytest.raises(requests.ConnectionError):
            requests.post(url, data="2", timeout=5)
        service.start()
        assert service.url == url, "it comes back on the same port"
        assert requests.post(url, data="3", timeout=5).status_code == 204
    assert [m.body for m in service.calls] == ["1", "3"], "the call made while down is lost"
    assert not service.running and service.server not in lab.running_servers()


def test_a_direct_service_records_feed_events_and_refuses_big_bodies():
    event = Feed(seed=5).make("photo.uploaded", {"name": "cat.jpg"})
    trace = Trace()
    with DirectService(trace=trace, max_body=500) as service:
        requests.post(service.url, data=event.to_json(), timeout=5,
                      headers={CLIENT_HEADER: "shop"})
        too_big = requests.post(service.url, data="x" * 600, timeout=5)
    assert too_big.status_code == 413
    delivered, = trace.records(kind="event")
    assert delivered.event_id == event.id and delivered.client == "shop"
    assert delivered.technique == "direct"
