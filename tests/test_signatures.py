"""Tests for labkit.webhooks.signatures: published vectors, interop, every rejection reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
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
    GitHubLegacySignature,
    GitHubSignature,
    StandardWebhooksSignature,
    StripeSignature,
    TwilioSignature,
    generate_secret,
    get_header,
)

NOW = 1_700_000_000


def explains(error: Exception) -> None:
    """Every refusal explains itself: a real sentence, not an empty or ``None`` message."""
    [message] = error.args
    assert isinstance(message, str) and len(message) > 30 and ": " in message, message


def reason_of(scheme, headers, body, **kwargs) -> str:
    with pytest.raises(SignatureError) as info:
        scheme.verify(headers, body, **kwargs)
    assert info.value.status == 401
    explains(info.value)
    return info.value.reason


def stray(signature: str, char: str = "!") -> str:
    """``signature`` with one character outside the base64 alphabet inserted in the middle.

    A lenient decoder (``b64decode`` without ``validate=True``) skips that
    character and accepts the signature; the strict one must refuse it.
    """
    middle = len(signature) // 2
    return signature[:middle] + char + signature[middle:]


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


def test_get_header_tries_the_exact_spelling_first():
    # Only a plain dict can hold two spellings; the one asked for wins.
    headers = {"X-Api-Key": "first", "x-api-key": "second"}
    assert get_header(headers, "x-api-key") == "second"
    assert get_header(headers, "X-API-KEY") == "first"     # else the first in any case


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
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64 + "="}, "malformed"),
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


def test_stripe_refuses_a_header_with_any_v1_that_is_not_hex():
    good = StripeSignature(STRIPE_SECRET).sign(BODY, timestamp=NOW)["Stripe-Signature"]
    for extra in ("v1=00=00", "v1=" + "0" * 63):
        header = f"{good},{extra}"
        assert reason_of(StripeSignature(STRIPE_SECRET), {"Stripe-Signature": header}, BODY,
                         now=NOW) == "malformed"


def test_stripe_tampered_body_fails():
    scheme = StripeSignature(STRIPE_SECRET)
    headers = scheme.sign(BODY, timestamp=NOW)
    assert reason_of(scheme, headers, tampered(BODY), now=NOW) == "mismatch"


def test_stripe_refuses_old_timestamps_and_like_stripe_accepts_future_ones():
    scheme = StripeSignature(STRIPE_SECRET, tolerance=300)
    scheme.verify(scheme.sign(BODY, timestamp=NOW - 300), BODY, now=NOW)  # edge is accepted
    with pytest.raises(SignatureError, match=r"^Stripe-Signature timestamp is 412 s old, "
                                             r"112 s beyond the 300 s tolerance: ") as info:
        scheme.verify(scheme.sign(BODY, timestamp=NOW - 412), BODY, now=NOW)
    assert info.value.reason == "stale"
    # Stripe's libraries check only the age: a sender whose clock runs ahead still passes.
    scheme.verify(scheme.sign(BODY, timestamp=NOW + 3600), BODY, now=NOW)


def test_stripe_default_tolerance_is_five_minutes():
    scheme = StripeSignature(STRIPE_SECRET)
    assert scheme.tolerance == 300
    scheme.verify(scheme.sign(BODY, timestamp=NOW - 300), BODY, now=NOW)
    assert reason_of(scheme, scheme.sign(BODY, timestamp=NOW - 300), BODY, now=NOW + 1) == "stale"


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
        ({"webhook-signature": stray(SW_SIGNATURE)}, "malformed"),
        ({"webhook-signature": stray(SW_SIGNATURE, "_")}, "malformed"),
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


def test_standard_webhooks_refuses_an_entry_with_two_commas_even_beside_a_good_one():
    headers = sw_headers(**{"webhook-signature": f"{SW_SIGNATURE} v1,AAAA,{SW_SIGNATURE[3:]}"})
    scheme = StandardWebhooksSignature(SW_SECRET)
    assert reason_of(scheme, headers, SW_BODY, now=SW_TIMESTAMP) == "malformed"


def test_standard_webhooks_tampered_body_fails():
    scheme = StandardWebhooksSignature(SW_SECRET)
    assert reason_of(scheme, sw_headers(), tampered(SW_BODY), now=SW_TIMESTAMP) == "mismatch"


def test_standard_webhooks_stale_and_future():
    scheme = StandardWebhooksSignature(SW_SECRET, tolerance=300)
    assert reason_of(scheme, sw_headers(), SW_BODY, now=SW_TIMESTAMP + 301) == "stale"
    assert reason_of(scheme, sw_headers(), SW_BODY, now=SW_TIMESTAMP - 301) == "future"


@pytest.mark.parametrize("make", [
    lambda: StandardWebhooksSignature(SW_SECRET),
    lambda: StandardWebhooksSignature(SW_SECRET, tolerance=300),
], ids=["default", "explicit-300"])
def test_standard_webhooks_window_is_five_minutes_each_way_edges_included(make):
    scheme = make()
    assert scheme.tolerance == 300
    for now in (SW_TIMESTAMP - 300, SW_TIMESTAMP, SW_TIMESTAMP + 300):
        scheme.verify(sw_headers(), SW_BODY, now=now)        # both edges are inside
    assert reason_of(scheme, sw_headers(), SW_BODY, now=SW_TIMESTAMP + 300.5) == "stale"
    assert reason_of(scheme, sw_headers(), SW_BODY, now=SW_TIMESTAMP - 300.5) == "future"


def test_standard_webhooks_future_refusal_says_how_far_ahead():
    scheme = StandardWebhooksSignature(SW_SECRET, tolerance=60)
    with pytest.raises(SignatureError, match=r"^webhook-timestamp timestamp is 100 s in the "
                                             r"future, 40 s beyond the 60 s tolerance: "):
        scheme.verify(sw_headers(), SW_BODY, now=SW_TIMESTAMP - 100)
    with pytest.raises(SignatureError, match=r"^webhook-timestamp timestamp is 100 s old, "
                                             r"40 s beyond the 60 s tolerance: "):
        scheme.verify(sw_headers(), SW_BODY, now=SW_TIMESTAMP + 100)


@pytest.mark.parametrize("size", [20, 19], ids=["one-pad", "two-pads"])
def test_standard_webhooks_secret_without_base64_padding_is_repaired(size):
    key = bytes(range(size))
    padded = base64.b64encode(key).decode()
    assert padded.endswith("=")
    unpadded = padded.rstrip("=")
    reference = StandardWebhooksSignature(key).sign(SW_BODY, msg_id=SW_ID, timestamp=SW_TIMESTAMP)
    for secret in ("whsec_" + padded, "whsec_" + unpadded, unpadded):
        scheme = StandardWebhooksSignature(secret)
        assert scheme.sign(SW_BODY, msg_id=SW_ID, timestamp=SW_TIMESTAMP) == reference
    # The reference library, given the padded secret, accepts what the unpadded one signed.
    signed = StandardWebhooksSignature("whsec_" + unpadded).sign(SW_BODY)
    assert Webhook("whsec_" + padded).verify(SW_BODY, signed) == {"test": 2432232314}


def test_standard_webhooks_sign_defaults_and_refuses_dotted_id():
    headers = StandardWebhooksSignature(SW_SECRET).sign(SW_BODY)
    assert re.fullmatch("msg_[0-9a-f]{24}", headers["webhook-id"])       # 12 random bytes
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    with pytest.raises(LabkitError, match="'.'"):
        StandardWebhooksSignature(SW_SECRET).sign(SW_BODY, msg_id="msg.1")


@pytest.mark.parametrize("secret", ["whsec_not*base64", "not*base64",
                                    "whsec_" + stray(SW_SECRET.removeprefix("whsec_"))])
def test_standard_webhooks_secret_that_is_not_base64_is_a_clear_error(secret):
    # The stray "!" would be skipped by a lenient decoder, leaving a usable but wrong key.
    start = re.escape(f"Standard Webhooks secret {secret[:10]!r}... is not 'whsec_' + base64: ")
    with pytest.raises(LabkitError, match=f"^{start}copy it"):
        StandardWebhooksSignature(secret)


def test_generate_secret_shape_and_reproducible_rng():
    secret = generate_secret()
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 32
    assert generate_secret() != secret
    assert generate_secret(random.Random(7)) == generate_secret(random.Random(7))
    assert generate_secret(random.Random(7)) == "whsec_" + base64.b64encode(
        random.Random(7).randbytes(24)).decode()
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
        # same file, repeated parameter: sorted by name, then by value, repeats signed once
        (b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234", "IK+Dwps556ElfBT0I3Rgjkr1wJU="),
        (b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234",
         "IK+Dwps556ElfBT0I3Rgjkr1wJU="),
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
        (stray(DOCS_SIGNATURE), DOCS_FORM, TWILIO_URL, "malformed"),
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


def twilio_by_hand(token: str, text: str) -> str:
    """Base64 HMAC-SHA1 of ``text``: Twilio's signature computed without the kit."""
    return base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()


