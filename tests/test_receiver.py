"""Tests for labkit.webhooks.receiver, over real loopback sockets: every check, every status."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
import xml.etree.ElementTree as ElementTree

import pytest
import requests
import tornado.web

from helpers import raw_http
from labkit import lab
from labkit.errors import LabkitError, LabLoopError
from labkit.feed import Feed
from labkit.trace import Trace
from labkit.webhooks.guards import IpAllowlist
from labkit.webhooks.providers import (
    GitHubProvider,
    OutgoingWebhook,
    PaymentProvider,
    StandardWebhooksProvider,
    TwilioProvider,
)
from labkit.webhooks.receiver import WebhookReceiver, serve_receiver
from labkit.webhooks.signatures import (
    GitHubSignature,
    StandardWebhooksSignature,
    StripeSignature,
    TwilioSignature,
    generate_secret,
)

PAY_SECRET = "whsec_pay"
SW_SECRET = generate_secret(random.Random(11))

# Each provider and the verifier its receiver is configured with.
PAIRS = {
    "github": (GitHubProvider("gh"), GitHubSignature("gh")),
    "twilio": (TwilioProvider("tw"), TwilioSignature("tw")),
    "payment": (PaymentProvider(PAY_SECRET), StripeSignature(PAY_SECRET)),
    "standard": (StandardWebhooksProvider(SW_SECRET), StandardWebhooksSignature(SW_SECRET)),
}


def post(url: str, body: bytes, content_type: str = "application/json",
         **headers: str) -> requests.Response:
    return requests.post(url, data=body, timeout=5, headers={"Content-Type": content_type,
                                                             **headers})


def payment(server, **provider_kwargs) -> OutgoingWebhook:
    """A valid signed payment webhook for ``server``."""
    provider = PaymentProvider(provider_kwargs.pop("secret", PAY_SECRET), **provider_kwargs)
    return provider.build(server.endpoint_url, Feed().make("payment", {}))


def response_record(server):
    return server.trace.records(kind="response")[-1]


# -- accepted deliveries ----------------------------------------------------------------


@pytest.mark.parametrize("name", PAIRS)
def test_each_providers_delivery_is_accepted_by_its_verifier(name):
    provider, verifier = PAIRS[name]
    with serve_receiver(verifiers=[verifier]) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=1).make("push", {}))
        response = webhook.send()
        assert response.status_code == 200
        assert response.content == b"" and "Content-Type" not in response.headers
        delivery, = server.component.deliveries
        assert delivery.id == webhook.delivery_id
        assert delivery.event_type == webhook.event_type
        assert delivery.body == webhook.body
        assert delivery.remote_ip == "127.0.0.1"
        assert delivery.headers["user-agent"] == webhook.headers["User-Agent"]
        assert server.component.rejections == []
        assert response_record(server).status == 200
        assert response_record(server).events == 1


def test_json_form_and_xml_bodies_are_parsed():
    with serve_receiver() as server:
        url = server.endpoint_url
        assert post(url, b'{"id": "evt_1", "type": "a.b"}').status_code == 200
        assert post(url, b'{"id": 7}', "application/cloudevents+json").status_code == 200
        form = b"MessageSid=SM1&MessageStatus=sent&Body="
        form_type = "application/x-www-form-urlencoded; charset=utf-8"
        assert post(url, form, form_type).status_code == 200
        xml = b"<notification id='n1'><type>order.shipped</type></notification>"
        assert post(url, xml, "text/xml").status_code == 200
        assert post(url, b"<a/>", "application/xml").status_code == 200
        json_one, json_two, form_one, xml_one, xml_two = server.component.deliveries
    assert (json_one.id, json_one.event_type, json_one.payload["type"]) == ("evt_1", "a.b", "a.b")
    assert (json_two.id, json_two.event_type) == ("7", None)
    assert form_one.payload == {"MessageSid": "SM1", "MessageStatus": "sent", "Body": ""}
    assert (form_one.id, form_one.event_type) == (None, "sent"), "a MessageSid names a message, not a delivery"
    assert isinstance(xml_one.payload, ElementTree.Element)
    assert (xml_one.id, xml_one.event_type) == ("n1", "order.shipped")
    assert (xml_two.id, xml_two.event_type) == (None, None)


def test_rules_share_an_application_with_other_endpoints():
    class Health(tornado.web.RequestHandler):
        def get(self):
            self.write("ok")

    receiver = WebhookReceiver(path="/hooks/github")
    with lab.serve(receiver.rules() + [("/health", Health)]) as server:
        assert requests.get(server.url + "/health", timeout=5).text == "ok"
        assert post(server.url + "/hooks/github", b"{}").status_code == 200
        assert len(receiver.deliveries) == 1


# -- rejections -----------------------------------------------------------------------

# name: (how to spoil a valid payment webhook, status, reason, words in the message)
SPOILED = {
    "missing signature": (lambda s, w: dataclasses.replace(w, headers={
        k: v for k, v in w.headers.items() if k != "Stripe-Signature"}), 401, "missing", ""),
    "wrong secret": (lambda s, w: payment(s, secret="whsec_other"), 401, "mismatch", ""),
    "tampered body": (lambda s, w: dataclasses.replace(w, body=w.body.replace(b"2000", b"1")),
                      401, "mismatch", ""),
    "stale": (lambda s, w: payment(s, clock=lambda: time.time() - 600), 401, "stale", "old"),
    "malformed JSON": (lambda s, w: _signed(w, b'{"id": "evt_1",'), 400, "malformed", "JSON"),
    "malformed XML": (lambda s, w: _signed(w, b"<a><b></a>", "text/xml"), 400, "malformed", "XML"),
    "unsupported type": (lambda s, w: dataclasses.replace(w, headers={
        **w.headers, "Content-Type": "text/plain"}), 415, "unsupported_type", "text/plain"),
    "unsigned and unsupported type": (lambda s, w: OutgoingWebhook(
        w.url, "POST", {"Content-Type": "text/csv"}, b"a,b", "", ""), 415, "unsupported_type", ""),
    "too large": (lambda s, w: dataclasses.replace(w, body=b" " * (1024 * 1024 + 1)), 413,
                  "too_large", "1048577 bytes"),
    "wrong method": (lambda s, w: dataclasses.replace(w, method="PUT"), 405, "method", "PUT"),
}


def _signed(webhook: OutgoingWebhook, body: bytes, content_type: str = "application/json"):
    headers = {"Content-Type": content_type, **StripeSignature(PAY_SECRET).sign(body)}
    return dataclasses.replace(webhook, headers=headers, body=body)


@pytest.mark.parametrize("name", SPOILED)
def test_every_rejection_has_its_status_is_recorded_and_the_server_keeps_serving(name):
    spoil, status, reason, words = SPOILED[name]
    with serve_receiver(verifiers=[StripeSignature(PAY_SECRET)]) as server:
        response = spoil(server, payment(server)).send()
        assert response.status_code == status
        assert response.text == reason + "\n"
        rejection, = server.component.rejections
        assert (rejection.status, rejection.reason) == (status, reason)
        assert words in rejection.message
        assert response_record(server).detail == f"{reason}: {rejection.message}"
        assert response_record(server).events == 0
        assert server.component.deliveries == []
        assert payment(server).send().status_code == 200
        assert len(server.component.deliveries) == 1


def test_wrong_method_says_allow_post():
    with serve_receiver() as server:
        response = requests.get(server.endpoint_url, timeout=5)
        assert response.status_code == 405 and response.headers["Allow"] == "POST"


def test_body_limit_is_configurable_and_counts_streamed_bytes_too():
    def chunks():  # a generator body is sent chunked, with no Content-Length
        yield from (b"x" * 100 for _ in range(3))

    with serve_receiver(max_body=250) as server:
        assert post(server.endpoint_url, b'{"n": "' + b"x" * 300 + b'"}').status_code == 413
        assert post(server.endpoint_url, chunks()).status_code == 413
        assert post(server.endpoint_url, b'{"n": 1}').status_code == 200
        assert [r.reason for r in server.component.rejections] == ["too_large", "too_large"]


def test_a_declared_oversize_body_is_refused_before_it_is_read():
    with serve_receiver(max_body=1000) as server:
        assert post(server.endpoint_url, b"{}" + b" " * 500_000).status_code == 413
        request, = server.trace.records(kind="request")
        assert request.bytes < 1000  # the handler never saw the body: only headers counted
        assert "500002 bytes" in server.component.rejections[0].message


def test_size_is_checked_before_the_signature():
    with serve_receiver(verifiers=[StripeSignature(PAY_SECRET)], max_body=10) as server:
        assert post(server.endpoint_url, b"{}" * 10).status_code == 413


def test_ip_allowlist_refuses_loopback_with_403():
    allowlist = IpAllowlist("10.0.0.0/8", trusted_proxies="127.0.0.1")
    with serve_receiver(verifiers=[allowlist]) as server:
        response = post(server.endpoint_url, b"{}", **{"X-Forwarded-For": "192.0.2.9"})
        assert response.status_code == 403
        assert server.component.rejections[0].reason == "forbidden"
        assert "192.0.2.9" in response_record(server).detail
        allowed = post(server.endpoint_url, b"{}", **{"X-Forwarded-For": "10.1.2.3"})
        assert allowed.status_code == 200


def test_every_verifier_must_pass_in_order():
    allowlist = IpAllowlist("10.0.0.0/8")
    with serve_receiver(verifiers=[StripeSignature(PAY_SECRET), allowlist]) as server:
        assert post(server.endpoint_url, b"{}").status_code == 401  # first verifier first
        assert payment(server).send().status_code == 403
        assert [r.reason for r in server.component.rejections] == ["missing", "forbidden"]


# -- process and faults ---------------------------------------------------------------------


def test_process_runs_inside_the_request_and_its_failure_is_a_500():
    seen = []

    async def process(delivery):
        await asyncio.sleep(0.05)
        if delivery.payload.get("bad"):
            raise ValueError("cannot handle this one")
        seen.append(delivery.id)

    with serve_receiver(process=process) as server:
        assert post(server.endpoint_url, b'{"id": "a"}').status_code == 200
        assert seen == ["a"]  # done before the provider got its answer
        assert response_record(server).duration >= 0.04
        assert post(server.endpoint_url, b'{"id": "b", "bad": true}').status_code == 500
        rejection, = server.component.rejections
        assert (rejection.status, rejection.reason) == (500, "process_failed")
        assert "cannot handle this one" in rejection.message
        assert "process_failed" in response_record(server).detail
        assert post(server.endpoint_url, b'{"id": "c"}').status_code == 200
        # A verified delivery is recorded even if processing failed: the retry will repeat it.
        assert [d.id for d in server.component.deliveries] == ["a", "b", "c"]


def test_plain_function_process_is_called_too():
    seen = []
    with serve_receiver(process=lambda delivery: seen.append(delivery.event_type)) as server:
        post(server.endpoint_url, b'{"type": "x"}')
    assert seen == ["x"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "coroutine"])
def test_faults_hook_answers_its_status_and_headers_without_processing(asynchronous):
    answers = [(429, {"Retry-After": "2"}), None]

    def faults(delivery):
        return answers.pop(0)

    async def async_faults(delivery):
        return faults(delivery)

    processed = []
    with serve_receiver(faults=async_faults if asynchronous else faults,
                        process=processed.append) as server:
        first = post(server.endpoint_url, b'{"id": "evt_9"}')
        assert first.status_code == 429 and first.headers["Retry-After"] == "2"
        assert first.content == b""
        assert server.component.deliveries == [] and processed == []
        rejection, = server.component.rejections
        assert (rejection.status, rejection.reason) == (429, "fault")
        assert response_record(server).detail.startswith("fault:")
        assert post(server.endpoint_url, b'{"id": "evt_9"}').status_code == 200
        assert [d.id for d in processed] == ["evt_9"]


# -- feed latency, waiting, serving -----------------------------------------------------------


def test_feed_linked_deliveries_record_their_latency_in_the_trace():
    feed = Feed(seed=8)
    with serve_receiver(feed=feed, technique="webhook: hooks") as server:
        receiver = server.component
        events = [feed.make("push", {}) for _ in PAIRS]
        for (provider, _), event in zip(PAIRS.values(), events):
            assert provider.send(server.endpoint_url, event).status_code == 200
        assert post(server.endpoint_url, b'{"id": "evt_not_in_feed"}').status_code == 200
        records = server.trace.records(kind="event", technique="webhook: hooks")
    assert len(records) == 4
    assert [r.event_id for r in records] == [e.id for e in events]
    assert all(0 <= r.latency < 5 for r in records)
    assert len(receiver.deliveries) == 5


def test_a_receiver_with_a_feed_needs_a_trace_to_mount():
    with pytest.raises(LabkitError, match="trace"):
        WebhookReceiver(feed=Feed()).rules()
    trace = Trace()
    assert WebhookReceiver(feed=Feed(), trace=trace).rules()


def test_wait_for_returns_once_enough_deliveries_arrived():
    with serve_receiver() as server:
        sender = threading.Timer(0.05, post, (server.endpoint_url, b'{"id": "late"}'))
        sender.start()
        try:
            deliveries = server.component.wait_for(1, timeout=5)
        finally:
            sender.join(5)
        assert [d.id for d in deliveries] == ["late"]


def test_wait_for_timeout_says_what_arrived_and_why_others_were_rejected():
    with serve_receiver(verifiers=[GitHubSignature("gh")]) as server:
        post(server.endpoint_url, b"{}")
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            server.component.wait_for(2, timeout=0.2)
        assert time.monotonic() - started < 2
    message = str(info.value)
    assert "0 of 2 deliveries" in message and "/webhook" in message
    assert "1 requests were rejected (last: 401 missing)" in message


def test_wait_for_on_the_lab_loop_refuses_to_deadlock():
    receiver = WebhookReceiver()
    with pytest.raises(LabLoopError):
        lab.run(lambda: receiver.wait_for(1, timeout=0.1), timeout=5)


def test_serve_receiver_uses_the_given_trace_and_refuses_mixed_arguments():
    trace = Trace()
    with serve_receiver(WebhookReceiver(path="/in"), trace=trace) as server:
        assert server.trace is trace is server.component.trace
        assert server.endpoint_url == server.url + "/in"
        assert server.technique == "webhook"
    own = Trace()
    with serve_receiver(WebhookReceiver(trace=own)) as server:
        assert server.trace is own
    with pytest.raises(LabkitError, match="not both"):
        serve_receiver(WebhookReceiver(), max_body=10)


def test_served_on_its_own_the_receiver_answers_404_elsewhere_and_keeps_serving():
    with serve_receiver() as server:
        stray = requests.post(server.url + "/elsewhere", json={}, timeout=5)
        ok = requests.post(server.endpoint_url + "?source=test", json={"id": "x"}, timeout=5)
        reasons = [r.reason for r in server.component.rejections]
    assert stray.status_code == 404 and reasons == ["not_found"]
    assert ok.status_code == 200


def test_mounted_with_rules_it_shares_an_application_with_other_handlers():
    class Health(tornado.web.RequestHandler):
        def get(self):
            self.write("ok")

    receiver = WebhookReceiver()
    with lab.serve(receiver.rules() + [("/health", Health)]) as server:
        assert requests.get(server.url + "/health", timeout=5).text == "ok"
        assert requests.post(server.url + receiver.path, json={}, timeout=5).status_code == 200
    assert len(receiver.deliveries) == 1


@pytest.mark.parametrize("garbage", [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n{}",
    b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}",   # body cut short
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",                        # a TLS hello
], ids=["not-http", "bad-length", "short-body", "tls"])
def test_malformed_http_never_takes_the_receiver_down(garbage):
    with serve_receiver() as server:
        raw_http(server.port, garbage, timeout=0.5)   # a cut-short body gets no answer
        after = requests.post(server.endpoint_url, json={"id": "still-here"}, timeout=5)
        assert after.status_code == 200
        assert [d.id for d in server.component.deliveries] == ["still-here"]


def test_a_standard_webhooks_delivery_from_a_clock_far_ahead_is_refused_as_future():
    provider = StandardWebhooksProvider(SW_SECRET, clock=lambda: time.time() + 600)
    with serve_receiver(verifiers=[StandardWebhooksSignature(SW_SECRET)]) as server:
        answer = provider.send(server.endpoint_url, Feed(seed=9).make("tick"))
        [rejection] = server.component.rejections
    assert answer.status_code == 401 and rejection.reason == "future"
    assert "in the future" in rejection.message


def test_a_head_request_gets_its_refusal_headers_and_no_body():
    with serve_receiver() as server:
        answer = raw_http(server.port, b"HEAD /webhook HTTP/1.1\r\nHost: lab\r\n"
                                       b"Connection: close\r\n\r\n")
        assert requests.post(server.endpoint_url, json={}, timeout=5).status_code == 200
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405") and body == b""
