"""The lab loop: servers on a background thread, reachable over real loopback sockets."""

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests
import tornado.web

from labkit import lab
from labkit.errors import LabLoopError, PortInUseError
from labkit.trace import Trace


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("hello")

    def post(self):
        self.write({"got": len(self.request.body)})


class Boom(tornado.web.RequestHandler):
    def get(self):
        raise RuntimeError("a bug in a student's handler")


class Hold(tornado.web.RequestHandler):
    """Holds the request until the connection closes (a long poll that never answers)."""

    async def get(self):
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    def on_connection_close(self):
        if not self.waiter.done():
            self.waiter.set_result(None)


def refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_server_answers_real_http_and_records_it():
    with lab.serve([("/", Hello)]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        response = requests.get(server.url + "/", timeout=5)
        assert response.text == "hello"
        counts = server.trace.counts()
    assert counts == {"http": {"request": 1, "response": 1}}


def test_stop_refuses_connections_and_leaves_no_socket_or_thread():
    lab.run(lambda: None)  # make sure the lab thread exists before counting
    threads_before = threading.active_count()
    fds_before = open_fds()
    server = lab.serve([("/", Hello)])
    for _ in range(5):
        requests.get(server.url + "/", timeout=5)
    server.stop()
    assert refused(server.port)
    deadline = time.monotonic() + 2
    while open_fds() > fds_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_fds() <= fds_before
    assert threading.active_count() == threads_before


def test_stop_is_idempotent_and_closes_held_requests():
    server = lab.serve([("/hold", Hold)])
    errors = []

    def client():
        try:
            requests.get(server.url + "/hold", timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.trace.records() and time.monotonic() < deadline:
        time.sleep(0.01)
        if server._http._connections:
            break
    started = time.monotonic()
    server.stop()
    server.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 3
    assert errors, "the held request should have been cut when the server stopped"
    assert not server.running


def test_two_servers_side_by_side_and_stopped_in_a_later_cell():
    first = lab.serve([("/", Hello)])
    second = lab.serve([("/", Hello)])
    assert first.port != second.port
    assert requests.get(first.url + "/", timeout=5).text == "hello"
    assert requests.get(second.url + "/", timeout=5).text == "hello"
    first.stop()  # "a later cell"
    assert refused(first.port)
    assert requests.get(second.url + "/", timeout=5).text == "hello"
    second.stop()


def test_port_in_use_fails_with_a_message_naming_the_port():
    with lab.serve([("/", Hello)]) as server:
        with pytest.raises(PortInUseError) as caught:
            lab.serve([("/", Hello)], port=server.port)
    assert str(server.port) in str(caught.value)
    assert "port=0" in str(caught.value)


def test_a_handler_that_raises_gives_500_and_the_server_keeps_serving(capfd):
    with lab.serve([("/boom", Boom), ("/", Hello)]) as server:
        assert requests.get(server.url + "/boom", timeout=5).status_code == 500
        assert requests.get(server.url + "/", timeout=5).text == "hello"
        statuses = [r.status for r in server.trace.records(kind="response")]
    assert statuses == [500, 200]
    out, err = capfd.readouterr()
    assert out == "" and err == "", "background threads must not print into a cell"


def test_unknown_route_is_404_not_a_crash():
    with lab.serve([("/", Hello)]) as server:
        assert requests.get(server.url + "/nope", timeout=5).status_code == 404
        assert requests.get(server.url + "/", timeout=5).status_code == 200


def test_run_returns_a_coroutines_result_and_refuses_to_deadlock():
    async def add(a, b):
        await asyncio.sleep(0.01)
        return a + b

    assert lab.run(add(2, 3)) == 5

    async def nested():
        return lab.run(add(1, 1))

    with pytest.raises(LabLoopError):
        lab.run(nested())


def test_run_times_out_and_cancels():
    async def forever():
        await asyncio.sleep(60)

    with pytest.raises(TimeoutError):
        lab.run(forever(), timeout=0.1)


def test_works_inside_a_running_asyncio_loop_like_a_jupyter_kernel():
    async def cell():
        # The kernel's own loop is running here, as in a notebook.
        with lab.serve([("/", Hello)]) as server:
            return requests.get(server.url + "/", timeout=5).text

    assert asyncio.run(cell()) == "hello"


def test_works_from_a_plain_script_and_exits_cleanly(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import requests, tornado.web
        from labkit import lab

        class Hello(tornado.web.RequestHandler):
            def get(self):
                self.write("from a script")

        server = lab.serve([("/", Hello)])
        print(requests.get(server.url + "/", timeout=5).text)
        # no stop(): the lab stops everything at interpreter exit
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, cwd=os.getcwd())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from a script"
    assert result.stderr == ""


def test_shared_trace_across_servers():
    trace = Trace()
    with lab.serve([("/", Hello)], trace=trace, technique="http: a") as a, \
            lab.serve([("/", Hello)], trace=trace, technique="http: b") as b:
        requests.get(a.url + "/", timeout=5)
        requests.get(b.url + "/", timeout=5)
    assert trace.techniques() == ["http: a", "http: b"]


def test_shutdown_ends_the_thread_and_the_lab_restarts_on_next_use():
    server = lab.serve([("/", Hello)])
    lab.shutdown()
    assert not lab.is_running()
    assert not server.running
    assert refused(server.port)
    with lab.serve([("/", Hello)]) as again:
        assert requests.get(again.url + "/", timeout=5).text == "hello"


def test_running_servers_lists_what_is_not_stopped():
    server = lab.serve([("/", Hello)])
    assert server in lab.running_servers()
    server.stop()
    assert server not in lab.running_servers()


class Stream(tornado.web.RequestHandler):
    """Writes a chunk every 20 ms until the client or the server goes away (like SSE)."""

    async def get(self):
        from tornado.iostream import StreamClosedError
        for n in range(500):
            self.write(f"data: {n}\n\n")
            try:
                await self.flush()
            except StreamClosedError:
                return
            await asyncio.sleep(0.02)


def test_stop_ends_open_streams():
    server = lab.serve([("/stream", Stream)])
    got = []

    def client():
        try:
            with requests.get(server.url + "/stream", stream=True, timeout=10) as response:
                for line in response.iter_lines():
                    if line:
                        got.append(line)
        except requests.RequestException:
            pass

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop()
    thread.join(5)
    assert not thread.is_alive(), "the stream should end when the server stops"
    assert 3 <= len(got) < 500
    kinds = [r.kind for r in server.trace.records()]
    assert kinds == ["request", "response"]  # a cut stream is a response, not a disconnect
    assert server.trace.records(kind="response")[0].status == 200


def test_serve_takes_a_bare_connection_delegate():
    from tornado import httputil

    class Teapot(httputil.HTTPMessageDelegate):
        def __init__(self, connection):
            self.connection = connection

        def finish(self):
            headers = httputil.HTTPHeaders({"Content-Length": "0"})
            self.connection.write_headers(httputil.ResponseStartLine("HTTP/1.1", 418, "I'm a Teapot"),
                                          headers)
            self.connection.finish()

    class Teapots(httputil.HTTPServerConnectionDelegate):
        def start_request(self, server_conn, request_conn):
            return Teapot(request_conn)

    with lab.serve(Teapots(), technique="http: tea") as server:
        assert requests.get(server.url + "/anything", timeout=5).status_code == 418
        assert [r.status for r in server.trace.records(kind="response")] == [418]
    with pytest.raises(TypeError, match="Application"):
        lab.serve(Teapots(), debug=True)


def test_lab_clients_reach_lab_servers_by_ip_literal_and_by_name():
    from tornado.iostream import IOStream

    async def fetch(url):
        client = lab.http_client(2)
        try:
            return (await client.fetch(url)).body
        finally:
            client.close()

    async def connect(host, port):
        stream: IOStream = await lab.tcp_client().connect(host, port)
        stream.close()
        return True

    with lab.serve([("/", Hello)]) as server:
        assert lab.run(fetch(server.url + "/"), timeout=10) == b"hello"
        assert lab.run(fetch(f"http://localhost:{server.port}/"), timeout=10) == b"hello"
        assert lab.run(connect("127.0.0.1", server.port), timeout=10)


def test_wait_until_returns_when_the_lab_loop_makes_progress_and_explains_a_timeout():
    changed, items = threading.Condition(), []

    async def add_later():
        await asyncio.sleep(0.05)
        with changed:
            items.append(1)
            changed.notify_all()

    lab.submit(add_later())
    lab.wait_until(changed, lambda: len(items) == 1, 5, lambda: "never")
    with pytest.raises(TimeoutError, match="still 1"):
        lab.wait_until(changed, lambda: len(items) == 2, 0.05, lambda: f"still {len(items)}")

    async def on_the_loop():
        lab.wait_until(changed, lambda: True, 1, lambda: "")

    with pytest.raises(LabLoopError):
        lab.run(on_the_loop())


GC_SCRIPT = """
    import gc, weakref
    from labkit import lab

    class Node:
        pass

    {turn_off}
    frozen_before = gc.get_freeze_count()
    before = Node(); before.me = before          # a cycle made before the lab starts
    before_ref = weakref.ref(before)
    lab.run(lambda: None)                        # the lab loop starts here
    frozen = gc.get_freeze_count()
    after = Node(); after.me = after             # a cycle made once it runs
    after_ref = weakref.ref(after)
    del before, after
    gc.collect()
    print(frozen_before, frozen, before_ref() is not None, after_ref() is None)
"""


def run_gc_script(tmp_path, turn_off: str = "", env: dict | None = None) -> list[str]:
    script = tmp_path / "gc_script.py"
    script.write_text(textwrap.dedent(GC_SCRIPT.format(turn_off=turn_off)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, cwd=os.getcwd(), env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_loop_start_freezes_what_exists_and_later_cycles_are_still_collected(tmp_path):
    before, frozen, kept, collected = run_gc_script(tmp_path, env={"LABKIT_GC_FREEZE": "1"})
    assert before == "0" and int(frozen) > 1_000   # the interpreter, tornado, labkit ...
    assert kept == "True"          # the price: a cycle alive at the freeze is never collected
    assert collected == "True"     # what is made afterwards is collected as usual


@pytest.mark.parametrize("turn_off, env", [
    ("", {"LABKIT_GC_FREEZE": "0"}),
    ("lab.FREEZE_AT_START = False", {"LABKIT_GC_FREEZE": "1"}),
], ids=["environment", "attribute"])
def test_the_freeze_can_be_turned_off(tmp_path, turn_off, env):
    assert run_gc_script(tmp_path, turn_off, env) == ["0", "0", "False", "True"]
