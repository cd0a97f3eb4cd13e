"""Tests for labkit.webhooks.providers: headers, bodies and ids shaped like the real senders'."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import re
import time
from datetime import datetime
from urllib.parse import parse_qsl

import pytest
import requests
import tornado.web
from standardwebhooks.webhooks import Webhook

from labkit import lab
from labkit.errors import LabkitError, SignatureError
from labkit.feed import Feed
from labkit.webhooks.providers import (
    GitHubProvider,
    Provider,
    PaymentProvider,
    StandardWebhooksProvider,
    TwilioProvider,
)
from labkit.webhooks.signatures import (
    GitHubSignature,
    StandardWebhooksSignature,
    StripeSignature,
    TwilioSignature,
    generate_secret,
)

URL = "https://example.com/hooks/in?tenant=7"
NOW = 1_700_000_000.0
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SW_SECRET = generate_secret(random.Random(7))


def fixed(now: float = NOW):
    return lambda: now


PROVIDERS = {
    "github": lambda clock: GitHubProvider("gh", clock=clock),
    "twilio": lambda clock: TwilioProvider("tw", clock=clock),
    "payment": lambda clock: PaymentProvider("whsec_pay", clock=clock),
    "standard": lambda clock: StandardWebhooksProvider(SW_SECRET, clock=clock),
}


# -- GitHub ---------------------------------------------------------------------------


def test_github_push_has_exactly_githubs_headers():
    event = Feed(seed=1).make("push", {})
    webhook = GitHubProvider("gh", hook_id=42, clock=fixed()).build(URL, event)
    headers = webhook.headers
    assert set(headers) == {
        "User-Agent", "Content-Type", "X-GitHub-Event", "X-GitHub-Delivery", "X-GitHub-Hook-ID",
        "X-GitHub-Hook-Installation-Target-Type", "X-GitHub-Hook-Installation-Target-ID",
        "X-Hub-Signature", "X-Hub-Signature-256",
    }
    assert re.fullmatch(r"GitHub-Hookshot/[0-9a-f]{7}", headers["User-Agent"])
    assert headers["Content-Type"] == "application/json"
    assert headers["X-GitHub-Event"] == "push" == webhook.event_type
    assert GUID.fullmatch(headers["X-GitHub-Delivery"])
    assert headers["X-GitHub-Delivery"] == webhook.delivery_id
    assert headers["X-GitHub-Hook-ID"] == "42"
    assert headers["X-GitHub-Hook-Installation-Target-Type"] == "repository"
    body = json.loads(webhook.body)
    assert headers["X-GitHub-Hook-Installation-Target-ID"] == str(body["repository"]["id"])
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", headers["X-Hub-Signature-256"])
    GitHubSignature("gh").verify(headers, webhook.body)
    assert (webhook.method, webhook.url) == ("POST", URL)


def test_github_push_payload_is_realistic_compact_json_filled_from_the_event():
    event = Feed().make("push", {"repository": "acme/rockets", "author": "wile",
                                 "message": "Fix fuse", "ref": "refs/heads/dev",
                                 "added": ["fuse.py"]})
    event = dataclasses.replace(event, created=event.created - 90.5)   # pushed 90.5 s ago
    webhook = GitHubProvider("gh", clock=fixed()).build(URL, event)
    body = json.loads(webhook.body)
    compact = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert webhook.body == compact
    assert {"ref", "before", "after", "repository", "pusher", "sender", "commits",
            "head_commit", "compare", "created", "deleted", "forced"} <= set(body)
    assert body["ref"] == "refs/heads/dev"
    assert re.fullmatch(r"[0-9a-f]{40}", body["after"]) and body["before"] != body["after"]
    repository = body["repository"]
    assert (repository["name"], repository["full_name"]) == ("rockets", "acme/rockets")
    assert repository["owner"]["login"] == "acme"
    assert repository["pushed_at"] == int(NOW) - 91, "when the push happened, not the sending"
    assert body["pusher"]["name"] == body["sender"]["login"] == "wile"
    assert body["head_commit"] == body["commits"][0]
    commit = body["head_commit"]
    assert commit["id"] == body["after"] and commit["message"] == "Fix fuse"
    assert commit["added"] == ["fuse.py"]
    assert commit["timestamp"] == "2023-11-14T22:11:49Z"
    assert body["compare"].startswith("https://github.com/acme/rockets/compare/")


def test_thin_payload_is_much_smaller_and_its_url_fetches_the_full_one_over_http():
    event = Feed(seed=3).make("push", {"repository": "acme/rockets"})
    full = GitHubProvider("gh", clock=fixed()).build(URL, event)
    provider = GitHubProvider("gh", thin=True, clock=fixed())
    with lab.serve(provider.api_rules(), technique="http: api") as api:
        provider.api_url = api.url
        thin = provider.build(URL, event)
        notice = json.loads(thin.body)
        assert notice["event"] == "push"
        assert notice["delivery"] == thin.delivery_id == full.delivery_id
        assert notice["repository"] == {"full_name": "acme/rockets"}
        assert len(thin.body) * 10 < len(full.body)
        GitHubSignature("gh").verify(thin.headers, thin.body)
        fetched = requests.get(notice["url"], timeout=5)
        assert fetched.status_code == 200
        assert fetched.content == full.body
        assert requests.get(api.url + "/api/webhook-events/0000", timeout=5).status_code == 404
        assert api.trace.count("response", "http: api") == 2


def test_thin_provider_without_api_url_says_what_to_do():
    with pytest.raises(LabkitError, match="api_rules"):
        GitHubProvider("gh", thin=True).build(URL, Feed().make())


# -- Twilio ---------------------------------------------------------------------------


def test_twilio_status_callback_headers_and_params_round_trip():
    event = Feed(seed=2).make("sms", {"status": "delivered", "to": "+15551230000"})
    provider = TwilioProvider("tw-token", clock=fixed())
    webhook = provider.build(URL, event)
    assert set(webhook.headers) == {"User-Agent", "Content-Type", "I-Twilio-Idempotency-Token",
                                    "X-Twilio-Signature"}
    assert webhook.headers["User-Agent"] == "TwilioProxy/1.1"
    assert webhook.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert GUID.fullmatch(webhook.headers["I-Twilio-Idempotency-Token"])
    assert len(base64.b64decode(webhook.headers["X-Twilio-Signature"], validate=True)) == 20
    params = dict(parse_qsl(webhook.body.decode(), strict_parsing=True))
    assert params == provider.params(event, provider.message_sid(event), "delivered", NOW)
    assert re.fullmatch(r"SM[0-9a-f]{32}", params["MessageSid"])
    assert params["SmsSid"] == params["MessageSid"]
    assert webhook.delivery_id == webhook.headers["I-Twilio-Idempotency-Token"]
    assert re.fullmatch(r"AC[0-9a-f]{32}", params["AccountSid"])
    assert params["MessageStatus"] == params["SmsStatus"] == "delivered" == webhook.event_type
    assert params["ApiVersion"] == "2010-04-01"
    assert params["To"] == "+15551230000" and params["From"].startswith("+")
    assert "ErrorCode" not in params
    assert params["RawDlrDoneDate"] == "2311142213"
    TwilioSignature("tw-token").verify(webhook.headers, webhook.body, url=URL)
    with pytest.raises(SignatureError):  # the URL is signed too
        TwilioSignature("tw-token").verify(webhook.headers, webhook.body, url=URL + "&x=1")


def test_twilio_callbacks_about_one_message_share_its_sid_but_not_their_delivery_id():
    feed, provider = Feed(seed=3), TwilioProvider("tw-token", clock=fixed())
    callbacks = [provider.build(URL, feed.make("sms", {"message": "order-17", "status": status}))
                 for status in ("queued", "sent", "delivered")]
    sids = {dict(parse_qsl(c.body.decode()))["MessageSid"] for c in callbacks}
    assert len(sids) == 1, "every callback names the same text message"
    assert len({c.delivery_id for c in callbacks}) == 3, "each callback is its own delivery"


@pytest.mark.parametrize("status, code", [("failed", "30008"), ("undelivered", "30003"),
                                          ("queued", None), ("sent", None)])
def test_twilio_error_code_only_when_the_message_failed(status, code):
    event = Feed().make("sms", {"status": status})
    params = dict(parse_qsl(TwilioProvider("tw").build(URL, event).body.decode()))
    assert params["MessageStatus"] == status
    assert params.get("ErrorCode") == code


def test_twilio_refuses_an_unknown_status():
    with pytest.raises(LabkitError, match="delivered"):
        TwilioProvider("tw").build(URL, Feed().make("sms", {"status": "lost"}))


# -- Stripe-style payments ----------------------------------------------------------


@pytest.mark.parametrize("status, event_type, intent_status", [
    ("succeeded", "payment_intent.succeeded", "succeeded"),
    ("failed", "payment_intent.payment_failed", "requires_payment_method"),
])
def test_payment_event_is_a_stripe_event_object(status, event_type, intent_status):
    event = Feed(seed=4).make("payment", {"status": status, "amount": 1999, "currency": "eur"})
    webhook = PaymentProvider("whsec_pay", clock=fixed()).build(URL, event)
    assert webhook.headers["User-Agent"] == "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    assert webhook.headers["Content-Type"].startswith("application/json")
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", webhook.headers["Stripe-Signature"])
    assert webhook.headers["Stripe-Signature"].startswith(f"t={int(NOW)},")
    assert b'\n  "object": "event"' in webhook.body  # Stripe pretty-prints its JSON
    body = json.loads(webhook.body)
    assert body["id"] == event.id == webhook.delivery_id
    assert (body["object"], body["type"], body["livemode"]) == ("event", event_type, False)
    assert int(NOW) - 1 <= body["created"] <= int(NOW) and body["api_version"]  # when it happened
    intent = body["data"]["object"]
    assert re.fullmatch(r"pi_[0-9a-f]{24}", intent["id"])
    assert (intent["object"], intent["amount"], intent["currency"], intent["status"]) == \
        ("payment_intent", 1999, "eur", intent_status)
    StripeSignature("whsec_pay").verify(webhook.headers, webhook.body, now=NOW)


def test_payment_clock_makes_stale_deliveries():
    event = Feed().make("payment", {})
    webhook = PaymentProvider("whsec_pay", clock=lambda: time.time() - 600).build(URL, event)
    with pytest.raises(SignatureError) as info:
        StripeSignature("whsec_pay").verify(webhook.headers, webhook.body)
    assert info.value.reason == "stale"


def test_payment_refuses_an_unknown_status():
    with pytest.raises(LabkitError, match="succeeded"):
        PaymentProvider("whsec_pay").build(URL, Feed().make("payment", {"status": "maybe"}))


# -- Standard Webhooks ----------------------------------------------------------------


def test_standard_webhooks_headers_body_and_reference_library_interop():
    event = Feed(seed=5).make("invoice.paid", {"invoice": "in_1", "total": 300})
    webhook = StandardWebhooksProvider(SW_SECRET).build(URL, event)
    headers = webhook.headers
    assert headers["webhook-id"] == event.id == webhook.delivery_id
    assert re.fullmatch(r"\d{10}", headers["webhook-timestamp"])
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])
    body = json.loads(webhook.body)
    assert body["type"] == "invoice.paid" == webhook.event_type
    assert body["data"] == {"invoice": "in_1", "total": 300}
    stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert abs(stamp.timestamp() - int(headers["webhook-timestamp"])) < 1
    assert Webhook(SW_SECRET).verify(webhook.body, headers) == body
    StandardWebhooksSignature(SW_SECRET).verify(headers, webhook.body)


# -- every provider ---------------------------------------------------------------------


@pytest.mark.parametrize("make", PROVIDERS.values(), ids=PROVIDERS.keys())
def test_same_event_same_delivery_id_even_at_another_time(make):
    feed = Feed(seed=6)
    event, other = feed.make("push", {}), feed.make("push", {})
    early, late = make(fixed(NOW)), make(fixed(NOW + 3600))
    first, again = early.build(URL, event), late.build(URL, event)
    assert first.delivery_id == again.delivery_id
    assert early.build(URL, other).delivery_id != first.delivery_id
    assert feed.find(first.delivery_id) == event  # registered on its own, for the receiver
    assert feed.find(early.build(URL, other).delivery_id) == other


def test_send_is_one_attempt_that_does_not_follow_redirects():
    class Moved(tornado.web.RequestHandler):
        def post(self):
            self.redirect("/elsewhere", status=307)

    with lab.serve([("/hook", Moved)]) as server:
        provider = StandardWebhooksProvider(SW_SECRET)
        response = provider.send(server.url + "/hook", Feed().make())
        assert response.status_code == 307
        assert server.trace.count("request") == 1



def test_payment_metadata_comes_back_with_the_event():
    event = Feed(seed=4).make("payment", {"metadata": {"order": "A-17"}})
    body = json.loads(PaymentProvider("sk", clock=fixed()).build(URL, event).body)
    assert body["data"]["object"]["metadata"] == {"order": "A-17"}


def test_a_provider_that_forgets_part_of_its_shape_fails_when_made():
    class Half(Provider):
        name = "half"

        @staticmethod
        def delivery_id(event):
            return event.id

    with pytest.raises(TypeError, match="content"):
        Half(GitHubSignature("s"))


def test_bodies_say_when_the_event_happened_headers_when_it_was_sent():
    event = Feed(seed=5).make("tick")
    provider = StandardWebhooksProvider("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    first = provider.build(URL, event)
    time.sleep(1.1)                                   # a retry, a little later
    retry = provider.build(URL, event)
    assert int(retry.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    happened = [datetime.fromisoformat(json.loads(w.body)["timestamp"].replace("Z", "+00:00"))
                for w in (first, retry)]
    assert abs((happened[1] - happened[0]).total_seconds()) < 0.05, "the event happened once"
