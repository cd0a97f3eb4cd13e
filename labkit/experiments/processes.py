"""Push across server processes: two servers behind one Redis stream, clients spread over them.

Real deployments run several server processes behind a load balancer. A
client holds its stream on whichever process it reached, and when it
reconnects it may reach another. With a :class:`~labkit.redis_hub.RedisHub`
each process keeps a mirror of one Redis stream, so every process hands out
the same events with the same ids, and a client that moves resumes with its
``Last-Event-ID`` wherever it lands.

=================================  ==============================================================
call                               what it shows
=================================  ==============================================================
``two_processes()``                two servers, ``clients`` SSE clients spread evenly over them,
                                   ``events`` events published alternately by one server and the
                                   other; halfway, a quarter of each server's clients move to the
                                   other server and resume there. Every client gets every event
                                   once, in order; ``figure()`` draws clients per server and
                                   events per client
=================================  ==============================================================

**Which two servers.** With ``$LABKIT_REDIS_URL`` set (a real Redis
server), the two servers are **two operating-system processes**, each
started with ``python -m labkit.experiments.processes serve``. Without it,
the broker is the embedded fakeredis, which lives inside this Python
process and cannot be shared with another one; then the two servers are
**two servers in this process** (two ports, two ``RedisHub`` objects, each
with its own mirror and reader). The Redis commands are the same; only the
processes differ. The result says which it ran (``mode``).

The building blocks are also what the tests and ``bench/sse_processes.py``
use: :class:`HubServers` (a ``RedisHub`` served by SSE and long polling in
this process) and :class:`ServerProcess` (the same in a child process,
commanded over its stdin and stdout, one JSON line each way).

Thread-safety: call from a cell or a script, never from the lab loop. Each
call stops every server, process and client it started, also when
something fails, and deletes its stream.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

from labkit import children, lab, techniques
from labkit.errors import LabkitError
from labkit.feed import Event, Feed
from labkit.progress import Progress
from labkit.push.polling import serve_long_polling
from labkit.push.sse import SSEClient, serve_sse
from labkit.redis_hub import RedisHub
from labkit.redis_queue import EMBEDDED, _redacted, broker_url, delete_queue
from labkit.trace import Trace

__all__ = ["HubServers", "ServerProcess", "TwoProcesses", "two_processes"]

RETRY_MS = 100
"""The reconnection time the servers ask of SSE clients."""
START_TIMEOUT = 30.0
"""Seconds a server process may take to start (it imports labkit and connects to Redis)."""
ANSWER_TIMEOUT = 30.0
"""Seconds a server process may take to answer one command."""


# -- the servers --------------------------------------------------------------------


class HubServers:
    """A :class:`~labkit.redis_hub.RedisHub` on ``stream``, served in this process by an
    :class:`~labkit.push.sse.SSEStream` and a long-polling endpoint, each on its own port.

    ``name`` names the hub; ``history`` and ``url`` go to the ``RedisHub``.
    """

    def __init__(self, stream: str, *, history: int = 1000, url: str | None = None,
                 name: str = "server"):
        self.name = name
        self.pid = os.getpid()
        self.hub = RedisHub(stream, history=history, url=url, name=name)
        self.sse = self.long_polling = None
        try:
            self.sse = serve_sse(self.hub, retry=RETRY_MS)
            self.long_polling = serve_long_polling(self.hub)
        except BaseException:
            self.stop()
            raise

    @property
    def sse_url(self) -> str:
        return self.sse.endpoint_url

    @property
    def long_polling_url(self) -> str:
        return self.long_polling.endpoint_url

    def publish(self, events: list[Event]) -> list[int]:
        """Publish ``events`` one after the other (on the lab loop); return their ids."""
        async def publish_all() -> list[int]:
            return [(await self.hub.publish(event)).id for event in events]
        return lab.run(publish_all())

    def state(self, cursors: tuple[int, ...] = ()) -> dict[str, Any]:
        """What this server's mirror holds: ``first_id``, ``last_id``, ``items`` (id and
        event id of each), ``missed`` for each of ``cursors``, open SSE streams, reader
        errors."""
        hub = self.hub
        return {"first_id": hub.first_id, "last_id": hub.last_id,
                "items": [[item.id, getattr(item.data, "id", None)] for item in hub.since(0)],
                "missed": {str(c): hub.missed(c) for c in cursors},
                "open": len(self.sse.component.open_streams()), "errors": list(hub.errors)}

    def end(self) -> int:
        """End every open SSE stream, as a dropped connection would; return how many."""
        return self.sse.component.end()

    def stop(self) -> dict[str, Any]:
        """Stop both servers and close the hub; say what is left (nothing, if all went well)."""
        for server in (self.sse, self.long_polling):
            if server is not None:
                server.stop()
        self.hub.close()
        return {"closed": self.hub.closed, "waiting": self.hub.waiting,
                "reading": self.hub.reading}

    def __enter__(self) -> HubServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """:class:`HubServers` in a child process of its own (``python -m
    labkit.experiments.processes serve``), with the same methods.

    The child answers each command (one JSON line on its stdin) with one
    JSON line on its stdout; it stops when told, or when its stdin closes.
    It is started by :func:`labkit.children.start`, so it also ends when
    this process ends in any way (a kernel restart, SIGKILL) and its ports
    are freed. ``stop()`` waits for it to exit, and kills it, by its PID,
    if it does not.
    """

    def __init__(self, stream: str, *, history: int = 1000, url: str | None = None,
                 name: str = "server"):
        url = broker_url(url)
        if url == EMBEDDED:
            raise LabkitError("the embedded broker lives inside this process, so a server "
                              "process cannot share it: set LABKIT_REDIS_URL to a real Redis "
                              "server, or use HubServers for servers in this process")
        self.name = name
        self._errors = tempfile.TemporaryFile()
        self.process = children.start(
            ["-m", "labkit.experiments.processes", "serve", stream,
             "--history", str(history), "--url", url, "--name", name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True)
        self.pid = self.process.pid
        try:
            started = self._answer(START_TIMEOUT)
        except BaseException:
            self._kill()
            raise
        self.sse_url, self.long_polling_url = started["sse"], started["long_polling"]

    def publish(self, events: list[Event]) -> list[int]:
        return self._ask({"do": "publish", "events": [e.to_dict() for e in events]})["ids"]

    def state(self, cursors: tuple[int, ...] = ()) -> dict[str, Any]:
        return self._ask({"do": "state", "cursors": list(cursors)})

    def end(self) -> int:
        return self._ask({"do": "end"})["ended"]

    def stop(self) -> dict[str, Any]:
        """Tell the process to stop, wait (bounded) for it to exit; what it said it left."""
        if self.process.poll() is not None:
            return {"exit": self.process.returncode}
        try:
            left = self._ask({"do": "stop"})
            left["exit"] = self.process.wait(ANSWER_TIMEOUT)
            return left
        finally:
            self._kill()

    def _ask(self, command: dict) -> dict[str, Any]:
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except OSError:
            raise LabkitError(f"{self.name} (pid {self.pid}) is gone: {self._stderr()}") from None
        answer = self._answer(ANSWER_TIMEOUT)
        if "error" in answer:
            raise LabkitError(f"{self.name} (pid {self.pid}) could not {command['do']}: "
                              f"{answer['error']}")
        return answer

    def _answer(self, timeout: float) -> dict[str, Any]:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            why = "exited" if self.process.poll() is not None else f"did not answer in {timeout} s"
            raise LabkitError(f"{self.name} (pid {self.pid}) {why}: {self._stderr()}")
        return json.loads(line)

    def _stderr(self) -> str:
        self._errors.seek(0)
        text = self._errors.read().decode("utf-8", "replace").strip()
        return text[-2000:] or "(nothing on its stderr)"

    def _kill(self) -> None:
        """Kill the child by its PID if it still runs; release the pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()
        self._errors.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(argv: list[str]) -> int:
    """The child: :class:`HubServers`, commanded one JSON line at a time."""
    parser = argparse.ArgumentParser(prog="python -m labkit.experiments.processes serve")
    parser.add_argument("stream")
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--url", default=None)
    parser.add_argument("--name", default="server")
    args = parser.parse_args(argv)
    try:
        servers = HubServers(args.stream, history=args.history, url=args.url, name=args.name)
    except LabkitError as exc:  # Redis unreachable, a bad name: say so, as one line
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    def say(answer: dict) -> None:
        print(json.dumps(answer), flush=True)

    say({"pid": os.getpid(), "sse": servers.sse_url, "long_polling": servers.long_polling_url})
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["do"] == "publish":
                say({"ids": servers.publish([Event.from_dict(e) for e in command["events"]])})
            elif command["do"] == "state":
                say(servers.state(tuple(command["cursors"])))
            elif command["do"] == "end":
                say({"ended": servers.end()})
            else:
                say(servers.stop())
                return 0
        except LabkitError as exc:
            say({"error": str(exc)})
    servers.stop()  # stdin closed: whoever started us is gone
    return 0


