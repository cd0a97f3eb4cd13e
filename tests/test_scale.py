"""Clients at scale over real loopback sockets: run_clients and scaling for every technique."""

import math
from pathlib import Path

import pytest
import requests

from labkit import Clock, lab
from labkit.errors import UnknownTechniqueError, UsageError
from labkit.feed import Feed
from labkit.hub import Hub
from labkit.push.scale import (SETUPS, ScaleResult, WebhookProvider, WebPushSite, run_clients,
                               scaling)
from labkit.push.webpush import DeviceKeys

from helpers import settle

COUNTED = Path("/proc/net/tcp").exists()
"""Whether this machine lets run_clients count TCP connections."""


pytestmark = pytest.mark.usefixtures("nothing_goes_wrong_quietly")


@pytest.mark.parametrize("technique", sorted(SETUPS))
def test_ten_clients_of_each_technique_each_get_every_event(technique):
    result = run_clients(technique, 10, events=5, rate=20, seed=1, interval=0.1)
    assert isinstance(result, ScaleResult)
    assert result.complete, result.delivered
    assert result.delivered == {f"{technique}-{k:04d}": 5 for k in range(1, 11)}
    assert result.deliveries == 50 and result.trace.count("event", technique) == 50
    assert result.requests >= 10 and result.bytes > 0 and result.server_cpu > 0
    assert result.bytes_per_event == result.bytes / 50
    assert all(0 <= result.latency[p] < 5 for p in (50, 90, 99))
    assert result.peak_held == (0 if technique in ("polling", "webhook") else 10)
    if not COUNTED:
        assert result.peak_connections is None
    elif technique == "webpush":  # the phones', and the application server's (1 to 4 threads)
        assert 11 <= result.peak_connections <= 10 + WebPushSite.threads
    else:  # no receiver of a webhook connects to the provider: None, not 0
        assert result.peak_connections == (None if technique == "webhook" else 10)
    assert result.client_cpu is None and result.load == "inline"
    row = result.row()
    assert row["clients"] == 10 and row["complete"] and row["deliveries"] == 50
    assert row["p99 latency (s)"] == result.latency[99]


def test_polling_makes_more_requests_than_long_polling_for_the_same_events():
    options = dict(events=4, rate=2, seed=2, interval=0.1, schedule="fixed")
    polling = run_clients("polling", 10, **options)
    long_polling = run_clients("long-polling", 10, **options)
    assert polling.complete and long_polling.complete
    assert polling.requests > long_polling.requests
    assert polling.wasted_share > 0.5 and long_polling.wasted_share == 0
    assert polling.bytes_per_event > long_polling.bytes_per_event


def test_websocket_keeps_one_connection_per_client_and_its_frames_are_in_the_bytes():
    result = run_clients("websocket", 10, events=6, rate=20, seed=3)
    trace = result.trace
    assert result.complete
    assert result.requests == 10  # the upgrades, and nothing more however many events
    for k in range(1, 11):
        name = f"websocket-{k:04d}"
        assert len(trace.records(kind="connect", client=name)) == 1
        assert len(trace.records(kind="disconnect", client=name)) == 1
    frames = sum(r.bytes for r in trace.records(kind="disconnect"))
    assert frames > 0
    http = sum(r.bytes for r in trace.records(technique="websocket")
               if r.kind in ("request", "response"))
    assert result.bytes == trace.bytes_total("websocket") == http + frames


def test_a_thousand_long_poll_clients_all_get_one_event():
    result = run_clients("long-polling", 1000, events=1, rate=10, seed=4, timeout=60)
    assert result.complete, sum(1 for n in result.delivered.values() if n == 0)
    assert result.deliveries == 1000
    assert result.peak_held == 1000
    assert result.requests >= 1000
    if COUNTED:
        assert result.peak_connections == 1000
    assert result.memory > 1000 * 1000  # a thousand connections take more than 1 KB each


def test_clients_in_a_separate_process_report_their_deliveries_back():
    result = run_clients("websocket", 20, events=5, rate=20, seed=5, load="process")
    assert result.complete and result.load == "process"
    assert result.client_cpu is not None and result.client_cpu > 0
    events = result.trace.records(kind="event")
    assert len(events) == 100
    assert {r.client for r in events} == {f"websocket-{k:04d}" for k in range(1, 21)}
    assert all(0 <= r.latency < 5 for r in events)  # one clock for both processes


def test_polling_on_a_compressed_clock_in_a_separate_process():
    clock = Clock(speedup=100)  # a 10-second interval is a tenth of a real second
    result = run_clients("polling", 5, events=3, rate=1, seed=6, interval=10, clock=clock,
                         load="process")
    assert result.complete
    assert 0 < result.latency[50] < 5
    assert result.wasted_share > 0


def test_a_run_that_cannot_finish_stops_at_its_bound_and_says_so():
    result = run_clients("polling", 3, events=2, rate=20, interval=100, timeout=1.0)
    assert not result.complete
    assert result.delivered == {f"polling-{k:04d}": 0 for k in range(1, 4)}
    assert 0.9 <= result.seconds < 10
    assert math.isinf(result.bytes_per_event)