def test_twilio_signs_blank_fields_too():
    # An SMS with an empty text arrives as Body= and Twilio signs the name with no value.
    body = b"MessageSid=SM1&Body=&From=%2B15005550006"
    expected = twilio_by_hand("12345", TWILIO_URL + "Body" + "From+15005550006" + "MessageSidSM1")
    scheme = TwilioSignature("12345")
    assert scheme.sign(body, url=TWILIO_URL) == {"X-Twilio-Signature": expected}
    scheme.verify({"X-Twilio-Signature": expected}, body, url=TWILIO_URL)
    # So a blank field cannot be added, or dropped, without breaking the signature.
    without = scheme.sign(b"MessageSid=SM1&From=%2B15005550006", url=TWILIO_URL)
    assert reason_of(scheme, without, body, url=TWILIO_URL) == "mismatch"


# twilio/twilio-python tests/unit/test_request_validator.py: the same form, signed over
# the URL with a port added or taken out.
TWILIO_PY_FORM = twilio_form(CallSid="CA1234567890ABCDE", Digits="1234", From="+14158675309",
                             To="+18005551212", Caller="+14158675309")


@pytest.mark.parametrize("url, signature", [
    (TWILIO_URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),                       # as requested
    (TWILIO_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),                       # signed with :443
    (TWILIO_URL.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
    (TWILIO_URL.replace(".com", ".com:1234"), "RSOYDt4T1cUTdK1PDd93/VVr8B8="),  # without :1234
    (TWILIO_URL.replace(".com", ".com:1234").replace("https", "http"),
     "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),                                   # with :1234, as requested
], ids=["plain", "https-443", "http-80", "https-port-removed", "http-port-kept"])
def test_twilio_accepts_the_url_with_or_without_its_port_like_twilio_python(url, signature):
    TwilioSignature("12345").verify({"X-Twilio-Signature": signature}, TWILIO_PY_FORM, url=url)


def test_twilio_signs_the_url_as_given_and_only_the_port_varies():
    scheme = TwilioSignature("12345")
    with_port = TWILIO_URL.replace(".com", ".com:443")
    assert scheme.sign(TWILIO_PY_FORM, url=with_port) == {
        "X-Twilio-Signature": "kvajT1Ptam85bY51eRf/AJRuM3w="}
    scheme.verify(scheme.sign(TWILIO_PY_FORM, url=TWILIO_URL), TWILIO_PY_FORM, url=with_port)
    for signed_at, requested in [
        ("https://u:pw@h.test:443/x?a=1", "https://u:pw@h.test/x?a=1"),      # credentials kept
        ("https://[2001:db8::1]:443/x", "https://[2001:db8::1]/x"),           # IPv6 literal
        ("http://h.test:80/x", "http://h.test/x"),
        ("https://h.test:443/x?next=https://a.test/", "https://h.test/x?next=https://a.test/"),
    ]:
        scheme.verify(scheme.sign(b"a=1", url=signed_at), b"a=1", url=requested)
    for signed_at, requested in [
        ("https://h.test:8443/x", "https://h.test/x"),     # only the default port is added
        ("https://h.test:80/x", "https://h.test/x"),       # https's default is 443
        ("http://h.test:443/x", "http://h.test/x"),        # http's default is 80
        ("ftp://h.test:80/x", "ftp://h.test/x"),           # no default port to add
        ("https://other.test/x", "https://h.test/x"),
        ("https://h.test/x", "https://h.test:443/y"),
        ("https://:443/x", "https:///x"),                  # no host: nothing to vary
        ("https://h.test/x", "https://h.test:44x/x"),      # not a port: nothing to vary
    ]:
        headers = scheme.sign(b"a=1", url=signed_at)
        assert reason_of(scheme, headers, b"a=1", url=requested) == "mismatch", signed_at


# twilio-python's JSON-body vector: bodySHA256 in the URL, the body itself not signed.
TWILIO_JSON = b'{"property": "value", "boolean": true}'
TWILIO_JSON_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
TWILIO_JSON_URL = TWILIO_URL + "&bodySHA256=" + TWILIO_JSON_HASH
TWILIO_JSON_SIGNATURE = "a9nBmqA0ju/hNViExpshrM61xv4="


def test_twilio_json_body_published_vector():
    scheme = TwilioSignature("12345")
    assert TwilioSignature.json_url(TWILIO_URL, TWILIO_JSON) == TWILIO_JSON_URL
    assert scheme.sign(TWILIO_JSON, url=TWILIO_JSON_URL) == {
        "X-Twilio-Signature": TWILIO_JSON_SIGNATURE}
    assert twilio_by_hand("12345", TWILIO_JSON_URL) == TWILIO_JSON_SIGNATURE  # the URL alone
    scheme.verify({"X-Twilio-Signature": TWILIO_JSON_SIGNATURE}, TWILIO_JSON, url=TWILIO_JSON_URL)
    with_port = TWILIO_JSON_URL.replace(".com", ".com:443")
    scheme.verify({"X-Twilio-Signature": TWILIO_JSON_SIGNATURE}, TWILIO_JSON, url=with_port)


def test_twilio_json_url_starts_a_query_when_there_is_none():
    url = TwilioSignature.json_url("https://h.test/hook", b"{}")
    assert url == "https://h.test/hook?bodySHA256=" + hashlib.sha256(b"{}").hexdigest()


def test_twilio_json_body_is_hashed_not_parsed_as_a_form():
    scheme = TwilioSignature("12345")
    for body in (b"a=1&b=2", b"\xff\xfe not UTF-8", b""):       # any bytes; never form-parsed
        url = TwilioSignature.json_url(TWILIO_URL, body)
        headers = scheme.sign(body, url=url)
        assert headers["X-Twilio-Signature"] == twilio_by_hand("12345", url)
        scheme.verify(headers, body, url=url)


def test_twilio_json_body_must_match_the_signed_hash():
    scheme = TwilioSignature("12345")
    headers = {"X-Twilio-Signature": TWILIO_JSON_SIGNATURE}
    with pytest.raises(SignatureError, match="bodySHA256") as info:
        scheme.verify(headers, tampered(TWILIO_JSON), url=TWILIO_JSON_URL)
    assert info.value.reason == "mismatch"
    explains(info.value)
    # A URL naming another body's hash is refused by the signature, as any changed URL is.
    other = TwilioSignature.json_url(TWILIO_URL, b"{}")
    assert reason_of(scheme, headers, b"{}", url=other) == "mismatch"


@pytest.mark.parametrize("query", [
    "bodySHA256=" + TWILIO_JSON_HASH[:-1],
    "bodySHA256=" + "g" * 64,
    "bodySHA256=",
    f"bodySHA256={TWILIO_JSON_HASH}&bodySHA256={TWILIO_JSON_HASH}",
])
def test_twilio_malformed_body_hash_is_refused(query):
    url = f"https://h.test/hook?{query}"
    headers = {"X-Twilio-Signature": twilio_by_hand("12345", url)}
    assert reason_of(TwilioSignature("12345"), headers, TWILIO_JSON, url=url) == "malformed"


def test_twilio_sign_refuses_a_body_hash_that_is_not_the_bodys():
    with pytest.raises(LabkitError, match="json_url"):
        TwilioSignature("12345").sign(tampered(TWILIO_JSON), url=TWILIO_JSON_URL)


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


@pytest.mark.parametrize("make, secret, what", [
    (GitHubSignature, "", "GitHub webhook secret"),
    (GitHubLegacySignature, "", "GitHub webhook secret"),
    (StripeSignature, "", "Stripe signing secret"),
    (StandardWebhooksSignature, "whsec_", "Standard Webhooks secret"),
    (StandardWebhooksSignature, b"", "Standard Webhooks secret"),
    (TwilioSignature, "", "Twilio auth token"),
])
def test_an_empty_secret_is_refused_by_its_name(make, secret, what):
    with pytest.raises(LabkitError, match=f"^the {what} is empty: pass the secret both sides"):
        make(secret)
    with pytest.raises(LabkitError, match=f"^no {what} given: pass at least one"):
        make([])


@pytest.mark.parametrize("scheme, headers, hint", [
    (GitHubSignature("s"), {}, "no X-Hub-Signature-256 header: set a secret on the webhook in "
                               "GitHub's settings"),
    (GitHubLegacySignature("s"), {}, "no X-Hub-Signature header: set a secret on the webhook "
                                     "in GitHub's settings"),
    (StripeSignature("s"), {}, "no Stripe-Signature header: send the request from Stripe, or "
                               "sign it with StripeSignature.sign"),
    (StandardWebhooksSignature(SW_SECRET), {}, "no webhook-id header: Standard Webhooks "
                                               "senders send webhook-id, webhook-timestamp"),
    (StandardWebhooksSignature(SW_SECRET), {"webhook-id": "m"}, "no webhook-timestamp header: "
                                                                "Standard Webhooks senders"),
    (StandardWebhooksSignature(SW_SECRET), {"webhook-id": "m", "webhook-timestamp": "1"},
     "no webhook-signature header: Standard Webhooks senders send webhook-id, "),
    (TwilioSignature("s"), {}, "no X-Twilio-Signature header: send the request from Twilio, "
                               "or sign it with TwilioSignature.sign"),
], ids=["github", "github-legacy", "stripe", "sw-id", "sw-timestamp", "sw-signature",
        "twilio"])
def test_a_missing_header_is_named_with_a_hint(scheme, headers, hint):
    with pytest.raises(SignatureError) as info:
        scheme.verify(headers, b"a=1", url="https://h.test/", now=1)
    assert info.value.reason == "missing" and str(info.value).startswith(hint)


@pytest.mark.parametrize("scheme, headers, header", [
    (StripeSignature(STRIPE_SECRET), {"Stripe-Signature": f"t=soon,v1={'0' * 64}"},
     "Stripe-Signature"),
    (StandardWebhooksSignature(SW_SECRET), sw_headers(**{"webhook-timestamp": "soon"}),
     "webhook-timestamp"),
], ids=["stripe", "standard-webhooks"])
def test_a_timestamp_that_is_not_a_number_is_named(scheme, headers, header):
    with pytest.raises(SignatureError, match=f"^{header} timestamp 'soon' is not an integer "
                                             f"number of Unix seconds: "):
        scheme.verify(headers, BODY, now=NOW)


@pytest.mark.parametrize("scheme, value, start", [
    (GitHubSignature("s"), "sha1=" + "0" * 40,
     "X-Hub-Signature-256 must be 'sha256=' followed by 64 hex digits, got 'sha1="),
    (GitHubLegacySignature("s"), "sha256=" + "0" * 64,
     "X-Hub-Signature must be 'sha1=' followed by 40 hex digits, got 'sha256="),
], ids=["github", "github-legacy"])
def test_a_malformed_github_header_is_quoted_back(scheme, value, start):
    with pytest.raises(SignatureError, match=f"^{re.escape(start)}") as info:
        scheme.verify({scheme.header: value}, b"{}")
    assert info.value.reason == "malformed"
