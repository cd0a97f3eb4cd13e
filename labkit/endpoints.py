"""What every HTTP endpoint of the kit shares: a capped body reader, and one way to answer.

A teaching server must protect itself (httpbin caps its slow and streaming
endpoints for the same reason): a body larger than the endpoint's limit is
refused with **413**, by the same rule everywhere:

1. a declared ``Content-Length`` over the limit is refused before a byte of
   the body is read, and the answer says ``Connection: close`` (the unread
   body would otherwise be taken for the next request);
2. a body without a declared length (chunked) is counted as it arrives,
   kept only up to the limit, and refused when it ends.

Refusals are :class:`~labkit.errors.RejectedError` (a status, a reason word
and a message that says what to do). Every refusal is also attached to the
response's trace record (``wire.annotate``), so a lesson can count them by
reason.

================================  ============================================================
:class:`BodyLimit`                the counting rule above, for any server (a bare connection
                                  delegate such as the webhook receiver uses it directly)
:func:`too_large`                 the one 413 wording
:class:`Handler`                  a ``RequestHandler`` that answers JSON: ``answer(status,
                                  payload)``, ``refuse(error)``; tornado's own errors (404, 405,
                                  a bug: 500) come out in the same ``{"error": ...}`` shape
:class:`BodyHandler`              a ``Handler`` that reads its body through a :class:`BodyLimit`
                                  (``body()``, ``text()``)
:class:`NotFound`                 the catch-all last rule: 404 naming the routes that exist
:func:`write_answer`              one status line, headers and short text body, for a bare
                                  connection delegate
================================  ============================================================
"""

from __future__ import annotations

import functools
import json
import time
from http.client import responses
from typing import Any

import tornado.web
from tornado import httputil

from labkit.errors import RejectedError
from labkit.wire import annotate

__all__ = ["BodyLimit", "too_large", "Handler", "BodyHandler", "NotFound", "write_answer"]


def too_large(size: int, limit: int) -> RejectedError:
    """The 413 every endpoint answers for a body of ``size`` bytes over ``limit``."""
    return RejectedError("too_large", f"body of {size} bytes exceeds the {limit}-byte limit",
                         status=413)


class BodyLimit:
    """Counts a request body as it arrives and keeps at most ``limit`` bytes of it."""

    __slots__ = ("limit", "size", "_kept")

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self._kept = bytearray()

    def check_declared(self, headers: httputil.HTTPHeaders) -> None:
        """Refuse at once if the declared ``Content-Length`` is over the limit."""
        declared = headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise too_large(int(declared), self.limit)

    def add(self, chunk: bytes) -> None:
        """Count a piece of the body; past the limit, count it but do not keep it."""
        self.size += len(chunk)
        if self.size <= self.limit:
            self._kept.extend(chunk)

    @property
    def kept(self) -> bytes:
        """What was kept so far: the whole body, or its first ``limit`` bytes if it went over."""
        return bytes(self._kept)

    @property
    def over(self) -> bool:
        """True once more bytes arrived than the limit allows."""
        return self.size > self.limit

    def body(self) -> bytes:
        """The whole body, or :func:`too_large` if it went over the limit."""
        if self.over:
            raise too_large(self.size, self.limit)
        return bytes(self._kept)


class Handler(tornado.web.RequestHandler):
    """A request handler whose answers and refusals all have one shape.

    Success: ``answer(status, payload)`` writes ``payload`` as JSON (no body
    when it is None). Refusal: ``refuse(error)`` answers the error's status
    with ``{"error": message, "reason": word}`` and notes the reason in the
    trace. Tornado's own errors (no such route, wrong method, a bug in the
    handler) come out the same way, with an ``Allow`` header on 405.
    """

    def answer(self, status: int, payload: Any = None) -> None:
        self.set_status(status)
        if payload is None:
            self.clear_header("Content-Type")
            self.finish()
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(payload))

    def refuse(self, error: RejectedError, *, close: bool = False) -> None:
        """Answer ``error``; ``close`` when the request body was not read (see the module)."""
        annotate(self, events=0, detail=f"{error.reason}: {error}")
        if close:
            self.set_header("Connection", "close")
        self.answer(error.status, {"error": str(error), "reason": error.reason})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        reason = "error"
        if status_code == 405:
            allowed = self.allowed_methods()
            self.set_header("Allow", ", ".join(allowed))
            message = (f"{self.request.method} is not allowed on {self.request.path}: "
                       f"use {' or '.join(allowed)}")
            reason = "method"
        annotate(self, events=0, detail=f"{reason}: {message}")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message, "reason": reason}))

    def allowed_methods(self) -> list[str]:
        """The methods this handler defines (for ``Allow``)."""
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower(), None) is not
                getattr(tornado.web.RequestHandler, m.lower(), None)]


@tornado.web.stream_request_body
class BodyHandler(Handler):
    """A :class:`Handler` that reads its body under ``max_body`` bytes (413 above)."""

    max_body = 64 * 1024

    def prepare(self) -> None:
        self.limit = BodyLimit(self.max_body)
        try:
            self.limit.check_declared(self.request.headers)
        except RejectedError as exc:
            self.refuse(exc, close=True)

    def data_received(self, chunk: bytes) -> None:
        self.limit.add(chunk)

    def body(self) -> bytes:
        """The request body (raises the 413 :class:`RejectedError` if it was too large)."""
        return self.limit.body()

    def text(self) -> str:
        """The body as UTF-8 text, or a 400 :class:`RejectedError`."""
        try:
            return self.body().decode("utf-8")
        except UnicodeDecodeError:
            raise RejectedError("not_text", "the body must be UTF-8 text (JSON, say): "
                                "encode binary data as base64 first", status=400) from None


class NotFound(Handler):
    """The last rule of a component's routes: 404 that names the routes there are."""

    def initialize(self, routes: str) -> None:
        self.routes = routes

    def prepare(self) -> None:
        self.refuse(RejectedError("no_route", f"no endpoint {self.request.method} "
                                  f"{self.request.path}: this server answers {self.routes}",
                                  status=404))


@functools.lru_cache(maxsize=1)
def _date_of(second: int) -> str:
    return httputil.format_timestamp(second)


def write_answer(connection: httputil.HTTPConnection, status: int,
                 headers: dict | None = None, text: str = "", *, method: str = "GET") -> None:
    """Write a whole answer on a bare connection: status line, headers, short text body.

    For connection delegates that skip ``RequestHandler`` (the webhook
    receiver, the SSE stream). The answer to a ``HEAD`` has the headers of
    the answer to a ``GET`` and no body, as HTTP requires. The ``Date``
    header is formatted once per second, not per answer.
    """
    body = text.encode()
    head = httputil.HTTPHeaders({"Date": _date_of(int(time.time())),
                                 "Content-Length": str(len(body))})
    if body:
        head["Content-Type"] = "text/plain; charset=utf-8"
    for name, value in (headers or {}).items():
        head[name] = value
    line = httputil.ResponseStartLine("HTTP/1.1", status, responses.get(status, "Unknown"))
    connection.write_headers(line, head, b"" if method == "HEAD" else body)
    connection.finish()
