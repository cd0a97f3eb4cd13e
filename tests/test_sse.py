"""Server-Sent Events over real loopback sockets: SSEStream serving a Hub, SSEClient reading it."""

import json
import socket
import time

import pytest
import requests
import tornado.web

from labkit import CLIENT_HEADER, Feed, lab
from labkit.errors import LabkitError, WaitTimeout
from labkit.hub import Hub
from labkit.push import sse
from labkit.push.sse import SSEClient, SSEStream, encode_item, serve_sse
from labkit.push.sse_protocol import EventStreamError, MessageEvent, parse
from labkit.wire import STREAM_CUT

from helpers import raw_http, settle


pytestmark = pytest.mark.usefixtures("nothing_goes_wrong_quietly")


def ids(messages):
    return [m.last_event_id for m in messages]


def stream_of(server):
    return server.component


def serve_handler(handler):
    """A one-route server for client tests: ``handler`` answers every path."""
    return lab.serve([(r"/.*", handler)])


# -- the stream ------------------------------------------------------------------------


def test_events_arrive_in_order_with_ids_types_and_latency():
    hub, feed = Hub(), Feed(seed=3)
    with serve_sse(hub) as server, \
            SSEClient(server.endpoint_url, name="reader", trace=server.trace) as client:
        events = [hub.publish(feed.make("price" if n % 2 else "tick", {"n": n})).data
                  for n in range(6)]
        got = client.wait_for(6)
    assert ids(got) == ["1", "2", "3", "4", "5", "6"]
    assert [m.type for m in got] == [e.type for e in events]
    assert [json.loads(m.data) for m in got] == [e.to_dict() for e in events]
    delivered = server.trace.records(kind="event")
    assert [r.event_id for r in delivered] == [e.id for e in events]
    assert {r.client for r in delivered} == {"reader"}
    assert all(r.latency is not None and 0 <= r.latency < 5 for r in delivered)


def test_the_answer_is_an_uncached_event_stream_that_starts_with_retry():
    with serve_sse(Hub(), retry=1234) as server:
        with requests.get(server.endpoint_url, stream=True, timeout=5) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            assert response.headers["Cache-Control"] == "no-cache"
            assert next(response.iter_content(chunk_size=None)) == b"retry: 1234\n\n"


def test_multi_line_data_and_other_data_come_through():
    with serve_sse() as server, SSEClient(server.endpoint_url) as client:
        hub = server.component.hub   # the stream made its own
        hub.publish("one\ntwo\r\nthree\rfour")
        hub.publish({"plain": ["json", 1], "odd": {1, 2} - {1}})
        hub.publish("lone surrogate \ud800")
        hub.publish(Feed().make("two\nlines"))   # a type no event stream can carry
        hub.publish("after")
        got = client.wait_for(5)
    assert got == [MessageEvent("message", "one\ntwo\nthree\nfour", "1"),
                   MessageEvent("message", '{"plain": ["json", 1], "odd": "{2}"}', "2"),
                   MessageEvent("message", "lone surrogate ?", "3"),
                   MessageEvent("gap", '{"missed": 1, "from": 4, "to": 4}', "4"),
                   MessageEvent("message", "after", "5")]


def test_each_item_is_encoded_once_whatever_the_number_of_clients(monkeypatch):
    calls = []
    real = sse.format_event
    monkeypatch.setattr(sse, "format_event", lambda *a, **k: calls.append(k) or real(*a, **k))
    hub = Hub()
    with serve_sse(hub) as server:
        clients = [SSEClient(server.endpoint_url, name=f"c{n}").start() for n in range(5)]
        for client in clients:
            client.wait_open()
        items = [hub.publish(f"event {n}") for n in range(4)]
        for client in clients:
            assert ids(client.wait_for(4)) == ["1", "2", "3", "4"]
            client.stop()
    assert [k["id"] for k in calls if "id" in k] == [1, 2, 3, 4]  # once each, not 5 times
    assert all(item.cache["sse"] == encode_item(item) for item in items)


