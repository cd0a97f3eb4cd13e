"""The push service (RFC 8030, with VAPID, RFC 8292): where Web Push messages wait for a device.

In Web Push three parties talk. The **device** (a browser: the user agent)
subscribes at its vendor's push service and hands the subscription to the
**application server** (the site's back end); the application server
posts encrypted messages to the **push service**, which keeps them until
the device is reachable and hands them over. The device needs no open page
and the site needs no connection to the device: the browser keeps a single
connection to its push service, shared by every site.

This module is that push service, as a component of the lab:

===============================  ==========================================  ======================
request                          what the service does                       answer
===============================  ==========================================  ======================
``POST /subscribe`` with         makes a subscription restricted to that     201; ``Location``: the
``{"vapid": "<app server         application server key (RFC 8292 4.1)       subscription; ``Link``:
key>"}`` (``application/                                                     its push resource
webpush-options+json``)
``GET /s/<id>`` (WebSocket)      the device's connection: messages arrive    101
                                 as frames, the device acknowledges them;
                                 an ``Urgency`` header sets the least
                                 urgent message the device takes now
``DELETE /s/<id>``               unsubscribes                                204
``POST /p/<id>`` (the push       stores the message, delivers it when the    201; ``Location``: the
resource, the subscription's     device can take it (checks below)           message; ``TTL``:
``endpoint``)                                                                seconds it is kept
===============================  ==========================================  ======================

The subscription's two URLs are different random capabilities: who knows
the endpoint can post to it (with the right VAPID key), but only the device
knows the ``/s/`` URL that reads the messages.

A push request is checked in this order; each refusal has a JSON body
``{"error": ..., "reason": ...}``, is noted in the trace, and the service
keeps serving:

=====  ======================================================================  ===============
step   check                                                                   refused with
=====  ======================================================================  ===============
1      the subscription exists (404) and is still there: not unsubscribed,     404, 410
       not expired (410: the application server should forget it)
2      VAPID: ``Authorization: vapid t=..., k=...`` with the subscription's    401, 403
       key (:mod:`labkit.push.webpush.vapid` lists every check)
3      ``TTL``, ``Urgency``, ``Topic`` (:mod:`labkit.push.webpush.protocol`)   400
4      the body is at most 4096 bytes (a declared ``Content-Length`` first)    413
5      a body comes with ``Content-Encoding: aes128gcm`` (RFC 8291 section 4)  415
6      the body's aes128gcm framing holds (the service cannot decrypt it, but  400
       it can check the header: :func:`labkit.push.webpush.crypto.parse`)
7      at most ``max_pending`` messages wait for the device                    429
=====  ======================================================================  ===============

An empty body is a push without payload (RFC 8030 allows it): the device
is only woken.

What happens to an accepted message (its ``state``):

===========  ===================================================================================
state        meaning
===========  ===================================================================================
stored       waiting: the device is offline, or takes only more urgent messages right now
sent         handed to the device, not acknowledged yet; if the device goes away before it
             acknowledges, the message is ``stored`` again and sent again when it comes back
             (RFC 8030 section 6.2; the trace gets a ``retry`` record)
acked        the device acknowledged it: the service will not send it again
expired      its TTL ran out before the device acknowledged it (a ``drop`` record)
replaced     a newer message with the same ``Topic`` took its place before it was sent (a
             ``drop`` record); one the device has already got is not taken back
dropped      ``TTL: 0`` and the device could not take it at that moment (a ``drop`` record)
gone         its subscription was removed first (a ``drop`` record)
===========  ===================================================================================

A ``TTL: 0`` message handed to a connected device is forgotten at once:
RFC 8030 section 5.2 lets the service remove it before the device
acknowledges. The TTL runs on the service's ``clock``, so an experiment
can compress a day of storage into seconds. :meth:`PushService.messages`
keeps every message as the service saw it, ciphertext included: a lesson
can show that the push service never had the plaintext.

**Bytes.** The wire layer counts every HTTP request and answer, the
device's ``GET /s/<id>`` upgrade and its 101 included. After the upgrade
the connection carries WebSocket frames, not HTTP, so the device's
connection counts them itself, exactly as :mod:`labkit.push.websocket`
does (with its :func:`~labkit.push.websocket.frame_size`, RFC 6455
section 5.2): each push frame and error frame the service sends
(unmasked), each frame the device sends (masked: its acks), and the close
handshake both ways. When the connection ends, its ``disconnect`` record
carries those frame bytes in ``bytes``, so ``Trace.bytes_total("webpush")``
is every byte Web Push put on the wire: the application server's requests
and the answers, the device's subscribe and upgrade, and the frames. A
device still connected has no ``disconnect`` yet: read the trace after the
device goes offline or the server stops (``aclose`` closes every device's
connection). Not counted, as for the WebSocket: a close frame without a
status code, and a frame tornado refuses itself (over 4096 bytes: the
device sends only small acks).

Records: ``connect`` when a device's connection opens; ``disconnect`` when
it ends (``bytes`` as above, ``events`` = push frames sent on it,
``detail`` = why it ended, what waits for the next connection, and the
frame counts); ``retry`` for a message sent again, ``drop`` for one that
leaves the store undelivered.

Not implemented: HTTP/2 server push to the device (no browser uses it),
subscription sets and push receipts (``Prefer: respond-async``,
RFC 8030 sections 4.1 and 5.1), ``DELETE`` on a message resource (acks go
over the device's connection, as in Mozilla's autopush).

Example::

    with serve_push_service() as server:
        server.component.messages()      # every message it accepted, and its state

Thread-safety: the handlers run on the lab loop. From a cell or a script,
:meth:`PushService.messages`, :meth:`PushService.message` and
:meth:`PushService.wait_for` are safe.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import secrets
import threading
import time
from typing import Any

import tornado.websocket

from labkit import lab
from labkit.clock import REAL_TIME, Clock
from labkit.endpoints import BodyHandler, BodyLimit, Handler, NotFound
from labkit.errors import LabkitError, RejectedError
from labkit.push.webpush import protocol
from labkit.push.webpush.crypto import b64url_decode, b64url_encode, load_public_key, parse
from labkit.push.webpush.vapid import verify
from labkit.push.websocket import close_payload, frame_size
from labkit.trace import Trace
from labkit.wire import annotate, client_of

__all__ = ["PushService", "PushMessage", "serve_push_service", "MAX_TTL", "STATES"]

MAX_TTL = 28 * 24 * 60 * 60
"""Longest the service keeps a message (a larger TTL is cut to it, and the answer says so)."""

STATES = ("stored", "sent", "acked", "expired", "replaced", "dropped", "gone")
"""What can become of a message (the table in the module docstring)."""

_TOKEN = r"([A-Za-z0-9_-]{1,64})"
_ROUTES = "POST /subscribe, GET|DELETE /s/<id>, POST /p/<id>"


@dataclasses.dataclass
class PushMessage:
    """One message as the push service holds it: ciphertext only, and its fate."""

    id: str
    endpoint: str
    """The push resource it was posted to (the subscription's ``endpoint``)."""
    ciphertext: bytes
    """The body exactly as the application server sent it (empty: no payload)."""
    ttl: int
    urgency: str
    topic: str | None
    sender: str
    """The ``sub`` claim of the sender's VAPID token (who to contact)."""
    received: float
    """When it arrived (``time.monotonic()``, the trace's clock)."""
    state: str = "stored"
    attempts: int = 0
    """How many times it was sent to the device."""
    frame_bytes: int = 0
    """Bytes of the WebSocket frame that last carried it to the device."""


class _Subscription:
    """A subscription's key, URLs, waiting messages and the device's connection, if any."""

    def __init__(self, key: bytes, resource: str, endpoint: str):
        self.key = key
        self.resource = resource
        self.endpoint = endpoint
        self.state = "active"  # or "unsubscribed", "expired"
        self.pending: dict[str, PushMessage] = {}  # not yet acked, in arrival order
        self.channel: _ChannelHandler | None = None
        self.client = ""
        self.accepts = "very-low"
        self.timer: asyncio.TimerHandle | None = None


class PushService:
    """The push service component (see the module): serve it with :func:`serve_push_service`.

    ``clock``: what TTLs and ``subscription_lifetime`` are measured on.
    ``max_ttl``: longest storage, in seconds. ``subscription_lifetime``:
    seconds after which a subscription expires (410), None for never.
    ``max_pending``: most messages waiting for one device (429 above).
    ``max_payload``: largest body (413 above). ``history``: how many
    messages :meth:`messages` remembers.
    """

    technique = "webpush"

    def __init__(self, *, clock: Clock = REAL_TIME, max_ttl: int = MAX_TTL,
                 subscription_lifetime: float | None = None, max_pending: int = 1000,
                 max_payload: int = protocol.MAX_PAYLOAD, history: int = 10_000,
                 trace: Trace | None = None):
        self.clock = clock
        self.max_ttl = max_ttl
        self.subscription_lifetime = subscription_lifetime
        self.max_pending = max_pending
        self.max_payload = max_payload
        self.history = history
        self.trace = trace
        self.origin: str | None = None
        """``http://127.0.0.1:<port>`` once served: VAPID's ``aud`` must be this."""
        self._changed = threading.Condition(threading.RLock())
        self._by_endpoint: dict[str, _Subscription] = {}
        self._by_resource: dict[str, _Subscription] = {}
        self._messages: collections.OrderedDict[str, PushMessage] = collections.OrderedDict()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ids = 0

    def rules(self) -> list:
        """Tornado URL rules for the endpoints in the module's table."""
        args = {"service": self}
        return [(r"/subscribe", _SubscribeHandler, args),
                (rf"/s/{_TOKEN}", _ChannelHandler, args),
                (rf"/p/{_TOKEN}", _PushHandler, args),
                (r".*", NotFound, {"routes": _ROUTES})]

    def attached(self, server: lab.Server) -> None:
        """Learn the origin the service is reached at (``lab.serve`` calls it)."""
        self.origin = server.url

    # -- reading, from anywhere ------------------------------------------------------

    @property
    def connected(self) -> int:
        """How many subscriptions have their device connected now (the connections it holds)."""
        return sum(1 for sub in list(self._by_resource.values()) if sub.channel is not None)

    def messages(self) -> list[PushMessage]:
        """Copies of the messages accepted so far (the last ``history``), oldest first."""
        with self._changed:
            return [dataclasses.replace(m) for m in self._messages.values()]

    def message(self, location: str) -> PushMessage:
        """A copy of one message, by its ``Location`` URL or its id."""
        message_id = location.rstrip("/").rsplit("/", 1)[-1]
        with self._changed:
            if message_id not in self._messages:
                raise LabkitError(f"the push service has no message {message_id!r} (it keeps "
                                  f"the last {self.history})")
            return dataclasses.replace(self._messages[message_id])

    def wait_for(self, location: str, state: str, timeout: float = 5.0) -> PushMessage:
        """Block until the message at ``location`` is in ``state``; return a copy of it."""
        if state not in STATES:
            raise LabkitError(f"a message's state is one of {', '.join(STATES)}, "
                              f"got {state!r}")
        self.message(location)  # an unknown message fails at once
        lab.wait_until(self._changed, lambda: self.message(location).state == state, timeout,
                       lambda: f"the message is still {self.message(location).state!r}, not "
                               f"{state!r}, after {timeout} s")
        return self.message(location)

    async def aclose(self) -> None:
        """Close every device's connection and stop the timers (runs on server stop)."""
        with self._changed:
            channels = [s.channel for s in self._by_resource.values() if s.channel is not None]
            for handle in [*self._timers.values(),
                           *(s.timer for s in self._by_resource.values() if s.timer)]:
                handle.cancel()
            self._timers.clear()
        for channel in channels:
            channel.end(1001, "the push service is stopping")
        for _ in range(100):  # give the closing handshakes a moment (at most 1 s)
            if all(s.channel is None for s in self._by_resource.values()):
                break
            await asyncio.sleep(0.01)

    # -- the operations, on the lab loop ---------------------------------------------

    def _origin(self, request: Any) -> str:
        return self.origin or f"{request.protocol}://{request.host}"

    def _record(self, kind: str, client: str, detail: str, **fields: Any) -> None:
        if self.trace is not None:
            self.trace.add(kind, technique=self.technique, client=client, detail=detail,
                           **fields)

    def _subscribe(self, key: bytes, origin: str) -> _Subscription:
        resource, endpoint = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        sub = _Subscription(key, f"{origin}/s/{resource}", f"{origin}/p/{endpoint}")
        with self._changed:
            self._by_resource[resource] = sub
            self._by_endpoint[endpoint] = sub
        if self.subscription_lifetime is not None:
            sub.timer = asyncio.get_running_loop().call_later(
                self.clock.to_real(self.subscription_lifetime), self._remove, sub, "expired")
        return sub

    @staticmethod
    def _live(sub: _Subscription | None, what: str) -> _Subscription:
        if sub is None:
            raise RejectedError("no_subscription", f"no such {what}: check the URL",
                                status=404)
        if sub.state != "active":
            raise RejectedError("gone", f"this subscription was {sub.state}: the application "
                                f"server should delete it, the device subscribe again",
                                status=410)
        return sub

    def _remove(self, sub: _Subscription, why: str) -> None:
        """End a subscription (``unsubscribed`` or ``expired``): drop what waits, close."""
        with self._changed:
            if sub.state != "active":
                return
            sub.state = why
            if sub.timer is not None:
                sub.timer.cancel()
            for message in sub.pending.values():
                self._end(message, "gone", sub.client, f"subscription {why}")
            sub.pending.clear()
            channel = sub.channel
            self._changed.notify_all()
        if channel is not None:
            channel.end(1000, f"subscription {why}")

    def _end(self, message: PushMessage, state: str, client: str, why: str) -> None:
        """A message leaves the store without reaching the device: note it in the trace."""
        message.state = state
        timer = self._timers.pop(message.id, None)
        if timer is not None:
            timer.cancel()
        self._record("drop", client, f"{message.id} {state}: {why}")

    def _accept(self, sub: _Subscription, body: bytes, ttl: int, urgency: str,
                topic: str | None, sender: str) -> PushMessage:
        with self._changed:
            self._live(sub, "subscription")
            if len(sub.pending) >= self.max_pending:
                raise RejectedError("too_many", f"{len(sub.pending)} messages already wait for "
                                    f"this device: send fewer, or use a Topic so newer "
                                    f"messages replace older ones", status=429)
            self._ids += 1
            message = PushMessage(f"msg_{self._ids:06d}", sub.endpoint, body, ttl, urgency,
                                  topic, sender, time.monotonic())
            self._messages[message.id] = message
            while len(self._messages) > self.history:
                self._messages.popitem(last=False)
            if topic is not None:
                for old in [m for m in sub.pending.values()
                            if m.topic == topic and m.state == "stored"]:
                    del sub.pending[old.id]
                    self._end(old, "replaced", sub.client, f"{message.id} has the same topic "
                                                          f"{topic!r}")
            if ttl == 0 and not self._takes(sub, message):
                self._end(message, "dropped", sub.client, "TTL 0 and the device cannot take "
                          "it now (offline, or it takes only more urgent messages)")
            else:
                sub.pending[message.id] = message
                if ttl > 0:
                    self._timers[message.id] = asyncio.get_running_loop().call_later(
                        self.clock.to_real(ttl), self._expire, sub, message.id)
                self._flush(sub)
            self._changed.notify_all()
            return message

    @staticmethod
    def _takes(sub: _Subscription, message: PushMessage) -> bool:
        """True if the device is connected and takes a message this urgent right now."""
        return sub.channel is not None and \
            protocol.urgency_rank(message.urgency) >= protocol.urgency_rank(sub.accepts)

    def _flush(self, sub: _Subscription) -> None:
        """Send the device every stored message it takes now, oldest first (lock held)."""
        for message in list(sub.pending.values()):
            if message.state != "stored" or not self._takes(sub, message):
                continue
            frame = protocol.push_frame(message.id, b64url_encode(message.ciphertext),
                                        message.urgency, message.topic)
            message.state = "sent"
            message.attempts += 1
            message.frame_bytes = frame_size(len(frame.encode()), masked=False)
            if message.attempts > 1:
                self._record("retry", sub.client, f"{message.id} sent again, attempt "
                                                  f"{message.attempts}: it was never acked")
            if message.ttl == 0:  # RFC 8030 5.2: may be forgotten before the ack
                del sub.pending[message.id]
            sub.channel.send(frame, push=True)

    def _expire(self, sub: _Subscription, message_id: str) -> None:
        with self._changed:
            message = sub.pending.pop(message_id, None)
            if message is not None:
                self._timers.pop(message_id, None)
                before = "acknowledged" if message.state == "sent" else "delivered"
                self._end(message, "expired", sub.client, f"its TTL of {message.ttl} s ran out "
                                                          f"before it was {before}")
                self._changed.notify_all()

    def _attach(self, sub: _Subscription, channel: _ChannelHandler, accepts: str,
                client: str) -> None:
        with self._changed:
            old = sub.channel
            if old is not None:  # what the old connection left unacked goes on the new one
                for message in sub.pending.values():
                    message.state = "stored"
            sub.channel, sub.accepts, sub.client = channel, accepts, client
            self._record("connect", client, f"device connected, takes urgency {accepts} "
                                            f"and up")
            self._flush(sub)
            self._changed.notify_all()
        if old is not None:
            old.end(1000, "replaced by a newer connection of the device")

    def _detach(self, sub: _Subscription, channel: _ChannelHandler) -> None:
        """A device's connection ended: what it left unacked waits; record its frames."""
        with self._changed:
            if sub.channel is channel:
                sub.channel = None
                unacked = [m for m in sub.pending.values() if m.state == "sent"]
                for message in unacked:
                    message.state = "stored"
                kept = f"{len(unacked)} sent but unacked messages kept for later"
            else:  # _attach already moved what it left unacked to the newer connection
                kept = "what it left unacked went on the newer connection"
            self._record("disconnect", channel.client, f"device disconnected: "
                         f"{channel.ending()}; {kept}; {channel.counted()}",
                         bytes=channel.sent + channel.received, events=channel.pushes,
                         duration=time.monotonic() - channel.opened)
            self._changed.notify_all()

    def _on_frame(self, sub: _Subscription, channel: _ChannelHandler, text: Any) -> None:
        try:
            frame = protocol.read_frame(text)
            if frame["type"] == "ack":
                self._ack(sub, frame["id"])
            elif frame["type"] == "push":
                raise protocol.FrameError("a device sends ack frames, not push frames")
        except protocol.FrameError as exc:
            channel.send(protocol.error_frame(str(exc)))

    def _ack(self, sub: _Subscription, message_id: str) -> None:
        with self._changed:
            message = sub.pending.pop(message_id, None) or self._messages.get(message_id)
            if message is None or message.endpoint != sub.endpoint or \
                    message.state not in ("stored", "sent"):
                raise protocol.FrameError(f"no message {message_id!r} waits for an ack here")
            timer = self._timers.pop(message_id, None)
            if timer is not None:
                timer.cancel()
            message.state = "acked"
            self._changed.notify_all()


def serve_push_service(service: PushService | None = None, *, trace: Trace | None = None,
                       port: int = 0, **options: Any) -> lab.Server:
    """Serve ``service`` (or a new :class:`PushService` made from ``options``) on the lab loop.

    One line over :func:`labkit.lab.serve`: ``server.component`` is the
    service. Stopping the server closes every device's connection.
    """
    return lab.serve(lab.component(PushService, service, options), trace=trace, port=port)


# -- the handlers ----------------------------------------------------------------------


class _SubscribeHandler(BodyHandler):
    """``POST /subscribe``: a new subscription restricted to an application server key."""

    max_body = 1024

    def initialize(self, service: PushService) -> None:
        self.service = service

    def post(self) -> None:
        try:
            try:
                options = json.loads(self.text())
                key = b64url_decode(options["vapid"])
                load_public_key(key)
            except (ValueError, KeyError, TypeError):
                raise RejectedError("bad_key", 'send {"vapid": "<the application server\'s '
                                    'public key, base64url, 65 bytes uncompressed>"} (RFC 8292 '
                                    'section 4.1)', status=400) from None
        except RejectedError as exc:
            return self.refuse(exc)
        sub = self.service._subscribe(key, self.service._origin(self.request))
        self.set_header("Location", sub.resource)
        self.set_header("Link", f'<{sub.endpoint}>; rel="urn:ietf:params:push"')
        annotate(self, detail="subscribed")
        self.answer(201)


class _ChannelHandler(tornado.websocket.WebSocketHandler, Handler):
    """``GET /s/<id>``: the device's WebSocket; ``DELETE /s/<id>``: unsubscribe.

    Counts the bytes of every frame it sends and receives, as RFC 6455 frames
    them (the module's **Bytes**); ``_detach`` records them on ``disconnect``.
    """

    max_message_size = 4096  # the device sends only small ack frames

    def initialize(self, service: PushService) -> None:
        self.service = service
        self.sub: _Subscription | None = None
        self.client = ""
        self.opened = 0.0
        self.sent = self.received = 0
        self.frames_out = self.frames_in = 0
        self.pushes = 0
        self.why: str | None = None
        """Why the service closed it (None: the device did, or the connection broke)."""

    async def get(self, resource: str) -> None:
        try:
            sub = self.service._live(self.service._by_resource.get(resource), "subscription")
            self.accepts = protocol.parse_urgency(self.request.headers.get("Urgency"),
                                                  default="very-low")
        except RejectedError as exc:
            return self.refuse(exc)
        self.sub, self.client = sub, client_of(self)
        annotate(self, detail="device connection opened")
        await super().get(resource)

    def open(self, resource: str) -> None:
        self.opened = time.monotonic()
        self.service._attach(self.sub, self, self.accepts, self.client)

    def on_message(self, message: str | bytes) -> None:
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        self.received += frame_size(size, masked=True)
        self.frames_in += 1
        self.service._on_frame(self.sub, self, message)

    def on_close(self) -> None:
        if not self.opened:  # refused, or not upgraded: no connection to end
            return
        if self.close_code is not None:  # the device's close frame arrived
            self.received += frame_size(close_payload(self.close_code, self.close_reason),
                                        masked=True)
            self.frames_in += 1
            if self.why is None:  # tornado answered it with the same code
                self.sent += frame_size(close_payload(self.close_code, None), masked=False)
                self.frames_out += 1
        self.service._detach(self.sub, self)

    def send(self, frame: str, *, push: bool = False) -> None:
        """Write a frame (``push``: one carrying a message) and count it; a connection that
        just closed is left to ``on_close``."""
        if protocol.write_frame(self, frame):
            self.sent += frame_size(len(frame.encode()), masked=False)
            self.frames_out += 1
            if push:
                self.pushes += 1

    def end(self, code: int, why: str) -> None:
        """Start the close handshake (the first reason wins); the device answers it."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return
        self.why = why
        self.sent += frame_size(close_payload(code, why), masked=False)
        self.frames_out += 1
        self.close(code, why)

    def ending(self) -> str:
        """Why the connection ended, for its ``disconnect`` record."""
        code = f" (code {self.close_code})" if self.close_code is not None else ""
        return (self.why or ("the device closed it" if self.close_code is not None
                             else "the device left")) + code

    def counted(self) -> str:
        """The frames counted, for its ``disconnect`` record."""
        return (f"sent {self.sent} bytes in {self.frames_out} frames, received "
                f"{self.received} bytes in {self.frames_in} frames")

    def delete(self, resource: str) -> None:
        try:
            sub = self.service._live(self.service._by_resource.get(resource), "subscription")
        except RejectedError as exc:
            return self.refuse(exc)
        self.service._remove(sub, "unsubscribed")
        annotate(self, detail="unsubscribed")
        self.answer(204)


class _PushHandler(BodyHandler):
    """``POST /p/<id>``: a push message from an application server (the checks above)."""

    def initialize(self, service: PushService) -> None:
        self.service = service

    def prepare(self) -> None:
        service = self.service
        self.limit = BodyLimit(service.max_payload)
        if self.request.method != "POST":
            return  # tornado answers 405
        headers = self.request.headers
        try:
            self.sub = service._live(service._by_endpoint.get(self.path_args[0]),
                                     "push resource")
            self.token = verify(headers.get("Authorization"),
                                audience=service._origin(self.request), key=self.sub.key)
            self.ttl = min(protocol.parse_ttl(headers.get("TTL")), service.max_ttl)
            self.urgency = protocol.parse_urgency(headers.get("Urgency"))
            self.topic = protocol.parse_topic(headers.get("Topic"))
            self.limit.check_declared(headers)
        except RejectedError as exc:
            if exc.status == 401:
                self.set_header("WWW-Authenticate", "vapid")
            self.refuse(exc, close=True)

    def post(self, endpoint: str) -> None:
        try:
            body = self.body()
            if body:
                coding = self.request.headers.get("Content-Encoding", "")
                if coding.strip().lower() != "aes128gcm":
                    raise RejectedError("bad_encoding", f"a push message body must be "
                                        f"Content-Encoding: aes128gcm (RFC 8291 section 4), "
                                        f"got {coding[:40]!r}", status=415)
                parse(body)
            message = self.service._accept(self.sub, body, self.ttl, self.urgency, self.topic,
                                           self.token.subject)
        except RejectedError as exc:
            return self.refuse(exc)
        self.set_header("Location", f"{self.service._origin(self.request)}/m/{message.id}")
        self.set_header("TTL", str(message.ttl))
        annotate(self, events=1, detail=f"{message.id} {message.state} (TTL {message.ttl} s, "
                                        f"urgency {message.urgency}, topic {message.topic})")
        self.answer(201)
