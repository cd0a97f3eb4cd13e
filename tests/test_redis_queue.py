"""Queues on Redis Streams, against the embedded broker and a real Redis server.

Every test that talks to a broker takes the ``redis_url`` fixture
(tests/conftest.py), so it runs once on the embedded broker (fakeredis) and
once on the real server at ``$LABKIT_TEST_REDIS_URL`` over loopback.
"""

import asyncio
import random
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest

from helpers import needs
import redis.connection

from labkit import Feed, Trace, lab
from labkit.errors import LabkitError, WaitTimeout
from labkit.redis_queue import (EMBEDDED, URL_VARIABLE, Consumer, Producer, broker_url, connect,
                                dead_letters, delete_queue, embedded_broker, running_consumers,
                                stats)

FAST = dict(block=0.05, claim_after=0.3)
"""Consumer settings that keep tests short: short reads, quick redelivery."""


@pytest.fixture
def queue(redis_url):
    """A queue name no other test uses; deleted afterwards (a real server keeps it)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_queue(name, url=redis_url)


def until(condition, timeout=10.0):
    """Poll ``condition`` (bounded); True once it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def on_broker(url, work):
    """Run ``work(client)`` (a coroutine function) with a raw redis.asyncio client."""
    async def run():
        client = await connect(url)
        try:
            return await work(client)
        finally:
            await client.aclose()
    return lab.run(run())


def send_all(url, queue, bodies, trace=None):
    with Producer(queue, url=url, trace=trace, name="shop") as producer:
        return [producer.send(body) for body in bodies]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the normal path -------------------------------------------------------------


def test_messages_arrive_in_order_once_each_and_every_step_is_in_the_trace(redis_url, queue):
    trace, feed = Trace(), Feed(seed=3)
    orders = [feed.make("order", {"n": n}) for n in range(5)]
    ids = send_all(redis_url, queue, [o.to_json() for o in orders], trace)
    assert len(set(ids)) == 5 and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert stats(queue, "emails", url=redis_url) == {
        "length": 5, "waiting": 5, "in_flight": 0, "acked": 0, "dead": 0}

    with Consumer(queue, "emails", lambda m: None, url=redis_url, trace=trace,
                  name="mailer", **FAST) as consumer:
        done = consumer.wait_for(5)
    assert [m.id for m in done] == ids
    assert [m.event.id for m in done] == [o.id for o in orders]
    assert all(m.attempts == 1 for m in done)
    assert stats(queue, "emails", url=redis_url) == {
        "length": 5, "waiting": 0, "in_flight": 0, "acked": 5, "dead": 0}

    sends = trace.records(kind="request", client="shop")
    assert [r.detail for r in sends] == [f"XADD {queue} {i}" for i in ids]
    events = trace.records(kind="event", client="mailer")
    assert [r.event_id for r in events] == [o.id for o in orders]
    assert all(r.latency is not None and 0 <= r.latency < 10 for r in events)
    assert all(r.technique == "queue" for r in trace.records())
    acks = trace.records(kind="request", client="mailer")
    assert [r.detail for r in acks] == [f"XACK {queue} emails {i}" for i in ids]
    # each ack follows the delivery of its message
    assert all(e.t <= a.t for e, a in zip(events, acks))
    assert trace.count("retry") == trace.count("drop") == 0


def test_request_bytes_are_the_command_as_the_redis_protocol_frames_it(redis_url, queue):
    trace = Trace()
    body = "ünïcode " * 900  # longer than redis-py's buffer cutoff, so it is sent in pieces
    [message_id] = send_all(redis_url, queue, [body], trace)
    with Consumer(queue, "g", lambda m: None, url=redis_url, trace=trace, name="c",
                  **FAST) as consumer:
        consumer.wait_for(1)
    packer = redis.connection.Connection()
    framed = {
        "shop": sum(map(len, packer.pack_command("XADD", queue, "*", "body", body))),
        "c": sum(map(len, packer.pack_command("XACK", queue, "g", message_id)))}
    assert {r.client: r.bytes for r in trace.records(kind="request")} == framed
    [event] = trace.records(kind="event")
    assert event.bytes == len(body.encode()) and event.latency is None  # not a feed event