def test_a_quiet_stream_gets_heartbeat_comments():
    with serve_sse(Hub(), heartbeat=0.05) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            seen = b""
            for _ in range(100):
                seen += sock.recv(4096)
                if seen.count(b": heartbeat\n") >= 2:
                    break
    assert seen.count(b": heartbeat\n") >= 2


def test_connect_and_disconnect_are_recorded_once_and_the_server_records_no_event():
    hub = Hub()
    with serve_sse(hub) as server:
        with SSEClient(server.endpoint_url, name="solo"):
            hub.publish("x")
            settle(lambda: stream_of(server).open_streams()[0].sent_id == 1, "the write")
        settle(lambda: server.trace.count("disconnect") == 1, "the disconnect")
    counts = server.trace.counts()["sse"]
    assert counts["connect"] == counts["disconnect"] == counts["request"] == 1
    assert "event" not in counts
    [left] = server.trace.records(kind="disconnect")
    assert (left.client, left.detail, left.events) == ("solo", "the client left", 1)
    [response] = server.trace.records(kind="response")
    assert response.status == 200 and STREAM_CUT in response.detail and response.events == 1


# -- reconnection and resumption -------------------------------------------------------


def test_the_client_waits_the_servers_retry_time_before_reconnecting():
    hub = Hub()
    with serve_sse(hub, retry=300) as server:
        with SSEClient(server.endpoint_url, name="patient", reconnection_time=30,
                       trace=server.trace) as client:
            assert stream_of(server).end() == 1
            client.wait_open(2)
        gap = client.opened[1] - client.opened[0]
    assert client.reconnection_time == 0.3
    assert 0.25 <= gap < 5.0  # the server's 0.3 s, not the client's own 30 s
    [retry] = server.trace.records(kind="retry")
    assert retry.client == "patient" and "reconnecting in 0.3 s" in retry.detail


def test_a_client_resumes_after_a_restart_on_the_same_port_and_misses_nothing():
    hub, feed = Hub(), Feed()
    stream = SSEStream(hub, retry=100)
    server = serve_sse(stream)
    port, url = server.port, server.endpoint_url
    client = SSEClient(url, name="loyal", trace=server.trace)
    try:
        with client:
            for _ in range(5):
                hub.publish(feed.make())
            client.wait_for(5)
            server.stop()
            settle(lambda: any("could not connect" in why for why in client.ended),
                   "a refused reconnection")
            for _ in range(5):   # published while the server is down: they wait in the hub
                hub.publish(feed.make())
            server = serve_sse(stream, port=port, trace=server.trace)
            client.wait_for(10)
            hub.publish(feed.make())
            got = client.wait_for(11)
    finally:
        server.stop()
    assert ids(got) == [str(n) for n in range(1, 12)]
    assert [json.loads(m.data)["seq"] for m in got] == list(range(1, 12))
    assert client.ended[0] == "the server ended the stream"
    resumed = [r for r in server.trace.records(kind="connect") if "resuming" in r.detail]
    assert [r.detail for r in resumed] == ["resuming after id 5"]


def test_last_event_id_older_than_the_history_gets_a_gap_event_first():
    hub = Hub(history=5)
    for n in range(1, 13):
        hub.publish(f"event {n}")   # ids 8..12 are kept, 1..7 are gone
    with serve_sse(hub) as server, \
            SSEClient(server.endpoint_url, last_event_id="2") as client:
        got = client.wait_for(6)
    assert got[0] == MessageEvent("gap", '{"missed": 5, "from": 3, "to": 7}', "7")
    assert [m.data for m in got[1:]] == [f"event {n}" for n in range(8, 13)]
    assert ids(got[1:]) == ["8", "9", "10", "11", "12"]


