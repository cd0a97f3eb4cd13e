"""The push service over real loopback sockets: its endpoints and every refusal.

Messages come from pywebpush (through ``AppServer``) or, for requests a
correct library never makes, from ``requests`` with a body pywebpush
encrypted and a token py_vapid signed.
"""

import base64
import json
import os
import socket
import struct
import time

import pytest
import requests
import tornado.websocket
from py_vapid import Vapid02
from pywebpush import WebPusher

from labkit import lab
from labkit.push.webpush import AppServer, Device, DeviceError, protocol, serve_push_service
from labkit.push.webpush.crypto import HEADER_SIZE, b64url_encode, decrypt, public_key_bytes
from labkit.push.websocket import frame_size
from helpers import settle
from test_webpush_vapid import hand_made


@pytest.fixture
def server():
    with serve_push_service() as server:
        yield server


@pytest.fixture
def app():
    with AppServer(name="app") as app:
        yield app


@pytest.fixture
def device(server, app):
    device = Device(server.url, app.application_server_key, trace=server.trace)
    app.add(device.subscribe())
    yield device
    device.close()


def raw_push(subscription, vapid, *, data=b"hello", headers=None, claims=None, drop=()):
    """POST a push message as pywebpush would, with ``headers`` changed or dropped."""
    endpoint = subscription["endpoint"]
    body = WebPusher(subscription).encode(data)["body"] if data else b""
    claims = {"aud": endpoint.split("/p/")[0], "sub": "mailto:t@example.com",
              "exp": int(time.time()) + 600, **(claims or {})}
    sent = {"TTL": "60", "Content-Encoding": "aes128gcm", **vapid.sign(claims),
            **(headers or {})}
    for name in drop:
        del sent[name]
    return requests.post(endpoint, data=body, headers=sent, timeout=5)


def token_params(authorization):
    t, k = authorization.split(" ", 1)[1].split(",")
    return t.strip()[2:], k.strip()[2:]


def other_key():
    vapid = Vapid02()
    vapid.generate_keys()
    return vapid


def bad_signature(sub, app):
    t, _ = token_params(other_key().sign({"aud": sub["endpoint"].split("/p/")[0],
                                          "sub": "mailto:x@example.com"})["Authorization"])
    k = b64url_encode(public_key_bytes(app.vapid.public_key))
    return raw_push(sub, app.vapid, headers={"Authorization": f"vapid t={t}, k={k}"})


def bad_alg(sub, app):
    claims = {"aud": sub["endpoint"].split("/p/")[0], "exp": int(time.time()) + 60}
    header = hand_made(app.vapid, {"typ": "JWT", "alg": "HS256"}, claims)
    return raw_push(sub, app.vapid, headers={"Authorization": header})


def malformed(sub, app):
    k = b64url_encode(public_key_bytes(app.vapid.public_key))
    return raw_push(sub, app.vapid, headers={"Authorization": f"vapid t=not-a-jwt, k={k}"})


def body_without_record(sub, app):
    full = WebPusher(sub).encode(b"hello")["body"]
    return requests.post(sub["endpoint"], data=full[:HEADER_SIZE], timeout=5, headers={
        "TTL": "60", "Content-Encoding": "aes128gcm",
        **app.vapid.sign({"aud": sub["endpoint"].split("/p/")[0],
                          "sub": "mailto:t@example.com"})})


