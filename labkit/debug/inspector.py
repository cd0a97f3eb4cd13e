"""A request bin: a URL that keeps everything sent to it, so you can read it.

When a webhook "does not arrive" or "does not verify", guessing is slow. The
first debugging step is to look at exactly what the provider sends: which
method and path, which headers (the event type, the delivery id, the
signature), which bytes in the body. A request bin is a throw-away URL that
answers every request and keeps a copy of it. Point the provider at the bin
instead of your receiver, trigger an event, and read.

The bin here runs on the lab loop like every labkit server (loopback only).
Its endpoints, each a short handler whose docstring is its documentation:

==========================  ===========================================================
``ANY /bin/<name>[/...]``   keep the request exactly as it arrived, answer ``status``
``GET /``                   an HTML page of every kept request (open it in a browser tab)
``GET /inspect``            the kept requests as JSON (``?bin=<name>`` for one bin)
``GET /inspect/<id>``       one kept request as JSON
``GET /inspect/<id>/curl``  the ``curl`` command that sends it again
==========================  ===========================================================

Every echo (JSON, HTML, the Python objects) is built from one record,
:class:`CapturedRequest`, by one method, :meth:`CapturedRequest.as_dict`.

Two ways to send a captured request again, so a delivery can be replayed
into the real receiver while you debug it:

* :func:`as_curl` writes the ``curl`` command, shell-quoted with
  :func:`shlex.quote`, to paste in a terminal or edit by hand (what Postman's
  "import from cURL" also accepts);
* :func:`replay` sends it with ``requests``: the same method, the same header
  values and the same body bytes. A signature over the body therefore still
  verifies at the receiver, and a changed body does not.

The bin protects itself: bodies above ``max_body`` are answered with 413 and
not kept (the request is still listed, with its size), and only the newest
``max_requests`` requests are kept (the number dropped is counted).

Two things the bin cannot show as sent: tornado, like HTTP/2, treats header
names as case-insensitive and writes them in its own case
(``X-Github-Event`` for ``X-GitHub-Event``), and repeated headers are
grouped under their first appearance. Values and order are otherwise kept.

Example::

    from labkit.feed import Feed
    from labkit.webhooks.providers import GitHubProvider

    with serve_inspector() as server:
        GitHubProvider("s3cret").send(server.component.bin_url("github"), Feed().make())
        captured = server.component.wait_for(1)[0]
        print(captured.header("X-GitHub-Event"), len(captured.body))   # push, and the size in bytes
        print(as_curl(captured, "http://127.0.0.1:8000/webhook"))
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import requests
import tornado.web
from urllib3.util import SKIP_HEADER

from labkit import lab, links, techniques
from labkit.endpoints import BodyLimit
from labkit.errors import LabkitError, RejectedError
from labkit.trace import Trace
from labkit.wire import annotate

__all__ = ["CapturedRequest", "Inspector", "serve_inspector", "as_curl", "replay",
           "HOP_HEADERS"]

HOP_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive",
                         "transfer-encoding", "te", "trailer", "upgrade", "expect",
                         "proxy-connection", "proxy-authorization"})
"""Headers that describe one connection, not the message: a replay or a proxy sets its own."""

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods a bin accepts (tornado answers 405 to any other)."""

_NAME = re.compile(r"[A-Za-z0-9_.~-]{1,64}")
_INLINE_BODY = 64 * 1024
"""Larger bodies (and binary ones) are piped into curl from base64 rather than quoted inline."""
_SHOWN_BODY = 64 * 1024
"""The HTML page shows at most this many bytes of a body."""


