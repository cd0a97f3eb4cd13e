"""VAPID verification (RFC 8292): the RFC's own example, py_vapid's tokens, every refusal."""

import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from py_vapid import Vapid01, Vapid02

from labkit.errors import RejectedError
from labkit.push.webpush.crypto import b64url_decode, b64url_encode, public_key_bytes
from labkit.push.webpush.vapid import VapidError, parse_authorization, verify

# RFC 8292 section 2.4 (the token) and section 3.1 (the key, the header).
RFC_TOKEN = ("eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJodHRwczovL3B1c2guZXhhbXBsZS5uZXQi"
             "LCJleHAiOjE0NTM1MjM3NjgsInN1YiI6Im1haWx0bzpwdXNoQGV4YW1wbGUuY29tIn0.i3CYb7t4xfxCDqu"
             "ptFOepC9GAu_HLGkMlMuCGSK2rpiUfnK9ojFwDXb1JrErtmysazNjjvW2L9OkSSHzvoD1oA")
RFC_KEY = "BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs"
RFC_EXP = 1453523768
RFC_HEADER = f"vapid t={RFC_TOKEN}, k={RFC_KEY}"
AUD = "http://127.0.0.1:8080"


@pytest.fixture
def vapid():
    key = Vapid02()
    key.generate_keys()
    return key


def public(vapid):
    return public_key_bytes(vapid.public_key)


def signed(vapid, **claims):
    """An Authorization header value py_vapid makes for these claims."""
    claims = {"aud": AUD, "sub": "mailto:ops@example.com", "exp": int(time.time()) + 3600,
              **claims}
    return vapid.sign(claims)["Authorization"]


