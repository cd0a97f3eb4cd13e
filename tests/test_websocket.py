"""WebSockets over real loopback sockets: WebSocketServer on a Hub, WebSocketClient, raw frames."""

import json
import socket
import struct
import time
import types

import pytest
import requests

from tornado.httputil import HTTPHeaders

from labkit import Feed, lab
from labkit.errors import LabkitError
from labkit.hub import Hub
from labkit.push import clients as clients_module
from labkit.push.websocket import (WebSocketClient, WebSocketServer, frame_size,
                                   serve_websocket, text_frame)

from helpers import raw_http, settle

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
"""The Sec-WebSocket-Key of RFC 6455 section 1.3 ..."""
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
"""... and the Sec-WebSocket-Accept the server must answer to it."""
RFC_MASKED_HELLO = bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])
"""RFC 6455 section 5.7: a single-frame masked text message containing "Hello"."""


pytestmark = pytest.mark.usefixtures("nothing_goes_wrong_quietly")


def masked(opcode, payload, mask=b"\x37\xfa\x21\x3d"):
    """A client frame (FIN set, masked) as RFC 6455 section 5.2 lays it out."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A hand-made WebSocket client: the upgrade, then frames, counting every byte."""

    def __init__(self, port, query="", version="13"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(
            f"GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\n"
            f"Sec-WebSocket-Version: {version}\r\nX-Labkit-Client: raw\r\n\r\n".encode())
        self.buffer = b""
        for _ in range(100):
            if b"\r\n\r\n" in self.buffer:
                break
            self.buffer += self.sock.recv(65536)
        self.head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        line, _, fields = self.head.decode("latin-1").partition("\r\n")
        self.status = int(line.split()[1])
        self.headers = HTTPHeaders.parse(fields)  # names are case-insensitive
        self.received = len(self.buffer)  # frame bytes read after the 101's head
        self.sent = 0

    def send(self, frame):
        self.sock.sendall(frame)
        self.sent += len(frame)

    def _more(self):
        chunk = self.sock.recv(65536)
        self.received += len(chunk)
        self.buffer += chunk
        return chunk

    def frame(self):
        """The next frame from the server: (first byte, payload); None at the end."""
        for _ in range(100):
            if len(self.buffer) >= 4:  # every frame here has at least 2 bytes, a close 4
                first, second = self.buffer[0], self.buffer[1]
                assert second & 0x80 == 0, "a server frame must not be masked"
                length, start = second & 0x7F, 2
                assert length != 127, "no frame here is 64 KiB or more"
                if length == 126:
                    length, start = struct.unpack("!H", self.buffer[2:4])[0], 4
                if len(self.buffer) >= start + length:
                    payload = self.buffer[start:start + length]
                    self.buffer = self.buffer[start + length:]
                    return first, payload
            if not self._more():
                return None
        raise AssertionError("no whole frame after 100 reads")

    def close(self):
        self.sock.close()


# -- framing ---------------------------------------------------------------------------


def test_frame_sizes_follow_rfc_6455_section_5_2_and_its_examples():
    assert text_frame(b"Hello") == bytes([0x81, 0x05]) + b"Hello"  # 5.7, unmasked
    assert frame_size(5, masked=False) == 7      # 5.7: 0x81 0x05 "Hello"
    assert frame_size(5, masked=True) == 11      # 5.7: the masked "Hello"
    assert len(RFC_MASKED_HELLO) == 11 and masked(0x1, b"Hello") == RFC_MASKED_HELLO
    assert frame_size(256, masked=False) == 260  # 5.7: 256 bytes, 0x7E and a 16-bit length
    assert frame_size(65536, masked=False) == 65546  # 5.7: 64 KiB, 0x7F and a 64-bit length
    assert [frame_size(n, masked=False) - n for n in (0, 125, 126, 65535, 65536)] == \
        [2, 2, 4, 4, 10]
    for size in (0, 125, 126, 65535, 65536):
        frame = text_frame(b"x" * size)
        assert len(frame) == frame_size(size, masked=False) and frame[0] == 0x81
    assert text_frame(b"x" * 256)[:4] == bytes([0x81, 0x7E, 0x01, 0x00])
    assert text_frame(b"x" * 65536)[:10] == bytes([0x81, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
    for bad in (-1, 1.5, True, "5"):
        with pytest.raises(LabkitError):
            frame_size(bad, masked=False)


def test_the_handshake_answers_the_rfc_key_and_every_frame_byte_is_counted():
    hub, feed = Hub(), Feed(seed=1)
    with serve_websocket(hub) as server:
        raw = RawSocket(server.port)
        try:
            settle(lambda: server.component.connected == 1, "the socket to open")
            event = hub.publish(feed.make("tick", {"n": 1})).data
            first, payload = raw.frame()
            raw.send(RFC_MASKED_HELLO)
            ack = raw.frame()
            raw.send(masked(0x8, struct.pack("!H", 1000)))
            close = raw.frame()
            end = raw.frame()
        finally:
            raw.close()
        settle(lambda: server.trace.count("disconnect") == 1, "the disconnect")
    assert raw.status == 101 and raw.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
    assert first == 0x81  # FIN, text
    assert json.loads(payload) == {"id": 1, "data": event.to_dict()}
    assert ack[0] == 0x81 and json.loads(ack[1]) == {"ack": 1, "echo": "Hello"}
    assert close == (0x88, struct.pack("!H", 1000)) and end is None
    [record] = server.trace.records(kind="disconnect")
    assert record.bytes == raw.received + raw.sent  # what the raw socket saw, both ways
    assert f"sent {raw.received} bytes in 3 frames" in record.detail
    assert f"received {raw.sent} bytes in 2 frames" in record.detail
    assert record.client == "raw" and record.events == 1 and "code 1000" in record.detail
    upgrade = server.trace.records(kind="response")[0]
    assert upgrade.status == 101 and upgrade.bytes == len(raw.head) + 4


def test_each_item_is_encoded_once_whatever_the_number_of_sockets(monkeypatch):
    encoded = []
    fake = types.SimpleNamespace(dumps=lambda *a, **k: encoded.append(a) or json.dumps(*a, **k),
                                 loads=json.loads)
    monkeypatch.setattr(clients_module, "json", fake)
    hub = Hub()
    with serve_websocket(hub) as server:
        sockets = [WebSocketClient(server.endpoint_url, name=f"c{n}").start() for n in range(5)]
        try:
            settle(lambda: server.component.connected == 5, "five sockets")
            items = [hub.publish(f"event {n}") for n in range(4)]
            for client in sockets:
                assert [r.data for r in client.wait_for(4)] == [f"event {n}" for n in range(4)]
        finally:
            for client in sockets:
                client.stop()
    assert len(encoded) == 4  # once per item, not once per item and socket
    for item in items:
        payload = json.dumps({"id": item.id, "data": item.data}).encode()
        assert item.cache["json"] == payload and item.cache["ws"] == text_frame(payload)


# -- delivery ----------------------------------------------------------------------------


def test_twenty_clients_each_get_every_event_in_order_with_connects_and_frame_bytes():
    hub, feed = Hub(), Feed(seed=2)
    with serve_websocket(hub) as server:
        sockets = [WebSocketClient(server.endpoint_url, name=f"ws-{n:02d}", trace=server.trace)
                   for n in range(20)]
        for client in sockets:
            client.start()
        try:
            settle(lambda: server.component.connected == 20, "twenty sockets")
            events = [hub.publish(feed.make("tick", {"n": n})).data for n in range(10)]
            for client in sockets:
                got = client.wait_for(10)
                assert [r.id for r in got] == list(range(1, 11))
                assert [r.data for r in got] == events
        finally:
            for client in sockets:
                client.stop()
        settle(lambda: server.trace.count("disconnect") == 20, "twenty disconnects")
    trace = server.trace
    counts = trace.counts()["websocket"]
    assert counts["request"] == counts["connect"] == counts["disconnect"] == 20
    assert counts["event"] == 200
    assert trace.count("response") == 20  # the 101s; frames are not HTTP responses
    for record in trace.records(kind="disconnect"):
        item_frames = sum(frame_size(len(json.dumps({"id": e.seq, "data": e.to_dict()})),
                                     masked=False) for e in events)
        close_frames = frame_size(2, masked=True) + frame_size(2, masked=False)
        assert record.bytes == item_frames + close_frames
        assert record.events == 10 and "the client closed (code 1000)" in record.detail
    assert all(0 <= r.latency < 5 for r in trace.records(kind="event"))


def test_a_client_resumes_with_after_and_hears_of_items_it_can_no_longer_get():
    hub = Hub(history=3)
    for n in range(1, 7):
        hub.publish(f"news {n}")  # ids 4..6 are kept
    with serve_websocket(hub) as server:
        with WebSocketClient(server.endpoint_url, name="late", after=4,
                             trace=server.trace) as caught_up, \
                WebSocketClient(server.endpoint_url, name="lost", after=1,
                                trace=server.trace) as behind:
            hub.publish("news 7")
            assert [r.data for r in caught_up.wait_for(3)] == ["news 5", "news 6", "news 7"]
            assert [r.id for r in behind.wait_for(4)] == [4, 5, 6, 7]
        settle(lambda: server.trace.count("disconnect") == 2, "two disconnects")
    sent = {r.client: r.events for r in server.trace.records(kind="disconnect")}
    assert sent == {"late": 3, "lost": 4}  # each item once, none twice
    connects = {r.client: r.detail for r in server.trace.records(kind="connect")}
    assert connects == {"late": "resuming after id 4", "lost": "resuming after id 1"}
    [drop] = server.trace.records(kind="drop")
    assert drop.client == "lost" and drop.detail.startswith("2 items left")


def read_items(raw, count):
    """Read frames until item ``count`` arrived; return (item ids, missed notices)."""
    ids, missed = [], []
    for _ in range(count + 10):
        message = json.loads(raw.frame()[1])
        if "missed" in message:
            missed.append(message)
        else:
            ids.append(message["id"])
        if ids and ids[-1] == count:
            break
    return ids, missed


@pytest.mark.parametrize("history", [1000, 60])
def test_a_client_that_stops_reading_costs_one_write_and_catches_up_after(history):
    hub = Hub(history=history)
    big = "x" * 50_000
    with serve_websocket(hub) as server:
        raw = RawSocket(server.port)
        try:
            settle(lambda: server.component.connected == 1, "the socket to open")
            for n in range(300):  # 15 MB, more than the kernel buffers between us
                hub.publish(f"{n} {big}")
            [stuck] = server.component.open_sockets()
            assert stuck.waiting and stuck.written_id < 300
            ids, missed = read_items(raw, 300)
        finally:
            raw.close()
    assert ids == sorted(set(ids)) and ids[-1] == 300  # in order, none twice
    if history >= 300:
        assert ids == list(range(1, 301)) and missed == []
    else:  # what left the history is announced, the rest arrives
        assert missed and len(ids) + sum(m["missed"] for m in missed) == 300


def test_the_socket_is_two_way_text_gets_an_echo_binary_a_refusal():
    with serve_websocket(Hub()) as server:
        with WebSocketClient(server.endpoint_url, name="talker") as client:
            first = client.send("hello")
            second = client.send('{"json": "too"}')
        raw = RawSocket(server.port)
        try:
            raw.send(masked(0x2, b"\x00\x01binary"))
            refused = json.loads(raw.frame()[1])
            raw.send(masked(0x1, b"still open?"))
            echoed = json.loads(raw.frame()[1])
        finally:
            raw.close()
    assert first == {"ack": 1, "echo": "hello"}
    assert second == {"ack": 2, "echo": '{"json": "too"}'}
    assert client.replies == [first, second]
    assert refused["ack"] == 1 and refused["reason"] == "binary"
    assert echoed == {"ack": 2, "echo": "still open?"}


def test_garbage_and_oversized_messages_close_that_socket_only():
    hub = Hub()
    with serve_websocket(hub, max_message=1000) as server:
        with WebSocketClient(server.endpoint_url, name="good", reconnect=None) as good:
            bad_utf8 = RawSocket(server.port)
            too_big = RawSocket(server.port)
            try:
                settle(lambda: server.component.connected == 3, "three sockets")
                bad_utf8.send(masked(0x1, b"\xff\xfe not utf-8"))
                too_big.send(masked(0x1, b"x" * 2000))
                assert bad_utf8.frame() is None  # cut without a word
                closing = too_big.frame()
                assert too_big.frame() is None
            finally:
                bad_utf8.close()
                too_big.close()
            hub.publish("the good one still hears")
            assert [r.data for r in good.wait_for(1)] == ["the good one still hears"]
            assert good.send("and talks") == {"ack": 1, "echo": "and talks"}
    assert closing[0] == 0x88 and struct.unpack("!H", closing[1][:2])[0] == 1009


def test_requests_that_cannot_open_a_socket_are_refused_in_json_before_any_upgrade():
    hub = Hub()
    hub.publish("x")
    with serve_websocket(hub) as server:
        plain = requests.get(server.endpoint_url, timeout=5)
        posted = requests.post(server.endpoint_url, data=b"x" * 10, timeout=5)
        old = RawSocket(server.port, version="8")
        future = RawSocket(server.port, query="?after=2")
        garbage = RawSocket(server.port, query="?after=-1")
        with_body = raw_http(server.port, (
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n"
            f"Content-Length: 100000\r\n\r\nabc").encode())
        for raw in (old, future, garbage):
            raw.close()
        refused = WebSocketClient(server.endpoint_url, name="refused", after=5).start()
        try:
            with pytest.raises(LabkitError, match="400"):
                refused.wait_for(1)
        finally:
            refused.stop()
        with WebSocketClient(server.endpoint_url, name="fine", after=0) as fine:
            assert [r.data for r in fine.wait_for(1)] == ["x"]
    assert plain.status_code == 400 and plain.json()["reason"] == "not_websocket"
    assert posted.status_code == 405 and posted.headers["Allow"] == "GET"
    assert old.status == 426 and old.headers["Sec-WebSocket-Version"] == "13"
    for raw in (future, garbage):
        assert raw.status == 400 and b'"bad_cursor"' in raw.buffer
    assert with_body.startswith(b"HTTP/1.1 400 ") and b'"reason": "body"' in with_body
    assert "400" in refused.failure and "future" in refused.failure
    assert server.trace.count("connect") == 1  # only "fine"


# -- stopping and reconnecting -------------------------------------------------------------


def test_stop_closes_every_socket_with_going_away_and_leaves_none_open():
    hub = Hub()
    server = serve_websocket(hub)
    sockets = [WebSocketClient(server.endpoint_url, name=f"c{n}", reconnect=None).start()
               for n in range(5)]
    try:
        settle(lambda: server.component.connected == 5, "five sockets")
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        settle(lambda: not any(client.running for client in sockets), "the clients to end")
    finally:
        for client in sockets:
            client.stop()
    assert took < 3.0
    assert server.component.connected == 0 and not hub.closed
    assert all(client.ended == ["the socket closed with code 1001 (the server stopped)"]
               for client in sockets)
    leaving = server.trace.records(kind="disconnect")
    assert len(leaving) == 5
    assert all(r.detail.startswith("the server stopped (code 1001)") for r in leaving)
    reason = len("the server stopped".encode())
    for record in leaving:  # our close (code + reason) and the client's answer (code)
        assert f"sent {frame_size(2 + reason, masked=False)} bytes in 1 frames" in record.detail


def test_a_client_reconnects_after_a_restart_with_its_cursor_and_misses_nothing():
    hub, feed = Hub(), Feed(seed=3)
    component = WebSocketServer(hub)
    server = serve_websocket(component)
    port = server.port
    client = WebSocketClient(server.endpoint_url, name="loyal", trace=server.trace,
                             reconnect=0.1)
    try:
        with client:
            before = [hub.publish(feed.make()).data for _ in range(3)]
            client.wait_for(3)
            server.stop()
            settle(lambda: any("could not connect" in e for e in client.errors), "a refusal")
            during = [hub.publish(feed.make()).data for _ in range(3)]
            server = serve_websocket(component, port=port, trace=server.trace)
            client.wait_for(6, timeout=10)
            after = [hub.publish(feed.make()).data for _ in range(2)]
            got = client.wait_for(8)
    finally:
        server.stop()
    assert [r.data for r in got] == before + during + after
    assert len(client.opened) == 2
    resumed = [r.detail for r in server.trace.records(kind="connect")]
    assert resumed == ["from now after id 0", "resuming after id 3"]
    assert server.trace.records(kind="retry", client="loyal")


def test_client_and_server_arguments_are_checked():
    for url in ("ftp://127.0.0.1/ws", "ws:///nohost"):
        with pytest.raises(LabkitError):
            WebSocketClient(url)
    for bad in ({"reconnect": -1}, {"after": -1}, {"name": ""}):
        with pytest.raises(LabkitError):
            WebSocketClient("ws://127.0.0.1:1/ws", **bad)
    for bad in ({"max_message": 0}, {"path": "ws"}):
        with pytest.raises(LabkitError):
            WebSocketServer(**bad)
    idle = WebSocketClient("ws://127.0.0.1:1/ws")
    with pytest.raises(LabkitError, match="no open socket"):
        idle.send("anyone?")
