"""``labkit serve SERVER``: one of the kit's servers in the foreground, until Ctrl-C.

For a class, a slide or an exercise that needs a live server and no
notebook: the server runs on the lab loop, on 127.0.0.1 only, exactly as a
lesson serves it. The command prints its URLs and a line to try it (a
``curl`` command, or a line for a browser's console), then one line per
thing it records (answers, connections, drops: the trace, as it happens)
until Ctrl-C (SIGINT) or SIGTERM; then it stops the server cleanly (held
requests answered, streams ended, the port closed) and exits 0.

================  =========================================================================
server            what it is, and what the command prints to try it
================  =========================================================================
``receiver``      the webhook receiver (:mod:`labkit.webhooks.receiver`) at ``/webhook``;
                  with ``--secret``, it verifies ``--scheme``'s signature (GitHub,
                  Stripe, Standard Webhooks) and the ``curl`` it prints is signed
``inspector``     a request bin (:mod:`labkit.debug.inspector`): a page listing every
                  request, the JSON, and the ``curl`` that replays each
``sse``           a Server-Sent Events stream (:mod:`labkit.push.sse`) at ``/events``
``polling``,      a hub at ``/poll`` answered at once, or held until news
``long-polling``  (:mod:`labkit.push.polling`)
``websocket``     a WebSocket at ``/ws`` (:mod:`labkit.push.websocket`)
``push-service``  a Web Push service (:mod:`labkit.push.webpush.service`), with a demo
                  VAPID key: a ``curl`` that subscribes and one that pushes
================  =========================================================================

The four servers on a hub (``sse``, ``polling``, ``long-polling``,
``websocket``) publish a tick every ``--every`` seconds (``{"tick": 1,
"time": "10:42:07"}``), so a browser or ``curl`` sees something arrive.

``--port 0`` (the default) takes a free port; the URL printed says which.

Thread-safety: the command's own thread publishes the ticks and prints the
log; signal handlers only set a flag that this thread reads.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import shlex
import signal
import sys
import textwrap
import time
from typing import Any, Callable, NamedTuple

from labkit import lab
from labkit.cli import arguments
from labkit.errors import LabkitError, UsageError
from labkit.trace import Record, Trace

__all__ = ["add_commands", "SERVERS", "log_line"]

POLL = 0.1
"""Seconds between two looks at the stop flag, the tick clock and the trace."""


class Served(NamedTuple):
    """A running server, what to print about it, and what to do every ``every`` seconds."""

    server: lab.Server
    lines: list[str]
    tick: Callable[[], Any] | None = None
    every: float = 1.0


def _curl(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> str:
    """A ``curl`` command line for one request, quoted for a POSIX shell."""
    words = ["curl", "-i", "-X", method, url]
    for name, value in headers.items():
        words += ["-H", f"{name}: {value}"]
    if body is not None:
        words += ["--data-binary", body.decode("utf-8")]
    return " ".join(shlex.quote(word) for word in words)


# -- the servers ---------------------------------------------------------------------------


SCHEMES = ("github", "stripe", "standard-webhooks")
"""Signature schemes ``serve receiver --scheme`` verifies."""
HUB_SERVERS = ("sse", "polling", "long-polling", "websocket")
"""Servers on a hub, fed a tick every ``--every`` seconds."""


def _receiver(args: argparse.Namespace) -> Served:
    from labkit.webhooks import signatures
    from labkit.webhooks.receiver import serve_receiver
    scheme, name = None, args.scheme or SCHEMES[0]
    if args.secret is not None:
        kind = {"github": signatures.GitHubSignature, "stripe": signatures.StripeSignature,
                "standard-webhooks": signatures.StandardWebhooksSignature}[name]
        try:
            scheme = kind(args.secret)
        except LabkitError as exc:  # a Standard Webhooks secret that is not whsec_<base64>
            raise UsageError(f"--secret: {exc}") from None
    server = serve_receiver(verifiers=[scheme] if scheme else [], port=args.port)
    url = server.endpoint_url
    body = json.dumps({"id": "evt_demo_1", "type": "demo.ping",
                       "message": "hello from curl"}).encode()
    headers = {"Content-Type": "application/json"}
    lines = [f"webhook receiver: POST {url}"]
    if scheme is None:
        lines.append("  accepts JSON, a form or XML, unsigned (--secret S to verify signatures)")
    else:
        headers.update(scheme.sign(body, url=url, msg_id="evt_demo_1",
                                   timestamp=int(time.time())))
        lines.append(f"  verifies {name} signatures with the secret given; a changed "
                     f"byte of the body is refused with 401")
        if name != "github":
            lines.append("  the signed timestamp is now: the receiver refuses it after 5 minutes")
    lines += ["try it:", f"  {_curl('POST', url, headers, body)}",
              "  (a second send is a repeat of delivery evt_demo_1: acknowledged, not "
              "processed again)"]
    return Served(server, lines)


def _inspector(args: argparse.Namespace) -> Served:
    from labkit.debug.inspector import serve_inspector
    server = serve_inspector(status=args.status, port=args.port)
    bin_url = server.component.bin_url("demo")
    body = json.dumps({"hello": "request bin"}).encode()
    return Served(server, [
        f"request bin: {server.component.page_url}  (open it in a browser)",
        f"  every request to {server.url}/bin/<name>[/...] is kept and answered "
        f"{args.status}",
        "try it:",
        f"  {_curl('POST', bin_url, {'Content-Type': 'application/json'}, body)}",
        f"  curl {server.url}/inspect            (what was kept, as JSON)",
        f"  curl {server.url}/inspect/1/curl     (the curl that sends request 1 again)",
    ])


def _hub_server(kind: str, args: argparse.Namespace) -> Served:
    """One of the push servers on a new hub, and the tick that feeds it."""
    from labkit.hub import Hub
    from labkit.push.polling import serve_long_polling, serve_polling
    from labkit.push.sse import serve_sse
    from labkit.push.websocket import serve_websocket
    hub = Hub(history=1000, name=kind)
    serve = {"sse": serve_sse, "polling": serve_polling, "long-polling": serve_long_polling,
             "websocket": serve_websocket}[kind]
    server = serve(hub, port=args.port)
    url = server.endpoint_url
    how = {
        "sse": [f"SSE stream: GET {url}", "try it:", f"  curl -N {url}",
                f"  curl -N -H 'Last-Event-ID: 2' {url}     (resume after event 2)"],
        "polling": [f"polling: GET {url}?after=<id>  (answers at once, often with nothing)",
                    "try it:", f"  curl '{url}?after=0'     (then ask again with after= the "
                               f"answer's next)"],
        "long-polling": [f"long polling: GET {url}?after=<id>  (held until there is news)",
                         "try it:", f"  curl '{url}?after=0'     (then ask again with after= "
                                    f"the answer's next: it waits for the next tick)"],
        "websocket": [f"WebSocket: {url.replace('http://', 'ws://', 1)}",
                      "try it in a browser's console (any page):",
                      f"  ws = new WebSocket('{url.replace('http://', 'ws://', 1)}'); "
                      f"ws.onmessage = e => console.log(e.data)"],
    }[kind]
    ticks = itertools.count(1)

    def tick() -> None:
        hub.publish({"tick": next(ticks), "time": time.strftime("%H:%M:%S")})

    how.append(f"  a tick is published every {args.every:g} s")
    return Served(server, how, tick, args.every)


def _push_service(args: argparse.Namespace) -> Served:
    from py_vapid import Vapid02
    from labkit.push.webpush.crypto import b64url_encode, public_key_bytes
    from labkit.push.webpush.service import serve_push_service
    server = serve_push_service(port=args.port)
    demo = Vapid02()
    demo.generate_keys()
    key = b64url_encode(public_key_bytes(demo.public_key))
    token = demo.sign({"aud": server.url, "exp": int(time.time()) + 12 * 3600,
                       "sub": "mailto:lab@example.com"})["Authorization"]
    subscribe = _curl("POST", f"{server.url}/subscribe",
                      {"Content-Type": "application/webpush-options+json"},
                      json.dumps({"vapid": key}).encode())
    push = _curl("POST", "PUSH_URL", {"TTL": "60", "Authorization": token})
    return Served(server, [
        f"push service: {server.url}  (RFC 8030; VAPID checked as RFC 8292 says)",
        "try it, as a device and then as the application server (a demo VAPID key, "
        "valid 12 hours):",
        f"  {subscribe}",
        "    the answer's Link header is the push resource: <PUSH_URL>; "
        "rel=\"urn:ietf:params:push\"",
        f"  {push}",
        "    a push without payload: 201, stored until a device connects to its Location "
        "(TTL 60 s)",
        "with encryption and a device that reads it, in Python:",
        f"  from labkit.push.webpush import AppServer, Device; app = AppServer(); "
        f"d = Device('{server.url}', app.application_server_key); app.add(d.subscribe()); "
        f"d.online(); app.send(d.subscription_info, 'hello'); print(d.wait_for(1)[0].text)",
    ])


SERVERS: dict[str, tuple[Callable[[argparse.Namespace], Served], str, str]] = {
    "receiver": (_receiver, "a webhook receiver (optionally verifying signatures)",
                 "labkit serve receiver --port 8000\n"
                 "  labkit serve receiver --secret s3cret --scheme github"),
    "inspector": (_inspector, "a request bin that keeps and shows every request",
                  "labkit serve inspector --port 8001\n"
                  "  labkit serve inspector --status 500     (see what a sender does with 500)"),
    "sse": (functools.partial(_hub_server, "sse"), "a Server-Sent Events stream with ticks",
            "labkit serve sse --port 8002 --every 0.5"),
    "polling": (functools.partial(_hub_server, "polling"), "a polling endpoint with ticks",
                "labkit serve polling --every 5"),
    "long-polling": (functools.partial(_hub_server, "long-polling"),
                     "a long-polling endpoint with ticks", "labkit serve long-polling --every 5"),
    "websocket": (functools.partial(_hub_server, "websocket"), "a WebSocket with ticks",
                  "labkit serve websocket --port 8003"),
    "push-service": (_push_service, "a Web Push service (RFC 8030, VAPID)",
                     "labkit serve push-service --port 8004"),
}
"""Each server: how to start it, what it is, and examples for its ``--help``."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` and its servers to the top-level parser's commands."""
    serve = commands.add_parser(
        "serve", help="start one of the kit's servers until Ctrl-C",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Start one of the kit's servers on 127.0.0.1 in the foreground; print its URLs, a "
            "line to try it, and what it records; stop it cleanly on Ctrl-C or SIGTERM."),
        epilog="examples:\n  labkit serve sse --every 0.5\n  labkit serve receiver --secret "
               "s3cret\n  labkit serve push-service --port 8004\n\n"
               "'labkit serve SERVER --help' lists a server's own options.")
    servers = serve.add_subparsers(dest="server", metavar="SERVER", required=True)
    for name, (start, about, examples) in SERVERS.items():
        parser = servers.add_parser(name, help=about, description=f"Serve {about}.",
                                    epilog=f"examples:\n  {examples}",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--port", type=arguments.port, default=0, metavar="P",
                            help="TCP port on 127.0.0.1 (default: 0, a free one)")
        parser.add_argument("--quiet", action="store_true",
                            help="print the URLs only, not a line per thing recorded")
        if name == "receiver":
            parser.add_argument("--secret", metavar="S",
                                help="verify signatures made with this secret")
            parser.add_argument("--scheme", choices=SCHEMES,
                                help="the signature scheme to verify (default: github)")
        if name == "inspector":
            parser.add_argument("--status", type=arguments.whole(200, 599), default=200,
                                help="the status every bin answers (default: 200)")
        if name in HUB_SERVERS:
            parser.add_argument("--every", type=arguments.seconds(3600), default=1.0,
                                metavar="SECONDS",
                                help="seconds between two ticks (default: 1)")
        parser.set_defaults(handler=functools.partial(_serve, start))