def test_a_sweep_returns_one_row_per_number_of_clients():
    rows = scaling("sse", clients=(1, 3), events=3, rate=20, seed=7)
    assert [row["clients"] for row in rows] == [1, 3]
    assert all(row["complete"] and row["technique"] == "sse" for row in rows)
    assert [row["deliveries"] for row in rows] == [3, 9]
    assert all(row["requests"] == row["clients"] and row["held"] == row["clients"]
               for row in rows)


def test_bad_arguments_are_refused_with_a_clear_error():
    with pytest.raises(UnknownTechniqueError, match="long_polling"):
        run_clients("long_polling")
    with pytest.raises(UnknownTechniqueError, match="simulates"):
        run_clients("queue")
    for technique in ("webhook", "webpush"):
        with pytest.raises(UsageError, match="load='inline' only"):
            run_clients(technique, load="process")
    for bad in ({"clients": 0}, {"clients": True}, {"clients": 10_001}, {"events": 0},
                {"load": "thread"}, {"schedule": "sometimes"}, {"interval": 0},
                {"timeout": -1}, {"clock": 5}):
        with pytest.raises(UsageError):
            run_clients("polling", **{"clients": 1, **bad})


def test_webhook_receivers_subscribe_then_get_every_event_signed_once_each():
    result = run_clients("webhook", 4, events=5, rate=20, seed=8)
    trace = result.trace
    assert result.complete and result.deliveries == 20
    hooks = [r for r in trace.records(kind="response") if r.detail.startswith("hook ")]
    assert [r.status for r in hooks] == [201] * 4  # one subscription per receiver
    posts = [r for r in trace.records(kind="response") if r.client == "provider"]
    assert len(posts) == 20 and all(r.status == 200 for r in posts)  # each signature verified
    assert result.requests == 4 + 20  # subscriptions, then one POST per event and receiver
    assert trace.count("drop") == 0 and result.peak_held == 0
    events = trace.records(kind="event")
    assert {r.client for r in events} == {f"webhook-{k:04d}" for k in range(1, 5)}
    assert all(0 < r.latency < 5 for r in events)
    assert result.bytes == trace.bytes_total("webhook")


def test_the_provider_refuses_a_subscription_that_names_no_url():
    with lab.serve(WebhookProvider(Hub())) as server:
        url = server.endpoint_url
        for body in (b"{}", b"not json", b'{"url": 5}', b'{"url": "ftp://x"}'):
            answer = requests.post(url, data=body, timeout=5)
            assert answer.status_code == 400 and answer.json()["reason"] == "bad_hook"
        assert requests.get(url, timeout=5).status_code == 405
        assert requests.post(server.url + "/nowhere", timeout=5).status_code == 404
        answer = requests.post(url, json={"url": "http://127.0.0.1:9/webhook"}, timeout=5)
        assert answer.status_code == 201 and answer.json() == {"id": 1}
        assert server.component.urls == ["http://127.0.0.1:9/webhook"]


def test_web_push_phones_subscribe_once_and_every_push_frame_is_in_the_bytes():
    result = run_clients("webpush", 3, events=4, rate=20, seed=9)
    trace = result.trace
    assert result.complete and result.deliveries == 12
    phones = [r for r in trace.records(kind="request") if r.client.startswith("webpush-")]
    assert len(phones) == 2 * 3  # subscribe and connect, nothing per event
    shop = [r for r in trace.records(kind="response") if r.client == "app-server"]
    assert len(shop) == 12 and all(r.status == 201 for r in shop)
    assert result.requests == 6 + 12
    # the push service wrote each phone's frames on its disconnect: each push frame carries
    # its message's ciphertext in base64, so they are more than the ciphertexts decrypted
    events = trace.records(kind="event")
    disconnects = trace.records(kind="disconnect")
    assert sorted(r.client for r in disconnects) == sorted({r.client for r in phones})
    frames = sum(r.bytes for r in disconnects)
    assert frames > sum(r.bytes for r in events) * 4 / 3 > 0
    http = sum(r.bytes for r in trace.records() if r.kind in ("request", "response"))
    assert result.bytes == trace.bytes_total("webpush") == http + frames
    assert result.peak_held == 3
    assert result.server_cpu > 0  # the push service's, and pywebpush's own thread
    assert all(0 < r.latency < 5 for r in events)


def test_a_push_the_push_service_refuses_is_a_drop_record_not_a_silent_loss():
    hub = Hub()
    with lab.serve(WebPushSite(hub)) as server:
        site, trace = server.component, server.trace
        gone = {"endpoint": server.url + "/p/no-such-subscription",
                "keys": DeviceKeys.generate().subscription_keys()}
        lab.run(lambda: site.add(gone))
        event = Feed().make()
        hub.publish(event)
        settle(lambda: trace.count("drop") == 1, "a drop record for the refused push")
    (drop,) = trace.records(kind="drop")
    assert drop.client == "app-server" and drop.event_id == event.id
    assert drop.detail.startswith("not pushed to a phone: 404")
    assert site.app.subscriptions == []  # pywebpush's AppServer forgets a 404 subscription
