"""The ``labkit`` command line, run as a user runs it: a subprocess, over real loopback.

Experiments use few clients and few events, so each run takes a second or
two; servers are started in the background, reached with real HTTP (and
WebSocket) clients, and stopped with the signals a terminal sends.
"""

import asyncio
import csv
import json
import os
import pty
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import tornado.websocket

from labkit.trace import Record

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--clients", "2", "--events", "4", "--rate", "20", "--interval", "0.2"]
"""Small runs: 2 clients, 4 events in about 0.2 s, polls every 0.2 s."""


def labkit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m labkit.cli ARGS`` and wait for it (bounded)."""
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


def rows_of(table: str) -> list[list[str]]:
    """The cells of a printed table, split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()]


# -- run, compare, scaling --------------------------------------------------------------------


def test_run_prints_its_row_as_an_aligned_table_and_nothing_on_stderr():
    done = labkit("run", "sse", *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar: stderr is not a terminal
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    header, row = rows_of(done.stdout)
    assert header == ["technique", "clients", "delivered", "requests", "bytes/event",
                      "p50 (ms)", "p99 (ms)", "connections", "held", "server CPU (ms)"]
    cells = dict(zip(header, row))
    assert cells["technique"] == "sse" and cells["delivered"] == "8/8"
    assert cells["requests"] == "2"  # one stream per client
    assert cells["connections"] == "2" and cells["held"] == "2"
    assert float(cells["p99 (ms)"]) >= float(cells["p50 (ms)"]) > 0
    # aligned: every line as long as the header, every column ends where its title ends
    assert len(lines[0]) == len(lines[1])
    assert lines[1].index("8/8") + 3 == lines[0].index("delivered") + len("delivered")


def test_run_as_json_gives_the_measured_numbers():
    done = labkit("run", "long-polling", *FAST, "--format", "json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["technique"] == "long-polling" and row["clients"] == 2
    assert row["complete"] is True and row["deliveries"] == 8
    assert row["held"] == 2 and row["connections"] == 2
    assert row["requests"] >= 2 and row["bytes/event"] > 0
    assert row["wasted share"] is not None  # a number; NaN would be printed as null


def test_compare_writes_one_csv_trace_with_every_technique_and_a_png_dashboard(tmp_path):
    trace, chart = tmp_path / "both.csv", tmp_path / "both.png"
    done = labkit("compare", "polling", "sse", *FAST, "--trace", str(trace),
                  "--chart", str(chart))
    assert done.returncode == 0, done.stderr
    rows = rows_of(done.stdout)
    assert [row[0] for row in rows[:3]] == ["technique", "polling", "sse"]
    assert f"wrote {trace}" in done.stdout and f"wrote {chart}" in done.stdout
    with trace.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(Record._fields)
        records = list(reader)
    assert {r["technique"] for r in records} == {"polling", "sse"}
    for technique in ("polling", "sse"):
        events = [r for r in records if r["technique"] == technique and r["kind"] == "event"]
        assert len(events) == 8 and all(float(r["latency"]) >= 0 for r in events)
    assert min(float(r["t"]) for r in records) >= 0  # one clock, from the first run's start
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_writes_a_json_trace_and_an_svg_chart(tmp_path):
    trace, chart = tmp_path / "both.json", tmp_path / "both.svg"
    done = labkit("compare", "long-polling", "websocket", *FAST, "--trace", str(trace),
                  "--chart", str(chart))
    assert done.returncode == 0, done.stderr
    records = json.loads(trace.read_text())
    assert {r["technique"] for r in records} == {"long-polling", "websocket"}
    assert sum(1 for r in records if r["kind"] == "event") == 16
    # the WebSocket's frames are on record, so its bytes can be counted as the table does
    assert any(r["kind"] == "disconnect" and r["bytes"] > 0 for r in records
               if r["technique"] == "websocket")
    text = chart.read_text()
    assert "<svg" in text and "Bytes per delivered event" in text


def test_compare_runs_all_six_techniques_in_one_table_with_footnotes(tmp_path):
    trace, chart = tmp_path / "six.json", tmp_path / "six.svg"
    done = labkit("compare", "polling", "long-polling", "sse", "websocket", "webpush",
                  "webhook", *FAST, "--trace", str(trace), "--chart", str(chart))
    assert done.returncode == 0, done.stderr
    table, notes = done.stdout.split("\n* ", 1)
    header, *rows = rows_of(table)
    cells = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(cells) == ["polling", "long-polling", "sse", "websocket", "webpush", "webhook"]
    assert all(row["delivered"] == "8/8" for row in cells.values())
    assert len({len(line) for line in table.splitlines()}) == 1  # aligned
    # webpush: 2 set-up requests per phone, then a POST per event and phone
    assert cells["webpush"]["requests"] == "12" and cells["webpush"]["held"] == "2"
    assert 3 <= int(cells["webpush"]["connections"]) <= 6  # 2 phones, and the app server's
    # webhook: a subscription per receiver, then a POST per event and receiver; no connection
    assert cells["webhook"]["requests"] == "10" and cells["webhook"]["held"] == "0"
    assert cells["webhook"]["connections"] == "-"
    assert "webpush: requests are each phone's subscribe" in notes
    assert "webhook: nobody holds a connection" in notes
    assert notes.count("\n* ") == 1  # a footnote for webpush, one for webhook; none for pages
    records = json.loads(trace.read_text())
    for technique in ("webpush", "webhook"):
        events = [r for r in records if r["technique"] == technique and r["kind"] == "event"]
        assert len(events) == 8 and all(0 < r["latency"] < 5 for r in events)
    # the phones' frames are on record (one disconnect each), as the WebSocket's are
    frames = [r for r in records if r["technique"] == "webpush" and r["kind"] == "disconnect"]
    assert len(frames) == 2 and all(r["bytes"] > 0 for r in frames)
    assert "record of" not in notes
    assert "<svg" in chart.read_text()


def test_scaling_runs_each_number_of_clients_and_keeps_the_runs_apart(tmp_path):
    trace = tmp_path / "sweep.json"
    done = labkit("scaling", "sse", "--clients", "3,1", "--events", "3", "--rate", "20",
                  "--format", "json", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["technique"], r["clients"], r["deliveries"]) for r in rows] == \
        [("sse", 1, 3), ("sse", 3, 9)]
    techniques = {r["technique"] for r in json.loads(trace.read_text())}
    assert techniques == {"sse: 1 clients", "sse: 3 clients"}


def test_run_and_scaling_take_webhook_and_webpush_too(tmp_path):
    trace = tmp_path / "hooks.csv"
    done = labkit("run", "webhook", *FAST, "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    assert rows_of(done.stdout)[1][:4] == ["webhook", "2", "8/8", "10"]
    with trace.open(newline="") as f:
        records = list(csv.DictReader(f))
    assert sum(1 for r in records if r["kind"] == "event") == 8
    assert {r["client"] for r in records if r["kind"] == "event"} == \
        {"webhook-0001", "webhook-0002"}
    done = labkit("scaling", "webpush", "webhook", "--clients", "1,3", "--events", "2",
                  "--rate", "20", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["technique"], r["clients"], r["deliveries"], r["held"]) for r in rows] == \
        [("webpush", 1, 2, 1), ("webpush", 3, 6, 3), ("webhook", 1, 2, 0), ("webhook", 3, 6, 0)]
    assert [r["connections"] for r in rows][2:] == [None, None]


def test_scaling_prints_memory_and_draws_its_chart(tmp_path):
    chart = tmp_path / "sweep.png"
    done = labkit("scaling", "websocket", "--clients", "1,2", "--events", "2", "--rate", "20",
                  "--chart", str(chart))
    assert done.returncode == 0, done.stderr
    header, *rows = rows_of(done.stdout.split("\nwrote")[0])
    assert header[-1] == "memory (KiB)" and [row[1] for row in rows] == ["1", "2"]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_that_leaves_events_undelivered_exits_1_and_still_prints_its_row():
    # Polling clients ask once at the start, then every 30 s: within a 0.5 s bound they
    # never ask again, so none of the 3 events reaches them.
    done = labkit("run", "polling", "--clients", "2", "--events", "3", "--rate", "50",
                  "--interval", "30", "--timeout", "0.5")
    assert done.returncode == 1
    assert rows_of(done.stdout)[1][:3] == ["polling", "2", "0/6"]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "delivered 0 of 6 events" in done.stderr


def test_a_run_that_fails_keeps_the_rows_before_it_and_exits_1(monkeypatch, capsys):
    # In this process, so that one run can be made to fail the way a stuck server fails.
    from labkit.cli import experiments, main
    from labkit.errors import WaitTimeout
    real = experiments.run_clients

    def run_clients(technique, clients, **options):
        if technique == "sse":
            raise WaitTimeout("the server holds only 1 of 2 clients")
        return real(technique, clients, **options)

    monkeypatch.setattr(experiments, "run_clients", run_clients)
    assert main(["compare", "polling", "sse", "websocket", *FAST]) == 1
    out, err = capsys.readouterr()
    assert [row[0] for row in rows_of(out)] == ["technique", "polling"]  # websocket: not run
    assert err == "labkit compare: sse with 2 clients failed: the server holds only 1 of 2 " \
                  "clients\n"


@pytest.mark.parametrize("args, words", [
    (["run", "carrier-pigeon"], "unknown technique 'carrier-pigeon'"),
    (["run", "queue"], "not one that runs with many clients"),
    (["compare", "sse", "webhook", "--load", "process"], "webhook runs inline only"),
    (["run", "webpush", "--load", "process"], "webpush runs inline only"),
    (["run", "sse", "--clients", "0"], "--clients: 0 is out of range"),
    (["run", "sse", "--clients", "ten"], "'ten' is not a whole number"),
    (["run", "sse", "--rate", "-1"], "--rate: '-1' must be a number > 0"),
    (["run", "sse", "--interval", "nan"], "--interval"),
    (["run", "sse", "--trace", "out.txt"], "must end in .csv or .json"),
    (["run", "sse", "--chart", "out.gif"], "must end in .png or .svg"),
    (["run", "sse", "--trace", "{tmp}/missing/out.csv"], "is not a directory"),
    (["run", "sse", "--trace", "{tmp}/a-file/out.csv"], "is not a directory"),
    (["run", "sse", "--chart", "{tmp}/a-folder.png"], "it is a directory"),
    (["compare", "sse", "sse"], "sse listed twice"),
    (["compare"], "required: TECHNIQUE"),
    (["scaling", "sse", "--clients", "1,,10"], "not a list of numbers of clients"),
    (["scaling", "sse", "--clients", "10,10"], "names a number of clients twice"),
    (["serve", "mailbox"], "invalid choice: 'mailbox'"),
    (["serve", "sse", "--port", "70000"], "--port: 70000 is out of range"),
    (["serve", "sse", "--every", "0"], "--every"),
    (["serve", "receiver", "--scheme", "stripe"], "needs --secret"),
    (["serve", "receiver", "--secret", "not base64!", "--scheme", "standard-webhooks"],
     "is not 'whsec_' + base64"),
    ([], "required: COMMAND"),
])
def test_a_bad_argument_exits_2_with_one_line_and_no_traceback(tmp_path, args, words):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder.png").mkdir()
    done = labkit(*[arg.replace("{tmp}", str(tmp_path)) for arg in args], timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("labkit")
    assert words in done.stderr and "Traceback" not in done.stderr


def test_a_port_in_use_is_a_usage_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        done = labkit("serve", "sse", "--port", str(holder.getsockname()[1]), timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("labkit serve sse: error: port ")
    assert "already in use" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("command", [
    [], ["run"], ["compare"], ["scaling"], ["serve"], ["serve", "receiver"],
    ["serve", "inspector"], ["serve", "sse"], ["serve", "polling"], ["serve", "long-polling"],
    ["serve", "websocket"], ["serve", "push-service"],
])
def test_every_command_has_help_with_examples(command):
    done = labkit(*command, "--help", timeout=30)
    assert done.returncode == 0 and done.stderr == ""
    assert "examples:\n  labkit " + (command[0] if command else "") in done.stdout


def test_python_dash_m_labkit_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "labkit", "--help"], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 0 and "usage: labkit" in done.stdout


def test_the_installed_console_script_runs():
    here = str(Path(sys.executable).parent)  # the environment's own scripts come first
    script = shutil.which("labkit", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    assert script is not None, ("no 'labkit' script installed: make test installs it "
                                "(pip install -e . after pyproject.toml names it)")
    done = subprocess.run([script, "run", "websocket", *FAST, "--format", "json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["deliveries"] == 8


def test_the_progress_bar_is_drawn_only_on_a_terminal():
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "labkit.cli", "compare", "sse",
                                "websocket", "--clients", "2", "--events", "5", "--rate", "5"],
                               stdout=subprocess.PIPE, stderr=terminal, cwd=ROOT,
                               stdin=subprocess.DEVNULL)
    os.close(terminal)
    drawn = bytearray()

    def read() -> None:  # keep the terminal drained, or a long run would block on it
        for _ in range(100_000):
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end closed: the run is over
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        out = process.communicate(timeout=120)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(10)
        os.close(controller)
    assert process.returncode == 0
    bar = drawn.decode()
    assert "[#" in bar and "1/2  sse, 2 clients" in bar and "2/2  websocket, 2 clients" in bar
    assert bar.endswith("\r\x1b[K")  # erased when done
    assert "[#" not in out and rows_of(out)[1][0] == "sse"


# -- serve ---------------------------------------------------------------------------------------


class Serving:
    """``labkit serve ...`` in the background, its stdout read line by line by a thread."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen([sys.executable, "-m", "labkit.cli", "serve", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def line(self, test, timeout: float = 30.0) -> str:
        """The first line printed (from now or before) for which ``test(line)`` holds."""
        for line in self.lines:
            if test(line):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if test(line):
                return line
        raise AssertionError(f"no such line within {timeout} s; printed so far: {self.lines}")

    def url(self) -> str:
        """Host, port and path of the first URL printed (without ``http://`` or a query)."""
        line = self.line(lambda line: "http://" in line)
        return line.split("http://", 1)[1].split()[0].split("?")[0]

    def stop(self, signum: int) -> int:
        """Send ``signum``; return the exit status."""
        self.process.send_signal(signum)
        status = self.process.wait(timeout=30)
        self.line(lambda line: line.startswith("stopped"), timeout=10)
        return status

    def __enter__(self) -> "Serving":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()  # our own child, by its pid
            self.process.wait(10)
        self.process.stdout.close()
        self.process.stderr.close()


def refused(url: str) -> bool:
    host, port = url.split("/")[0].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def send_curl(line: str, url: str | None = None, body: bytes | None = None):
    """Do what a printed ``curl -i -X METHOD URL -H ... --data-binary ...`` line does."""
    words = shlex.split(line.strip())
    assert words[:4] == ["curl", "-i", "-X", words[3]]
    method, target, headers, data = words[3], words[4], {}, None
    rest = iter(words[5:])
    for word in rest:
        if word == "-H":
            name, _, value = next(rest).partition(": ")
            headers[name] = value
        else:
            assert word == "--data-binary", word
            data = next(rest).encode()
    return requests.request(method, url or target, headers=headers,
                            data=data if body is None else body, timeout=10)


def test_serve_sse_streams_ticks_to_a_real_client_and_stops_on_sigint():
    with Serving("sse", "--every", "0.1") as served:
        url = served.url()
        assert served.line(lambda line: line == f"  curl -N http://{url}")
        ticks = []
        with requests.get(f"http://{url}", stream=True, timeout=10,
                          headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    ticks.append(json.loads(line[6:])["tick"])
                if len(ticks) == 3:
                    break
        assert ticks == sorted(ticks) and len(set(ticks)) == 3
        assert served.line(lambda line: " connect " in line)
        assert served.stop(signal.SIGINT) == 0
        assert "stopped (SIGINT)" in served.lines
        assert refused(url)
        assert "Traceback" not in served.process.stderr.read()


@pytest.mark.parametrize("scheme, secret", [
    ("github", "s3cret"), ("stripe", "whsec_s3cret"),
    ("standard-webhooks", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
])
def test_serve_receiver_accepts_the_signed_curl_it_prints_and_refuses_a_change(scheme, secret):
    with Serving("receiver", "--secret", secret, "--scheme", scheme) as served:
        url = served.url()
        curl = served.line(lambda line: line.startswith("  curl "))
        assert send_curl(curl).status_code == 200
        assert send_curl(curl).status_code == 200  # a repeat: acknowledged
        changed = json.dumps({"id": "evt_demo_2", "type": "demo.ping"}).encode()
        assert send_curl(curl, body=changed).status_code == 401
        assert served.line(lambda line: " 401 " in line and "mismatch" in line)
        assert served.line(lambda line: "repeat of delivery evt_demo_1" in line)
        assert served.stop(signal.SIGTERM) == 0
        assert refused(url)


def test_serve_inspector_keeps_what_its_printed_curl_sends():
    with Serving("inspector", "--status", "202") as served:
        url = served.url().rstrip("/")
        curl = served.line(lambda line: line.startswith("  curl -i"))
        assert send_curl(curl).status_code == 202
        (kept,) = requests.get(f"http://{url}/inspect", timeout=10).json()["requests"]
        assert kept["method"] == "POST" and kept["path"] == "/bin/demo"
        assert json.loads(kept["body"]) == {"hello": "request bin"}
        assert requests.get(f"http://{url}/", timeout=10).status_code == 200
        assert served.stop(signal.SIGINT) == 0
        assert refused(url)


def test_serve_push_service_subscribes_and_pushes_with_the_curls_it_prints():
    with Serving("push-service") as served:
        url = served.url()
        subscribe = served.line(lambda line: "/subscribe" in line and "curl" in line)
        answer = send_curl(subscribe)
        assert answer.status_code == 201
        push_url = answer.headers["Link"].split(">")[0].lstrip("<")
        push = served.line(lambda line: "PUSH_URL -H" in line)
        stored = send_curl(push, url=push_url)
        assert stored.status_code == 201 and stored.headers["TTL"] == "60"
        assert served.line(lambda line: "msg_000001 stored" in line)
        assert served.stop(signal.SIGTERM) == 0
        assert refused(url)


@pytest.mark.parametrize("server", ["polling", "long-polling"])
def test_serve_polling_answers_with_the_ticks(server):
    with Serving(server, "--every", "0.1", "--quiet") as served:
        url = served.url()
        answer = {"items": []}
        for _ in range(50):  # polling may answer before the first tick
            answer = requests.get(f"http://{url}?after=0", timeout=10).json()
            if answer["items"]:
                break
            time.sleep(0.05)
        assert answer["items"][0] == {"id": 1, "data": answer["items"][0]["data"]}
        assert answer["items"][0]["data"]["tick"] == 1
        assert served.stop(signal.SIGINT) == 0
        assert not any("response" in line for line in served.lines)  # --quiet


def test_serve_websocket_sends_the_ticks():
    async def two_frames(url: str) -> list[dict]:
        connection = await tornado.websocket.websocket_connect(url)
        try:
            return [json.loads(await asyncio.wait_for(connection.read_message(), 10))
                    for _ in range(2)]
        finally:
            connection.close()

    with Serving("websocket", "--every", "0.1") as served:
        ws_url = served.line(lambda line: "ws://" in line).split(": ", 1)[1]
        first, second = asyncio.run(two_frames(ws_url))
        assert first["data"]["tick"] == first["id"] and second["id"] == first["id"] + 1
        assert served.stop(signal.SIGTERM) == 0
        assert refused(ws_url.removeprefix("ws://"))