# -- the experiment -------------------------------------------------------------------


@dataclass(frozen=True)
class TwoProcesses:
    """What :func:`two_processes` saw."""

    trace: Trace
    """The clients' records: a ``delivered`` event per client and event, with its latency."""
    processes: bool
    """True: two operating-system processes; False: two servers in this process."""
    mode: str
    """Which, in words."""
    broker: str
    """The Redis the servers shared (``embedded``, or its URL without a password)."""
    pids: tuple[int, int]
    """The process id of each server (the same twice when they share this process)."""
    published: tuple[int, ...]
    """The id each event got, in publish order."""
    published_by: tuple[int, ...]
    """Which server (0 or 1) published each event."""
    clients_per_server: tuple[int, int]
    """How many clients each server had at the start."""
    moved: tuple[str, ...]
    """Clients that moved to the other server halfway and resumed with Last-Event-ID."""
    received: dict = field(repr=False)
    """Client name -> the ids it received, in arrival order (both servers, for the moved)."""
    final_server: dict = field(repr=False)
    """Client name -> the server (0 or 1) it was on at the end."""
    mirrors: tuple = field(repr=False)
    """Each server's mirror at the end: (id, feed event id) of every item it kept."""

    @property
    def events_per_client(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.received.items()}

    @property
    def every_event_once_in_order(self) -> bool:
        """Every client received exactly the published ids, in publish order."""
        return all(list(ids) == list(self.published) for ids in self.received.values())

    @property
    def mirrors_agree(self) -> bool:
        """Both servers hold the same items under the same ids."""
        return self.mirrors[0] == self.mirrors[1]

    def figure(self):
        """Clients per server (and who moved) beside events received per client."""
        import matplotlib.pyplot as plt
        from matplotlib.colors import to_rgba
        colours = [techniques.colour(f"sse: server {s + 1}") for s in (0, 1)]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained",
                                          gridspec_kw={"width_ratios": [1, 3]})
        servers = ["server 1", "server 2"]
        stayed = [sum(1 for n, s in self.final_server.items() if s == server and
                      n not in self.moved) for server in (0, 1)]
        arrived = [sum(1 for n in self.moved if self.final_server[n] == server)
                   for server in (0, 1)]
        left.bar(servers, stayed, color=colours, label="there all along")
        left.bar(servers, arrived, bottom=stayed, color=[to_rgba(c, 0.4) for c in colours],
                 hatch="//", label="moved there halfway")
        left.set_ylabel("clients at the end")
        left.set_title("Clients per server")
        left.legend(fontsize=8, loc="lower center")
        names = list(self.received)
        right.bar(range(len(names)), [len(self.received[n]) for n in names], color=[
            to_rgba(colours[self.final_server[n]], 0.4 if n in self.moved else 1.0)
            for n in names])
        right.axhline(len(self.published), color="black", linestyle="--", linewidth=1,
                      label=f"events published ({len(self.published)})")
        right.set_xticks(range(len(names)), [n.split("-")[-1] for n in names], fontsize=7)
        right.set_xlabel("client (colour: its server at the end, dark 1, light 2; "
                         "pale: moved there halfway)")
        right.set_ylabel("events received")
        right.set_title("Every client got every event, once and in order"
                        if self.every_event_once_in_order else "Events received per client")
        right.legend(fontsize=8, loc="lower right")
        fig.suptitle(f"{self.mode}, one Redis stream ({self.broker})", fontsize=10)
        return fig