REFUSALS = {
    "no TTL": (lambda s, a: raw_push(s, a.vapid, drop=("TTL",)), 400, "missing_ttl"),
    "TTL not a whole number": (lambda s, a: raw_push(s, a.vapid, headers={"TTL": "1.5"}),
                               400, "bad_ttl"),
    "unknown urgency": (lambda s, a: raw_push(s, a.vapid, headers={"Urgency": "urgent"}),
                        400, "bad_urgency"),
    "topic too long": (lambda s, a: raw_push(s, a.vapid, headers={"Topic": "t" * 33}),
                       400, "bad_topic"),
    "topic outside base64url": (lambda s, a: raw_push(s, a.vapid, headers={"Topic": "a.b"}),
                                400, "bad_topic"),
    "no Authorization": (lambda s, a: raw_push(s, a.vapid, drop=("Authorization",)),
                         401, "missing"),
    "draft WebPush scheme": (lambda s, a: raw_push(s, a.vapid, headers={
        "Authorization": "WebPush abc.def.ghi"}), 401, "wrong_scheme"),
    "malformed token": (malformed, 403, "malformed"),
    "bad signature": (bad_signature, 403, "bad_signature"),
    "alg not ES256": (bad_alg, 403, "bad_alg"),
    "wrong aud": (lambda s, a: raw_push(s, a.vapid, claims={"aud": "http://127.0.0.1:1"}),
                  403, "wrong_audience"),
    "exp in the past": (lambda s, a: raw_push(s, a.vapid, claims={"exp": int(time.time()) - 5}),
                        403, "expired"),
    "exp over 24 h ahead": (lambda s, a: raw_push(s, a.vapid, claims={
        "exp": int(time.time()) + 25 * 3600}), 403, "too_far"),
    "another server's key": (lambda s, a: raw_push(s, other_key()), 403, "wrong_key"),
    "body over 4096 bytes": (lambda s, a: raw_push(s, a.vapid, data=b"x" * 4000), 413,
                             "too_large"),
    "legacy aesgcm coding": (lambda s, a: raw_push(s, a.vapid, headers={
        "Content-Encoding": "aesgcm"}), 415, "bad_encoding"),
    "body too short for the header": (lambda s, a: requests.post(
        s["endpoint"], data=b"short", timeout=5, headers={
            "TTL": "5", "Content-Encoding": "aes128gcm",
            **a.vapid.sign({"aud": s["endpoint"].split("/p/")[0],
                            "sub": "mailto:t@example.com"})}), 400, "too_short"),
    "header without a record": (body_without_record, 400, "no_record"),
    "unknown push resource": (lambda s, a: raw_push(
        {**s, "endpoint": s["endpoint"].rsplit("/", 1)[0] + "/nope"}, a.vapid), 404,
        "no_subscription"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_has_its_status_and_reason_and_the_service_keeps_serving(
        case, server, app, device):
    make, status, reason = REFUSALS[case]
    response = make(device.subscription_info, app)
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason
    assert len(response.json()["error"]) > 20  # a sentence, not a code
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "vapid"
    records = server.trace.records(kind="response")
    assert any(r.status == status and r.detail.startswith(reason) for r in records), records
    assert app.send(device.subscription_info, "next one").status == 201
    assert [m.state for m in server.component.messages()][-1] == "stored"


def test_the_app_server_reports_a_refusal_without_raising_or_forgetting(server, app, device):
    result = app.send(device.subscription_info, "hi", topic="has space")
    assert result.status == 400 and not result.ok
    assert "Topic" in result.error
    assert app.subscriptions == [device.subscription_info]
    assert app.send(device.subscription_info, "hi", urgency="high", topic="ok").ok


def test_too_many_waiting_messages_is_429_until_the_device_takes_them(app):
    with serve_push_service(max_pending=2) as server:
        device = Device(server.url, app.application_server_key)
        sub = device.subscribe()
        assert [app.send(sub, f"m{i}").status for i in range(3)] == [201, 201, 429]
        device.online()
        device.wait_for(2)
        assert app.send(sub, "m3").ok
        device.close()


def test_a_ttl_beyond_the_services_limit_is_cut_and_the_answer_says_so(app):
    with serve_push_service(max_ttl=100) as server:
        sub = Device(server.url, app.application_server_key).subscribe()
        result = app.send(sub, "long", ttl=10_000)
        assert (result.status, result.ttl) == (201, 100)
        assert server.component.message(result.location).ttl == 100


# -- the subscription endpoints ----------------------------------------------------------


def test_subscribe_answers_201_with_the_subscription_and_its_push_resource(server, app):
    response = requests.post(server.url + "/subscribe", timeout=5,
                             json={"vapid": app.application_server_key})
    assert response.status_code == 201
    resource, link = response.headers["Location"], response.headers["Link"]
    assert resource.startswith(server.url + "/s/")
    endpoint = link[1:link.index(">")]
    assert endpoint.startswith(server.url + "/p/") and 'rel="urn:ietf:params:push"' in link
    assert resource.rsplit("/", 1)[1] != endpoint.rsplit("/", 1)[1]  # two capabilities


@pytest.mark.parametrize("body", [b"", b"{}", b'{"vapid": "AAAA"}', b"not json", b"[1]",
                                  b'{"vapid": 5}'])
def test_subscribe_needs_an_application_server_key(server, body):
    response = requests.post(server.url + "/subscribe", data=body, timeout=5)
    assert (response.status_code, response.json()["reason"]) == (400, "bad_key")


def test_unknown_routes_and_methods_answer_json(server, device):
    response = requests.get(server.url + "/nothing", timeout=5)
    assert response.status_code == 404 and "/subscribe" in response.json()["error"]
    response = requests.post(device.subscription_url, timeout=5)
    assert response.status_code == 405 and "DELETE" in response.headers["Allow"]
    response = requests.get(device.subscription_info["endpoint"], timeout=5)
    assert response.status_code == 405


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def test_the_connection_refuses_unknown_and_gone_subscriptions_and_a_bad_urgency(server,
                                                                                  device):
    response = requests.get(server.url + "/s/nope", headers=UPGRADE, timeout=5)
    assert (response.status_code, response.json()["reason"]) == (404, "no_subscription")
    response = requests.get(device.subscription_url, headers={**UPGRADE, "Urgency": "urgent"},
                            timeout=5)
    assert (response.status_code, response.json()["reason"]) == (400, "bad_urgency")
    device.urgency = "urgent"  # skipping the device's own check, the service refuses it
    with pytest.raises(DeviceError, match="Urgency must be one of"):
        device.online()
    device.accept("high")
    device.online()
    assert device.is_online
    resource = device.subscription_url
    device.unsubscribe()
    assert not device.is_online
    response = requests.get(resource, headers=UPGRADE, timeout=5)
    assert (response.status_code, response.json()["reason"]) == (410, "gone")


def test_unsubscribing_twice_answers_410_the_second_time(server, device):
    resource = device.subscription_url
    device.unsubscribe()
    response = requests.delete(resource, timeout=5)
    assert (response.status_code, response.json()["reason"]) == (410, "gone")


# -- what the service holds --------------------------------------------------------------


def test_the_service_stores_ciphertext_it_cannot_read(server, app, device):
    secret = "the launch code is 0000"
    result = app.send(device.subscription_info, secret)
    stored = server.component.message(result.location)
    assert secret.encode() not in stored.ciphertext
    assert decrypt(stored.ciphertext, device.keys) == secret.encode()
    assert (stored.state, stored.sender, stored.urgency) == ("stored", "mailto:lab@example.com",
                                                             "normal")
    assert stored.endpoint == device.subscription_info["endpoint"]
    assert len(stored.ciphertext) == result.body_bytes == HEADER_SIZE + len(secret) + 1 + 16


def test_a_push_without_payload_is_accepted_and_wakes_the_device(server, app, device):
    device.online()
    result = app.send(device.subscription_info, None)
    assert result.ok and result.body_bytes == 0
    push = device.wait_for(1)[0]
    assert push.data is None and push.ciphertext_bytes == 0


def upgrade(server, device):
    """A raw socket upgraded to ``device``'s connection at the service, the 101 read."""
    key = base64.b64encode(os.urandom(16)).decode()
    path = device.subscription_url[len(server.url):]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def recv_exactly(sock, size):
    data = b""
    for _ in range(100):
        if len(data) == size:
            break
        chunk = sock.recv(size - len(data))
        assert chunk, f"the connection ended after {len(data)} of {size} bytes"
        data += chunk
    return data


def read_frame(sock):
    """One whole frame from the service, (its bytes as they crossed the wire, its payload)."""
    head = recv_exactly(sock, 2)
    assert head[1] & 0x80 == 0, "a server's frames are not masked"
    length = head[1] & 0x7F
    if length >= 126:
        extra = recv_exactly(sock, 2 if length == 126 else 8)
        head, length = head + extra, int.from_bytes(extra, "big")
    payload = recv_exactly(sock, length)
    return head + payload, payload


def masked_frame(opcode, payload):
    """A whole frame as a client sends it (RFC 6455 5.2: FIN, masked), payload under 126 B."""
    mask = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + \
        bytes(b ^ mask[k % 4] for k, b in enumerate(payload))


def test_frame_bytes_match_what_a_raw_websocket_reads(server, app, device):
    with upgrade(server, device) as sock:
        result = app.send(device.subscription_info, "x" * 100)
        frame, payload = read_frame(sock)
    message = server.component.message(result.location)
    assert message.frame_bytes == len(frame) and len(payload) >= 126  # a 16-bit length
    assert b"x" * 100 not in payload


def test_the_disconnect_record_carries_every_frame_byte_both_ways(server, app, device):
    # counted on the device's side of a raw socket: each byte it read and wrote after the 101
    sent = received = 0
    with upgrade(server, device) as sock:
        results = [app.send(device.subscription_info, text) for text in ("hi", "x" * 200)]
        for _ in results:
            frame, payload = read_frame(sock)
            ack = masked_frame(0x1, protocol.ack_frame(json.loads(payload)["id"]).encode())
            sock.sendall(ack)
            received, sent = received + len(frame), sent + len(ack)
        for result in results:
            server.component.wait_for(result.location, "acked")
        garbage = masked_frame(0x1, b"garbage")
        sock.sendall(garbage)
        frame, payload = read_frame(sock)
        assert json.loads(payload)["type"] == "error"
        close = masked_frame(0x8, struct.pack("!H", 1000) + b"bye")
        sock.sendall(close)
        sent, received = sent + len(garbage) + len(close), received + len(frame)
        answer = b""
        for _ in range(100):  # the service's close frame, then the end of the connection
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert answer[0] == 0x88, "the service answered with a close frame"
        received += len(answer)
    settle(lambda: server.trace.count("disconnect") == 1, "the disconnect record")
    (record,) = server.trace.records(kind="disconnect")
    assert record.bytes == sent + received
    assert record.events == 2 and "the device closed it (code 1000)" in record.detail
    assert f"sent {received} bytes in 4 frames, received {sent} bytes in 4 frames" in \
        record.detail
    assert server.trace.bytes_total() == sum(r.bytes for r in server.trace.records()
                                             if r.kind in ("request", "response")) + record.bytes


def test_a_connected_device_has_its_frames_recorded_when_the_service_stops(app):
    server = serve_push_service()
    device = Device(server.url, app.application_server_key, trace=server.trace)
    try:
        app.add(device.subscribe())
        device.online()
        results = [app.send(device.subscription_info, f"update {k}") for k in range(3)]
        messages = [server.component.wait_for(r.location, "acked") for r in results]
        assert server.trace.count("disconnect") == 0, "connected: nothing recorded yet"
        server.stop()
        (record,) = server.trace.records(kind="disconnect")
    finally:
        server.stop()
        device.close()
    pushes = sum(m.frame_bytes for m in messages)
    acks = sum(frame_size(len(protocol.ack_frame(m.id)), masked=True) for m in messages)
    reason = b"the push service is stopping"  # 1001 and this; the device answers with 1001
    closes = frame_size(2 + len(reason), masked=False) + frame_size(2, masked=True)
    assert record.bytes == pushes + acks + closes and record.events == 3


def test_stopping_the_service_closes_the_device_connection(app):
    server = serve_push_service()
    device = Device(server.url, app.application_server_key, trace=server.trace)
    device.subscribe()
    assert server.component.connected == 0, "subscribed, not yet connected"
    device.online()
    assert server.component.connected == 1
    server.stop()
    for _ in range(200):  # bounded: the close handshake is on the lab loop
        if not device.is_online:
            break
        time.sleep(0.01)
    assert not device.is_online
    assert server.trace.count("disconnect") == 1
    assert server.component.connected == 0
    device.close()


async def read(conn):
    return await conn.read_message()


def test_bad_frames_from_a_device_get_an_error_frame_and_the_connection_goes_on(server, app,
                                                                                 device):
    async def converse():
        conn = await tornado.websocket.websocket_connect("ws" + device.subscription_url[4:])
        answers = []
        for frame in ("garbage", '{"type":"ack","id":"msg_999999"}',
                      '{"type":"push","id":"x","urgency":"high","data":""}', b"\x00binary"):
            conn.write_message(frame, binary=isinstance(frame, bytes))
            answers.append(json.loads(await conn.read_message()))
        return conn, answers

    conn, answers = lab.run(converse())
    assert [a["type"] for a in answers] == ["error"] * 4
    assert "JSON object" in answers[0]["error"] and "msg_999999" in answers[1]["error"]
    result = app.send(device.subscription_info, "still here")
    frame = json.loads(lab.run(read(conn)))
    assert (frame["type"], frame["id"]) == ("push", result.location.rsplit("/", 1)[1])
    lab.run(lambda: conn.close())


def test_a_newer_connection_replaces_the_older_and_gets_what_it_left_unacked(server, app,
                                                                             device):
    async def connect():
        return await tornado.websocket.websocket_connect("ws" + device.subscription_url[4:])

    first = lab.run(connect())
    result = app.send(device.subscription_info, "twice", ttl=60)
    assert json.loads(lab.run(read(first)))["type"] == "push"
    second = lab.run(connect())
    assert lab.run(read(first)) is None  # the service closed the older one
    lab.run(lambda: first.close())
    frame = json.loads(lab.run(read(second)))
    assert frame["id"] == result.location.rsplit("/", 1)[1]
    assert server.component.message(result.location).attempts == 2
    lab.run(lambda: second.write_message(protocol.ack_frame(frame["id"])))
    server.component.wait_for(result.location, "acked")
    lab.run(lambda: second.close(1000, "done"))
    settle(lambda: server.trace.count("disconnect") == 2, "both connections' disconnect")
    # each connection's frames are on its own record, the replaced one's too
    first_bytes, second_bytes = (r.bytes for r in server.trace.records(kind="disconnect"))
    push = server.component.message(result.location).frame_bytes
    ack = frame_size(len(protocol.ack_frame(frame["id"])), masked=True)
    replaced = b"replaced by a newer connection of the device"
    assert first_bytes == push + frame_size(2 + len(replaced), masked=False) + \
        frame_size(2, masked=True)
    assert second_bytes == push + ack + frame_size(2 + len(b"done"), masked=True) + \
        frame_size(2, masked=False)
    assert server.trace.count("connect") == 2