def test_every_group_gets_every_message_and_consumers_in_a_group_share_them(redis_url, queue):
    ids = send_all(redis_url, queue, [f"order {n}" for n in range(20)])

    async def slow(message):
        await asyncio.sleep(0.01)  # long enough for the other worker to take the next one

    with Consumer(queue, "emails", slow, url=redis_url, name="email-1", **FAST) as one, \
            Consumer(queue, "emails", slow, url=redis_url, name="email-2", **FAST) as two, \
            Consumer(queue, "invoices", lambda m: None, url=redis_url, name="invoicer",
                     **FAST) as invoicer:
        assert until(lambda: len(one.processed) + len(two.processed) == 20)
        invoicer.wait_for(20)
    first, second = {m.id for m in one.processed}, {m.id for m in two.processed}
    assert first and second, "both workers of the group did some of the work"
    assert not first & second, "no message went to both workers of one group"
    assert first | second == set(ids)
    assert [m.id for m in invoicer.processed] == ids, "the other group got every message"
    for group in ("emails", "invoices"):
        assert stats(queue, group, url=redis_url)["acked"] == 20


def test_a_group_made_later_reads_from_the_beginning_or_only_what_comes_next(redis_url, queue):
    old = send_all(redis_url, queue, ["before 1", "before 2"])
    with Consumer(queue, "archive", lambda m: None, url=redis_url, **FAST) as archive, \
            Consumer(queue, "live", lambda m: None, url=redis_url, from_beginning=False,
                     **FAST) as live:
        new = send_all(redis_url, queue, ["after"])
        archive.wait_for(3)
        live.wait_for(1)
        time.sleep(0.2)  # give the live group every chance to (wrongly) see the old ones
    assert [m.id for m in archive.processed] == old + new
    assert [m.id for m in live.processed] == new


def test_process_may_be_a_coroutine_and_stop_finishes_what_was_read(redis_url, queue):
    send_all(redis_url, queue, [f"job {n}" for n in range(6)])
    seen = []

    async def process(message):
        await asyncio.sleep(0.01)
        seen.append(message.body)

    consumer = Consumer(queue, "workers", process, url=redis_url, batch=6, **FAST).start()
    assert consumer in running_consumers()
    assert until(lambda: seen)
    consumer.stop()  # clean: the batch it took is processed and acknowledged
    assert consumer not in running_consumers() and not consumer.running
    assert seen == [f"job {n}" for n in range(6)]
    assert stats(queue, "workers", url=redis_url)["in_flight"] == 0


def test_wait_for_says_how_far_it_got(redis_url, queue):
    send_all(redis_url, queue, ["only one"])
    with Consumer(queue, "g", lambda m: None, url=redis_url, **FAST) as consumer:
        with pytest.raises(WaitTimeout, match="only 1 of 2 messages were processed"):
            consumer.wait_for(2, timeout=0.5)


# -- redelivery and dead letters -----------------------------------------------------


def crash_holding_a_message(url, queue, group, **options):
    """Start a consumer that takes the first message and hangs, then cut it off mid-work,
    as if its process died. Returns the consumer."""
    taken = threading.Event()

    async def hang(message):
        taken.set()
        await asyncio.sleep(60)

    doomed = Consumer(queue, group, hang, url=url, name="doomed", **options).start()
    assert taken.wait(10)
    doomed.stop(timeout=0)
    return doomed


def test_a_message_a_crashed_consumer_held_stays_pending_and_is_claimed_again(redis_url, queue):
    trace = Trace()
    [message_id] = send_all(redis_url, queue, ["important"])
    crash_holding_a_message(redis_url, queue, "g", **FAST)
    assert stats(queue, "g", url=redis_url)["in_flight"] == 1, "unacknowledged: still pending"

    with Consumer(queue, "g", lambda m: None, url=redis_url, trace=trace, name="rescuer",
                  **FAST) as rescuer:
        [again] = rescuer.wait_for(1)
    assert (again.id, again.body, again.attempts) == (message_id, "important", 2)
    [retry] = trace.records(kind="retry")
    assert retry.client == "rescuer" and message_id in retry.detail and "attempt 2" in retry.detail
    assert stats(queue, "g", url=redis_url) == {
        "length": 1, "waiting": 0, "in_flight": 0, "acked": 1, "dead": 0}


