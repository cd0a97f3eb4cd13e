"""Tests for labkit.webhooks.signatures: published vectors, interop, every rejection reason."""

from __future__ import annotations

import hmac
import random
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest
import requests.structures
import tornado.httputil
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from labkit.errors import LabkitError, SignatureError
from labkit.webhooks import signatures
from labkit.webhooks.signatures import (
    GitHubSignature,
    StandardWebhooksSignature,
    StripeSignature,
    TwilioSignature,
    generate_secret,
    get_header,
)

NOW = 1_700_000_000


def reason_of(scheme, headers, body, **kwargs) -> str:
    with pytest.raises(SignatureError) as info:
        scheme.verify(headers, body, **kwargs)
    assert info.value.status == 401
    assert str(info.value)  # every rejection explains itself
    return info.value.reason


def tampered(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 1])


# -- header lookup --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"x-hub-signature-256": "v"},
        {"X-HUB-SIGNATURE-256": " v "},
        requests.structures.CaseInsensitiveDict({"X-Hub-Signature-256": "v"}),
        tornado.httputil.HTTPHeaders({"x-HUB-signature-256": "v"}),
    ],
)
def test_get_header_ignores_case_for_any_mapping(headers):
    assert get_header(headers, "X-Hub-Signature-256") == "v"


def test_get_header_treats_blank_as_absent():
    assert get_header({"X-Api-Key": "  "}, "x-api-key") is None
    assert get_header({}, "x-api-key") is None


def test_verify_refuses_a_decoded_body():
    scheme = GitHubSignature("s")
    with pytest.raises(LabkitError, match="raw request bytes"):
        scheme.verify(scheme.sign(b"{}"), "{}")


# -- GitHub ---------------------------------------------------------------------

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_published_vector():
    scheme = GitHubSignature(GITHUB_SECRET)
    assert scheme.sign(b"Hello, World!") == {"X-Hub-Signature-256": GITHUB_VECTOR}
    scheme.verify({"x-hub-signature-256": GITHUB_VECTOR}, b"Hello, World!")


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing"),
        ({"X-Hub-Signature": "sha1=" + "0" * 40}, "missing"),
        ({"X-Hub-Signature-256": "sha256=zz"}, "malformed"),
        ({"X-Hub-Signature-256": "sha1=" + "0" * 64}, "malformed"),
        ({"X-Hub-Signature-256": GITHUB_VECTOR.removeprefix("sha256=")}, "malformed"),
        ({"X-Hub-Signature-256": "sha256=" + "é" * 64}, "malformed"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "mismatch"),
    ],
)
def test_github_rejections(headers, reason):
    assert reason_of(GitHubSignature(GITHUB_SECRET), headers, b"Hello, World!") == reason


def test_github_tampered_body_and_wrong_secret_fail():
    headers = {"X-Hub-Signature-256": GITHUB_VECTOR}
    scheme = GitHubSignature(GITHUB_SECRET)
    assert reason_of(scheme, headers, tampered(b"Hello, World!")) == "mismatch"
    assert reason_of(GitHubSignature("another secret"), headers, b"Hello, World!") == "mismatch"


def test_github_rejects_empty_secret():
    with pytest.raises(LabkitError, match="empty"):
        GitHubSignature("")


# -- Stripe ---------------------------------------------------------------------

STRIPE_SECRET = "whsec_test_secret"
BODY = b'{"id": "evt_1", "type": "payment_intent.succeeded"}'


def test_stripe_round_trip_and_header_format():
    scheme = StripeSignature(STRIPE_SECRET)
    headers = scheme.sign(BODY, timestamp=NOW)
    t, v1 = headers["Stripe-Signature"].split(",")
    expected = hmac.new(STRIPE_SECRET.encode(), f"{NOW}.".encode() + BODY, "sha256").hexdigest()
    assert (t, v1) == (f"t={NOW}", f"v1={expected}")
    scheme.verify({"stripe-signature": headers["Stripe-Signature"]}, BODY, now=NOW)


def test_stripe_accepts_any_v1_and_ignores_v0():
    signed = StripeSignature(STRIPE_SECRET).sign(BODY, timestamp=NOW)
    good = signed["Stripe-Signature"].split(",")[1]
    header = f"t={NOW},v1={'a' * 64},{good},v0={'b' * 64}"
    StripeSignature(STRIPE_SECRET).verify({"Stripe-Signature": header}, BODY, now=NOW)


