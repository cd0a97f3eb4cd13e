"""Edges of labkit.webhooks.receiver that its mutation run showed no test pinned.

Over real loopback sockets (``serve_receiver``; raw requests through
``helpers.raw_http`` where a client library would tidy the request up): the
``max_body`` boundary, declared and chunked; each media type family; strict
form parsing; the fields kept of accepted and refused requests and of the
trace; the answers' headers; and the kept rows' equality, hash and repr.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import requests

from helpers import raw_http
from labkit import lab
from labkit.errors import RejectedError
from labkit.feed import Feed
from labkit.webhooks import receiver as receiver_module
from labkit.webhooks.receiver import Delivery, Rejection, WebhookReceiver, serve_receiver

LIMIT = 64


def post(url: str, body: bytes, content_type: str | None = "application/json",
         **headers: str) -> requests.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(url, data=body, timeout=5, headers=headers)


def json_body(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    body = b'{"p": "' + b"x" * (size - 9) + b'"}'
    assert len(body) == size
    return body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def head_of(answer: bytes) -> dict[str, str]:
    lines = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


# -- the max_body boundary ---------------------------------------------------------------


def test_a_declared_body_of_exactly_max_body_is_accepted_and_one_more_refused():
    with serve_receiver(max_body=LIMIT) as server:
        receiver = server.component
        assert post(server.endpoint_url, json_body(LIMIT)).status_code == 200
        assert post(server.endpoint_url, json_body(LIMIT + 1)).status_code == 413
    assert [d.body for d in receiver.deliveries] == [json_body(LIMIT)]
    (refused,) = receiver.rejections
    assert (refused.status, refused.reason) == (413, "too_large")
    assert refused.message == f"body of {LIMIT + 1} bytes exceeds the {LIMIT}-byte limit"


def chunked(port: int, body: bytes) -> bytes:
    head = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    pieces = [body[:10], body[10:]]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return raw_http(port, head + wire)


def test_a_chunked_body_of_exactly_max_body_is_accepted_and_one_more_refused():
    with serve_receiver(max_body=LIMIT) as server:
        receiver = server.component
        assert status_of(chunked(server.port, json_body(LIMIT))) == 200
        assert status_of(chunked(server.port, json_body(LIMIT + 1))) == 413
    assert [d.body for d in receiver.deliveries] == [json_body(LIMIT)]
    assert [r.status for r in receiver.rejections] == [413]


def test_a_declared_overflow_sent_anyway_is_answered_once():
    body = json_body(LIMIT + 1)
    request = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with serve_receiver(max_body=LIMIT) as server:
        receiver = server.component
        answer = raw_http(server.port, request)
    assert answer.count(b"HTTP/1.1 ") == 1 and status_of(answer) == 413
    assert head_of(answer)["connection"].lower() == "close"
    assert "allow" not in head_of(answer)
    assert len(receiver.rejections) == 1 and receiver.deliveries == []


# -- media types ----------------------------------------------------------------------


@pytest.mark.parametrize("content_type, body", [
    ("application/json", b'{"a": 1}'),
    ("application/x+json", b'{"a": 1}'),
    ("application/vnd.example+json; charset=utf-8", b'{"a": 1}'),
    ("APPLICATION/JSON; CHARSET=UTF-8", b'{"a": 1}'),
    ("application/xml", b"<a>1</a>"),
    ("text/xml; charset=utf-8", b"<a>1</a>"),
    ("application/atom+xml", b"<a>1</a>"),
    ("Application/RSS+XML", b"<a>1</a>"),
    ("application/x-www-form-urlencoded", b"a=1"),
    ("application/x-www-form-urlencoded; charset=UTF-8", b"a=1"),
])
def test_each_media_type_family_is_accepted(content_type, body):
    with serve_receiver() as server:
        assert post(server.endpoint_url, body, content_type).status_code == 200
        (delivery,) = server.component.deliveries
    assert delivery.content_type == content_type
    payload = delivery.payload
    assert (payload["a"] if isinstance(payload, dict) else payload.text) in (1, "1")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/jsonx",
                                          "application/xml-dtd", "xml"])
def test_other_media_types_are_refused_with_415(content_type):
    with serve_receiver() as server:
        assert post(server.endpoint_url, b'{"a": 1}', content_type).status_code == 415
        (refused,) = server.component.rejections
    assert refused.reason == "unsupported_type"
    shown = "" if content_type is None else content_type
    assert refused.message == f"content type {shown!r} is not JSON, form data or XML"


@pytest.mark.parametrize("body", [b"a=1&b", b"a=1&&b=2", b"novalue"])
def test_a_malformed_form_is_refused_with_400(body):
    with serve_receiver() as server:
        answer = post(server.endpoint_url, body, "application/x-www-form-urlencoded")
        (refused,) = server.component.rejections
    assert answer.status_code == 400 and answer.text == "malformed\n"
    assert (refused.status, refused.reason) == (400, "malformed")
    assert refused.message.startswith("the body is not valid form data: ")


def test_a_blank_form_value_is_kept():
    with serve_receiver() as server:
        post(server.endpoint_url, b"a=&b=2", "application/x-www-form-urlencoded")
        (delivery,) = server.component.deliveries
    assert delivery.payload == {"a": "", "b": "2"}


def test_the_checked_parser_refuses_with_a_400_rejection():
    # The receiver builds its parsers once, at import: called here, the wrapper
    # is reached by mutation testing, which the import alone is not.
    parse = receiver_module._checked(receiver_module._parse_json, "JSON")
    assert parse(b'{"a": [1]}') == {"a": [1]}
    with pytest.raises(RejectedError) as caught:
        parse(b"{")
    assert (caught.value.reason, caught.value.status) == ("malformed", 400)
    assert str(caught.value).startswith("the body is not valid JSON: Expecting")


# -- what is kept of a request ----------------------------------------------------------


class UrlWitness:
    """A verifier that lets everything through and remembers the URLs it saw."""

    def __init__(self):
        self.urls = []

    def verify(self, headers, body, *, url, remote_ip):
        self.urls.append(url)


def test_a_request_without_host_is_verified_against_the_loopback_url():
    witness = UrlWitness()
    body = b'{"id": "d1"}'
    request = (b"POST /webhook?x=1 HTTP/1.0\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with serve_receiver(WebhookReceiver([witness])) as server:
        assert status_of(raw_http(server.port, request)) == 200
        post(server.endpoint_url, body)
    assert witness.urls == ["http://127.0.0.1/webhook?x=1", server.endpoint_url]


def test_repeated_headers_are_joined_with_commas_and_names_lower_cased():
    body = b'{"id": "d1"}'
    request = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"X-Tag: a\r\nX-TAG: b\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
               % (len(body), body))
    with serve_receiver() as server:
        assert status_of(raw_http(server.port, request)) == 200
        (delivery,) = server.component.deliveries
    assert delivery.headers["x-tag"] == "a,b"
    assert delivery.headers["content-type"] == "application/json"


def test_accepted_and_refused_requests_keep_when_and_from_where():
    seen = []
    before = time.monotonic()
    with serve_receiver(process=seen.append) as server:
        post(server.endpoint_url, b'{"id": "d1"}')
        post(server.endpoint_url, b"{", "application/json")
        receiver = server.component
    after = time.monotonic()
    (delivery,), (refused,) = receiver.deliveries, receiver.rejections
    for kept in (delivery, refused, seen[0]):
        assert isinstance(kept.received, float) and before <= kept.received <= after
        assert kept.remote_ip == "127.0.0.1"
        assert kept.headers["content-type"] == "application/json"
    assert seen[0].headers == delivery.headers and seen[0] == delivery


def test_the_trace_names_the_sender_and_the_bytes_of_a_feed_event():
    feed = Feed(seed=3)
    events = [feed.make("push", {}), feed.make("push", {})]
    bodies = [json.dumps({"id": e.id}).encode() for e in events]
    with serve_receiver(feed=feed) as plain, \
            serve_receiver(feed=feed, process=lambda delivery: None) as processing:
        for server, body in ((plain, bodies[0]), (processing, bodies[1] + b"  ")):
            assert post(server.endpoint_url, body, **{"X-Labkit-Client": "bob"}).status_code == 200
        records = [s.trace.records(kind="event") for s in (plain, processing)]
    assert [len(r) for r in records] == [1, 1]
    assert (records[0][0].bytes, records[0][0].detail) == (len(bodies[0]), "from bob")
    assert (records[1][0].bytes, records[1][0].detail) == (len(bodies[1]) + 2, "from bob")


def test_refusals_before_the_body_explain_themselves():
    with serve_receiver() as server:
        wrong_path = raw_http(server.port, b"POST /nope HTTP/1.1\r\nHost: h\r\n"
                                           b"Content-Length: 2\r\n\r\n{}")
        head = raw_http(server.port, b"HEAD /webhook HTTP/1.1\r\nHost: h\r\n\r\n")
        receiver = server.component
    assert status_of(wrong_path) == 404
    assert "allow" not in head_of(wrong_path)
    assert head_of(wrong_path)["connection"].lower() == "close"
    assert status_of(head) == 405 and head_of(head)["allow"] == "POST"
    assert head.endswith(b"\r\n\r\n") and head_of(head)["content-length"] == "7"
    assert [r.message for r in receiver.rejections] == [
        "nothing here: webhooks go to /webhook", "webhooks are POSTed, not sent with HEAD"]


def test_a_fault_is_recorded_with_its_reason():
    with serve_receiver(faults=lambda delivery: (429, {"Retry-After": "2"})) as server:
        answer = post(server.endpoint_url, b'{"id": "d1"}')
        (refused,) = server.component.rejections
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "2")
    assert (refused.status, refused.reason, refused.message) == (
        429, "fault", "answered by the faults hook")


def test_no_task_outlives_its_delivery():
    async def process(delivery):
        pass

    with serve_receiver(process=process) as server:
        receiver = server.component
        for n in range(3):
            assert post(server.endpoint_url, b'{"id": "d%d"}' % n).status_code == 200
        assert lab.run(_tasks_of(receiver)) == set()


async def _tasks_of(receiver):
    """The receiver's pending tasks, once done callbacks had 100 loop turns to run."""
    for _ in range(100):
        if not receiver._tasks:
            break
        await asyncio.sleep(0.01)
    return set(receiver._tasks)