def test_a_message_that_keeps_failing_is_retried_then_dead_lettered(redis_url, queue):
    trace, feed = Trace(), Feed(seed=5)
    bad, good = feed.make("order", {"n": 1}), feed.make("order", {"n": 2})
    bad_id, good_id = send_all(redis_url, queue, [bad.to_json(), good.to_json()])

    def process(message):
        if message.event.id == bad.id:
            raise ValueError("card declined")

    with Consumer(queue, "billing", process, url=redis_url, trace=trace, name="biller",
                  max_attempts=3, **FAST) as consumer:
        assert until(lambda: consumer.dead)
    assert [m.id for m in consumer.processed] == [good_id]
    assert [(m.id, m.attempts) for m, _ in consumer.failures] == [(bad_id, n) for n in (1, 2, 3)]
    assert {r.event_id for r in trace.records(kind="event")} == {bad.id, good.id}
    assert [r.event_id for r in trace.records(kind="retry")] == [bad.id, bad.id]
    [drop] = trace.records(kind="drop")
    assert drop.event_id == bad.id and "card declined" in drop.detail
    [letter] = dead_letters(queue, "billing", url=redis_url)
    assert (letter.message.id, letter.message.attempts, letter.group) == (bad_id, 3, "billing")
    assert letter.message.event == bad and letter.error == "ValueError('card declined')"
    assert stats(queue, "billing", url=redis_url) == {
        "length": 2, "waiting": 0, "in_flight": 0, "acked": 1, "dead": 1}
    assert delete_queue(queue, url=redis_url) == 2  # the queue and its dead letters
    assert dead_letters(queue, "billing", url=redis_url) == []


def test_a_message_whose_consumers_keep_crashing_is_dead_lettered_unprocessed(redis_url, queue):
    [message_id] = send_all(redis_url, queue, ["poison"])
    crash_holding_a_message(redis_url, queue, "g", max_attempts=1, **FAST)
    with Consumer(queue, "g", lambda m: None, url=redis_url, max_attempts=1,
                  **FAST) as survivor:
        assert until(lambda: survivor.dead)
    assert survivor.processed == [] and survivor.failures == []
    [letter] = dead_letters(queue, "g", url=redis_url)
    assert letter.message.id == message_id and letter.message.attempts == 2
    assert "never acknowledged" in letter.error


def test_a_malformed_entry_is_dead_lettered_and_the_consumer_keeps_going(redis_url, queue):
    async def write(client):
        return [(await client.xadd(queue, fields)).decode()
                for fields in ({"text": "no body field"}, {"body": b"\xff\xfe"}, {"body": "ok"})]

    no_body, not_utf8, fine = on_broker(redis_url, write)
    with Consumer(queue, "g", lambda m: None, url=redis_url, **FAST) as consumer:
        [done] = consumer.wait_for(1)
        assert until(lambda: len(consumer.dead) == 2)
    assert done.id == fine and done.body == "ok"
    errors = {letter.message.id: letter.error for letter in dead_letters(queue, "g",
                                                                          url=redis_url)}
    assert errors == {no_body: "malformed entry: no 'body' field",
                      not_utf8: "malformed entry: its 'body' is not UTF-8 text"}


