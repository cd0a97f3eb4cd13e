"""How the trace and the webhook receiver keep what they record: exactly, safely, GC-free.

Both keep their records as flat tuples in :class:`labkit.trace.Rows`, which
CPython's cyclic garbage collector stops tracking, so that a full collection
does not grow with what a lesson has recorded (``bench/gc_pauses.py``). These
tests check that nothing is lost or changed on the way (every field of every
kind of value, across the chunk boundaries), that threads can add and read at
once, that the memory per record stays bounded, and that 100,000 records or
20,000 deliveries add no tracked object each: a list of named tuples or of
dataclasses with dicts, as they were kept before, fails that last test.
"""

from __future__ import annotations

import gc
import json
import math
import threading
import time
import tracemalloc
import xml.etree.ElementTree as ElementTree
from types import SimpleNamespace

import pytest
import requests

from helpers import raw_http
from labkit.trace import Record, Rows, Trace
from labkit.webhooks.receiver import Delivery, Rejection, WebhookReceiver, serve_receiver
from labkit.webhooks.signatures import GitHubSignature

LONG = "détail " * 20_000 + "☃"
CHUNK = 1024


# -- Rows ------------------------------------------------------------------------------------


def test_rows_keep_order_and_count_across_chunk_boundaries():
    rows = Rows()
    for n in range(3 * CHUNK + 5):
        rows.append((n, str(n)))
        assert len(rows) == n + 1
    snapshot = rows.snapshot()
    assert snapshot == [(n, str(n)) for n in range(3 * CHUNK + 5)]
    snapshot.append("mine")                            # a snapshot is the reader's own list
    assert len(rows) == 3 * CHUNK + 5
    rows.clear()
    assert len(rows) == 0 and rows.snapshot() == []
    rows.append(("again",))
    assert rows.snapshot() == [("again",)]


def test_rows_of_atoms_are_not_tracked_and_a_row_holding_a_list_is_kept_as_it_is():
    rows = Rows()
    mutable = ["can be part of a cycle"]
    for n in range(2 * CHUNK):
        rows.append(("x", n, n / 3, None, b"raw"))
    rows.append(("odd one", mutable))
    gc.collect()
    gc.collect()
    kept = rows.snapshot()
    assert not any(gc.is_tracked(row) for row in kept[:-1])
    assert gc.is_tracked(kept[-1]) and kept[-1][1] is mutable


@pytest.mark.parametrize("limit", [1, 3, 1000, CHUNK, CHUNK + 1, 2 * CHUNK, 2500])
def test_a_limit_keeps_exactly_the_most_recent_rows_and_counts_the_rest(limit):
    rows = Rows(limit)
    for n in range(5 * CHUNK + 7):
        rows.append((n,))
        kept = min(n + 1, limit)
        assert len(rows) == kept and rows.total == n + 1 and rows.dropped == n + 1 - kept
        if n % 97 == 0 or n == 5 * CHUNK + 6:
            assert rows.snapshot() == [(m,) for m in range(n + 1 - kept, n + 1)]
    rows.clear()
    assert (len(rows), rows.total, rows.dropped, rows.snapshot()) == (0, 0, 0, [])