def two_processes(clients: int = 20, events: int = 50, seed: int = 1) -> TwoProcesses:
    """Two servers on one Redis stream; see the module docstring.

    Client ``n`` starts on server ``n % 2``; events alternate between the
    servers as publisher (event ``k`` from server ``k % 2``); after half
    the events, a quarter of each server's clients (``n % 8`` is 0 or 1)
    stop, and a new client of the same name opens a stream on the other
    server with the last id it had, as a browser sent elsewhere by a load
    balancer would.
    """
    if not (isinstance(clients, int) and 2 <= clients <= 200 and isinstance(events, int)
            and 2 <= events <= 1000):
        raise LabkitError(f"two_processes needs 2 to 200 clients and 2 to 1000 events, got "
                          f"clients={clients!r}, events={events!r}")
    url = broker_url()
    processes = url != EMBEDDED
    make = ServerProcess if processes else HubServers
    stream = f"two-processes-{uuid.uuid4().hex[:12]}"
    trace, feed = Trace(), Feed(seed=seed)
    names = [f"client-{n:02d}" for n in range(clients)]
    movers = [name for n, name in enumerate(names) if n % 8 < 2]  # a quarter of each
    servers: list = []
    streams: dict[str, list[SSEClient]] = {}
    published, by = [], []
    try:
        with Progress(events + 3, "two servers, one Redis stream") as bar:
            for n in range(2):
                servers.append(make(stream, url=url, name=f"server {n + 1}"))
                bar.advance()
            for n, name in enumerate(names):
                streams[name] = [_client(servers[n % 2], name, trace)]
            for client in _all(streams):
                client.wait_open()
            for k in range(events):
                if k == events // 2:
                    _move(movers, streams, servers, names, trace)
                published += servers[k % 2].publish([feed.make("news", {"n": k + 1})])
                by.append(k % 2)
                bar.advance()
            received = {name: _ids(streams[name], events) for name in names}
            mirrors = tuple(tuple(map(tuple, s.state()["items"])) for s in servers)
            bar.advance()
    finally:
        for client in _all(streams):
            client.stop()
        for server in servers:
            server.stop()
        delete_queue(stream, url=url)
    return TwoProcesses(
        trace=trace, processes=processes,
        mode="two server processes" if processes else
        "two servers in this process (the embedded broker cannot be shared between processes)",
        broker=_redacted(url), pids=(servers[0].pid, servers[1].pid),
        published=tuple(published), published_by=tuple(by),
        clients_per_server=(len(names[0::2]), len(names[1::2])), moved=tuple(movers),
        received=received,
        final_server={n: (i % 2) ^ (n in movers) for i, n in enumerate(names)},
        mirrors=mirrors)


