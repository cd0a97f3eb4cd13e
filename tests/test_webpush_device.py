"""Web Push end to end over loopback: AppServer (pywebpush) -> PushService -> Device."""

import asyncio

import pytest

from labkit import Clock, Feed, lab
from labkit.errors import LabLoopError
from labkit.push.webpush import AppServer, Device, DeviceError, serve_push_service
from labkit.push.webpush.crypto import DeviceKeys


@pytest.fixture
def server():
    with serve_push_service(clock=Clock(speedup=50)) as server:
        yield server


@pytest.fixture
def app():
    with AppServer(name="app") as app:
        yield app


@pytest.fixture
def device(server, app):
    device = Device(server.url, app.application_server_key, trace=server.trace, name="phone")
    app.add(device.subscribe())
    yield device
    device.close()


def states(server):
    return [m.state for m in server.component.messages()]


def drops(server):
    return [r.detail for r in server.trace.records(kind="drop")]


def test_a_message_arrives_decrypted_and_is_shown_and_acked(server, app, device):
    device.online()
    result = app.send(device.subscription_info, "Your order has shipped", ttl=60,
                      urgency="high", topic="order42")
    assert (result.status, result.ttl) == (201, 60)
    assert result.location.startswith(server.url + "/m/")
    push = device.wait_for(1)[0]
    assert (push.text, push.urgency, push.topic) == ("Your order has shipped", "high", "order42")
    assert device.notifications[0].text == "Your order has shipped"
    assert server.component.wait_for(result.location, "acked").attempts == 1
    assert push.frame_bytes == server.component.message(result.location).frame_bytes
    kinds = [(r.kind, r.client) for r in server.trace.records()]
    assert ("connect", "phone") in kinds and ("response", "app") in kinds


def test_a_feed_event_is_recorded_when_the_device_has_decrypted_it(server, app, device):
    device.online()
    event = Feed(seed=1).make("order", {"id": 42})
    result = app.send(device.subscription_info, event)
    push = device.wait_for(1)[0]
    assert push.event == event
    [record] = server.trace.records(kind="event")
    assert (record.event_id, record.client, record.technique) == (event.id, "phone", "webpush")
    assert record.bytes == push.ciphertext_bytes == result.body_bytes
    assert record.latency > 0 and record.t >= event.created


def test_the_service_worker_may_be_a_coroutine_and_a_failing_one_still_acks(server, app):
    async def worker(push):
        await asyncio.sleep(0)
        if push.text == "boom":
            raise RuntimeError("worker bug")
        return f"New: {push.text}"

    device = Device(server.url, app.application_server_key, service_worker=worker)
    sub = device.subscribe()
    device.online()
    app.send(sub, "boom")
    last = app.send(sub, "hello")
    assert [p.text for p in device.wait_for(2)] == ["boom", "hello"]
    assert [n.text for n in device.notifications] == ["New: hello"]
    assert "worker bug" in device.errors[0]
    assert server.component.wait_for(last.location, "acked")
    assert states(server) == ["acked", "acked"]
    device.close()


def test_an_offline_device_gets_its_message_when_it_reconnects_within_the_ttl(server, app,
                                                                             device):
    result = app.send(device.subscription_info, "while you were away", ttl=3600)
    assert server.component.message(result.location).state == "stored"
    device.online()
    assert device.wait_for(1)[0].text == "while you were away"
    server.component.wait_for(result.location, "acked")


def test_a_message_whose_ttl_runs_out_is_dropped_and_never_delivered(server, app, device):
    old = app.send(device.subscription_info, "stale", ttl=2)  # 2 s at speedup 50: 40 ms
    server.component.wait_for(old.location, "expired")
    assert any("TTL of 2 s ran out before it was delivered" in d for d in drops(server))
    device.online()
    app.send(device.subscription_info, "fresh", ttl=60)
    assert [p.text for p in device.wait_for(1)] == ["fresh"]


def test_ttl_zero_is_dropped_for_an_offline_device_and_delivered_to_an_online_one(
        server, app, device):
    gone = app.send(device.subscription_info, "now or never", ttl=0)
    assert gone.ok and server.component.message(gone.location).state == "dropped"
    assert any("TTL 0" in d for d in drops(server))
    device.online()
    assert device.received == []
    now = app.send(device.subscription_info, "now", ttl=0)
    assert device.wait_for(1)[0].text == "now"
    server.component.wait_for(now.location, "acked")


def test_three_updates_with_one_topic_while_offline_deliver_only_the_latest(server, app,
                                                                           device):
    for score in ("1-0", "2-0", "2-1"):
        app.send(device.subscription_info, f"score {score}", topic="match", ttl=600)
    other = app.send(device.subscription_info, "weather", topic="weather", ttl=600)
    assert states(server) == ["replaced", "replaced", "stored", "stored"]
    assert sum("same topic 'match'" in d for d in drops(server)) == 2
    device.online()
    server.component.wait_for(other.location, "acked")
    assert [p.text for p in device.wait_for(2)] == ["score 2-1", "weather"]


