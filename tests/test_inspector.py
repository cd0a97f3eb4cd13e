"""Tests for labkit.debug.inspector, over real loopback sockets: capture, listing, caps, replay."""

from __future__ import annotations

import base64
import dataclasses
import json
import shlex
import shutil
import subprocess
import threading

import pytest
import requests

from helpers import raw_http
from labkit import lab
from labkit.errors import LabkitError, LabLoopError
from labkit.feed import Feed
from labkit.trace import Trace
from labkit.debug.inspector import Inspector, as_curl, replay, serve_inspector
from labkit.webhooks.providers import GitHubProvider, PaymentProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.signatures import GitHubSignature, StripeSignature

SECRET = "gh-secret"
NO_PROXY = {"http": None, "https": None}


def push(url: str, seed: int = 1):
    return GitHubProvider(SECRET).build(url, Feed(seed=seed).make("push", {"message": "fix é"}))


# -- capturing ----------------------------------------------------------------------------


def test_a_provider_delivery_is_kept_exactly_as_it_arrived():
    with serve_inspector() as server:
        url = server.component.bin_url("github") + "/hooks?attempt=1"
        webhook = push(url)
        response = webhook.send()
        assert response.status_code == 200
        captured, = server.component.requests
        assert captured.id == 1 and captured.bin == "github" and captured.status == 200
        assert response.headers["X-Inspector-Id"] == "1"
        assert (captured.method, captured.path, captured.query) == ("POST", "/bin/github/hooks",
                                                                    "attempt=1")
        assert captured.url == url
        assert captured.body == webhook.body and captured.size == len(webhook.body)
        assert captured.remote_ip == "127.0.0.1"
        for name, value in webhook.headers.items():
            assert captured.header(name) == value
            assert captured.header(name.upper()) == value  # any case
        names = [name.lower() for name, _ in captured.headers]
        sent = [name.lower() for name in webhook.headers]
        assert [n for n in names if n in sent] == sent, "headers keep the order they were sent in"
        assert captured.json()["head_commit"]["message"] == "fix é"
        record = server.trace.records(kind="response", technique="inspector")[-1]
        assert record.detail == "captured #1 in bin github"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
def test_every_method_and_path_is_captured(method):
    with serve_inspector() as server:
        response = requests.request(method, server.component.bin_url("any") + "/a/b?x=1&x=2",
                                    data=b"" if method in ("GET", "HEAD") else b"payload",
                                    timeout=5)
        assert response.status_code == 200
        captured = server.component.wait_for(1)[0]
        assert (captured.method, captured.path, captured.query) == (method, "/bin/any/a/b",
                                                                    "x=1&x=2")


def test_the_status_is_configurable_and_can_change_while_serving():
    with serve_inspector(status=500) as server:
        assert push(server.component.bin_url()).send().status_code == 500
        server.component.status = 204
        response = push(server.component.bin_url()).send()
        assert response.status_code == 204 and response.content == b""
        assert [r.status for r in server.component.requests] == [500, 204]
    with pytest.raises(LabkitError, match="status"):
        Inspector(status=99)


def test_an_unknown_method_bad_bin_name_and_garbage_leave_the_bin_serving():
    with serve_inspector() as server:
        assert requests.request("PROPFIND", server.component.bin_url(), timeout=5).status_code == 405
        assert requests.post(server.url + "/bin/bad$name", data=b"x", timeout=5).status_code == 404
        assert requests.post(server.url + "/elsewhere", data=b"x", timeout=5).status_code == 404
        answer = raw_http(server.port, b"THIS IS NOT HTTP\r\n\r\n")
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
        assert server.component.requests == []
        assert requests.post(server.component.bin_url(), data=b"ok", timeout=5).status_code == 200
        assert len(server.component.requests) == 1
    with pytest.raises(LabkitError, match="bin name"):
        server.component.bin_url("a/b")


# -- listing ------------------------------------------------------------------------------


def test_json_listing_filters_by_bin_and_shows_binary_bodies_as_base64():
    with serve_inspector() as server:
        inspector = server.component
        requests.post(inspector.bin_url("text"), data="héllo".encode(), timeout=5)
        requests.post(inspector.bin_url("binary"), data=b"\xff\x00\xfe", timeout=5)
        listing = requests.get(server.url + "/inspect", timeout=5).json()
        assert listing["count"] == 2 and listing["dropped"] == 0
        text, binary = listing["requests"]
        assert (text["body"], text["body_base64"]) == ("héllo", None)
        assert binary["body"] is None and base64.b64decode(binary["body_base64"]) == b"\xff\x00\xfe"
        assert ["Content-Length", "3"] in binary["headers"]
        only = requests.get(server.url + "/inspect", params={"bin": "binary"}, timeout=5).json()
        assert [r["id"] for r in only["requests"]] == [2]
        one = requests.get(server.url + "/inspect/1", timeout=5)
        assert one.json() == inspector.requests[0].as_dict() == text
        missing = requests.get(server.url + "/inspect/99", timeout=5)
        assert missing.status_code == 404 and "#99" in missing.json()["error"]
        assert requests.get(server.url + "/inspect/abc", timeout=5).status_code == 404