# -- running until a signal --------------------------------------------------------------------


def _serve(start: Callable[[argparse.Namespace], Served], args: argparse.Namespace) -> int:
    if getattr(args, "scheme", None) is not None and args.secret is None:
        raise UsageError(f"--scheme {args.scheme} needs --secret: the secret to verify with")
    stopping: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        stopping.append(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT,
                                                                    signal.SIGTERM)}
    try:
        served = start(args)
        try:
            _announce(served)
            _until_stopped(served, stopping, None if args.quiet else served.server.trace)
        finally:
            served.server.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"stopped ({signal.Signals(stopping[0]).name})" if stopping else "stopped",
          flush=True)
    return 0


def _announce(served: Served) -> None:
    for line in served.lines:
        print(line)
    print("Ctrl-C stops it.", flush=True)


def _until_stopped(served: Served, stopping: list[int], trace: Trace | None) -> None:
    shown = 0
    next_tick = time.monotonic() + served.every
    while not stopping:
        time.sleep(POLL)
        if served.tick is not None and time.monotonic() >= next_tick:
            served.tick()
            next_tick = max(next_tick + served.every, time.monotonic())
        if trace is not None and len(trace) > shown:
            records = trace.records()
            for record in records[shown:]:
                if record.kind != "request":  # its response says more, when it ends
                    print(log_line(record))
            shown = len(records)
            sys.stdout.flush()


def log_line(record: Record) -> str:
    """One trace record as a line of the server's log."""
    status = "" if record.status is None else str(record.status)
    return (f"{time.strftime('%H:%M:%S', time.localtime(record.wall))}  {record.kind:<10}  "
            f"{record.client:<21}  {status:>3}  {record.bytes:>7,} B  {record.detail}").rstrip()