def test_a_message_deleted_while_pending_is_reported_never_silently_lost(redis_url, queue):
    trace = Trace()
    [message_id] = send_all(redis_url, queue, ["trimmed away"])
    crash_holding_a_message(redis_url, queue, "g", **FAST)
    on_broker(redis_url, lambda client: client.xdel(queue, message_id))
    with Consumer(queue, "g", lambda m: None, url=redis_url, trace=trace, name="next",
                  **FAST) as consumer:
        assert until(lambda: consumer.errors)
    assert consumer.processed == []
    assert f"{message_id} was deleted from {queue}" in consumer.errors[0]
    [drop] = trace.records(kind="drop")
    assert drop.event_id == message_id and drop.client == "next"
    assert stats(queue, "g", url=redis_url)["in_flight"] == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_nothing_is_lost_every_message_ends_acknowledged_or_dead_lettered(redis_url, queue,
                                                                        seed):
    """Seeded faults: ``process`` fails at random, and one consumer crashes holding work."""
    count, max_attempts = 60, 3
    trace = Trace()
    sent = send_all(redis_url, queue, [f"message {n}" for n in range(count)], trace)

    def flaky(message):
        if random.Random(f"{seed} {message.body} {message.attempts}").random() < 0.4:
            raise RuntimeError("fault")

    options = dict(trace=trace, max_attempts=max_attempts, **FAST)
    crashed = crash_holding_a_message(redis_url, queue, "g", **options)
    workers = [Consumer(queue, "g", flaky, url=redis_url, name=f"worker-{n}", **options).start()
               for n in range(3)]
    try:
        def settled():
            now = stats(queue, "g", url=redis_url)
            return now["waiting"] == now["in_flight"] == 0 and now["acked"] + now["dead"] == count
        assert until(settled, timeout=60), stats(queue, "g", url=redis_url)
    finally:
        for worker in workers:
            worker.stop()
    acked = {m.id for w in workers for m in w.processed}
    dead = {letter.message.id: letter for letter in dead_letters(queue, "g", url=redis_url)}
    assert acked | set(dead) == set(sent), "every message sent ended somewhere"
    assert not acked & set(dead), "and in one place only"
    assert len(dead) == trace.count("drop") == sum(len(w.dead) for w in workers)
    assert all(letter.message.attempts == max_attempts and letter.error == "RuntimeError('fault')"
               or letter.message.attempts > max_attempts and "never acknowledged" in letter.error
               for letter in dead.values())
    assert dead, "with a 40 % failure rate some message failed three times in a row"
    assert crashed.processed == [] and trace.count("retry") > 0
    assert stats(queue, "g", url=redis_url) == {"length": count, "waiting": 0, "in_flight": 0,
                                                "acked": len(acked), "dead": len(dead)}


# -- the broker going away -----------------------------------------------------------


class RedisProcess:
    """A redis-server of this test's own, persisting every command before it answers
    (append-only file, fsync always), so a kill -9 loses nothing it acknowledged."""

    def __init__(self, directory):
        self.port = free_port()
        self.directory = directory
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert until(self.answers, timeout=10), f"redis-server on port {self.port} did not start"

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        """Die at once, as a crash would (SIGKILL, by the PID this test started)."""
        self.process.kill()
        self.process.wait(10)


@pytest.fixture(params=["embedded", "real"])
def restartable(request, tmp_path):
    """(url, go_down, come_back): the embedded broker switched off and on, or a real
    server of this test's own killed with SIGKILL and started again on its port."""
    if request.param == "embedded":
        server = embedded_broker()
        yield EMBEDDED, lambda: setattr(server, "connected", False), \
            lambda: setattr(server, "connected", True)
        server.connected = True
        return
    if shutil.which("redis-server") is None:
        needs("redis-server is not installed (apt-get install redis-server)")
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server.url, server.kill, server.start
    finally:
        server.kill()