def test_the_html_page_escapes_everything_a_sender_controls():
    evil = "<script>alert(1)</script>"
    with serve_inspector() as server:
        requests.post(server.component.bin_url("x") + "/%3Cb%3E", timeout=5,
                      data=f"<img src=x onerror=alert(2)>{evil}".encode(),
                      headers={"X-Evil": evil, "Content-Type": "text/html"})
        page = requests.get(server.component.page_url, timeout=5)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none'
        assert "<script" not in page.text and "<img" not in page.text and "<b>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "&lt;img src=x onerror=alert(2)&gt;" in page.text
        assert "GET /inspect/&lt;id&gt;/curl" in page.text, "the page lists the endpoints"
        assert "<script" not in server.component._repr_html_()


def test_the_curl_endpoint_writes_the_replay_command():
    with serve_inspector() as server:
        push(server.component.bin_url()).send()
        text = requests.get(server.url + "/inspect/1/curl", params={"url": "http://h/x"},
                            timeout=5).text
        assert text.startswith("curl http://h/x") and "X-Hub-Signature-256" in text
        assert requests.get(server.url + "/inspect/5/curl", timeout=5).status_code == 404


# -- caps ---------------------------------------------------------------------------------


def test_a_body_over_the_cap_is_refused_with_413_but_listed_with_its_size():
    def chunks():  # sent chunked: no Content-Length to judge by, the streamed bytes count
        yield from (b"x" * 100 for _ in range(3))

    with serve_inspector(max_body=250) as server:
        assert requests.post(server.component.bin_url(), data=b"y" * 251, timeout=5).status_code == 413
        assert requests.post(server.component.bin_url(), data=chunks(), timeout=5).status_code == 413
        assert requests.post(server.component.bin_url(), data=b"z" * 250, timeout=5).status_code == 200
        declared, streamed, fits = server.component.requests
        assert (declared.status, declared.size, declared.body) == (413, 251, b"")
        assert (streamed.status, streamed.size, streamed.body) == (413, 300, b"")
        assert (fits.status, fits.size, fits.body) == (200, 250, b"z" * 250)
        assert "not kept" in requests.get(server.component.page_url, timeout=5).text


def test_a_declared_oversize_body_is_refused_before_it_is_read():
    with serve_inspector(max_body=1000) as server:
        response = requests.post(server.component.bin_url(), data=b" " * 300_000, timeout=5,
                                 headers={"Connection": "close"})
        assert response.status_code == 413 and "300000 bytes" in response.text
        request, = server.trace.records(kind="request")
        assert request.bytes < 1000, "only the headers were read"


def test_only_the_newest_requests_are_kept_and_the_dropped_are_counted():
    with serve_inspector(max_requests=3) as server:
        for n in range(5):
            requests.post(server.component.bin_url(), data=str(n).encode(), timeout=5)
        assert [r.id for r in server.component.requests] == [3, 4, 5]
        assert [r.body for r in server.component.requests] == [b"2", b"3", b"4"]
        assert server.component.dropped == 2
        assert server.component.get(1) is None and server.component.get(5).body == b"4"
        assert "2 older ones dropped" in requests.get(server.url + "/inspect/1", timeout=5).text
        with pytest.raises(LabkitError, match="at most 3"):
            server.component.wait_for(4)
        server.component.clear()
        assert server.component.requests == [] and server.component.last is None


# -- waiting ------------------------------------------------------------------------------


def test_wait_for_returns_when_enough_arrived_and_times_out_with_a_hint():
    with serve_inspector() as server:
        timer = threading.Timer(0.05, requests.post, (server.component.bin_url(),),
                                {"data": b"late", "timeout": 5})
        timer.start()
        try:
            assert server.component.wait_for(1, timeout=5)[0].body == b"late"
        finally:
            timer.join(5)
        with pytest.raises(TimeoutError, match="1 of 2 requests"):
            server.component.wait_for(2, timeout=0.1)
    with pytest.raises(LabLoopError):
        lab.run(lambda: Inspector().wait_for(1, timeout=0.1), timeout=5)


def test_serve_inspector_uses_the_given_trace():
    trace = Trace()
    with serve_inspector(trace=trace) as server:
        requests.get(server.component.bin_url(), timeout=5)
        assert server.trace is trace and trace.count("request", "inspector") == 1
    with pytest.raises(LabkitError, match="not served"):
        Inspector().bin_url()


# -- replaying ------------------------------------------------------------------------------