def test_the_client_sends_a_utf8_last_event_id_like_wpt_format_field_id():
    """WPT resources/last-event-id.py: the first answer sets id "…", the next echoes it."""
    seen = []

    class LastEventId(tornado.web.RequestHandler):
        def get(self):
            raw = self.request.headers.get("Last-Event-ID")
            seen.append(raw and raw.encode("latin-1").decode("utf-8"))
            self.set_header("Content-Type", "text/event-stream")
            if raw:
                self.finish(f"data: {seen[-1]}\n\n".encode())
            else:
                self.finish("id: \u2026\nretry: 50\ndata: hello\n\n".encode())

    with serve_handler(LastEventId) as server, SSEClient(server.url + "/stream") as client:
        got = client.wait_for(3)
    assert got[:3] == [MessageEvent("message", "hello", "\u2026"),
                       MessageEvent("message", "\u2026", "\u2026"),
                       MessageEvent("message", "\u2026", "\u2026")]
    assert seen[:3] == [None, "\u2026", "\u2026"]


def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped_and_its_id_not_kept():
    """WPT format-data-before-final-empty-line, over a socket: test2 never dispatches."""
    class Unfinished(tornado.web.RequestHandler):
        def get(self):
            self.set_header("Content-Type", "text/event-stream")
            self.finish(b"retry:50\ndata:test1\n\nid:test\ndata:test2")

    with serve_handler(Unfinished) as server, SSEClient(server.url + "/") as client:
        got = client.wait_for(2)
    assert got[:2] == [MessageEvent("message", "test1", "")] * 2


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["soon", "-1", "1.5", "99", "\u00e9", "1 2", "0x1"])
def test_a_bad_last_event_id_is_a_400_and_the_server_keeps_serving(raw):
    hub = Hub()
    hub.publish("only")
    with serve_sse(hub) as server:
        response = requests.get(server.endpoint_url, headers={"Last-Event-ID": raw.encode()},
                                timeout=5)
        assert response.status_code == 400
        assert response.json()["reason"] == "bad_cursor"
        assert "cursor" in response.json()["error"]
        with SSEClient(server.endpoint_url, last_event_id="0") as client:
            assert client.wait_for(1)[0].data == "only"
    assert server.trace.count("connect") == 1   # the refused request opened no stream


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 405),
    (b"PUT /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nhead", 405),
    (b"DELETE /events HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"GET /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
     400),
    (b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
], ids=["POST", "PUT-huge", "DELETE", "GET-with-body", "GET-chunked", "unknown-path"])
def test_what_cannot_open_a_stream_is_refused_and_the_server_keeps_serving(request_bytes,
                                                                         status):
    hub = Hub()
    with serve_sse(hub) as server:
        answer = raw_http(server.port, request_bytes)
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
        if status == 405:
            assert b"\r\nAllow: GET\r\n" in head
        with SSEClient(server.endpoint_url) as client:
            hub.publish("still here")
            assert client.wait_for(1)[0].data == "still here"


def test_validation_errors_say_what_is_wrong():
    with pytest.raises(EventStreamError, match="heartbeat"):
        SSEStream(heartbeat=0)
    with pytest.raises(EventStreamError, match="max_lag"):
        SSEStream(max_lag=0)
    with pytest.raises(EventStreamError, match="path"):
        SSEStream(path="events")
    with pytest.raises(EventStreamError, match="http://"):
        SSEClient("ftp://127.0.0.1/events")
    with pytest.raises(EventStreamError, match="reconnection_time"):
        SSEClient("http://127.0.0.1/events", reconnection_time=-1)


# -- the client fails the connection -------------------------------------------------------


def answering(status, content_type="text/event-stream", seen=None):
    class Answer(tornado.web.RequestHandler):
        def get(self):
            if seen is not None:
                seen.append(dict(self.request.headers))
            self.set_status(status)
            if status != 204:
                self.set_header("Content-Type", content_type)
                self.finish(b"retry: 10\ndata: should not be read\n\n")
    return Answer