def test_wait_for_says_what_arrived_within_its_default_five_seconds():
    receiver = WebhookReceiver()
    with pytest.raises(TimeoutError) as caught:
        receiver.wait_for(1)
    assert "only 0 of 1 deliveries reached /webhook within 5.0 s, and 0 requests were " \
           "rejected: check the sender's URL" in str(caught.value)


def test_wait_for_names_the_last_refusal():
    with serve_receiver() as server:
        post(server.endpoint_url, b"x", "text/plain")
        with pytest.raises(TimeoutError) as caught:
            server.component.wait_for(1, timeout=0.2)
    assert "and 1 requests were rejected (last: 415 unsupported_type): check" in str(caught.value)


def test_serve_receiver_serves_on_the_port_asked_for():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with serve_receiver(port=port) as server:
        assert server.port == port
        assert post(server.endpoint_url, b"{}").status_code == 200
    with serve_receiver() as server:
        assert server.port not in (0, 1)


# -- the kept rows ----------------------------------------------------------------------


def delivery(**changes) -> Delivery:
    fields = dict(id="d1", event_type="push", content_type="application/json",
                  headers={"content-type": "application/json", "x-a": "1"},
                  body=b'{"id": "d1"}', payload={"id": "d1"}, received=1.5,
                  remote_ip="127.0.0.1")
    return Delivery(**{**fields, **changes})


