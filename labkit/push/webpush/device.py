"""The device: a browser's side of Web Push, simulated (the user agent and its service worker).

What a browser does when a page calls ``pushManager.subscribe()``, and
afterwards, with no page open at all:

======================  ==================================================================
step                    :class:`Device`
======================  ==================================================================
make keys               a P-256 key pair and a 16-byte auth secret, per subscription
                        (:class:`~labkit.push.webpush.crypto.DeviceKeys`)
subscribe               ``POST /subscribe`` at the push service with the application
                        server's public key; the answer names the subscription's two URLs
hand it to the site     :attr:`Device.subscription_info`: ``{"endpoint", "keys": {"p256dh",
                        "auth"}}``, the shape pywebpush (and every Web Push library) takes
stay connected          :meth:`Device.online` opens the connection to the push service (a
                        WebSocket here, as Firefox's; Chrome uses Firebase's channel);
                        :meth:`Device.offline` closes it, as a phone in a tunnel would
receive                 each message is decrypted with the device's keys
                        (:func:`~labkit.push.webpush.crypto.decrypt`), given to the
                        service worker, then acknowledged, so the service forgets it
show                    what the service worker returns is shown as a notification
                        (:attr:`Device.notifications`)
======================  ==================================================================

The service worker is a callback, ``def`` or ``async def``, given each
:class:`Push`; it runs on the lab loop whether or not any "page" of the
site is open: there is no page in this simulator at all, which is the
point of Web Push. Its return value, if not None, is the notification's
text; the default worker shows the message's text.

A message that does not decrypt is discarded, as RFC 8291 says (and still
acknowledged, so the service does not send it again); the trace gets a
``drop`` record. A message whose plaintext is a feed event
(``event.to_json()``) adds an ``event`` record when it is decrypted, so
its latency is "event made -> device could read it", and its bytes are the
ciphertext's.

:meth:`Device.accept` sets the least urgent message the device takes (a
phone on a low battery takes only ``high``); the push service holds the
others until it takes them again (RFC 8030 section 5.3).

Example::

    device = Device(server.url, app.application_server_key, trace=server.trace)
    app.add(device.subscribe())
    device.online()
    app.send(device.subscription_info, "hello")
    device.wait_for(1)[0].text        # 'hello'
    device.close()

Thread-safety: the connection and the service worker live on the lab loop.
From a cell or a script, every public method is safe; :meth:`wait_for`
blocks until the lab loop has done the work.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest

from labkit import lab
from labkit.errors import DeviceError
from labkit.feed import Event, FeedError
from labkit.push.webpush import protocol
from labkit.push.webpush.crypto import (DecryptError, DeviceKeys, b64url_decode, b64url_encode,
                                        decrypt)
from labkit.trace import Trace
from labkit.wire import CLIENT_HEADER

__all__ = ["Device", "Push", "Notification", "DeviceError", "show_text"]

_PUSH_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?urn:ietf:params:push"?(?:\s*[;,]|\s*$)')
TIMEOUT = 10.0
"""Seconds a subscribe, connect or unsubscribe may take before the device gives up."""


@dataclass(frozen=True)
class Push:
    """One message as the device's service worker gets it: decrypted."""

    id: str
    data: bytes | None
    """The plaintext (None for a push without payload)."""
    urgency: str
    topic: str | None
    ciphertext_bytes: int
    """Size of the encrypted body the application server sent."""
    frame_bytes: int
    """Bytes of the WebSocket frame that brought it (header included)."""
    received: float
    """When it was decrypted (``time.monotonic()``, the trace's clock)."""

    @property
    def text(self) -> str | None:
        """The plaintext as UTF-8 text (None without payload)."""
        return None if self.data is None else self.data.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The plaintext parsed as JSON (a ``ValueError`` if it is not JSON)."""
        if self.data is None:
            raise ValueError("this push has no payload")
        return json.loads(self.data)

    @property
    def event(self) -> Event | None:
        """The feed event the plaintext carries, or None if it is not one."""
        try:
            return Event.from_dict(self.json())
        except (ValueError, FeedError):
            return None


class Notification(NamedTuple):
    """What the device showed for a push."""

    push_id: str
    text: str
    shown: float
    """When (``time.monotonic()``)."""


def show_text(push: Push) -> str:
    """The default service worker: show the message's text."""
    return push.text or ""