@pytest.mark.parametrize("handler, why", [
    (answering(204), "204 No Content"),
    (answering(200, "text/plain"), "Content-Type 'text/plain'"),
    (answering(200, "x bogus"), "Content-Type 'x bogus'"),    # WPT format-mime-bogus
    (answering(500), "500"),
    (answering(301), "301"),
], ids=["204", "text-plain", "mime-bogus", "500", "redirect"])
def test_the_client_stops_for_good_on_what_fails_the_connection(handler, why):
    with serve_handler(handler) as server:
        client = SSEClient(server.url + "/events", reconnection_time=0.01).start()
        with pytest.raises(LabkitError, match="stopped for good"):
            client.wait_for(1)
        settle(lambda: not client.running, "the client's end")
        time.sleep(0.1)   # ten reconnection times: a client that retried would show it
        assert why in client.failure
        assert client.events == [] and client.opened == []
        assert server.trace.count("request") == 1
        client.stop()


def test_a_closed_hub_answers_204_so_its_clients_stop_for_good():
    hub = Hub()
    with serve_sse(hub, retry=50) as server:
        with SSEClient(server.endpoint_url) as client:
            hub.publish("last words")
            client.wait_for(1)
            hub.close()
            settle(lambda: client.failure is not None, "the 204")
    assert "204" in client.failure
    assert client.ended[0] == "the server ended the stream"
    [disconnect] = server.trace.records(kind="disconnect")
    assert disconnect.detail == "the hub closed"


def test_the_client_asks_for_an_event_stream_and_names_itself():
    seen = []
    with serve_handler(answering(204, seen=seen)) as server:
        client = SSEClient(server.url + "/events?topic=news", name="curious").start()
        settle(lambda: client.failure is not None, "the answer")
    assert seen[0]["Accept"] == "text/event-stream"
    assert seen[0][CLIENT_HEADER] == "curious"
    assert "Last-Event-Id" not in seen[0]
    assert server.trace.records(kind="request")[0].client == "curious"


def test_wait_for_says_what_happened_when_too_few_events_arrive():
    with serve_sse(Hub()) as server, SSEClient(server.endpoint_url) as client:
        with pytest.raises(WaitTimeout, match="only 0 of 1 events arrived .* over 1 streams"):
            client.wait_for(1, timeout=0.2)


# -- many clients, slow clients, stopping --------------------------------------------------


def test_a_hundred_clients_each_get_every_event():
    hub, feed = Hub(), Feed(seed=7)
    with serve_sse(hub) as server:
        clients = [SSEClient(server.endpoint_url, name=f"c{n:03d}", trace=server.trace).start()
                   for n in range(100)]
        try:
            for client in clients:
                client.wait_open()
            events = [hub.publish(feed.make("tick", {"n": n})).data for n in range(20)]
            for client in clients:
                got = client.wait_for(20, timeout=20)
                assert ids(got) == [str(n) for n in range(1, 21)]
        finally:
            for client in clients:
                client.stop()
    delivered = server.trace.records(kind="event")
    assert len(delivered) == 100 * 20
    assert {r.client for r in delivered} == {c.name for c in clients}
    assert {r.event_id for r in delivered} == {e.id for e in events}


