"""Tests for labkit.wire: every request and answer counted as framed on the wire, over real
loopback sockets, and one meaning for a client that leaves early."""

import asyncio
import socket
import time

import pytest
import requests
import tornado.web

from helpers import raw_http
from labkit import lab
from labkit.wire import CLIENT_HEADER, LEFT_EARLY, STREAM_CUT, annotate, client_of, count_sent


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("hello")

    def post(self):
        self.write({"got": len(self.request.body)})


class Chunks(tornado.web.RequestHandler):
    async def get(self):
        for part in (b"first", b"second part", b"3"):
            self.write(part)
            await self.flush()


class Noted(tornado.web.RequestHandler):
    """Says how many events it carried and who asked, as a polling endpoint would."""

    def get(self):
        annotate(self, events=int(self.get_query_argument("n")), detail="noted")
        self.write(client_of(self))


class Hold(tornado.web.RequestHandler):
    """Never answers: a long poll whose client will leave first."""

    async def get(self):
        self.gone = asyncio.get_running_loop().create_future()
        await self.gone

    def on_connection_close(self):
        if not self.gone.done():
            self.gone.set_result(None)


class Trickle(tornado.web.RequestHandler):
    """A stream: a status and a first chunk at once, then nothing until the client leaves."""

    async def get(self):
        self.gone = asyncio.get_running_loop().create_future()
        self.write("data: 1\n\n")
        await self.flush()
        await self.gone

    def on_connection_close(self):
        if not self.gone.done():
            self.gone.set_result(None)


ROUTES = [("/", Hello), ("/chunks", Chunks), ("/noted", Noted), ("/hold", Hold),
          ("/trickle", Trickle)]