def test_a_device_on_low_battery_takes_only_high_urgency_until_it_recovers(server, app,
                                                                           device):
    device.online()
    device.accept("high")
    low = app.send(device.subscription_info, "newsletter", urgency="low")
    high = app.send(device.subscription_info, "your flight is boarding", urgency="high")
    assert [p.text for p in device.wait_for(1)] == ["your flight is boarding"]
    server.component.wait_for(high.location, "acked")
    assert server.component.message(low.location).state == "stored"
    device.accept("very-low")
    assert [p.text for p in device.wait_for(2)][1] == "newsletter"
    server.component.wait_for(low.location, "acked")


def test_a_device_can_say_from_the_start_which_urgencies_it_takes(server, app):
    device = Device(server.url, app.application_server_key, urgency="normal")
    sub = device.subscribe()
    device.online()
    app.send(sub, "tip of the day", urgency="very-low")
    app.send(sub, "message from Ann", urgency="normal")
    assert [p.text for p in device.wait_for(1)] == ["message from Ann"]
    assert states(server)[0] == "stored"
    device.close()


def test_after_unsubscribe_the_service_answers_410_and_the_app_server_forgets(server, app,
                                                                              device):
    endpoint = device.subscription_info["endpoint"]
    waiting = app.send(device.subscription_info, "unread", ttl=600)
    device.unsubscribe()
    assert server.component.message(waiting.location).state == "gone"
    result = app.send({"endpoint": endpoint, "keys": device.keys.subscription_keys()}, "hello?")
    assert (result.status, result.ok) == (410, False)
    assert "subscribe again" in result.error
    assert app.subscriptions == [] and app.removed == [endpoint]
    assert app.broadcast("anyone?") == []
    with pytest.raises(DeviceError, match="no subscription"):
        device.subscription_info


def test_the_app_server_also_forgets_a_subscription_answered_with_404(server, app, device):
    unknown = {**device.subscription_info,
               "endpoint": device.subscription_info["endpoint"].rsplit("/", 1)[0] + "/nope"}
    app.add(unknown)
    results = app.broadcast("hello all")
    assert sorted(r.status for r in results) == [201, 404]
    assert app.removed == [unknown["endpoint"]]
    assert app.subscriptions == [device.subscription_info]


def test_an_expired_subscription_answers_410(app):
    with serve_push_service(clock=Clock(speedup=100), subscription_lifetime=5) as server:
        device = Device(server.url, app.application_server_key)
        app.add(device.subscribe())
        waiting = app.send(device.subscription_info, "in time?", ttl=600)
        server.component.wait_for(waiting.location, "gone")
        result = app.send(device.subscription_info, "too late")
        assert (result.status, app.removed) == (410, [device.subscription_info["endpoint"]])
        assert "expired" in result.error
        with pytest.raises(DeviceError, match="gone"):
            device.online()


def test_an_unacked_message_is_sent_again_after_the_device_reconnects(server, app):
    gate = lab.run(lambda: asyncio.Event())
    calls = []

    async def slow_worker(push):
        calls.append(push.id)
        if len(calls) == 1:
            await gate.wait()  # the device goes offline before this worker finishes
        return push.text

    device = Device(server.url, app.application_server_key, service_worker=slow_worker,
                    trace=server.trace)
    sub = device.subscribe()
    device.online()
    result = app.send(sub, "important", ttl=600)
    server.component.wait_for(result.location, "sent")
    device.offline()
    server.component.wait_for(result.location, "stored")
    lab.run(gate.set)
    device.wait_for(1)  # the worker finished, but its ack had no connection to go on
    assert server.component.message(result.location).state == "stored"
    device.online()
    assert [p.id for p in device.wait_for(2)] == [calls[0]] * 2
    message = server.component.wait_for(result.location, "acked")
    assert message.attempts == 2
    assert [r.detail for r in server.trace.records(kind="retry")] == [
        f"{message.id} sent again, attempt 2: it was never acked"]
    device.close()


def test_a_message_the_device_cannot_decrypt_is_discarded_acked_and_traced(server, app,
                                                                           device):
    device.online()
    stranger = DeviceKeys.generate().subscription_keys()
    result = app.send({**device.subscription_info, "keys": stranger}, "not for you")
    server.component.wait_for(result.location, "acked")
    assert device.received == [] and device.discarded[0][0] == "msg_000001"
    assert "authenticate" in device.discarded[0][1]
    [record] = server.trace.records(kind="drop")
    assert record.client == "phone" and "discarded by the device" in record.detail
    app.send(device.subscription_info, "for you")
    assert device.wait_for(1)[0].text == "for you"


def test_misuse_gives_clear_errors(server, app):
    device = Device(server.url, app.application_server_key)
    with pytest.raises(DeviceError, match="subscribe"):
        device.online()
    with pytest.raises(DeviceError, match="urgency is one of"):
        device.accept("urgent")
    with pytest.raises(DeviceError, match="refused the subscription"):
        Device(server.url, "not-a-key").subscribe()
    device.subscribe()
    with pytest.raises(DeviceError, match="already"):
        device.subscribe()
    with pytest.raises(TimeoutError, match="got 0 of 1"):
        device.wait_for(1, timeout=0.05)
    with pytest.raises(LabLoopError):
        lab.run(lambda: app.send(device.subscription_info, "from the loop"))