@dataclass(frozen=True)
class CapturedRequest:
    """One request exactly as it arrived: the bin's (and the relay's) record of it."""

    id: int
    method: str
    url: str
    """The URL as the client addressed it (scheme, ``Host`` header, path, query)."""
    path: str
    query: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    """(name, value) pairs in the order they arrived."""
    body: bytes = field(repr=False)
    """The raw body bytes; empty when the body was over the cap and not kept."""
    size: int
    """How many body bytes arrived (or were announced, for a body refused unread)."""
    remote_ip: str
    received: float
    """``time.monotonic()`` when the request was complete, the trace's clock."""
    wall: float
    """Unix time of the same moment, for humans."""
    status: int | None = None
    """The status the request was answered with (None if no answer was sent)."""
    bin: str | None = None

    @classmethod
    def from_request(cls, request, *, id: int, body: bytes, size: int,
                     status: int | None = None, bin: str | None = None) -> "CapturedRequest":
        """Build the record from a tornado ``HTTPServerRequest`` and its raw body."""
        return cls(id=id, method=request.method, url=request.full_url(), path=request.path,
                   query=request.query, headers=tuple(request.headers.get_all()),
                   body=bytes(body), size=size, remote_ip=request.remote_ip,
                   received=time.monotonic(), wall=time.time(), status=status, bin=bin)

    def header(self, name: str, default: str | None = None) -> str | None:
        """Header ``name`` (any case); several values are joined with ``", "``."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else default

    @property
    def text(self) -> str | None:
        """The body as text, or None if it is not UTF-8."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.body)

    def as_dict(self) -> dict:
        """The one shape every echo of a captured request has (JSON, HTML, tables).

        The body is ``body`` when it is UTF-8 text, else ``body_base64``.
        """
        text = self.text
        return {
            "id": self.id, "bin": self.bin, "method": self.method, "url": self.url,
            "path": self.path, "query": self.query, "remote_ip": self.remote_ip,
            "wall": self.wall, "status": self.status, "size": self.size,
            "headers": [[name, value] for name, value in self.headers],
            "body": text,
            "body_base64": None if text is not None else base64.b64encode(self.body).decode(),
        }

    def _repr_html_(self) -> str:
        return _request_html(self, open_=True)


class Inspector:
    """Keeps the requests sent to its bins; serve it with :func:`serve_inspector`.

    ``status``: what every bin answers (change it at any time, e.g. to 500
    to see what a provider does with a failure). ``max_body``: the largest
    body kept, in bytes (413 above). ``max_requests``: how many requests are
    kept; older ones are dropped and counted in :attr:`dropped`.
    """

    def __init__(self, *, status: int = 200, max_body: int = 1024 * 1024,
                 max_requests: int = 100, technique: str = "inspector"):
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise LabkitError(f"status must be a final HTTP status from 200 to 599, got {status!r}")
        if max_body < 0 or max_requests < 1:
            raise LabkitError("max_body must be 0 or more and max_requests at least 1")
        self.technique = techniques.get(technique).name
        self.status = status
        self.max_body = max_body
        self.max_requests = max_requests
        self.url: str | None = None
        """The server's base URL, set when it is served."""
        self.trace: Trace | None = None
        """The server's trace, set when it is served."""
        self._changed = threading.Condition()
        self._kept: deque[CapturedRequest] = deque(maxlen=max_requests)
        self._next_id = 1
        self._dropped = 0

    # -- reading -------------------------------------------------------------------

    @property
    def requests(self) -> list[CapturedRequest]:
        """A snapshot of the kept requests, oldest first."""
        with self._changed:
            return list(self._kept)

    @property
    def dropped(self) -> int:
        """How many older requests were dropped to respect ``max_requests``."""
        with self._changed:
            return self._dropped

    @property
    def last(self) -> CapturedRequest | None:
        """The newest kept request, or None."""
        with self._changed:
            return self._kept[-1] if self._kept else None

    def get(self, request_id: int) -> CapturedRequest | None:
        """The kept request with this id, or None (never captured, or dropped)."""
        with self._changed:
            return next((r for r in self._kept if r.id == request_id), None)

    def bin_url(self, name: str = "default") -> str:
        """The URL of bin ``name``: give it to the provider."""
        if not _NAME.fullmatch(name):
            raise LabkitError(f"bin name {name!r} must be 1-64 letters, digits or _.~-")
        if self.url is None:
            raise LabkitError("the inspector is not served yet: use serve_inspector() or lab.serve()")
        return f"{self.url}/bin/{name}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[CapturedRequest]:
        """Block until ``count`` requests are kept; return them. Call it from a cell, not a handler."""
        if count > self.max_requests:
            raise LabkitError(f"the inspector keeps at most {self.max_requests} requests, "
                              f"so it can never hold {count}")
        lab.wait_until(self._changed, lambda: len(self._kept) >= count, timeout,
                       lambda: f"only {len(self._kept)} of {count} requests reached the inspector "
                               f"within {timeout} s: check the URL given to the sender "
                               f"({self.url}/bin/...)")
        return self.requests

    def clear(self) -> None:
        """Forget every kept request (ids keep counting up)."""
        with self._changed:
            self._kept.clear()

    # -- writing (on the lab loop) -------------------------------------------------

    def _capture(self, request, body: bytes, size: int, status: int, bin: str) -> CapturedRequest:
        with self._changed:
            captured = CapturedRequest.from_request(request, id=self._next_id, body=body,
                                                    size=size, status=status, bin=bin)
            self._next_id += 1
            if len(self._kept) == self.max_requests:
                self._dropped += 1
            self._kept.append(captured)
            self._changed.notify_all()
        return captured

    def attached(self, server: lab.Server) -> None:
        """Learn the URL it is served at (the lab calls this)."""
        self.url = server.url

    @property
    def page_url(self) -> str | None:
        """The HTML page that lists every kept request."""
        return None if self.url is None else self.url + "/"

    def rules(self) -> list:
        """Tornado URL rules for every endpoint of the inspector."""
        return [(pattern, handler, {"inspector": self}) for pattern, handler in _ENDPOINTS]

    def _repr_html_(self) -> str:
        """The kept requests, under a link to the live page that a browser can follow
        (:func:`labkit.links.browser_url`: through the Jupyter server on a JupyterHub)."""
        link = "" if self.page_url is None else (
            f"<p><a href='{_e(links.browser_url(self.page_url))}' target='_blank'>"
            f"open the live list</a> (reload it to see new requests)</p>")
        return link + _page_html(self, catalogue=False)

    def __repr__(self) -> str:
        return f"<Inspector {self.url} {len(self.requests)} kept, {self.dropped} dropped>"