def rejection(**changes) -> Rejection:
    fields = dict(status=401, reason="mismatch", message="the signature does not match",
                  received=2.5, remote_ip="127.0.0.1", headers={"x-a": "1"})
    return Rejection(**{**fields, **changes})


def test_kept_rows_are_equal_and_hashed_by_what_was_received():
    assert delivery() == delivery() and hash(delivery()) == hash(delivery())
    assert delivery() != delivery(body=b'{"id": "d2"}')
    assert hash(delivery()) != hash(delivery(id="d2"))
    assert len({delivery(), delivery(), delivery(id="d2")}) == 2
    assert rejection() == rejection() and rejection() != rejection(status=403)
    assert delivery() != rejection() and rejection() != delivery()
    assert delivery().headers == {"content-type": "application/json", "x-a": "1"}
    assert rejection().headers == {"x-a": "1"}


def test_kept_rows_read_back_from_the_receiver_equal_what_was_processed():
    seen = []
    with serve_receiver(process=seen.append) as server:
        post(server.endpoint_url, b'{"id": "d1", "type": "push"}')
        first, again = server.component.deliveries, server.component.deliveries
    assert first == again == seen and first[0] is not again[0]
    assert hash(first[0]) == hash(seen[0])


def test_kept_rows_have_a_repr_naming_their_fields():
    assert repr(delivery()) == ("Delivery(id='d1', event_type='push', "
                                "content_type='application/json', received=1.5, "
                                "remote_ip='127.0.0.1')")
    assert repr(rejection()) == ("Rejection(status=401, reason='mismatch', "
                                 "message='the signature does not match', received=2.5, "
                                 "remote_ip='127.0.0.1')")
