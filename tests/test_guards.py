"""Tests for labkit.webhooks.guards: API keys, bearer tokens and the IP allowlist."""

from __future__ import annotations

import hmac

import pytest
import tornado.httputil

from labkit.errors import LabkitError, RejectedError
from labkit.webhooks import guards
from labkit.webhooks.guards import ApiKeyGuard, BearerTokenGuard, IpAllowlist

# The shape of GitHub's published webhook ranges (the "hooks" list of api.github.com/meta).
GITHUB_HOOKS = [
    "192.30.252.0/22",
    "185.199.108.0/22",
    "140.82.112.0/20",
    "143.55.64.0/20",
    "2a0a:a440::/29",
]


def rejection(guard, headers, **kwargs) -> RejectedError:
    with pytest.raises(RejectedError) as info:
        guard.verify(headers, b"{}", **kwargs)
    # Every refusal explains itself: a real sentence, not an empty or "None" message.
    [message] = info.value.args
    assert isinstance(message, str) and len(message) > 30 and ": " in message, message
    return info.value


# -- API key --------------------------------------------------------------------


def test_api_key_accepts_any_listed_key_in_any_header_case():
    guard = ApiKeyGuard(["old-key", "new-key"])
    guard.verify({"x-api-key": "old-key"}, b"")
    guard.verify(tornado.httputil.HTTPHeaders({"X-API-KEY": "new-key"}), b"")


def test_api_key_custom_header():
    ApiKeyGuard("k1", header="X-Hook-Token").verify({"x-hook-token": "k1"}, b"")


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing"),
        ({"X-Api-Key": "  "}, "missing"),
        ({"Authorization": "Bearer k1"}, "missing"),
        ({"X-Api-Key": "k2"}, "mismatch"),
        ({"X-Api-Key": "k1x"}, "mismatch"),
        ({"X-Api-Key": "clé"}, "mismatch"),
    ],
)
def test_api_key_rejections(headers, reason):
    error = rejection(ApiKeyGuard("k1"), headers)
    assert (error.reason, error.status) == (reason, 401)


@pytest.mark.parametrize("keys", ["", [], ["k1", ""]])
def test_api_key_needs_non_empty_keys(keys):
    with pytest.raises(LabkitError, match="^every API key must be a non-empty string"):
        ApiKeyGuard(keys)


def test_api_key_refusals_name_the_header_as_configured():
    assert "no X-Api-Key header: " in str(rejection(ApiKeyGuard("k1"), {}))
    error = rejection(ApiKeyGuard("k1", header="X-Hook-Token"), {"X-Hook-Token": "k2"})
    assert "the X-Hook-Token value is not an accepted key: " in str(error)


# -- Bearer token ---------------------------------------------------------------


def test_bearer_accepts_listed_tokens_and_any_scheme_case():
    guard = BearerTokenGuard(["tok-A1", "tok.B2~+/=="])
    guard.verify({"Authorization": "Bearer tok-A1"}, b"")
    guard.verify({"authorization": "bearer tok.B2~+/=="}, b"")
    # RFC 6750: credentials = "Bearer" 1*SP b64token, so several spaces are allowed.
    guard.verify({"Authorization": "Bearer   tok-A1"}, b"")


@pytest.mark.parametrize("tokens", ["", [], ["t", ""]])
def test_bearer_needs_non_empty_tokens(tokens):
    with pytest.raises(LabkitError, match="^every bearer token must be a non-empty string"):
        BearerTokenGuard(tokens)


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing"),
        ({"Authorization": ""}, "missing"),
        ({"Authorization": "tok-A1"}, "malformed"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed"),
        ({"Authorization": "Bearer"}, "malformed"),
        ({"Authorization": "Bearer tok A1"}, "malformed"),
        ({"Authorization": "Bearer clé"}, "malformed"),
        ({"Authorization": "Bearer tok-A2"}, "mismatch"),
    ],
)
def test_bearer_rejections(headers, reason):
    error = rejection(BearerTokenGuard("tok-A1"), headers)
    assert (error.reason, error.status) == (reason, 401)


@pytest.mark.parametrize(
    "guard, headers",
    [
        (ApiKeyGuard("k1"), {"X-Api-Key": "k1"}),
        (BearerTokenGuard("tok-A1"), {"Authorization": "Bearer tok-A1"}),
    ],
    ids=["api-key", "bearer"],
)
def test_secrets_are_compared_with_hmac_compare_digest(guard, headers, monkeypatch):
    calls, original = [], hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(guards.hmac, "compare_digest", spy)
    guard.verify(headers, b"")
    assert calls


# -- IP allowlist ---------------------------------------------------------------


@pytest.mark.parametrize(
    "ip", ["192.30.252.1", "140.82.127.255", "143.55.64.10", "2a0a:a440::1", "::ffff:185.199.108.5"]
)
def test_allowlist_accepts_addresses_inside_the_ranges(ip):
    IpAllowlist(GITHUB_HOOKS).verify({}, b"", remote_ip=ip)