# -- the endpoints ------------------------------------------------------------------------


class _Handler(tornado.web.RequestHandler):
    def initialize(self, inspector: Inspector) -> None:
        self.inspector = inspector

    def send_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, indent=1))

    def send_text(self, text: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)


@tornado.web.stream_request_body
class _Bin(_Handler):
    SUPPORTED_METHODS = METHODS

    def prepare(self) -> None:
        self.limit = BodyLimit(self.inspector.max_body)
        try:
            self.limit.check_declared(self.request.headers)
        except RejectedError as exc:
            self.refuse(exc, int(self.request.headers["Content-Length"]), close=True)

    def data_received(self, chunk: bytes) -> None:
        self.limit.add(chunk)

    async def capture(self, name: str, rest: str | None = None) -> None:
        """Keep the request exactly as it arrived; answer with the inspector's status."""
        try:
            body = self.limit.body()
        except RejectedError as exc:
            return self.refuse(exc, self.limit.size)
        status = self.inspector.status
        captured = self.inspector._capture(self.request, body, self.limit.size, status, name)
        annotate(self, detail=f"captured #{captured.id} in bin {name}")
        self.set_status(status)
        self.set_header("X-Inspector-Id", str(captured.id))
        if status in (204, 304):
            self.clear_header("Content-Type")
            return self.finish()
        self.send_text(f"captured #{captured.id}\n", status)

    get = head = post = put = patch = delete = options = capture

    def refuse(self, error: RejectedError, size: int, *, close: bool = False) -> None:
        """Answer 413 for a body over the cap; list the request, without its body."""
        name = self.path_args[0] if self.path_args else "?"
        captured = self.inspector._capture(self.request, b"", size, error.status, name)
        annotate(self, events=0, detail=f"captured #{captured.id} without its body: {error}")
        self.set_header("X-Inspector-Id", str(captured.id))
        if close:
            self.set_header("Connection", "close")
        self.send_text(f"{error}\n", error.status)