@pytest.mark.parametrize("limit", [1, 3, 15, 16, 800, 1000, 8192, 9000])
def test_a_limit_holds_at_most_the_limit_and_a_chunk_of_an_eighth_of_it(limit):
    chunk = max(1, min(CHUNK, limit // 8))
    rows, most = Rows(limit), 0
    for n in range(3 * limit + 2 * CHUNK):
        rows.append((n,))
        most = max(most, rows.held)
        assert rows.held >= min(n + 1, limit), "never fewer than the limit in memory"
    whole_chunks = -(-limit // chunk) * chunk             # the limit, rounded up to chunks
    assert most == whole_chunks + chunk - 1, f"held up to {most} rows for a limit of {limit}"
    assert Rows().held == 0


def test_a_limit_bounds_memory_the_forgotten_rows_are_freed():
    rows = Rows(1000)
    tracemalloc.start()
    try:
        for n in range(30_000):
            rows.append((n, bytes(1024)))
            if n == 5_000:
                settled = tracemalloc.get_traced_memory()[0]
        grew = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert len(rows) == 1000 and rows.total == 30_000
    assert grew < 256 * 1024, f"memory grew by {grew:,} B after the limit was reached"


@pytest.mark.parametrize("limit", [0, -1, 2.5, True, "10"])
def test_a_limit_must_be_a_positive_integer(limit):
    with pytest.raises(ValueError, match="keep at least 1 row"):
        Rows(limit)


# -- the trace: every field exactly ---------------------------------------------------------


EXACT = [
    dict(kind="request", technique="polling", client="", bytes=0),
    dict(kind="response", technique="polling", client="c1", status=None, bytes=0,
         duration=0.0, events=0, detail=""),
    dict(kind="response", technique="sse", client="c1", status=200, bytes=2**40,
         duration=math.nan, events=None, detail="cut"),
    dict(kind="event", technique="webhook", client="ünïcødé ☃", latency=math.nan,
         event_id="évt-☃-1", detail=LONG),
    dict(kind="event", technique="webhook", client="c2", latency=-0.0, event_id="",
         bytes=-1),
    dict(kind="drop", technique="webhook", client="c2", latency=math.inf, events=-3,
         detail="a\nnew line, a \t tab and a \x00"),
    dict(kind="disconnect", technique="websocket", client="c3", t=0.0, duration=1e-300),
    dict(kind="retry", technique="webhook", client="c3", t=-5.5, status=0, events=10**30),
]


def test_every_field_round_trips_exactly():
    trace = Trace()
    added = [trace.add(**fields) for fields in EXACT]
    read = trace.records()
    assert [type(r) for r in read] == [Record] * len(EXACT)
    for before, after, fields in zip(added, read, EXACT):
        assert after == before                        # same values, NaN included (same objects)
        for name in Record._fields:
            a, b = getattr(after, name), getattr(before, name)
            assert type(a) is type(b), name
            assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), name
        for name, value in fields.items():
            got = getattr(after, name)
            assert got == value or (math.isnan(got) and math.isnan(value)), name
    assert math.copysign(1, read[4].latency) == -1.0       # -0.0 stays negative zero
    assert read[3].detail == LONG and read[7].events == 10**30
    assert read[6].t == 0.0 and read[6].wall == added[6].wall


def test_readers_rebuild_records_across_chunk_boundaries():
    trace = Trace()
    event = SimpleNamespace(id="", created=time.monotonic())
    added = []
    for n in range(2 * CHUNK + 7):
        if n % 3 == 2:
            event.id = f"evt_{n}"
            added.append(trace.delivered(event, technique="sse", client=f"c{n % 5}"))
        else:
            added.append(trace.add("request", technique="polling", client=f"c{n % 5}",
                                   bytes=n))
    assert trace.records() == added and len(trace) == len(added)
    assert trace.records(kind="event") == [r for r in added if r.kind == "event"]
    assert trace.records(technique="polling", client="c3") == [
        r for r in added if r.technique == "polling" and r.client == "c3"]
    assert trace.clients() == [f"c{n}" for n in range(5)]
    assert trace.latencies("sse") == [r.latency for r in added if r.kind == "event"]
    assert trace.as_dicts()[-1] == dict(added[-1]._asdict(), t=added[-1].t - trace.t0)
    trace.clear()
    assert trace.records() == [] and len(trace) == 0
    again = trace.add("request", technique="polling")
    assert trace.records() == [again]


def test_a_record_may_hold_anything_and_gets_it_back():
    trace = Trace()
    detail = {"not": "a string"}
    record = trace.add("drop", technique="queue", detail=detail, events=1.5)
    [read] = trace.records()
    assert read.detail is detail and read.events == 1.5 and read == record


def test_unknown_fields_are_still_refused():
    with pytest.raises(TypeError):
        Trace().add("request", technique="polling", colour="red")
    with pytest.raises(TypeError):
        Trace().add("request", technique="polling", wall=1.0)


# -- the trace under threads ---------------------------------------------------------------


def test_concurrent_writers_and_readers_see_consistent_snapshots():
    trace = Trace()
    writers, per_writer = 6, 3 * CHUNK + 11
    start = threading.Barrier(writers + 1)
    snapshots: list[list[Record]] = []
    failures: list[BaseException] = []

    def write(name: str) -> None:
        try:
            start.wait(timeout=10)
            for n in range(per_writer):
                trace.add("request", technique="polling", client=name, bytes=n)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    def read() -> None:
        try:
            start.wait(timeout=10)
            deadline = time.monotonic() + 30
            while len(snapshots) < 200 and time.monotonic() < deadline:
                snapshots.append(trace.records())
                if len(snapshots[-1]) == writers * per_writer:
                    break
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(writers)]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures and not any(thread.is_alive() for thread in threads)

    final = trace.records()
    assert len(final) == len(trace) == writers * per_writer
    for i in range(writers):                          # each writer's records, all, in its order
        assert [r.bytes for r in final if r.client == f"w{i}"] == list(range(per_writer))
    sizes = [len(s) for s in snapshots]
    assert sizes == sorted(sizes)
    for snapshot in snapshots:                        # append-only: every snapshot a prefix
        assert snapshot == final[:len(snapshot)]


# -- memory and the collector --------------------------------------------------------------


def traced_growth(fill) -> int:
    """Bytes still allocated after ``fill()`` (tracemalloc), transient garbage collected."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def fill_like_the_wire(trace: Trace, count: int) -> None:
    """Request, response and event records as a served technique writes them."""
    event = SimpleNamespace(id="", created=time.monotonic())
    client = ""
    for n in range(count):
        if n % 3 == 0:
            client = f"127.0.0.1:{40000 + n // 48}"
            trace.add("request", technique="webhook", client=client, bytes=1200 + n % 97)
        elif n % 3 == 1:
            trace.add("response", technique="webhook", client=client, status=200,
                      bytes=90 + n % 7, duration=0.0004 + n % 13 * 1e-5, events=1)
        else:
            event.id = f"evt_{n:07d}"
            trace.delivered(event, technique="webhook", detail=f"from {client}")


def test_memory_per_record_is_bounded():
    trace = Trace()
    count = 30_000
    per_record = traced_growth(lambda: fill_like_the_wire(trace, count)) / count
    assert len(trace) == count
    assert 100 < per_record < 512, f"{per_record:.0f} bytes per record"


def delivery(n: int) -> Delivery:
    """A delivery as the receiver makes one: its own body, headers and parsed payload."""
    body = (b'{"id":"evt_%07d","type":"push","data":{"n":%d},"pad":"' % (n, n)
            + b"x" * 900 + b'"}')
    headers = {"host": "127.0.0.1:8000", "user-agent": "GitHub-Hookshot/test",
               "content-type": "application/json", "x-github-event": "push",
               "x-github-delivery": f"d-{n:07d}",
               "x-hub-signature-256": f"sha256={n:064x}", "content-length": str(len(body))}
    return Delivery(id=f"d-{n:07d}", event_type="push", content_type="application/json",
                    headers=headers, body=body, payload=json.loads(body),
                    received=time.monotonic(), remote_ip="127.0.0.1")


def fill_receiver(receiver: WebhookReceiver, count: int) -> int:
    """Keep ``count`` deliveries as the receiver keeps an accepted one; return their body bytes."""
    body_bytes = 0
    for n in range(count):
        accepted = delivery(n)
        body_bytes += len(accepted.body)
        receiver._record(accepted, client="127.0.0.1:40000")
    return body_bytes


def test_memory_per_delivery_beyond_its_body_is_bounded():
    receiver = WebhookReceiver(keep=None)
    count = 5_000
    bodies = []
    growth = traced_growth(lambda: bodies.append(fill_receiver(receiver, count)))
    beyond_body = (growth - bodies[0]) / count
    assert len(receiver.deliveries) == count
    # Seven headers, the row and a float: about 550 bytes. Kept with its headers dict and
    # its parsed payload, as it was before, a delivery cost about 2,400 bytes beyond its body.
    assert 0 < beyond_body < 1_200, f"{beyond_body:.0f} bytes per delivery beyond the body"


def tracked_objects_added(fill) -> int:
    gc.collect()
    before = len(gc.get_objects())
    fill()
    gc.collect()
    gc.collect()
    return len(gc.get_objects()) - before


def test_holding_100000_records_adds_no_tracked_object_per_record():
    trace = Trace()
    added = tracked_objects_added(lambda: fill_like_the_wire(trace, 100_000))
    assert len(trace) == 100_000
    assert added < 200, f"{added} objects the collector walks, for 100,000 records"


def test_holding_20000_deliveries_adds_no_tracked_object_per_delivery():
    receiver = WebhookReceiver(keep=None)
    added = tracked_objects_added(lambda: fill_receiver(receiver, 20_000))
    assert len(receiver.deliveries) == 20_000
    assert added < 200, f"{added} objects the collector walks, for 20,000 deliveries"


# -- deliveries and rejections, kept and read back over a real socket -------------------------


def test_a_delivery_read_back_has_every_attribute_it_arrived_with():
    body = b'{"id": "evt_1", "type": "a.b", "note": "\xc3\xa9t\xc3\xa9"}'
    request = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"X-Tag: one\r\nX-Tag: two\r\nX-GitHub-Event: push\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    receiver = WebhookReceiver()
    with serve_receiver(receiver) as server:
        answer = raw_http(server.port, request)
    assert answer.startswith(b"HTTP/1.1 200")
    first, second = receiver.deliveries, receiver.deliveries
    [kept], [again] = first, second
    assert kept is not again and kept == again and hash(kept) == hash(again)
    assert (kept.id, kept.event_type, kept.content_type) == ("evt_1", "push", "application/json")
    assert kept.body == body and kept.remote_ip == "127.0.0.1"
    assert isinstance(kept.received, float) and kept.received <= time.monotonic()
    assert kept.headers == {"host": "127.0.0.1", "content-type": "application/json",
                            "x-tag": "one,two", "x-github-event": "push", "connection": "close",
                            "content-length": str(len(body))}
    assert kept.payload == {"id": "evt_1", "type": "a.b", "note": "été"}
    assert repr(kept) == (f"Delivery(id='evt_1', event_type='push', "
                          f"content_type='application/json', received={kept.received!r}, "
                          f"remote_ip='127.0.0.1')")
    kept.headers["x-tag"] = "changed by a reader"
    kept.payload["id"] = "changed too"
    assert again.headers["x-tag"] == "one,two" and again.payload["id"] == "evt_1"
    with pytest.raises(AttributeError):
        kept.id = "forged"
    with pytest.raises(AttributeError):
        kept.body = b"{}"


def test_form_and_xml_payloads_are_parsed_again_on_first_access():
    receiver = WebhookReceiver()
    with serve_receiver(receiver) as server, requests.Session() as session:
        for body, content_type in ((b"MessageSid=SM1&MessageStatus=sent&Body=", "application/"
                                    "x-www-form-urlencoded"),
                                   (b"<event><id>x1</id><type>t</type></event>", "text/xml")):
            answer = session.post(server.endpoint_url, data=body, timeout=5,
                                  headers={"Content-Type": content_type})
            assert answer.status_code == 200
    form, xml = receiver.deliveries
    assert form.payload == {"MessageSid": "SM1", "MessageStatus": "sent", "Body": ""}
    assert form.event_type == "sent"
    assert isinstance(xml.payload, ElementTree.Element) and xml.payload.findtext("id") == "x1"
    assert xml.id == "x1" and xml.payload is xml.payload      # parsed once per object


def test_the_live_delivery_given_to_process_is_the_one_that_was_parsed():
    seen = []
    receiver = WebhookReceiver(process=seen.append)
    with serve_receiver(receiver) as server:
        assert requests.post(server.endpoint_url, json={"id": "e1", "type": "t"},
                             timeout=5).status_code == 200
    [live] = seen
    [kept] = receiver.deliveries
    assert live == kept and live.payload == kept.payload == {"id": "e1", "type": "t"}


def test_a_rejection_read_back_has_every_attribute_it_was_refused_with():
    receiver = WebhookReceiver([GitHubSignature("s3cret")])
    with serve_receiver(receiver) as server:
        answer = requests.post(server.endpoint_url, data=b"{}", timeout=5,
                               headers={"Content-Type": "application/json",
                                        "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert answer.status_code == 401
    [kept] = receiver.rejections
    assert isinstance(kept, Rejection) and kept == receiver.rejections[0]
    assert (kept.status, kept.reason, kept.remote_ip) == (401, "mismatch", "127.0.0.1")
    assert kept.headers["x-hub-signature-256"] == "sha256=" + "0" * 64
    assert kept.message and isinstance(kept.received, float)
    assert repr(kept) == (f"Rejection(status=401, reason='mismatch', message={kept.message!r}, "
                          f"received={kept.received!r}, remote_ip='127.0.0.1')")
    assert repr(receiver) == "<WebhookReceiver /webhook 0 delivered, 1 rejected>"
