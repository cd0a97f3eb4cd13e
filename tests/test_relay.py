"""Tests for labkit.debug.relay, over real loopback sockets: forwarding, a bad network, the traps."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import statistics
import threading
import time

import pytest
import requests
import tornado.web

from helpers import raw_http
from labkit import lab
from labkit.errors import LabkitError, LabLoopError
from labkit.feed import Feed
from labkit.trace import Trace
from labkit.webhooks.guards import IpAllowlist
from labkit.debug.inspector import replay, serve_inspector
from labkit.webhooks.providers import (GitHubProvider, PaymentProvider, StandardWebhooksProvider,
                                       TwilioProvider)
from labkit.webhooks.receiver import serve_receiver
from labkit.debug.relay import MAX_DELAY, PublicUrl, Relay, serve_relay
from labkit.webhooks.signatures import (GitHubSignature, StandardWebhooksSignature,
                                        StripeSignature, TwilioSignature, generate_secret)

SW_SECRET = generate_secret(random.Random(5))
PAIRS = {
    "github": (GitHubProvider("gh"), GitHubSignature("gh")),
    "payment": (PaymentProvider("whsec_p"), StripeSignature("whsec_p")),
    "standard": (StandardWebhooksProvider(SW_SECRET), StandardWebhooksSignature(SW_SECRET)),
}
GITHUB_HOOKS = ["192.30.252.0/22", "140.82.112.0/20"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- forwarding -----------------------------------------------------------------------------


def test_a_request_arrives_at_the_target_unchanged_with_the_forwarded_headers_added():
    with serve_inspector() as target, serve_relay(target.url) as tunnel:
        public = tunnel.component.public(target.component.bin_url("b")) + "/deep/path?x=1&y=%20"
        body = b"\x00 raw bytes \xff"
        response = requests.put(public, data=body, timeout=5, headers={
            "X-Custom": "kept", "X-Forwarded-For": "198.51.100.1",
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "spoofed.example"})
        assert response.status_code == 200 and response.text == "captured #1\n"
        arrived = target.component.last
        assert (arrived.method, arrived.path, arrived.query, arrived.body) == \
            ("PUT", "/bin/b/deep/path", "x=1&y=%20", body)
        assert arrived.header("X-Custom") == "kept"
        assert arrived.header("Host") == f"127.0.0.1:{target.port}", "Host is the target's"
        assert arrived.header("X-Forwarded-Host") == f"127.0.0.1:{tunnel.port}"
        assert arrived.header("X-Forwarded-Proto") == "http", "the relay overwrites, not trusts"
        assert arrived.header("X-Forwarded-For") == "198.51.100.1, 127.0.0.1", "appended"
        assert arrived.header("Connection") == "close"
        assert arrived.remote_ip == "127.0.0.1"
        exchange, = tunnel.component.log
        assert (exchange.outcome, exchange.status, exchange.target_status) == ("forwarded", 200, 200)
        assert exchange.request.body == body and exchange.request.header("X-Custom") == "kept"
        assert exchange.response_size == len("captured #1\n")
        assert tunnel.trace.counts() == {"relay": {"request": 1, "response": 1}}


def test_preserve_host_passes_the_clients_host_on():
    with serve_inspector() as target, serve_relay(target.url, preserve_host=True) as tunnel:
        requests.get(tunnel.component.public(target.component.bin_url()), timeout=5)
        assert target.component.last.header("Host") == f"127.0.0.1:{tunnel.port}"


class Answer(tornado.web.RequestHandler):
    """A target whose answer the relay must copy exactly."""

    def get(self):
        self.clear_header("Server")
        self.clear_header("Content-Type")
        self.set_status(418, "Short And Stout")
        self.add_header("Set-Cookie", "a=1")
        self.add_header("Set-Cookie", "b=2")
        self.set_header("X-Target", "yes")
        self.finish(b"\x01" * 1_000_000)

    def head(self):
        self.set_header("Content-Length", "1234")
        self.finish()

    def delete(self):
        self.set_status(204)
        self.finish()


def test_the_answer_comes_back_as_the_target_gave_it():
    with lab.serve([("/answer", Answer)]) as target, serve_relay(target.url) as tunnel:
        response = requests.get(tunnel.url + "/answer", timeout=5)
        assert (response.status_code, response.reason) == (418, "Short And Stout")
        assert response.content == b"\x01" * 1_000_000
        assert response.headers["X-Target"] == "yes"
        assert response.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
        assert "Server" not in response.headers and "Content-Type" not in response.headers
        head = requests.head(tunnel.url + "/answer", timeout=5)
        assert head.status_code == 200 and head.headers["Content-Length"] == "1234"
        assert requests.delete(tunnel.url + "/answer", timeout=5).status_code == 204
        # each exchange is logged before its client has the whole answer
        assert [x.status for x in tunnel.component.log] == [418, 200, 204]
        assert tunnel.component.log[0].response_size == 1_000_000


def test_a_stream_flows_through_chunk_by_chunk():
    release = asyncio.Event()

    class Stream(tornado.web.RequestHandler):
        async def get(self):
            self.set_header("Content-Type", "text/event-stream")
            self.write("data: first\n\n")
            await self.flush()
            await asyncio.wait_for(release.wait(), 5)
            self.finish("data: second\n\n")

    with lab.serve([("/events", Stream)]) as target, serve_relay(target.url) as tunnel:
        with requests.get(tunnel.url + "/events", stream=True, timeout=5) as response:
            lines = response.iter_lines()
            assert next(lines) == b"data: first", "the first event arrived before the second exists"
            lab.run(release.set)
            assert [line for line in lines if line] == [b"data: second"]
        assert tunnel.component.wait_for(1)[0].outcome == "forwarded"


@pytest.mark.parametrize("name", PAIRS)
def test_signatures_survive_the_relay(name):
    provider, verifier = PAIRS[name]
    with serve_receiver(verifiers=[verifier]) as receiver, serve_relay(receiver.url) as tunnel:
        webhook = provider.build(tunnel.component.public(receiver.endpoint_url), Feed(seed=2).make("x"))
        assert webhook.send().status_code == 200
        delivery, = receiver.component.deliveries
        assert delivery.body == webhook.body and delivery.id == webhook.delivery_id
        tampered = dataclasses.replace(webhook, body=webhook.body.replace(b"{", b"{ ", 1))
        assert tampered.send().status_code == 401, "and a changed body is still caught"


def test_a_relay_log_entry_can_be_replayed_like_a_captured_request():
    provider, verifier = PAIRS["github"]
    with serve_receiver(verifiers=[verifier]) as receiver, serve_relay(receiver.url) as tunnel:
        provider.send(tunnel.component.public(receiver.endpoint_url), Feed().make())
        logged = tunnel.component.log[0].request
        assert replay(logged, receiver.endpoint_url).status_code == 200
        # The replay is the same delivery again: acknowledged, recognised as a repeat.
        assert [d.body for d in receiver.component.deliveries] == [logged.body]
        assert receiver.component.repeats == [logged.header("X-GitHub-Delivery")]


# -- the traps --------------------------------------------------------------------------------


def test_twilio_signs_the_public_url_so_the_receiver_must_verify_against_it():
    token = "twilio-token"
    event = Feed(seed=3).make("sms", {"status": "delivered"})
    with serve_receiver(verifiers=[TwilioSignature(token)]) as receiver, \
            serve_relay(receiver.url) as tunnel:
        public = tunnel.component.public(receiver.endpoint_url)
        webhook = TwilioProvider(token).build(public, event)
        assert webhook.send().status_code == 401, "the receiver checked its own, local URL"
        assert receiver.component.rejections[-1].reason == "mismatch"
        assert "url" in receiver.component.rejections[-1].message

        receiver.component.verifiers = [PublicUrl(TwilioSignature(token), tunnel.url)]
        assert webhook.send().status_code == 200, "verified against the URL Twilio called"

        # A real tunnel's public URL is https on another host; Twilio signs that one.
        real = TwilioProvider(token).build("https://abc123.ngrok.app/webhook", event)
        through_tunnel = dataclasses.replace(real, url=public)
        assert through_tunnel.send().status_code == 401
        receiver.component.verifiers = [PublicUrl(TwilioSignature(token), "https://abc123.ngrok.app")]
        assert through_tunnel.send().status_code == 200
        # The same callback id both times: the second was acknowledged as a repeat.
        assert len(receiver.component.deliveries) == len(receiver.component.repeats) == 1


def test_preserving_host_alone_does_not_fix_an_https_public_url():
    token = "twilio-token"
    with serve_receiver(verifiers=[TwilioSignature(token)]) as receiver, \
            serve_relay(receiver.url, preserve_host=True) as tunnel:
        public = tunnel.component.public(receiver.endpoint_url)
        here = TwilioProvider(token).build(public, Feed().make())
        assert here.send().status_code == 200, "same scheme and Host here, so the URLs agree"
        real = TwilioProvider(token).build(public.replace("http://", "https://"), Feed().make())
        assert dataclasses.replace(real, url=public).send().status_code == 401


def test_public_url_keeps_path_and_query_and_refuses_nonsense():
    wrapped = PublicUrl(TwilioSignature("t"), "https://abc.ngrok.app/ignored")
    assert wrapped.url_for("http://127.0.0.1:9/hook?a=1") == "https://abc.ngrok.app/hook?a=1"
    assert wrapped.name == "twilio"
    with pytest.raises(LabkitError, match="public_url"):
        PublicUrl(TwilioSignature("t"), "abc.ngrok.app")


def test_behind_the_relay_the_allowlist_must_read_x_forwarded_for_from_the_trusted_proxy():
    trusting = IpAllowlist(GITHUB_HOOKS, trusted_proxies=["127.0.0.1/32"])
    naive = IpAllowlist(GITHUB_HOOKS)
    with serve_receiver(verifiers=[trusting]) as receiver, serve_receiver(verifiers=[naive]) as other, \
            serve_relay(receiver.url, forwarded_for="192.30.252.10") as github, \
            serve_relay(receiver.url, forwarded_for="203.0.113.7") as stranger, \
            serve_relay(other.url, forwarded_for="192.30.252.10") as github_to_naive:
        json_ = {"Content-Type": "application/json"}
        url = github.component.public(receiver.endpoint_url)
        assert requests.post(url, data=b"{}", headers=json_, timeout=5).status_code == 200
        spoofed = stranger.component.public(receiver.endpoint_url)
        forged = {**json_, "X-Forwarded-For": "192.30.252.10"}
        assert requests.post(spoofed, data=b"{}", headers=forged, timeout=5).status_code == 403
        assert "203.0.113.7" in receiver.component.rejections[-1].message
        naive_url = github_to_naive.component.public(other.endpoint_url)
        assert requests.post(naive_url, data=b"{}", headers=json_, timeout=5).status_code == 403
        assert "127.0.0.1" in other.component.rejections[-1].message, "it only saw the relay"


# -- a bad network -------------------------------------------------------------------------------


def test_latency_and_jitter_are_added_within_their_bounds_and_show_in_round_trips():
    with serve_receiver() as receiver, \
            serve_relay(receiver.url, latency=0.15, jitter=0.05, seed=4) as slow:
        direct, relayed = [], []
        for n in range(6):
            for url, times in ((receiver.endpoint_url, direct),
                               (slow.component.public(receiver.endpoint_url), relayed)):
                started = time.monotonic()
                assert requests.post(url, json={"n": n}, timeout=5).status_code == 200
                times.append(time.monotonic() - started)
        delays = [x.delay for x in slow.component.log]
        assert len(delays) == 6 and all(0.1 <= d <= 0.2 for d in delays)
        assert len(set(delays)) == 6, "jitter makes every delay different"
        assert all(r >= 0.9 * d for r, d in zip(relayed, delays)), "the delay was waited out"
        assert statistics.median(relayed) > statistics.median(direct)


def test_the_same_seed_gives_the_same_bad_network():
    def run(seed):
        with serve_receiver() as receiver, \
                serve_relay(receiver.url, jitter=0.01, drop=0.5, drop_with=502, seed=seed) as relay:
            statuses = [requests.post(relay.url + "/webhook", json={}, timeout=5).status_code
                        for _ in range(12)]
            return statuses, [x.delay for x in relay.component.log]

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other
    assert 502 in first[0] and 200 in first[0]


def test_dropped_requests_never_reach_the_target_and_the_connection_is_closed():
    with serve_receiver() as receiver, serve_relay(receiver.url, drop=0.4, seed=1) as relay:
        outcomes = []
        for n in range(20):
            try:
                outcomes.append(requests.post(relay.url + "/webhook", json={"id": f"e{n}"},
                                              timeout=5).status_code)
            except requests.ConnectionError:
                outcomes.append("closed")
        lost = outcomes.count("closed")
        assert 2 <= lost <= 18 and outcomes.count(200) == 20 - lost
        assert len(receiver.component.deliveries) == 20 - lost
        assert relay.component.counts() == {"forwarded": 20 - lost, "dropped": lost}
        assert relay.trace.count("drop", "relay") == lost
        assert relay.trace.count("request", "relay") == 20
        closed = [x for x in relay.component.log if x.outcome == "dropped"]
        assert all(x.status is None and x.target_status is None for x in closed)
        arrived = {d.id for d in receiver.component.deliveries}
        assert arrived == {f"e{n}" for n, o in enumerate(outcomes) if o == 200}


def test_drop_with_a_status_answers_it_instead():
    with serve_receiver() as receiver, serve_relay(receiver.url, drop=1.0, drop_with=502) as relay:
        response = requests.post(relay.url + "/webhook", json={}, timeout=5)
        assert response.status_code == 502 and "bad network" in response.text
        assert receiver.component.deliveries == []
        assert relay.trace.records(kind="response")[-1].detail.startswith("dropped:")


# -- failures of the target, bad input ------------------------------------------------------------


def test_target_down_is_a_502_that_says_what_to_check_and_the_relay_recovers():
    port = free_port()
    with serve_relay(f"http://127.0.0.1:{port}") as relay:
        response = requests.post(relay.url + "/webhook", json={}, timeout=5)
        assert response.status_code == 502
        assert "refused" in response.text and "is the local server running" in response.text
        assert relay.component.log[-1].outcome == "target_down"
        with serve_receiver(port=port) as receiver:
            assert requests.post(relay.url + "/webhook", json={}, timeout=5).status_code == 200
            assert len(receiver.component.deliveries) == 1


def test_a_target_that_does_not_answer_in_time_is_a_504():
    release = asyncio.Event()

    class Stuck(tornado.web.RequestHandler):
        async def post(self):
            try:
                await asyncio.wait_for(release.wait(), 5)
            except asyncio.TimeoutError:
                pass

    with lab.serve([("/stuck", Stuck)]) as target, serve_relay(target.url, timeout=0.2) as relay:
        try:
            response = requests.post(relay.url + "/stuck", data=b"x", timeout=5)
            assert response.status_code == 504 and "did not start answering" in response.text
            assert relay.component.log[-1].outcome == "timeout"
        finally:
            lab.run(release.set)


def test_a_body_over_the_cap_is_refused_before_forwarding():
    with serve_inspector() as target, serve_relay(target.url, max_body=100) as relay:
        assert requests.post(relay.url + "/bin/x", data=b"x" * 101, timeout=5).status_code == 413
        assert requests.post(relay.url + "/bin/x", data=b"x" * 100, timeout=5).status_code == 200
        assert [x.outcome for x in relay.component.log] == ["too_large", "forwarded"]
        assert len(target.component.requests) == 1


def test_garbage_and_unknown_methods_leave_the_relay_serving():
    with serve_inspector() as target, serve_relay(target.url) as relay:
        answer = raw_http(relay.port, b"\x16\x03\x01 not http at all\r\n\r\n")
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
        assert requests.request("BREW", relay.url + "/bin/x", timeout=5).status_code == 405
        assert target.component.requests == []
        assert requests.get(relay.url + "/bin/x", timeout=5).status_code == 200


def test_stopping_the_relay_during_a_delay_ends_the_request():
    relay = serve_relay(f"http://127.0.0.1:{free_port()}", latency=MAX_DELAY)
    failed = []

    def client():
        try:
            requests.post(relay.url + "/webhook", data=b"x", timeout=30)
        except requests.RequestException as exc:
            failed.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while relay.trace.count("request") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        relay.stop()
        thread.join(30)
    assert not thread.is_alive() and len(failed) == 1
    assert relay.component.wait_for(1)[0].outcome == "client_gone"


def test_bad_arguments_are_refused_with_a_clear_message():
    for target in ("http://example.com", "https://127.0.0.1:8000", "http://127.0.0.1:8000/webhook"):
        with pytest.raises(LabkitError, match="base URL"):
            Relay(target)
    for kwargs, words in (({"latency": MAX_DELAY, "jitter": 1}, "at most"), ({"drop": 1.5}, "share"),
                          ({"drop_with": 200}, "drop_with"), ({"timeout": 0}, "timeout")):
        with pytest.raises(LabkitError, match=words):
            Relay("http://127.0.0.1:8000", **kwargs)


def test_public_maps_local_urls_and_waits_are_safe():
    trace = Trace()
    with serve_relay("http://127.0.0.1:8000", trace=trace) as relay:
        assert relay.trace is trace
        assert relay.component.public("http://127.0.0.1:8000/webhook?a=1") == relay.url + "/webhook?a=1"
        with pytest.raises(LabkitError, match="not on the relay's target"):
            relay.component.public("http://127.0.0.1:8001/webhook")
        with pytest.raises(TimeoutError, match="0 of 1"):
            relay.component.wait_for(1, timeout=0.05)
        with pytest.raises(LabLoopError):
            lab.run(lambda: relay.component.wait_for(1, timeout=0.1), timeout=5)
    with pytest.raises(LabkitError, match="not served"):
        Relay("http://127.0.0.1:8000").public("http://127.0.0.1:8000/")
