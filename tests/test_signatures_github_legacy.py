"""GitHub's legacy ``X-Hub-Signature: sha1=<hex HMAC-SHA1>``: signing, verifying, refusing.

GitHub documents a test vector for ``X-Hub-Signature-256`` only (secret "It's a Secret
to Everybody", payload "Hello, World!"). The SHA-1 value below is HMAC-SHA1 of that same
secret and payload, computed with Python's hmac and cross-checked with
``printf 'Hello, World!' | openssl dgst -sha1 -hmac "It's a Secret to Everybody"``.
"""

from __future__ import annotations

import hashlib
import hmac
from unittest import mock

import pytest
import requests

from labkit.errors import LabkitError, SignatureError
from labkit.feed import Feed
from labkit.webhooks.providers import GitHubProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.signatures import GitHubLegacySignature, GitHubSignature

SECRET = "It's a Secret to Everybody"
PAYLOAD = b"Hello, World!"
VECTOR = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"
VECTOR_256 = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_the_vector_is_hmac_sha1_of_githubs_documented_secret_and_payload():
    assert VECTOR == "sha1=" + hmac.new(SECRET.encode(), PAYLOAD, hashlib.sha1).hexdigest()


def test_sign_gives_the_vector_and_verify_accepts_it():
    legacy = GitHubLegacySignature(SECRET)
    assert legacy.sign(PAYLOAD) == {"X-Hub-Signature": VECTOR}
    legacy.verify({"X-Hub-Signature": VECTOR}, PAYLOAD)
    legacy.verify({"x-hub-signature": VECTOR.upper().replace("SHA1=", "sha1=")}, PAYLOAD)


def test_both_github_headers_sign_the_same_body_with_the_same_secret():
    headers = {**GitHubLegacySignature(SECRET).sign(PAYLOAD),
               **GitHubSignature(SECRET).sign(PAYLOAD)}
    assert headers == {"X-Hub-Signature": VECTOR, "X-Hub-Signature-256": VECTOR_256}
    GitHubLegacySignature(SECRET).verify(headers, PAYLOAD)
    GitHubSignature(SECRET).verify(headers, PAYLOAD)


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing"),
    ({"X-Hub-Signature": "  "}, "missing"),
    ({"X-Hub-Signature-256": VECTOR_256}, "missing"),
    ({"X-Hub-Signature": VECTOR.removeprefix("sha1=")}, "malformed"),
    ({"X-Hub-Signature": VECTOR_256}, "malformed"),
    ({"X-Hub-Signature": VECTOR[:-1]}, "malformed"),
    ({"X-Hub-Signature": VECTOR[:-1] + "g"}, "malformed"),
    ({"X-Hub-Signature": "sha1=" + "0" * 40}, "mismatch"),
])
def test_what_is_refused_and_why(headers, reason):
    with pytest.raises(SignatureError) as refused:
        GitHubLegacySignature(SECRET).verify(headers, PAYLOAD)
    assert (refused.value.reason, refused.value.status) == (reason, 401)


@pytest.mark.parametrize("scheme, header, shape", [
    (GitHubLegacySignature, "X-Hub-Signature", "'sha1=' followed by 40 hex digits"),
    (GitHubSignature, "X-Hub-Signature-256", "'sha256=' followed by 64 hex digits"),
])
def test_a_malformed_header_is_told_the_shape_it_must_have(scheme, header, shape):
    with pytest.raises(SignatureError) as refused:
        scheme(SECRET).verify({header: "sha=1"}, PAYLOAD)
    assert f"{header} must be {shape}, got 'sha=1'" in str(refused.value)


def test_a_changed_body_or_another_secret_is_a_mismatch():
    with pytest.raises(SignatureError, match="does not match"):
        GitHubLegacySignature(SECRET).verify({"X-Hub-Signature": VECTOR}, b"Hello, World?")
    with pytest.raises(SignatureError, match="does not match"):
        GitHubLegacySignature("another").verify({"X-Hub-Signature": VECTOR}, PAYLOAD)


def test_rotation_accepts_old_and_new_and_signs_with_the_first():
    both = GitHubLegacySignature(["new-secret", SECRET])
    both.verify({"X-Hub-Signature": VECTOR}, PAYLOAD)
    assert both.sign(PAYLOAD) == GitHubLegacySignature("new-secret").sign(PAYLOAD)


def test_the_comparison_is_constant_time():
    with mock.patch("hmac.compare_digest", wraps=hmac.compare_digest) as spy:
        GitHubLegacySignature(SECRET).verify({"X-Hub-Signature": VECTOR}, PAYLOAD)
    assert spy.call_count == 1


def test_bad_arguments_are_clear_errors():
    with pytest.raises(LabkitError, match="raw request bytes"):
        GitHubLegacySignature(SECRET).verify({"X-Hub-Signature": VECTOR}, "Hello, World!")
    with pytest.raises(LabkitError, match="empty"):
        GitHubLegacySignature("")


def test_the_github_provider_sends_both_headers_and_a_receiver_verifies_either_over_the_wire():
    provider = GitHubProvider(SECRET)
    for verifier in (GitHubSignature(SECRET), GitHubLegacySignature(SECRET)):
        with serve_receiver(verifiers=[verifier]) as server:
            webhook = provider.build(server.endpoint_url, Feed(seed=1).make("push", {}))
            assert webhook.headers["X-Hub-Signature"] == "sha1=" + hmac.new(
                SECRET.encode(), webhook.body, hashlib.sha1).hexdigest()
            assert webhook.send().status_code == 200
            got = server.component.deliveries[0].headers
            assert got["x-hub-signature"].startswith("sha1=")
            assert got["x-hub-signature-256"].startswith("sha256=")


def test_a_receiver_checking_sha256_refuses_a_delivery_signed_only_with_sha1():
    provider = GitHubProvider(SECRET)
    with serve_receiver(verifiers=[GitHubSignature(SECRET)]) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=2).make("push", {}))
        legacy_only = {k: v for k, v in webhook.headers.items() if k != "X-Hub-Signature-256"}
        answer = requests.post(server.endpoint_url, data=webhook.body, headers=legacy_only,
                               timeout=5)
        assert answer.status_code == 401
        assert server.component.rejections[-1].reason == "missing"