@pytest.mark.parametrize("ip", ["192.30.248.1", "140.82.128.0", "10.0.0.1", "2001:db8::1"])
def test_allowlist_refuses_addresses_outside_the_ranges(ip):
    error = rejection(IpAllowlist(GITHUB_HOOKS), {}, remote_ip=ip)
    assert (error.reason, error.status) == ("forbidden", 403)
    assert f"client address {ip} is not in the allowlist ({', '.join(GITHUB_HOOKS)}): " in str(
        error)


def test_allowlist_ranges_may_have_host_bits_set():
    guard = IpAllowlist(["192.30.252.7/22"])       # as written by hand: the network is meant
    assert [str(n) for n in guard.cidrs] == ["192.30.252.0/22"]
    guard.verify({}, b"", remote_ip="192.30.255.254")


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored():
    guard = IpAllowlist(GITHUB_HOOKS, trusted_proxies=["10.0.0.0/8"])
    headers = {"X-Forwarded-For": "192.30.252.1"}
    assert guard.client_ip(headers, "203.0.113.9") == "203.0.113.9"
    error = rejection(guard, headers, remote_ip="203.0.113.9")
    assert error.reason == "forbidden" and "203.0.113.9" in str(error)


def test_forwarded_for_via_a_trusted_proxy_is_honoured():
    guard = IpAllowlist(GITHUB_HOOKS, trusted_proxies=["10.0.0.0/8"])
    headers = {"x-forwarded-for": "192.30.252.1"}
    assert guard.client_ip(headers, "10.1.2.3") == "192.30.252.1"
    guard.verify(headers, b"", remote_ip="10.1.2.3")


def test_chain_of_proxies_is_walked_from_the_right():
    guard = IpAllowlist(GITHUB_HOOKS, trusted_proxies=["10.0.0.0/8", "172.16.0.0/12"])
    # The client wrote a fake first entry; two trusted proxies appended the rest.
    headers = {"X-Forwarded-For": "192.30.252.1, 198.51.100.7, 172.16.0.2, 10.0.0.5"}
    assert guard.client_ip(headers, "10.0.0.9") == "198.51.100.7"
    assert rejection(guard, headers, remote_ip="10.0.0.9").reason == "forbidden"
    headers = {"X-Forwarded-For": "6.6.6.6, 140.82.112.4, 172.16.0.2, 10.0.0.5"}
    guard.verify(headers, b"", remote_ip="10.0.0.9")


def test_repeated_forwarded_for_headers_in_tornado_are_one_list():
    headers = tornado.httputil.HTTPHeaders()
    headers.add("X-Forwarded-For", "140.82.112.4")
    headers.add("X-Forwarded-For", "10.0.0.5")
    guard = IpAllowlist(GITHUB_HOOKS, trusted_proxies="10.0.0.0/8")
    assert guard.client_ip(headers, "10.0.0.9") == "140.82.112.4"


def test_trusted_proxy_without_forwarded_for_is_the_client():
    guard = IpAllowlist(GITHUB_HOOKS, trusted_proxies=["10.0.0.0/8"])
    assert guard.client_ip({}, "10.0.0.9") == "10.0.0.9"
    assert guard.client_ip({"X-Forwarded-For": "10.0.0.7, 10.0.0.5"}, "10.0.0.9") == "10.0.0.7"


@pytest.mark.parametrize(
    "headers, remote_ip, culprit",
    [
        ({}, "not-an-ip", "remote_ip 'not-an-ip'"),
        ({}, "192.30.252.1:443", "remote_ip '192.30.252.1:443'"),
        ({"X-Forwarded-For": "unknown"}, "10.0.0.9", "X-Forwarded-For entry 'unknown'"),
        ({"X-Forwarded-For": "140.82.112.4:5555"}, "10.0.0.9",
         "X-Forwarded-For entry '140.82.112.4:5555'"),
    ],
)
def test_malformed_addresses_are_400(headers, remote_ip, culprit):
    guard = IpAllowlist(GITHUB_HOOKS, trusted_proxies=["10.0.0.0/8"])
    error = rejection(guard, headers, remote_ip=remote_ip)
    assert (error.reason, error.status) == ("malformed", 400)
    assert str(error).startswith(f"{culprit} is not an IP address: ")


def test_garbage_left_of_the_client_is_never_parsed():
    guard = IpAllowlist(GITHUB_HOOKS, trusted_proxies=["10.0.0.0/8"])
    guard.verify({"X-Forwarded-For": "<script>, 140.82.112.4"}, b"", remote_ip="10.0.0.9")


def test_allowlist_needs_remote_ip_and_valid_ranges():
    with pytest.raises(LabkitError, match="remote_ip"):
        IpAllowlist(GITHUB_HOOKS).verify({}, b"")
    with pytest.raises(LabkitError, match="^'192.30.252.0/33' in cidrs is not an IPv4/IPv6"):
        IpAllowlist(["192.30.252.0/33"])
    with pytest.raises(LabkitError, match="^'proxy' in trusted_proxies is not an IPv4/IPv6"):
        IpAllowlist(GITHUB_HOOKS, trusted_proxies=["proxy"])
    with pytest.raises(LabkitError, match="empty"):
        IpAllowlist([])


def test_guard_names():
    all_guards = (ApiKeyGuard("k"), BearerTokenGuard("t"), IpAllowlist("10.0.0.0/8"))
    assert [g.name for g in all_guards] == ["api-key", "bearer", "ip-allowlist"]