@pytest.mark.parametrize(
    "header, reason",
    [
        (None, "missing"),
        (f"v1={'0' * 64}", "malformed"),
        (f"t=soon,v1={'0' * 64}", "malformed"),
        (f"t={NOW},t={NOW},v1={'0' * 64}", "malformed"),
        (f"t={NOW}", "malformed"),
        (f"t={NOW},v0={'0' * 64}", "malformed"),
        (f"t={NOW},v1=zz", "malformed"),
        (f"t={NOW},garbage", "malformed"),
        (f"t={NOW},v1={'0' * 64}", "mismatch"),
    ],
)
def test_stripe_rejections(header, reason):
    headers = {} if header is None else {"Stripe-Signature": header}
    assert reason_of(StripeSignature(STRIPE_SECRET), headers, BODY, now=NOW) == reason


def test_stripe_tampered_body_fails():
    scheme = StripeSignature(STRIPE_SECRET)
    headers = scheme.sign(BODY, timestamp=NOW)
    assert reason_of(scheme, headers, tampered(BODY), now=NOW) == "mismatch"


def test_stripe_refuses_old_timestamps_and_like_stripe_accepts_future_ones():
    scheme = StripeSignature(STRIPE_SECRET, tolerance=300)
    scheme.verify(scheme.sign(BODY, timestamp=NOW - 300), BODY, now=NOW)  # edge is accepted
    with pytest.raises(SignatureError, match=r"412 s old, 112 s beyond the 300 s") as info:
        scheme.verify(scheme.sign(BODY, timestamp=NOW - 412), BODY, now=NOW)
    assert info.value.reason == "stale"
    # Stripe's libraries check only the age: a sender whose clock runs ahead still passes.
    scheme.verify(scheme.sign(BODY, timestamp=NOW + 3600), BODY, now=NOW)


def test_stripe_now_defaults_to_the_clock():
    scheme = StripeSignature(STRIPE_SECRET)
    scheme.verify(scheme.sign(BODY), BODY)
    assert reason_of(scheme, scheme.sign(BODY, timestamp=int(time.time()) - 3600), BODY) == "stale"


# -- Standard Webhooks ----------------------------------------------------------

# Reference vector from the standard-webhooks/standard-webhooks repository,
# libraries/python/tests/test_webhooks.py (test_sign_function).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def sw_headers(**overrides):
    headers = {
        "webhook-id": SW_ID,
        "webhook-timestamp": str(SW_TIMESTAMP),
        "webhook-signature": SW_SIGNATURE,
    }
    headers.update(overrides)
    return {k: v for k, v in headers.items() if v is not None}


def test_standard_webhooks_reference_vector():
    scheme = StandardWebhooksSignature(SW_SECRET)
    assert scheme.sign(SW_BODY, msg_id=SW_ID, timestamp=SW_TIMESTAMP) == sw_headers()
    scheme.verify(sw_headers(), SW_BODY, now=SW_TIMESTAMP)
    # The prefix is optional and the raw key bytes work too, as in the reference libraries.
    unprefixed = StandardWebhooksSignature(SW_SECRET.removeprefix("whsec_"))
    unprefixed.verify(sw_headers(), SW_BODY, now=SW_TIMESTAMP)


def test_standard_webhooks_rotation_signs_with_every_secret_and_accepts_any():
    new = generate_secret()
    both = StandardWebhooksSignature([new, SW_SECRET])
    headers = both.sign(SW_BODY, msg_id=SW_ID, timestamp=SW_TIMESTAMP)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and entries[1] == SW_SIGNATURE
    StandardWebhooksSignature(SW_SECRET).verify(headers, SW_BODY, now=SW_TIMESTAMP)
    StandardWebhooksSignature(new).verify(headers, SW_BODY, now=SW_TIMESTAMP)
    both.verify(sw_headers(), SW_BODY, now=SW_TIMESTAMP)  # the receiver rotates too