def wait_for_records(server, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while len(server.trace) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.trace.records()


@pytest.mark.parametrize("path", ["/", "/chunks"])
def test_traced_bytes_equal_the_bytes_a_raw_socket_sees(path):
    request = (f"GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n"
               f"{CLIENT_HEADER}: raw\r\n\r\n").encode()
    with lab.serve(ROUTES) as server:
        answer = raw_http(server.port, request)
        request_record, response_record = server.trace.records()
    assert request_record.bytes == len(request)
    assert response_record.bytes == len(answer)
    if path == "/chunks":
        assert b"Transfer-Encoding: chunked" in answer


def test_a_request_body_and_headers_are_counted():
    body = b"x" * 1000
    head = (f"POST / HTTP/1.1\r\nHost: lab\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{CLIENT_HEADER}: alice\r\n\r\n").encode()
    with lab.serve(ROUTES) as server:
        answer = raw_http(server.port, head + body)
        request, response = server.trace.records()
    assert b'{"got": 1000}' in answer
    assert (request.kind, request.client, request.bytes) == ("request", "alice", len(head) + 1000)
    assert (response.status, response.bytes) == (200, len(answer))
    assert response.duration >= 0 and response.t >= request.t


def test_the_records_are_written_before_the_client_has_its_answer():
    with lab.serve(ROUTES) as server:
        for n in range(20):  # no waiting between answer and check: there is no race to lose
            requests.get(server.url + "/", timeout=5)
            assert server.trace.count("response") == n + 1


def test_annotate_and_client_of_reach_the_record():
    with lab.serve(ROUTES) as server:
        named = requests.get(server.url + "/noted?n=0", headers={CLIENT_HEADER: "c7"}, timeout=5)
        anonymous = requests.get(server.url + "/noted?n=2", timeout=5)
        empty, news = server.trace.records(kind="response")
    assert named.text == "c7" and empty.client == "c7"
    host, port = anonymous.text.split(":")
    assert host == "127.0.0.1" and port.isdigit() and news.client == anonymous.text
    assert (empty.events, news.events) == (0, 2) and empty.detail == "noted"
    assert server.trace.wasted_share() == 0.5


def test_a_client_that_leaves_before_its_answer_is_a_response_with_no_status():
    with lab.serve(ROUTES) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(f"GET /hold HTTP/1.1\r\nHost: lab\r\n{CLIENT_HEADER}: leaver\r\n\r\n"
                         .encode())
            wait_for_records(server, 1)
        request, response = wait_for_records(server, 2)
    assert (request.kind, response.kind) == ("request", "response")
    assert response.status is None and response.detail == LEFT_EARLY
    assert response.client == "leaver" and response.bytes == 0
    assert not server.trace.records(kind="disconnect")  # one meaning: not an open stream


def test_a_cut_stream_keeps_its_status_and_says_it_was_cut():
    with lab.serve(ROUTES) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /trickle HTTP/1.1\r\nHost: lab\r\n\r\n")
            first = sock.recv(4096)
        request, response = wait_for_records(server, 2)
    assert first.startswith(b"HTTP/1.1 200") and b"data: 1" in first
    assert response.status == 200 and response.detail == STREAM_CUT
    assert response.bytes == len(first)
    assert [r.kind for r in server.trace.records()] == ["request", "response"]


def test_a_stop_with_a_held_request_records_it_once():
    server = lab.serve(ROUTES)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: lab\r\n\r\n")
        wait_for_records(server, 1)
        server.stop()
    kinds = [r.kind for r in server.trace.records()]
    assert kinds == ["request", "response"]


def test_head_and_204_have_no_body_and_no_chunk_framing():
    class Empty(tornado.web.RequestHandler):
        def get(self):
            self.set_status(204)

    with lab.serve([("/", Hello), ("/empty", Empty)]) as server:
        head = raw_http(server.port, b"HEAD / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
        empty = raw_http(server.port, b"GET /empty HTTP/1.1\r\nHost: lab\r\nConnection: close"
                                      b"\r\n\r\n")
        first, second = server.trace.records(kind="response")
    assert b"chunked" not in empty
    assert (first.bytes, second.bytes) == (len(head), len(empty))


def test_count_sent_adds_bytes_a_technique_wrote_past_tornados_writer():
    class Direct(tornado.web.RequestHandler):
        async def get(self):
            self.write("via tornado")
            await self.flush()
            extra = b"5\r\nextra\r\n"  # one chunk written straight to the socket
            self.request.connection.stream.socket.send(extra)
            count_sent(self, len(extra))
            self.finish()

    with lab.serve([("/", Direct)]) as server:
        answer = raw_http(server.port, b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
        (response,) = server.trace.records(kind="response")
    assert b"extra" in answer and response.bytes == len(answer)


def test_repeated_headers_are_counted_line_by_line_both_ways():
    class Twice(tornado.web.RequestHandler):
        def get(self):
            self.add_header("X-Twice", "first")
            self.add_header("X-Twice", "second, longer")
            self.write("ok")

    request = (b"GET / HTTP/1.1\r\nHost: lab\r\nX-Twice: a\r\nX-Twice: bb\r\nX-Twice: ccc\r\n"
               b"Connection: close\r\n\r\n")
    with lab.serve([("/", Twice)]) as server:
        answer = raw_http(server.port, request)
        request_record, response_record = server.trace.records()
    assert answer.count(b"X-Twice: ") == 2
    assert request_record.bytes == len(request)
    assert response_record.bytes == len(answer)


def test_http_1_0_keep_alive_answers_are_counted_with_the_header_tornado_adds():
    first = b"GET / HTTP/1.0\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n"
    second = b"GET /chunks HTTP/1.0\r\nHost: lab\r\n\r\n"      # 1.0 without keep-alive: closes
    with lab.serve(ROUTES) as server:
        answer = raw_http(server.port, first + second)
        records = server.trace.records()
    assert b"Connection: Keep-Alive" in answer and b"chunked" not in answer
    assert [r.kind for r in records] == ["request", "response", "request", "response"]
    assert [r.bytes for r in records if r.kind == "request"] == [len(first), len(second)]
    assert sum(r.bytes for r in records if r.kind == "response") == len(answer)