def test_replay_sends_the_same_headers_and_bytes_and_the_signature_still_verifies():
    with serve_inspector() as bin_server, \
            serve_receiver(verifiers=[GitHubSignature(SECRET)]) as receiver:
        webhook = push(bin_server.component.bin_url("first"))
        webhook.send()
        captured = bin_server.component.last
        assert replay(captured, receiver.endpoint_url).status_code == 200
        delivery, = receiver.component.deliveries
        assert delivery.body == webhook.body and delivery.id == webhook.delivery_id

        tampered = dataclasses.replace(captured, body=captured.body.replace(b"fix", b"FIX"))
        assert replay(tampered, receiver.endpoint_url).status_code == 401
        assert receiver.component.rejections[-1].reason == "mismatch"

        replay(captured, bin_server.component.bin_url("second"))
        again = bin_server.component.last
        assert again.body == captured.body
        skip = {"host", "connection"}  # the connection's own headers belong to the new connection
        assert [h for h in again.headers if h[0].lower() not in skip] == \
            [h for h in captured.headers if h[0].lower() not in skip]


def test_replay_adds_no_header_the_original_did_not_have():
    with serve_inspector() as server:
        raw_http(server.port, b"POST /bin/bare HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                              b"Connection: close\r\n\r\nhi")
        bare = server.component.wait_for(1)[0]
        replay(bare, server.component.bin_url("again"))
        again = server.component.last
        assert [name for name, _ in again.headers] == ["Host", "Content-Length"]
        assert again.body == b"hi"


def require_curl():
    """These tests run the real curl: fail clearly rather than skip where it is missing."""
    missing = [tool for tool in ("curl", "bash", "base64") if not shutil.which(tool)]
    assert not missing, f"install {', '.join(missing)} to run the curl replay tests"


def _run_curl(command: str) -> str:
    """Run a command from as_curl in bash, with the status code printed (bounded in time)."""
    require_curl()
    done = subprocess.run(["bash", "-c", command + " -s -o /dev/null -w '%{http_code}'"],
                          capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "NO_PROXY": "*", "no_proxy": "*"})
    return done.stdout


def test_as_curl_quotes_every_word_for_the_shell():
    with serve_inspector() as server:
        body = b"it's $(rm -rf /) `x` \"q\" \\ \n\r\n@file"
        requests.post(server.component.bin_url(), data=body, timeout=5,
                      headers={"X-Name": "O'Brien; echo pwned", "Content-Type": "text/plain"})
        command = as_curl(server.component.last, "http://127.0.0.1:1/x?a=1&b=2")
        words = shlex.split(command.replace("\\\n", ""))
        assert words[:2] == ["curl", "http://127.0.0.1:1/x?a=1&b=2"]
        assert "X-Name: O'Brien; echo pwned" in words
        assert words[words.index("--data-raw") + 1] == body.decode()
        for own in ("Host", "Content-Length", "Connection"):
            assert not any(w.startswith(own + ":") for w in words), own


@pytest.mark.parametrize("body", [b"line 1\nline 2\r\n@not-a-file 'quoted' $HOME", b"\x00\xff" * 700,
                                  b"x" * 70_000], ids=["text", "binary", "large"])
def test_the_curl_command_really_sends_the_same_bytes(body):
    with serve_inspector() as server:
        requests.put(server.component.bin_url("a"), data=body, timeout=5,
                     headers={"Content-Type": "application/octet-stream", "X-Empty": ""})
        original = server.component.last
        assert _run_curl(as_curl(original, server.component.bin_url("b"))) == "200"
        copy = server.component.last
        assert (copy.bin, copy.method, copy.body) == ("b", "PUT", body)
        skip = {"host", "connection"}
        assert [h for h in copy.headers if h[0].lower() not in skip] == \
            [h for h in original.headers if h[0].lower() not in skip]


def test_a_captured_payment_replayed_with_curl_is_accepted_by_the_real_receiver():
    with serve_inspector() as bin_server, \
            serve_receiver(verifiers=[StripeSignature("whsec_x")]) as receiver:
        PaymentProvider("whsec_x").send(bin_server.component.bin_url(), Feed().make("payment"))
        command = as_curl(bin_server.component.last, receiver.endpoint_url)
        assert _run_curl(command) == "200"
        assert receiver.component.deliveries[0].body == bin_server.component.last.body
        changed = command.replace('"amount": 2000', '"amount": 1')
        assert changed != command and _run_curl(changed) == "401"


def test_as_curl_switches_off_what_curl_would_add_and_handles_get_and_head():
    with serve_inspector() as server:
        raw_http(server.port, b"GET /bin/g?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw_http(server.port, b"HEAD /bin/h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        get, head = server.component.wait_for(2)
        get_words = shlex.split(as_curl(get).replace("\\\n", ""))
        assert get_words[:2] == ["curl", get.url]
        assert {"User-Agent:", "Accept:"} <= set(get_words) and "--data-raw" not in get_words
        assert shlex.split(as_curl(head).replace("\\\n", ""))[:2] == ["curl", "--head"]
        post_words = shlex.split(as_curl(dataclasses.replace(get, method="POST", body=b"{}")))
        assert "Content-Type:" in post_words and "-X" not in post_words
        assert json.loads(post_words[post_words.index("--data-raw") + 1]) == {}