def test_standard_webhooks_ignores_v1a_and_other_versions():
    headers = sw_headers(**{"webhook-signature": f"v1a,AAAA v2,BBBB {SW_SIGNATURE}"})
    StandardWebhooksSignature(SW_SECRET).verify(headers, SW_BODY, now=SW_TIMESTAMP)


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"webhook-id": None}, "missing"),
        ({"webhook-timestamp": None}, "missing"),
        ({"webhook-signature": None}, "missing"),
        ({"webhook-timestamp": "hello"}, "malformed"),
        ({"webhook-timestamp": "1614265330.5"}, "malformed"),
        ({"webhook-signature": "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, "malformed"),
        ({"webhook-signature": "v1,not base64!"}, "malformed"),
        ({"webhook-signature": "v1,AAAA"}, "malformed"),
        ({"webhook-signature": "v1a,AAAA"}, "malformed"),
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}, "mismatch"),
        ({"webhook-id": "msg_other"}, "mismatch"),
        ({"webhook-timestamp": str(SW_TIMESTAMP + 1)}, "mismatch"),
    ],
)
def test_standard_webhooks_rejections(overrides, reason):
    scheme = StandardWebhooksSignature(SW_SECRET)
    assert reason_of(scheme, sw_headers(**overrides), SW_BODY, now=SW_TIMESTAMP) == reason


def test_standard_webhooks_tampered_body_fails():
    scheme = StandardWebhooksSignature(SW_SECRET)
    assert reason_of(scheme, sw_headers(), tampered(SW_BODY), now=SW_TIMESTAMP) == "mismatch"


def test_standard_webhooks_stale_and_future():
    scheme = StandardWebhooksSignature(SW_SECRET, tolerance=300)
    assert reason_of(scheme, sw_headers(), SW_BODY, now=SW_TIMESTAMP + 301) == "stale"
    assert reason_of(scheme, sw_headers(), SW_BODY, now=SW_TIMESTAMP - 301) == "future"