def _client(server: Any, name: str, trace: Trace, last_event_id: str = "") -> SSEClient:
    return SSEClient(server.sse_url, name=name, trace=trace, reconnection_time=RETRY_MS / 1000,
                     last_event_id=last_event_id).start()


def _all(streams: dict[str, list[SSEClient]]) -> list[SSEClient]:
    return [client for clients in streams.values() for client in clients]


def _move(movers: list[str], streams: dict, servers: list, names: list[str],
          trace: Trace) -> None:
    """Each mover leaves its server and resumes on the other with its last event id."""
    for name in movers:
        old = streams[name][-1]
        old.stop()
        other = servers[(names.index(name) + 1) % 2]
        new = _client(other, name, trace, last_event_id=old.last_event_id)
        streams[name].append(new)
        new.wait_open()


def _ids(clients: list[SSEClient], events: int) -> tuple[int, ...]:
    """Every id a client received over its streams, once the last stream has them all."""
    before = sum(len(c.events) for c in clients[:-1])
    clients[-1].wait_for(events - before, timeout=10 + events / 10)
    return tuple(int(m.last_event_id) for c in clients for m in c.events)


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m labkit.experiments.processes serve <stream> "
                 "[--history N] [--url redis://...] [--name NAME]")
    sys.exit(_serve(sys.argv[2:]))