def hand_made(vapid, header, claims):
    """A token built by hand (for what py_vapid refuses to make), signed with ``vapid``."""
    parts = [b64url_encode(json.dumps(p).encode()) for p in (header, claims)]
    der = vapid.private_key.sign(".".join(parts).encode(), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    signature = b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"vapid t={'.'.join(parts)}.{signature}, k={b64url_encode(public(vapid))}"


def refused(value, reason, status=403, **options):
    options.setdefault("audience", AUD)
    with pytest.raises(VapidError) as caught:
        verify(value, **options)
    assert (caught.value.reason, caught.value.status) == (reason, status), caught.value
    return str(caught.value)


# -- the RFC's example -----------------------------------------------------------------


def test_the_rfc_8292_example_token_verifies_with_its_key():
    token = verify(RFC_HEADER, audience="https://push.example.net", now=RFC_EXP - 60,
                   key=b64url_decode(RFC_KEY))
    assert token.header == {"typ": "JWT", "alg": "ES256"}
    assert token.claims == {"aud": "https://push.example.net", "exp": RFC_EXP,
                            "sub": "mailto:push@example.com"}
    assert token.subject == "mailto:push@example.com"
    assert token.key == b64url_decode(RFC_KEY)


def test_the_rfc_example_is_expired_today_and_wrong_for_another_origin():
    assert "in the future" in refused(RFC_HEADER, "expired", audience="https://push.example.net")
    refused(RFC_HEADER, "wrong_audience", now=RFC_EXP - 60)


def test_the_rfc_example_with_one_claim_changed_no_longer_verifies():
    claims = b64url_encode(b'{"aud":"https://push.example.net","exp":1453523769,'
                           b'"sub":"mailto:push@example.com"}')
    head, _, sig = RFC_TOKEN.split(".")
    refused(f"vapid t={head}.{claims}.{sig}, k={RFC_KEY}", "bad_signature",
            audience="https://push.example.net", now=RFC_EXP - 60)


# -- tokens made by py_vapid --------------------------------------------------------------


def test_a_py_vapid_token_verifies_and_says_who_sent_it(vapid):
    token = verify(signed(vapid), audience=AUD, key=public(vapid))
    assert token.claims["aud"] == AUD and token.subject == "mailto:ops@example.com"


def test_the_header_may_space_its_parameters_and_quote_them(vapid):
    t, k = parse_authorization(signed(vapid))
    assert verify(f'VAPID  t="{t}" ,  k={k}', audience=AUD).key == public(vapid)


def test_a_token_for_another_subscription_key_is_refused(vapid):
    other = Vapid02()
    other.generate_keys()
    assert "another application server" in refused(signed(other), "wrong_key",
                                                   key=public(vapid))


# -- refusals ------------------------------------------------------------------------------


def test_no_header_is_401():
    assert "Authorization: vapid" in refused(None, "missing", 401)
    refused("  ", "missing", 401)


def test_another_scheme_is_401_even_the_drafts_webpush(vapid):
    draft = Vapid01(vapid.private_key).sign({"aud": AUD, "sub": "mailto:a@example.com"})
    refused(draft["Authorization"], "wrong_scheme", 401)
    refused("Bearer abc", "wrong_scheme", 401)


@pytest.mark.parametrize("value", ["vapid t=abc", "vapid k=abc", "vapid t=a, t=b, k=c",
                                   "vapid t=a, k=b, x=c", "vapid", "vapid t a, k b"])
def test_parameters_other_than_one_t_and_one_k_are_malformed(value):
    refused(value, "malformed")


def test_a_key_that_is_not_a_p256_point_is_refused(vapid):
    t, _ = parse_authorization(signed(vapid))
    refused(f"vapid t={t}, k=AAAA", "bad_key")
    refused(f"vapid t={t}, k={'A' * 87}", "bad_key")


def test_a_token_that_is_not_three_json_parts_is_malformed(vapid):
    k = b64url_encode(public(vapid))
    assert "three" in refused(f"vapid t=abc.def, k={k}", "malformed")
    assert "header" in refused(f"vapid t=!!.e30.sig, k={k}", "malformed")
    assert "claims" in refused(f"vapid t=e30.WzFd.sig, k={k}", "malformed")  # [1]


def test_an_alg_other_than_es256_is_refused(vapid):
    claims = {"aud": AUD, "exp": int(time.time()) + 60}
    refused(hand_made(vapid, {"typ": "JWT", "alg": "none"}, claims), "bad_alg")
    refused(hand_made(vapid, {"typ": "JWT", "alg": "ES384"}, claims), "bad_alg")
    refused(hand_made(vapid, {"typ": "JWT"}, claims), "bad_alg")
    assert verify(hand_made(vapid, {"typ": "JWT", "alg": "ES256"}, claims), audience=AUD)


def test_a_signature_by_another_key_or_of_the_wrong_size_is_refused(vapid):
    other = Vapid02()
    other.generate_keys()
    t, _ = parse_authorization(signed(other))
    refused(f"vapid t={t}, k={b64url_encode(public(vapid))}", "bad_signature")
    head, claims, _ = t.split(".")
    assert "64 bytes" in refused(f"vapid t={head}.{claims}.AAAA, k="
                                 f"{b64url_encode(public(other))}", "bad_signature")


def test_a_token_for_another_audience_is_refused(vapid):
    assert "origin" in refused(signed(vapid, aud="http://127.0.0.1:9999"), "wrong_audience")


def test_an_expired_token_is_refused(vapid):
    refused(signed(vapid, exp=int(time.time()) - 1), "expired")
    refused(hand_made(vapid, {"alg": "ES256"}, {"aud": AUD, "exp": "tomorrow"}), "expired")
    refused(hand_made(vapid, {"alg": "ES256"}, {"aud": AUD, "exp": True}), "expired")


def test_a_token_valid_for_more_than_24_hours_is_refused(vapid):
    assert "24 hours" in refused(signed(vapid, exp=int(time.time()) + 25 * 3600), "too_far")
    verify(signed(vapid, exp=int(time.time()) + 23 * 3600), audience=AUD)


def test_vapid_errors_are_rejections():
    assert issubclass(VapidError, RejectedError)