def test_standard_webhooks_sign_defaults_and_refuses_dotted_id():
    headers = StandardWebhooksSignature(SW_SECRET).sign(SW_BODY)
    assert headers["webhook-id"].startswith("msg_") and "." not in headers["webhook-id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    with pytest.raises(LabkitError, match="'.'"):
        StandardWebhooksSignature(SW_SECRET).sign(SW_BODY, msg_id="msg.1")


@pytest.mark.parametrize("secret", ["whsec_not*base64", "whsec_", [], b""])
def test_standard_webhooks_bad_secret_is_a_clear_error(secret):
    with pytest.raises(LabkitError):
        StandardWebhooksSignature(secret)


def test_generate_secret_shape_and_reproducible_rng():
    secret = generate_secret()
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 32
    assert generate_secret() != secret
    assert generate_secret(random.Random(7)) == generate_secret(random.Random(7))
    StandardWebhooksSignature(secret)  # usable as is


def test_standard_webhooks_interop_their_sign_our_verify():
    secret = generate_secret()
    now = datetime.now(tz=timezone.utc)
    signature = Webhook(secret).sign(msg_id="msg_interop", timestamp=now, data=SW_BODY.decode())
    headers = {
        "webhook-id": "msg_interop",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    StandardWebhooksSignature(secret).verify(headers, SW_BODY)


def test_standard_webhooks_interop_our_sign_their_verify():
    secret = generate_secret()
    headers = StandardWebhooksSignature([generate_secret(), secret]).sign(SW_BODY)
    assert Webhook(secret).verify(SW_BODY, headers) == {"test": 2432232314}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered(SW_BODY), headers)


# -- Twilio ---------------------------------------------------------------------

TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


def twilio_form(**params) -> bytes:
    # Out of order on purpose: the signature sorts parameters by name.
    return urlencode(dict(reversed(list(params.items())))).encode()


# Twilio's documented example (twilio.com/docs/usage/security).
DOCS_FORM = twilio_form(
    CallSid="CA1234567890ABCDE",
    Caller="+12349013030",
    Digits="1234",
    From="+12349013030",
    To="+18005551212",
)
DOCS_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


@pytest.mark.parametrize(
    "body, expected",
    [
        (DOCS_FORM, DOCS_SIGNATURE),
        # twilio/twilio-python tests/unit/test_request_validator.py
        (
            twilio_form(
                CallSid="CA1234567890ABCDE",
                Digits="1234",
                From="+14158675309",
                To="+18005551212",
                Caller="+14158675309",
            ),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        ),
        # same file, repeated parameter: sorted by name, then by value
        (b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234", "IK+Dwps556ElfBT0I3Rgjkr1wJU="),
    ],
)
def test_twilio_published_vectors(body, expected):
    scheme = TwilioSignature("12345")
    assert scheme.sign(body, url=TWILIO_URL) == {"X-Twilio-Signature": expected}
    scheme.verify({"x-twilio-signature": expected}, body, url=TWILIO_URL)


def test_twilio_requires_url():
    scheme = TwilioSignature("12345")
    with pytest.raises(LabkitError, match="url= is required") as info:
        scheme.verify({}, DOCS_FORM)
    assert not isinstance(info.value, SignatureError)
    with pytest.raises(LabkitError, match="url= is required"):
        scheme.sign(DOCS_FORM)


@pytest.mark.parametrize(
    "header, body, url, reason",
    [
        (None, DOCS_FORM, TWILIO_URL, "missing"),
        ("not base64!", DOCS_FORM, TWILIO_URL, "malformed"),
        ("AAAA", DOCS_FORM, TWILIO_URL, "malformed"),
        (DOCS_SIGNATURE, b"\xff\xfe", TWILIO_URL, "malformed"),
        (DOCS_SIGNATURE, tampered(DOCS_FORM), TWILIO_URL, "mismatch"),
        (DOCS_SIGNATURE, DOCS_FORM, TWILIO_URL.replace("bar=2", "bar=3"), "mismatch"),
        (DOCS_SIGNATURE, DOCS_FORM, TWILIO_URL.replace("https", "http"), "mismatch"),
    ],
)
def test_twilio_rejections(header, body, url, reason):
    headers = {} if header is None else {"X-Twilio-Signature": header}
    assert reason_of(TwilioSignature("12345"), headers, body, url=url) == reason


# -- common interface and constant-time comparison ------------------------------

SCHEMES = [
    GitHubSignature("s3cret"),
    StripeSignature("whsec_s3cret"),
    StandardWebhooksSignature(generate_secret()),
    TwilioSignature("s3cret"),
]


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
def test_every_scheme_round_trips_through_one_interface(scheme):
    url = "https://example.test/hook"
    headers = scheme.sign(b"a=1&b=2", url=url, timestamp=NOW)
    scheme.verify(headers, b"a=1&b=2", url=url, remote_ip="127.0.0.1", now=NOW)
    assert reason_of(scheme, headers, b"a=1&b=3", url=url, now=NOW) == "mismatch"


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
def test_every_scheme_compares_with_hmac_compare_digest(scheme, monkeypatch):
    calls, original = [], hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(signatures.hmac, "compare_digest", spy)
    url = "https://example.test/hook"
    scheme.verify(scheme.sign(b"x=1", url=url, timestamp=NOW), b"x=1", url=url, now=NOW)
    assert calls and all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


def test_scheme_names():
    assert [s.name for s in SCHEMES] == ["github", "stripe", "standard-webhooks", "twilio"]


@pytest.mark.parametrize("make", [
    lambda secrets: GitHubSignature(secrets),
    lambda secrets: StripeSignature(secrets),
    lambda secrets: TwilioSignature(secrets),
])
def test_rotation_receiver_accepts_old_and_new_secret_and_refuses_others(make):
    url = "https://example.test/hook"
    body = b"a=1&b=2"
    old_only, new_only = make("old-secret"), make("new-secret")
    rotating = make(["new-secret", "old-secret"])
    for sender in (old_only, new_only, rotating):
        rotating.verify(sender.sign(body, url=url), body, url=url)
    with pytest.raises(SignatureError) as caught:
        rotating.verify(make("stolen").sign(body, url=url), body, url=url)
    assert caught.value.reason == "mismatch"
    assert rotating.sign(body, url=url, timestamp=1) != old_only.sign(body, url=url, timestamp=1)


def test_stripe_signs_with_every_secret_during_a_rotation():
    header = StripeSignature(["new", "old"]).sign(b"{}", timestamp=1700000000)["Stripe-Signature"]
    assert header.count("v1=") == 2
    StripeSignature("old").verify({"Stripe-Signature": header}, b"{}", now=1700000000)
    StripeSignature("new").verify({"Stripe-Signature": header}, b"{}", now=1700000000)


def test_an_empty_list_of_secrets_is_refused_clearly():
    with pytest.raises(LabkitError, match="at least one"):
        GitHubSignature([])