class _Page(_Handler):
    def get(self) -> None:
        """An HTML page of every kept request, newest first, with its curl command."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        # Defence in depth: everything is escaped, and scripts could not run anyway.
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish("<!doctype html><html><head><meta charset='utf-8'>"
                    "<title>labkit request inspector</title></head><body>"
                    + _page_html(self.inspector, catalogue=True) + "</body></html>")


class _List(_Handler):
    def get(self) -> None:
        """Every kept request as JSON, oldest first; add ?bin=<name> for one bin only."""
        name = self.get_query_argument("bin", None)
        kept = [r for r in self.inspector.requests if name is None or r.bin == name]
        self.send_json({"count": len(kept), "dropped": self.inspector.dropped,
                        "requests": [r.as_dict() for r in kept]})


class _One(_Handler):
    def get(self, request_id: str) -> None:
        """One kept request as JSON (404 if it was never captured or was dropped)."""
        captured = self.inspector.get(int(request_id))
        if captured is None:
            return self.send_json({"error": _not_kept(self.inspector, request_id)}, 404)
        self.send_json(captured.as_dict())


class _Curl(_Handler):
    def get(self, request_id: str) -> None:
        """The curl command that sends kept request <id> again; add ?url=<url> to aim it elsewhere."""
        captured = self.inspector.get(int(request_id))
        if captured is None:
            return self.send_text(_not_kept(self.inspector, request_id) + "\n", 404)
        self.send_text(as_curl(captured, self.get_query_argument("url", None)) + "\n")


_ENDPOINTS = [
    (r"/bin/([A-Za-z0-9_.~-]{1,64})(/.*)?", _Bin),
    (r"/", _Page),
    (r"/inspect", _List),
    (r"/inspect/([0-9]{1,12})", _One),
    (r"/inspect/([0-9]{1,12})/curl", _Curl),
]


def _not_kept(inspector: Inspector, request_id: str) -> str:
    kept = inspector.requests
    span = f"#{kept[0].id} to #{kept[-1].id}" if kept else "none"
    return f"no kept request #{request_id} (kept: {span}; {inspector.dropped} older ones dropped)"


def serve_inspector(inspector: Inspector | None = None, *, trace: Trace | None = None,
                    port: int = 0, **options: Any) -> lab.Server:
    """Serve a request bin (``inspector``, or a new one made from ``options``).

    One line over :func:`labkit.lab.serve`: ``server.component`` is the
    :class:`Inspector` (``bin_url(name)`` is a URL to give a provider, ``page_url``
    its HTML page). Requests are recorded under the technique ``inspector``.
    """
    return lab.serve(lab.component(Inspector, inspector, options), trace=trace, port=port)


# -- sending a captured request again ----------------------------------------------------------


def _replayed_headers(captured: CapturedRequest) -> list[tuple[str, str]]:
    return [(name, value) for name, value in captured.headers if name.lower() not in HOP_HEADERS]


def as_curl(captured: CapturedRequest, url: str | None = None) -> str:
    """The ``curl`` command that sends ``captured`` again, to ``url`` (default: where it went).

    Same method, same header values, same body bytes; every word is quoted
    with :func:`shlex.quote`, so it pastes into a POSIX shell safely whatever
    the request contains. Connection headers (``Host``, ``Content-Length``
    ...) are left to curl. Headers curl would add on its own (``Accept``,
    ``User-Agent``, a default ``Content-Type``, ``Expect``) are switched off
    when the original request did not have them. A body that is not UTF-8
    text, or is large, is piped in from base64.
    """
    target = url or captured.url
    method, body = captured.method, captured.body
    sent = _replayed_headers(captured)
    names = {name.lower() for name, _ in sent}
    has_body = bool(body) or method in ("POST", "PUT", "PATCH")

    start = ["curl"]
    if method == "HEAD":
        start.append("--head")
    elif method != ("POST" if has_body else "GET"):
        start += ["-X", method]
    start.append(target)
    lines = [start]
    for name, value in sent:
        # "Name:" with no value makes curl drop a header; "Name;" sends it empty.
        lines.append(["-H", f"{name}: {value}" if value else f"{name};"])
    defaults = ["User-Agent", "Accept"] + (["Content-Type"] if has_body else [])
    lines += [["-H", f"{name}:"] for name in defaults if name.lower() not in names]
    if len(body) > 1024:
        lines.append(["-H", "Expect:"])

    prefix = ""
    text = captured.text
    if has_body:
        if text is not None and "\x00" not in text and len(body) <= _INLINE_BODY:
            lines.append(["--data-raw", text])  # --data-raw: a leading @ is not a file name
        else:
            encoded = base64.b64encode(body).decode("ascii")
            prefix = f"printf %s {shlex.quote(encoded)} | base64 -d | "
            lines.append(["--data-binary", "@-"])
    return prefix + " \\\n  ".join(" ".join(shlex.quote(word) for word in line)
                                   for line in lines)


def replay(captured: CapturedRequest, url: str, *, timeout: float = 5.0,
           session: requests.Session | None = None) -> requests.Response:
    """Send ``captured`` again to ``url`` with ``requests``, byte for byte; return the response.

    The method, every header value (connection headers aside) and the raw
    body are the ones captured, and nothing is added: ``requests`` and
    ``urllib3`` are told not to send their own ``User-Agent``,
    ``Accept-Encoding`` or ``Accept``. Redirects are not followed.
    """
    headers: dict[str, str] = {}
    for name, value in _replayed_headers(captured):
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    present = {name.lower() for name in headers}
    for name in ("User-Agent", "Accept-Encoding"):
        if name.lower() not in present:
            headers[name] = SKIP_HEADER  # urllib3's marker for "do not add this header"
    own = session is None
    client = requests.Session() if own else session
    if own:
        client.headers.clear()
        client.trust_env = False  # a replay to loopback never goes through a proxy
    try:
        return client.request(captured.method, url, headers=headers, data=captured.body,
                              timeout=timeout, allow_redirects=False)
    finally:
        if own:
            client.close()


# -- HTML (everything escaped) ----------------------------------------------------------------

_STYLE = ("<style>.lk-insp table{border-collapse:collapse;font-size:90%}"
          ".lk-insp td,.lk-insp th{border:1px solid #ccc;padding:2px 6px;text-align:left;"
          "vertical-align:top}.lk-insp pre{white-space:pre-wrap;word-break:break-all;"
          "background:#f6f6f6;padding:6px;max-height:30em;overflow:auto}</style>")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _request_html(captured: CapturedRequest, *, open_: bool = False) -> str:
    c = captured.as_dict()
    when = time.strftime("%H:%M:%S", time.localtime(captured.wall)) + f".{int(captured.wall * 1000) % 1000:03d}"
    target = captured.path + (f"?{captured.query}" if captured.query else "")
    summary = (f"#{c['id']} {_e(c['method'])} {_e(target)} &rarr; {_e(c['status'])} "
               f"&middot; {c['size']} bytes from {_e(c['remote_ip'])} at {when}")
    rows = "".join(f"<tr><th>{_e(n)}</th><td>{_e(v)}</td></tr>" for n, v in captured.headers)
    if c["body"] is not None:
        shown = c["body"][:_SHOWN_BODY]
        more = f"\n... {len(c['body']) - len(shown)} more characters" if len(shown) < len(c["body"]) else ""
        body = f"<pre>{_e(shown)}{_e(more)}</pre>"
    else:
        body = (f"<p>{len(captured.body)} bytes that are not UTF-8 text; base64:</p>"
                f"<pre>{_e(c['body_base64'][:_SHOWN_BODY])}</pre>")
    if captured.size > len(captured.body):
        body = f"<p>{captured.size} bytes arrived; the body was over the cap and not kept.</p>"
    return (f"<details class='lk-insp'{' open' if open_ else ''}><summary>{summary}</summary>"
            f"{_STYLE}<table><tr><th>header</th><th>value</th></tr>{rows}</table>"
            f"<p>body:</p>{body}<p>replay with curl:</p><pre>{_e(as_curl(captured))}</pre></details>")


def _page_html(inspector: Inspector, *, catalogue: bool) -> str:
    kept = inspector.requests
    parts = [f"<div class='lk-insp'>{_STYLE}<h2>labkit request inspector</h2>",
             f"<p>{len(kept)} requests kept (at most {inspector.max_requests}), "
             f"{inspector.dropped} older ones dropped; bodies over {inspector.max_body} bytes "
             f"are answered 413 and not kept. Every bin answers {inspector.status}.</p>"]
    if catalogue:
        items = "".join(f"<li><code>{_e(_route(p))}</code>: {_e(_doc(h))}</li>"
                        for p, h in _ENDPOINTS)
        parts.append(f"<ul>{items}</ul>")
    if not kept:
        parts.append("<p>Nothing captured yet: send a request to a bin, then reload.</p>")
    parts += [_request_html(r, open_=(i == 0)) for i, r in enumerate(reversed(kept))]
    parts.append("</div>")
    return "".join(parts)


def _route(pattern: str) -> str:
    readable = {"([A-Za-z0-9_.~-]{1,64})(/.*)?": "<name>[/...]", "([0-9]{1,12})": "<id>"}
    for regex, text in readable.items():
        pattern = pattern.replace(regex, text)
    method = "ANY " if pattern.startswith("/bin") else "GET "
    return method + pattern


def _doc(handler: type) -> str:
    function = handler.capture if handler is _Bin else handler.get
    return " ".join((function.__doc__ or "").split())

