"""The lab loop: one background event loop that hosts every server and async client.

A Jupyter kernel already runs an asyncio loop in its main thread, and a cell
that blocks (``requests.get``) blocks that loop. So labkit runs its own tornado
IOLoop in one daemon thread per process. Servers live there and keep
answering while a cell, or a plain script, makes blocking calls to them over
real sockets on loopback, exactly as an outside client would.

Example::

    from labkit import lab
    import requests, tornado.web

    class Hello(tornado.web.RequestHandler):
        def get(self):
            self.write("hi")

    with lab.serve([("/", Hello)]) as server:
        print(requests.get(server.url + "/").text)   # hi
        print(server.trace.counts())                   # {'http': {'request': 1, 'response': 1}}

    lab.run(some_coroutine())      # run async code on the lab loop, get its result

Thread-safety notes:

* Safe from any thread other than the lab's (a notebook cell, a script, a
  test): :func:`serve`, :meth:`Server.stop`, :func:`run`, :func:`submit`,
  :func:`shutdown`. They hand work to the lab thread and wait for it.
* On the lab thread itself (inside a handler or a coroutine run by
  :func:`run`), do not call :func:`run` or :meth:`Server.stop`: they would wait
  for the very thread that is waiting. ``await`` the coroutine instead, or
  use :meth:`Server.astop`. labkit raises :class:`LabLoopError` rather than
  deadlock.
* Servers bind 127.0.0.1 and an ephemeral port unless told otherwise, so a
  classroom laptop never exposes a receiver to the network by accident and
  two notebooks never fight over a port.

Garbage collection: when the lab loop starts (the first :func:`serve` or
:func:`run` of a process, and again after :func:`shutdown`), it runs one
full collection and then :func:`gc.freeze`: everything alive at that moment
(the kernel, the imported libraries, the notebook's variables) moves to a
generation the cyclic collector never walks again. A full collection
otherwise walks every object of the process and stops every thread while it
does; in a kernel that is tens of milliseconds, and it would land in the
latencies a lesson measures. After the freeze it walks only what was made
since (the kit's trace records and deliveries are untracked tuples, so
holding 100,000 of each adds nothing; ``bench/gc_pauses.py`` measures it).
The price: an object alive at the freeze that later becomes garbage *in a
reference cycle* is never freed (reference counting still frees the rest).
Turn it off before the loop starts, with ``lab.FREEZE_AT_START = False`` or
the environment variable ``LABKIT_GC_FREEZE=0``; ``gc.unfreeze()`` undoes it.
:func:`freeze` does the same again before a timing-critical experiment.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import gc
import inspect
import ipaddress
import logging
import os
import socket
import threading
from typing import Any, Awaitable, Callable

import tornado.httpclient
import tornado.httpserver
import tornado.tcpclient
from tornado import httputil
import tornado.netutil
import tornado.web

from labkit import techniques
from labkit.errors import LabLoopError, PortInUseError, UsageError, WaitTimeout
from labkit.trace import Trace
from labkit.wire import TracingDelegate

__all__ = ["Server", "serve", "component", "application", "run", "submit", "invoke", "shutdown",
           "is_running", "in_lab_thread", "running_servers", "http_client", "tcp_client",
           "wait_until", "freeze"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
"""Seconds :meth:`Server.stop` waits for open connections to close."""
FREEZE_AT_START = os.environ.get("LABKIT_GC_FREEZE", "1") != "0"
"""Collect, then :func:`gc.freeze`, when the lab loop starts (see the module docstring)."""


def freeze() -> None:
    """Collect once, then freeze every object alive now (unless freezing is switched off).

    The lab does it when its loop starts; an experiment whose timing matters
    does it again just before it runs, so that what the notebook made since
    (figures, results) is not walked by a collection in the middle of it.
    """
    if FREEZE_AT_START:
        gc.collect()
        gc.freeze()


class _Lab:
    """The one background thread and its event loop (created on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.servers: set[Server] = set()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        freeze()
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(_log_loop_exception)
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                _cancel_leftovers(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="labkit-lab", daemon=True)
        self._thread.start()
        ready.wait()

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def in_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def shutdown(self) -> None:
        for server in list(self.servers):
            server.stop()
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or not thread.is_alive() or loop is None:
                return
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT)
            self._thread = None
            self._loop = None


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Send errors of background tasks to labkit's logger, never to a cell's output."""
    log.debug("lab loop: %s", context.get("message"), exc_info=context.get("exception"))


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


_LAB = _Lab()
atexit.register(_LAB.shutdown)


def is_running() -> bool:
    """True while the lab thread is alive."""
    return _LAB.is_running()


def running_servers() -> list["Server"]:
    """Every server started and not yet stopped (a notebook's last cell checks it is empty)."""
    return sorted(_LAB.servers, key=lambda server: server.port)


def in_lab_thread() -> bool:
    """True when called from the lab loop's own thread."""
    return _LAB.in_thread()


async def invoke(function: Callable, *args: Any) -> Any:
    """Call a plain or coroutine function and return its result, awaited if need be.

    Lets a student hand the kit either kind of callback (``def`` or ``async def``).
    """
    result = function(*args)
    return await result if inspect.isawaitable(result) else result


def wait_until(changed: threading.Condition, ready: Callable[[], bool], timeout: float,
               explain: Callable[[], str]) -> None:
    """Block a cell until ``ready()`` holds, or raise :class:`~labkit.errors.WaitTimeout`
    (a ``TimeoutError``) with ``explain()`` as its message.

    ``changed`` is the condition the lab-loop side notifies whenever it adds
    something; ``ready`` and ``explain`` run while holding it, so they see a
    consistent state. Waiting on the lab loop itself would block the very
    thread that makes progress, so that raises :class:`LabLoopError`.
    """
    if _LAB.in_thread():
        raise LabLoopError("waiting here would block the lab loop that does the work: "
                           "wait from a cell or a script, or await inside a coroutine")
    with changed:
        if changed.wait_for(ready, timeout):
            return
        message = explain()
    raise WaitTimeout(message)


def submit(work: Awaitable | Callable[[], Any]) -> concurrent.futures.Future:
    """Start ``work`` on the lab loop and return a future at once.

    ``work`` is a coroutine (``fetch()``) or a plain function, which then runs
    on the lab thread. The future's ``result()`` blocks until it is done.
    """
    loop = _LAB.loop()
    if asyncio.iscoroutine(work):
        return asyncio.run_coroutine_threadsafe(work, loop)
    if callable(work):
        return asyncio.run_coroutine_threadsafe(invoke(work), loop)
    raise TypeError(f"submit() needs a coroutine or a callable, not {type(work).__name__}")


def run(work: Awaitable | Callable[[], Any], timeout: float | None = None) -> Any:
    """Run ``work`` on the lab loop and return its result (blocking).

    Works from a plain script and from a Jupyter cell alike, because the work
    runs on the lab's own thread, not on the caller's event loop.
    """
    if _LAB.in_thread():
        if asyncio.iscoroutine(work):
            work.close()
        raise LabLoopError(
            "lab.run() was called from the lab loop itself, which would wait forever: "
            "inside a coroutine or handler, use 'await' instead")
    future = submit(work)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise WaitTimeout(f"lab work did not finish within {timeout} s and was cancelled") from None


class Server:
    """A component listening on the lab loop. Use :func:`serve` to make one.

    ``server.component`` is what it serves (a receiver, a broker, an SSE
    stream ...): the one place where faults, plots and lessons find it.
    """

    def __init__(self, component: Any, app: httputil.HTTPServerConnectionDelegate,
                 sock: socket.socket, trace: Trace, technique: str):
        self.component = component
        self.app = app
        self.trace = trace
        self.technique = technique
        self.host, self.port = sock.getsockname()[:2]
        self._http = tornado.httpserver.HTTPServer(TracingDelegate(app, trace, technique),
                                                   xheaders=False)
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._on_stop: list[Callable[[], Any]] = []
        closer = getattr(component, "aclose", None)
        if closer is not None:
            self._on_stop.append(closer)
        if _LAB.in_thread():
            self._http.add_sockets([sock])
        else:
            run(lambda: self._http.add_sockets([sock]))
        _LAB.servers.add(self)
        attached = getattr(component, "attached", None)
        if attached is not None:
            attached(self)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        """Where a client should send its requests: the base URL plus the component's
        ``path`` (``/webhook`` for a receiver, ``/events`` for an SSE stream), if it has one."""
        return self.url + (getattr(self.component, "path", "") or "")

    @property
    def running(self) -> bool:
        return not self._stopped

    def on_stop(self, callback: Callable[[], Any]) -> None:
        """Call ``callback`` (on the lab loop) when the server stops, before
        connections are closed: techniques use it to wake held requests.
        A component's own ``aclose`` is registered already."""
        self._on_stop.append(callback)

    def stop(self) -> None:
        """Stop accepting, wake waiters, close open connections. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        _LAB.servers.discard(self)
        if not _LAB.is_running():
            return
        if _LAB.in_thread():
            raise LabLoopError("Server.stop() was called on the lab loop: "
                               "use 'await server.astop()'")
        run(self._close(), timeout=STOP_TIMEOUT * 2)

    async def astop(self) -> None:
        """:meth:`stop` for code already running on the lab loop."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        _LAB.servers.discard(self)
        await self._close()

    async def _close(self) -> None:
        self._http.stop()
        for callback in self._on_stop:
            await invoke(callback)
        try:
            await asyncio.wait_for(self._http.close_all_connections(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("server %s: connections still open after %s s", self.url, STOP_TIMEOUT)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Server {self.technique} {self.url} {state}>"


def _quiet_log(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log: silent, because the wire layer already traced the request."""


def serve(component: Any, *, host: str = "127.0.0.1", port: int = 0,
          trace: Trace | None = None, technique: str | None = None,
          **settings: Any) -> Server:
    """Start serving ``component`` on the lab loop and return the :class:`Server`.

    ``component`` is, in the kit's own shape, an object that names its
    ``technique`` and offers its tornado URL ``rules()`` or is itself a
    tornado connection delegate (the webhook receiver is, to skip routing it
    does not need). It may also have a ``trace`` (used if ``trace`` is not
    given; set to the server's trace either way), ``attached(server)``
    (told its server once it listens, to learn its URL) and ``async
    aclose()`` (awaited on stop, before connections close: release held
    requests). For quick experiments ``component`` may instead be a list of
    URL rules (``[("/path", Handler), ...]``) or a ``tornado.web.Application``;
    then ``technique`` names them (default ``http``) and extra keyword
    ``settings`` go to the Application.

    ``port=0`` picks a free port. Every request and response is recorded in
    the trace under the technique, which must be in :mod:`labkit.techniques`.
    """
    named = getattr(component, "technique", None)
    if named is not None and technique is not None and technique != named:
        raise UsageError(f"the component names its technique ({named!r}): do not pass "
                        f"technique={technique!r} as well")
    technique = named or technique or "http"
    techniques.get(technique)  # a misspelt name fails here, not in a chart later
    app = application(component, settings)
    if trace is None:  # not `trace or ...`: an empty Trace has len 0, so it is falsy
        trace = getattr(component, "trace", None)
    if trace is None:
        trace = Trace()
    if hasattr(component, "trace"):
        component.trace = trace
    try:
        sockets = tornado.netutil.bind_sockets(port, address=host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from None
        raise
    for extra in sockets[1:]:
        extra.close()
    return Server(component, app, sockets[0], trace, technique)


def component(kind: type, given: Any = None, options: dict | None = None) -> Any:
    """The component a ``serve_*`` helper serves, by one rule for every helper.

    ``given`` already a ``kind``: it is used as it is (no ``options`` then).
    Otherwise a new ``kind`` is made from ``options`` (with ``given`` as its
    first argument if there is one, such as the relay's target URL).
    """
    options = options or {}
    if isinstance(given, kind):
        if options:
            raise UsageError(f"pass either a {kind.__name__} or the options to make one "
                            f"({', '.join(sorted(options))}), not both")
        return given
    return kind(**options) if given is None else kind(given, **options)


def application(component: Any, settings: dict | None = None
                ) -> httputil.HTTPServerConnectionDelegate:
    """What tornado's HTTP server is given for ``component`` (see :func:`serve`): the
    component itself if it is a connection delegate, else an Application of its rules.
    A component that routes to others (``labkit.live``) uses it for each of them."""
    settings = settings or {}
    if isinstance(component, httputil.HTTPServerConnectionDelegate) and \
            not isinstance(component, tornado.web.Application):
        if settings:
            raise UsageError(f"settings {sorted(settings)} only apply to URL rules or a "
                             f"tornado Application, not to a connection delegate")
        return component
    if isinstance(component, tornado.web.Application):
        app = component
        app.settings.update(settings)
    else:
        rules = component.rules() if hasattr(component, "rules") else component
        app = tornado.web.Application(list(rules), **settings)
    app.settings["log_function"] = _quiet_log
    return app


class _LiteralResolver(tornado.netutil.Resolver):
    """Answers IP literals such as the lab's 127.0.0.1 at once.

    Tornado's default resolver sends every host, even ``127.0.0.1``, through
    ``getaddrinfo`` on a thread pool; on a busy machine that queue adds tens
    of milliseconds to a connection, which would pollute every latency the
    kit measures. Names (``localhost``) still go the usual way.
    """

    def initialize(self) -> None:
        self._names = tornado.netutil.DefaultLoopResolver()

    async def resolve(self, host: str, port: int,
                      family: socket.AddressFamily = socket.AF_UNSPEC) -> list:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return await self._names.resolve(host, port, family)
        if address.version == 6:
            return [(socket.AF_INET6, (host, port, 0, 0))]
        return [(socket.AF_INET, (host, port))]


def http_client(max_clients: int = 10) -> tornado.httpclient.AsyncHTTPClient:
    """A private tornado HTTP client for lab-loop code (call it on the lab loop).

    ``max_clients`` requests may be in flight at once; close it when done.
    """
    return tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=max_clients,
                                              resolver=_LiteralResolver())


def tcp_client() -> tornado.tcpclient.TCPClient:
    """A tornado TCP client that resolves IP literals at once (see :func:`http_client`)."""
    return tornado.tcpclient.TCPClient(resolver=_LiteralResolver())


def shutdown() -> None:
    """Stop every server and the lab thread (it restarts on next use). Runs at exit."""
    _LAB.shutdown()