@pytest.mark.parametrize("backlog", [0, 1000], ids=["live", "resuming-8MB-behind"])
def test_a_client_that_never_reads_is_dropped_with_bounded_memory_while_others_keep_up(backlog):
    """The slow client asks from now, or resumes from id 0 with 1000 events (8 MB) to catch
    up on: either way the server holds at most one write (max_buffer) for it."""
    hub = Hub(history=5000)
    max_buffer, max_lag = 16 * 1024, 20
    payload = "x" * 8000
    frame = len(encode_item(hub.publish(payload)))
    for _ in range(backlog):
        hub.publish(payload)
    resume = b"Last-Event-ID: 0\r\n" if backlog else b""
    with serve_sse(hub, max_buffer=max_buffer, max_lag=max_lag) as server:
        stream = stream_of(server)
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect: tiny window
        slow.settimeout(5)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nX-Labkit-Client: slow\r\n"
                     + resume + b"\r\n")
        first = hub.last_id
        try:
            with SSEClient(server.endpoint_url, name="healthy") as healthy:
                settle(lambda: len(stream.open_streams()) == 2, "both streams")

                def held_for_slow():
                    """Bytes tornado holds for the slow client (its private write buffer:
                    what the server's memory really holds beyond the kernel's buffers)."""
                    handler = next((h for h in stream._open if h.client == "slow"), None)
                    buffer = handler and handler.request.connection.stream._write_buffer
                    return 0 if buffer is None else len(buffer)

                held = []
                for _ in range(3000):   # the kernel absorbs a few MB first, then tornado holds
                    hub.publish(payload)
                    held.append(lab.run(held_for_slow))
                    if server.trace.count("drop"):
                        break
                assert server.trace.count("drop") == 1, "the slow client was never dropped"
                published = hub.last_id
                got = healthy.wait_for(published - first, timeout=30)
                assert ids(got) == [str(n) for n in range(first + 1, published + 1)]
                assert [s.client for s in stream.open_streams()] == ["healthy"]
        finally:
            slow.close()
    assert 0 < max(held) <= max_buffer + frame   # it did hold bytes, never more than the cap
    [drop] = server.trace.records(kind="drop")
    assert drop.client == "slow" and "not reading" in drop.detail
    assert f"limit {max_lag} events" in drop.detail
    dropped = [r for r in server.trace.records(kind="disconnect") if r.client == "slow"]
    assert [r.detail for r in dropped] == ["dropped: not reading"]


def test_end_cuts_only_the_named_client():
    hub = Hub()
    with serve_sse(hub, retry=60000) as server:
        with SSEClient(server.endpoint_url, name="a") as a, \
                SSEClient(server.endpoint_url, name="b") as b:
            assert stream_of(server).end("a") == 1
            settle(lambda: a.ended, "a's end")
            hub.publish("for b")
            assert b.wait_for(1)[0].data == "for b"
            assert a.events == [] and b.ended == []


def test_stop_ends_every_stream_cleanly_and_promptly():
    hub = Hub()
    server = serve_sse(hub, retry=60000)
    clients = [SSEClient(server.endpoint_url, name=f"c{n}").start() for n in range(10)]
    try:
        for client in clients:
            client.wait_open()
        hub.publish("before stop")
        for client in clients:
            client.wait_for(1)
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        assert took < 3.0   # a sanity bound: stop did not wait out a timeout
        assert stream_of(server).open_streams() == []
        assert not server._http._connections   # tornado's own list of open connections
        for client in clients:
            settle(lambda: client.ended, "the client's end")
            assert client.ended == ["the server ended the stream"]
    finally:
        for client in clients:
            client.stop()
    assert not hub.closed   # the hub may feed other servers: stopping does not close it
    ends = server.trace.records(kind="disconnect")
    assert len(ends) == 10 and {r.detail for r in ends} == {"the server stopped"}
    responses = server.trace.records(kind="response")
    assert len(responses) == 10 and all(r.status == 200 and not r.detail for r in responses)


def test_a_stopped_client_leaves_no_task_and_can_be_restarted():
    hub = Hub()
    with serve_sse(hub) as server:
        client = SSEClient(server.endpoint_url, name="again")
        with client:
            hub.publish("one")
            client.wait_for(1)
        assert not client.running and client.ended[-1] == "stopped"
        with client:
            hub.publish("two")
            assert [m.data for m in client.wait_for(2)] == ["one", "two"]
    requests_seen = server.trace.records(kind="request")
    assert len(requests_seen) == 2


def test_the_wire_bytes_parse_back_to_what_the_client_saw():
    """The recorded response size is the stream's real size: parse a raw copy of it."""
    hub = Hub()
    hub.publish("a")
    with serve_sse(hub) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0\r\n\r\n")
            seen = b""
            for _ in range(100):
                seen += sock.recv(4096)
                if seen.endswith(b"\r\n") and b"data: a" in seen:
                    break
    body = seen.split(b"\r\n\r\n", 1)[1]
    chunks, unframed = body, b""
    while chunks:
        size, _, rest = chunks.partition(b"\r\n")
        unframed += rest[:int(size, 16)]
        chunks = rest[int(size, 16) + 2:]
    assert parse(unframed) == [MessageEvent("message", "a", "1")]