class Device:
    """A simulated browser with one push subscription (see the module).

    ``service_url``: the push service's base URL. ``application_server_key``:
    the site's VAPID public key (base64url, as ``AppServer.application_server_key``,
    or 65 bytes). ``service_worker(push)``: called for each message.
    ``urgency``: the least urgent message it takes at first. ``trace``: where
    delivered events and discarded messages are recorded (a new one if not
    given). ``name`` names the device in the trace.
    """

    def __init__(self, service_url: str, application_server_key: str | bytes, *,
                 name: str = "device", service_worker: Callable[[Push], Any] = show_text,
                 urgency: str = "very-low", trace: Trace | None = None,
                 technique: str = "webpush"):
        if isinstance(application_server_key, bytes):
            application_server_key = b64url_encode(application_server_key)
        self.service_url = service_url.rstrip("/")
        self.application_server_key = application_server_key
        self.name = name
        self.service_worker = service_worker
        self.urgency = self._checked(urgency)
        self.trace = trace if trace is not None else Trace()
        self.technique = technique
        self.keys = DeviceKeys.generate()
        self.received: list[Push] = []
        """Every message the service worker got, in order (a resent one appears again)."""
        self.notifications: list[Notification] = []
        """What the device showed."""
        self.discarded: list[tuple[str, str]] = []
        """``(message id, why)`` for messages that did not decrypt."""
        self.errors: list[str] = []
        """Frames the device could not use, and service workers that raised."""
        self._changed = threading.Condition()
        self._resource: str | None = None
        self._endpoint: str | None = None
        self._conn: tornado.websocket.WebSocketClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._inbox: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    # -- the subscription ----------------------------------------------------------

    @property
    def subscription_info(self) -> dict:
        """What the site's application server needs: endpoint and keys (pywebpush's shape)."""
        if self._endpoint is None:
            raise DeviceError("the device has no subscription: call subscribe() first")
        return {"endpoint": self._endpoint, "keys": self.keys.subscription_keys()}

    @property
    def subscription_url(self) -> str | None:
        """The subscription's own URL, which only the device knows: it reads messages there."""
        return self._resource

    def subscribe(self) -> dict:
        """Subscribe at the push service, restricted to the application server's key.

        Returns :attr:`subscription_info`, for the application server.
        """
        if self._endpoint is not None:
            raise DeviceError("the device is subscribed already: unsubscribe() first")
        lab.run(self._subscribe(), timeout=TIMEOUT)
        return self.subscription_info

    async def _subscribe(self) -> None:
        body = json.dumps({"vapid": self.application_server_key})
        response = await self._fetch("/subscribe", "POST", body)
        if response.code != 201:
            raise DeviceError(f"the push service refused the subscription ({response.code}): "
                              f"{_error_of(response.body)}")
        links = [m.group(1) for value in response.headers.get_list("Link")
                 for m in _PUSH_LINK.finditer(value)]
        if "Location" not in response.headers or not links:
            raise DeviceError("the push service's answer names no subscription (Location) "
                              "or no push resource (Link rel=\"urn:ietf:params:push\")")
        self._resource, self._endpoint = response.headers["Location"], links[0]

    def unsubscribe(self) -> None:
        """End the subscription: the push service answers 410 to the application server."""
        if self._resource is None:
            raise DeviceError("the device has no subscription to end")
        lab.run(self._unsubscribe(), timeout=TIMEOUT)

    async def _unsubscribe(self) -> None:
        response = await self._fetch(self._resource, "DELETE")
        if response.code not in (204, 410):
            raise DeviceError(f"the push service refused to unsubscribe ({response.code}): "
                              f"{_error_of(response.body)}")
        await self._disconnect()
        self._resource = self._endpoint = None

    async def _fetch(self, url: str, method: str, body: str | None = None) -> Any:
        if url.startswith("/"):
            url = self.service_url + url
        client = lab.http_client(1)
        try:
            return await client.fetch(url, method=method, body=body, raise_error=False,
                                      request_timeout=TIMEOUT,
                                      headers={CLIENT_HEADER: self.name, "Content-Type":
                                               "application/webpush-options+json"})
        except (OSError, HTTPClientError) as exc:  # refused, or no answer in time (599)
            raise DeviceError(f"cannot reach the push service at {url}: {exc}") from None
        finally:
            client.close()

    # -- the connection -------------------------------------------------------------

    @property
    def is_online(self) -> bool:
        """True while the device is connected to its push service."""
        return self._conn is not None

    def online(self) -> None:
        """Connect to the push service; what waits for the device starts arriving."""
        if self._resource is None:
            raise DeviceError("the device has no subscription: call subscribe() first")
        lab.run(self._connect(), timeout=TIMEOUT)

    def offline(self) -> None:
        """Close the connection (messages wait at the push service until their TTL ends)."""
        lab.run(self._disconnect(), timeout=TIMEOUT)

    def accept(self, urgency: str) -> None:
        """Take only messages at least this urgent from now on (``very-low`` takes all).

        Online, the device reconnects with the new ``Urgency`` header, as RFC
        8030 section 5.3 has a user agent re-issue its request.
        """
        self.urgency = self._checked(urgency)
        if self.is_online:
            lab.run(self._reconnect(), timeout=TIMEOUT)

    async def _reconnect(self) -> None:
        await self._disconnect()
        await self._connect()

    @staticmethod
    def _checked(urgency: str) -> str:
        if urgency not in protocol.URGENCIES:
            raise DeviceError(f"urgency is one of {', '.join(protocol.URGENCIES)}, "
                              f"got {urgency!r}")
        return urgency

    async def _connect(self) -> None:
        if self._conn is not None:
            return
        request = HTTPRequest("ws" + self._resource[len("http"):], request_timeout=TIMEOUT,
                              headers={"Urgency": self.urgency, CLIENT_HEADER: self.name})
        try:
            conn = await tornado.websocket.websocket_connect(
                request, resolver=lab.tcp_client().resolver)
        except HTTPClientError as exc:
            body = exc.response.body if exc.response is not None else b""
            if exc.code == 410:
                raise DeviceError(f"the push service says the subscription is gone: "
                                  f"{_error_of(body)}; subscribe again") from None
            raise DeviceError(f"the push service refused the connection ({exc.code}): "
                              f"{_error_of(body)}") from None
        except OSError as exc:
            raise DeviceError(f"cannot reach the push service: {exc}") from None
        if self._worker is None:
            self._inbox = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        self._conn = conn
        self._reader = asyncio.get_running_loop().create_task(self._read(conn))

    async def _disconnect(self) -> None:
        conn, reader = self._conn, self._reader
        if conn is None:
            return
        conn.close(1000, "the device goes offline")
        await asyncio.wait_for(asyncio.shield(reader), TIMEOUT)

    async def _read(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        """Take frames off the connection; the service worker runs on its own task,
        so a slow worker never keeps the device from noticing that it went offline."""
        try:
            while (text := await conn.read_message()) is not None:
                self._inbox.put_nowait((conn, text))
        finally:
            conn.close()  # if the service closed it, this releases tornado's side
            if self._conn is conn:
                self._conn = None

    async def _work(self) -> None:
        while True:
            conn, text = await self._inbox.get()
            await self._handle(conn, text)

    async def _handle(self, conn: tornado.websocket.WebSocketClientConnection,
                      text: str | bytes) -> None:
        try:
            frame = protocol.read_frame(text)
            if frame["type"] != "push":
                raise protocol.FrameError(frame.get("error") or f"unexpected {frame['type']} "
                                                                f"frame")
        except protocol.FrameError as exc:
            self._note(self.errors, f"from the push service: {exc}")
            return
        try:
            ciphertext = b64url_decode(frame["data"])
            data = decrypt(ciphertext, self.keys) if ciphertext else None
        except (ValueError, DecryptError) as exc:
            self._note(self.discarded, (frame["id"], str(exc)))
            self.trace.add("drop", technique=self.technique, client=self.name,
                           detail=f"{frame['id']} discarded by the device: {exc}")
            protocol.write_frame(conn, protocol.ack_frame(frame["id"]))
            return
        push = Push(frame["id"], data, frame["urgency"], frame.get("topic"), len(ciphertext),
                    protocol.frame_size(len(text.encode()), masked=False), time.monotonic())
        event = push.event
        if event is not None:
            self.trace.delivered(event, technique=self.technique, client=self.name,
                                 bytes=len(ciphertext), detail=push.id)
        try:
            shown = await lab.invoke(self.service_worker, push)
        except Exception as exc:  # a bug in the worker: note it, the push still arrived
            self._note(self.errors, f"the service worker raised {exc!r} for {push.id}")
            shown = None
        with self._changed:
            self.received.append(push)
            if shown is not None:
                self.notifications.append(Notification(push.id, str(shown), time.monotonic()))
            self._changed.notify_all()
        protocol.write_frame(conn, protocol.ack_frame(push.id))

    def _note(self, where: list, item: Any) -> None:
        with self._changed:
            where.append(item)
            self._changed.notify_all()

    # -- waiting and closing -----------------------------------------------------------

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Push]:
        """Block until the service worker got ``count`` messages; return them all."""
        def explain() -> str:
            state = "online" if self.is_online else "offline"
            return (f"the device ({state}) got {len(self.received)} of {count} messages within "
                    f"{timeout} s; {len(self.discarded)} did not decrypt"
                    + (f"; last error: {self.errors[-1]}" if self.errors else ""))

        lab.wait_until(self._changed, lambda: len(self.received) >= count, timeout, explain)
        with self._changed:
            return list(self.received)

    def close(self) -> None:
        """Go offline and stop the service worker (the subscription stays)."""
        lab.run(self._close(), timeout=TIMEOUT)

    async def _close(self) -> None:
        await self._disconnect()
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "online" if self.is_online else "offline"
        subscribed = "subscribed" if self._endpoint else "not subscribed"
        return f"<Device {self.name} {subscribed}, {state}, {len(self.received)} received>"


def _error_of(body: bytes | None) -> str:
    """The ``error`` of a JSON refusal, or the body's start."""
    try:
        return json.loads(body)["error"]
    except (ValueError, TypeError, KeyError):
        return (body or b"")[:200].decode("utf-8", errors="replace") or "(no body)"