def test_a_broker_restart_loses_no_acknowledged_message_and_keeps_the_pending_ones(restartable):
    url, go_down, come_back = restartable
    queue = f"test-{uuid.uuid4().hex[:12]}"
    trace = Trace()
    ids = send_all(url, queue, [f"before {n}" for n in range(4)])
    taken = threading.Event()

    async def hang_on_the_last(message):
        if message.id == ids[-1]:
            taken.set()
            await asyncio.sleep(60)

    crashing = Consumer(queue, "g", hang_on_the_last, url=url, **FAST).start()
    audit = Consumer(queue, "audit", lambda m: None, url=url, name="auditor", **FAST).start()
    try:
        assert taken.wait(10) and crashing.wait_for(3)
        crashing.stop(timeout=0)  # crashes holding the last message, unacknowledged
        audit.wait_for(4)
        before = stats(queue, "g", url=url)
        assert before == {"length": 4, "waiting": 0, "in_flight": 1, "acked": 3, "dead": 0}

        go_down()
        assert until(lambda: audit.errors), "the running consumer noticed the outage"
        refused = "cannot reach the Redis broker at " + re.escape(url)
        with Producer(queue, url=url) as producer, pytest.raises(LabkitError, match=refused):
            producer.send("while down")
        come_back()

        assert stats(queue, "g", url=url) == before, "acked stay acked, pending stay pending"
        later = send_all(url, queue, ["after 1", "after 2"])
        audit.wait_for(6, timeout=10)  # it carried on after the outage on its own
        with Consumer(queue, "g", lambda m: None, url=url, trace=trace, name="rescuer",
                      **FAST) as rescuer:
            assert until(lambda: len(rescuer.processed) == 3)
    finally:
        audit.stop()
        delete_queue(queue, url=url)
    assert sorted((m.id, m.attempts) for m in rescuer.processed) == sorted(
        [(ids[-1], 2)] + [(i, 1) for i in later]), "none of the acknowledged ones came back"
    assert [r.event_id for r in trace.records(kind="retry")] == [ids[-1]]
    assert [m.id for m in audit.processed] == ids + later


# -- bad input ---------------------------------------------------------------------


def test_an_unreachable_broker_is_a_clear_error_naming_the_url_and_what_to_do():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(LabkitError) as caught:
        Producer("orders", url=url).send("hello")
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Redis broker at {url}")
    assert "redis-server" in message and URL_VARIABLE in message and "embedded" in message
    consumer = Consumer("orders", "g", lambda m: None, url=url)
    with pytest.raises(LabkitError, match="cannot reach"):
        consumer.start()
    assert not consumer.running
    with pytest.raises(LabkitError, match="cannot reach"):
        stats("orders", "g", url=url)
    secret = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(LabkitError, match="cannot reach") as caught:
        delete_queue("orders", url=secret)
    assert "hunter2" not in str(caught.value)


def test_the_broker_is_the_embedded_one_unless_LABKIT_REDIS_URL_names_another(monkeypatch):
    monkeypatch.delenv(URL_VARIABLE, raising=False)
    assert broker_url() == EMBEDDED and Producer("q").url == EMBEDDED
    monkeypatch.setenv(URL_VARIABLE, "redis://127.0.0.1:6390/2")
    assert broker_url() == "redis://127.0.0.1:6390/2"
    assert Consumer("q", "g", print).url == "redis://127.0.0.1:6390/2"
    assert broker_url(EMBEDDED) == EMBEDDED, "an explicit url wins"


@pytest.mark.parametrize("make, words", [
    (lambda: broker_url("http://127.0.0.1:6379"), "redis://127.0.0.1:6379/0"),
    (lambda: Producer("no spaces"), "queue names are 1 to 64"),
    (lambda: Consumer("q", "", print), "group names"),
    (lambda: Consumer("q", "g", "not a function"), "process must be a function"),
    (lambda: Consumer("q", "g", print, claim_after=0), "claim_after"),
    (lambda: Consumer("q", "g", print, claim_after=float("nan")), "claim_after"),
    (lambda: Consumer("q", "g", print, max_attempts=0), "max_attempts"),
    (lambda: Consumer("q", "g", print, batch=101), "batch"),
    (lambda: Consumer("q", "g", print, block=60), "block"),
    (lambda: stats("q", "a:b"), "group names"),
])
def test_impossible_settings_are_clear_errors(make, words):
    with pytest.raises(LabkitError, match=words):
        make()


def test_a_body_must_be_text_and_a_technique_must_be_known(redis_url, queue):
    with Producer(queue, url=redis_url) as producer:
        with pytest.raises(LabkitError, match="json.dumps"):
            producer.send({"order": 1})
    with pytest.raises(LabkitError, match="unknown technique"):
        Producer(queue, technique="kafka")
    trace = Trace()
    send_all(redis_url, queue, ["x"], trace=None)
    with Consumer(queue, "g", lambda m: None, url=redis_url, trace=trace,
                  technique="queue: redis", **FAST) as consumer:
        consumer.wait_for(1)
    assert trace.techniques() == ["queue: redis"]
