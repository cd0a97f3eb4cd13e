"""A real IPython kernel interrupted mid-lesson leaves no process and no listening port behind.

Each test starts a kernel of the venv with ``jupyter_client`` (IPC sockets
in ``tmp_path``, its own IPython directory), and runs in it what the
lessons run: two :class:`~labkit.experiments.processes.ServerProcess`
servers (child processes, each listening on two loopback ports, sharing a
real Redis: the one ``make test`` starts, ``real_redis_url`` in conftest), an SSE server in the kernel
itself, and then, in a cell left running, ``run_clients(...,
load="process")`` (a load-generator child process against a server in the
kernel). While that run is under way the kernel is ended:

===================  ====================================================================
``restart-now``      ``restart_kernel(now=True)``: SIGKILL to the kernel's process group
``restart-polite``   ``restart_kernel(now=False)``: a shutdown request, then signals
``shutdown``         ``shutdown_kernel(now=False)``: what closing the notebook does
``killed-alone``     SIGKILL to the kernel's PID only, as the out-of-memory killer does:
                     no signal reaches the children and no Python cleanup runs
===================  ====================================================================

Then, polling for at most 10 s: every process recorded as the old kernel's
descendant before the end (by PID, its start time checked) has ended, no
process whose command line holds this test's unique stream name runs (the
kernel's own command line holds another marker, its runtime directory), and
every port the old kernel and its children listened on (all on 127.0.0.1,
all ephemeral: checked before the end) refuses a connection. Cleanup kills
only what the test started (leftovers of its own kernel), by PID.

In the states reached here the children would also end without
:mod:`labkit.children` (they read their command channel, and its end of
file stops them); ``tests/test_children.py`` shows each line to the parent
ending a child that does not read. This module checks the whole: a real
kernel, the kit's real children, every way a kernel ends.
"""

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import psutil
import pytest
from jupyter_client.manager import KernelManager

from helpers import settle

SERVERS = """
import json
from labkit.experiments.processes import ServerProcess
from labkit.hub import Hub
from labkit.push.sse import serve_sse
from urllib.parse import urlsplit
servers = [ServerProcess({stream!r}, name=f"server {{n}}") for n in (1, 2)]
local = serve_sse(Hub())
print(json.dumps({{"pids": [s.pid for s in servers], "ports": [urlsplit(u).port for s in servers
                 for u in (s.sse_url, s.long_polling_url)] + [local.port]}}))
"""

LOAD = """
from labkit.push.scale import run_clients
run_clients("long-polling", clients=20, events=60, rate=1.0, schedule="fixed", load="process")
"""


@pytest.fixture
def kernel(tmp_path, real_redis_url):
    """A kernel manager and client on an isolated runtime directory; its family cleaned up."""
    marker = f"labkit-kernel-test-{uuid.uuid4().hex[:12]}"
    runtime = tmp_path / marker
    runtime.mkdir()
    env = dict(os.environ, LABKIT_REDIS_URL=real_redis_url, JUPYTER_RUNTIME_DIR=str(runtime),
               IPYTHONDIR=str(tmp_path / "ipython"), MPLCONFIGDIR=str(tmp_path / "mpl"))
    manager = KernelManager(kernel_name="python3", transport="ipc")
    manager.connection_file = str(runtime / "kernel.json")
    manager.start_kernel(cwd=str(tmp_path), env=env)
    client = manager.client()
    client.start_channels()
    state = {"manager": manager, "client": client, "marker": marker, "family": [],
             "stream": f"labkit-lesson-test-{uuid.uuid4().hex[:12]}"}
    try:
        client.wait_for_ready(timeout=60)
        yield state
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
        for process in state["family"]:
            if _alive(process):
                process.kill()  # ours: a descendant of our kernel, identity checked


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _run(client, code: str, timeout: float = 120) -> str:
    """Execute ``code`` in the kernel, return its stdout; fail on an error."""
    out, errors = [], []

    def hook(message):
        if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
            out.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            errors.append("\n".join(message["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=timeout, output_hook=hook,
                                       allow_stdin=False)
    assert reply["content"]["status"] == "ok", errors
    return "".join(out)


def _listening(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``processes`` listen on (IPv4 and IPv6)."""
    found = set()
    for process in processes:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    return found


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _marked(marker: str) -> list[int]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or ()) and _alive(process):
            found.append(process.pid)
    return found


def _mid_lesson(state: dict) -> tuple[psutil.Process, list[psutil.Process], set[int]]:
    """Start the lesson's servers and a process-based run; return the kernel, its
    descendants and every port they listen on, while the run is under way."""
    manager, client, stream = state["manager"], state["client"], state["stream"]
    kernel = psutil.Process(manager.provisioner.process.pid)
    assert state["marker"] in " ".join(kernel.cmdline())
    reported = json.loads(_run(client, SERVERS.format(stream=stream)))
    client.execute(LOAD)  # left running: the lesson is interrupted in the middle

    def load_running() -> bool:
        return any("labkit.push.scale" in " ".join(p.cmdline())
                   for p in kernel.children(recursive=True) if _alive(p))

    settle(load_running, "the load-generator process starting", 60)
    time.sleep(1.0)  # under way: its clients connect to the kernel's server
    family = kernel.children(recursive=True)
    state["family"] = family
    pids = {p.pid for p in family}
    assert set(reported["pids"]) <= pids
    assert all("labkit" in " ".join(p.cmdline()) for p in family)
    assert sum(stream in " ".join(p.cmdline()) for p in family) == 2  # the server processes
    listening = _listening([kernel, *family])
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, "every server on loopback only"
    ports = {port for _, port in listening}
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert all(low <= port <= high for port in ports), f"ephemeral ports only: {ports}"
    assert set(reported["ports"]) <= ports and len(ports) >= 6  # + the run's own server
    assert all(not _refused(port) for port in ports)
    return kernel, family, ports


def _nothing_left(kernel: psutil.Process, family: list[psutil.Process], ports: set[int],
                  stream: str) -> None:
    settle(lambda: not _alive(kernel), "the old kernel's end", 30)
    settle(lambda: not any(_alive(p) for p in family),
           f"the end of the old kernel's children {[p.pid for p in family]}", 10)
    settle(lambda: not _marked(stream), "the end of every process of this test's lesson", 10)
    settle(lambda: all(_refused(port) for port in ports),
           f"refusals on the old kernel's ports {sorted(ports)}", 10)


@pytest.mark.parametrize("now", [True, False], ids=["restart-now", "restart-polite"])
def test_a_restart_mid_lesson_leaves_nothing_running(kernel, now):
    old, family, ports = _mid_lesson(kernel)
    kernel["manager"].restart_kernel(now=now)
    _nothing_left(old, family, ports, kernel["stream"])
    new = psutil.Process(kernel["manager"].provisioner.process.pid)
    assert new.pid != old.pid
    kernel["client"].wait_for_ready(timeout=60)
    assert _run(kernel["client"], "print(6 * 7)").strip() == "42"  # the new kernel works


def test_a_shutdown_mid_lesson_leaves_nothing_running(kernel):
    old, family, ports = _mid_lesson(kernel)
    kernel["manager"].shutdown_kernel(now=False)
    _nothing_left(old, family, ports, kernel["stream"])


def test_a_kernel_killed_alone_takes_its_children_with_it(kernel):
    # no process-group signal and no Python cleanup: only broken lines to the kernel end them
    old, family, ports = _mid_lesson(kernel)
    os.kill(old.pid, signal.SIGKILL)  # our own kernel, by its PID
    _nothing_left(old, family, ports, kernel["stream"])
