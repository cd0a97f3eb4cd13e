"""The application server: the site's back end, sending Web Push with pywebpush.

The application server holds a VAPID key pair. Its public key goes to the
page, which subscribes with it (``applicationServerKey``), so the push
service accepts messages for that subscription only from this server. The
page hands the subscription back (:attr:`Device.subscription_info`), and
from then on the server can reach the device without any open connection:

=====================  =========================================================================
:class:`AppServer`     what it does
=====================  =========================================================================
``add(subscription)``  stores a subscription, keyed by its endpoint
``send(...)``          encrypts one message for one subscription and posts it to the push
                       service, with ``ttl``, ``urgency`` and ``topic``; returns a
                       :class:`SendResult`, never raises for a refusal
``broadcast(...)``     ``send`` to every stored subscription
``subscriptions``      the stored ones; a subscription answered with 404 or 410 is removed
                       at once (and listed in ``removed``): its device is gone for good, and
                       a server that keeps posting to it is what push services throttle
=====================  =========================================================================

The kit writes none of this encryption: ``send`` is one call to
:func:`pywebpush.webpush`, the library real Python back ends use, with a
py_vapid ``Vapid02`` key (RFC 8292 tokens) and ``aes128gcm`` (RFC 8291).
pywebpush posts with ``requests``, which blocks: call ``send`` from a cell,
a script or a thread, never from code on the lab loop.

Example::

    app = AppServer()
    device = Device(server.url, app.application_server_key, trace=server.trace)
    app.add(device.subscribe())
    result = app.send(device.subscription_info, "hello", ttl=60, urgency="high")
    result.status, result.location        # 201, 'http://127.0.0.1:.../m/msg_000001'

Thread-safety: one ``AppServer`` may be used from several threads; its
subscriptions are guarded by a lock, and ``requests`` sessions are shared
by its threads the way ``requests`` allows.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, NamedTuple

import requests
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush

from labkit import lab
from labkit.errors import LabLoopError, LabkitError
from labkit.feed import Event
from labkit.push.webpush.crypto import b64url_encode, public_key_bytes
from labkit.wire import CLIENT_HEADER

__all__ = ["AppServer", "SendResult"]


class SendResult(NamedTuple):
    """What the push service answered to one message."""

    status: int | None
    """201 when accepted; None when the push service could not be reached."""
    location: str | None
    """The message's URL at the push service (``Location``)."""
    ttl: int | None
    """Seconds the push service will keep the message (its ``TTL`` answer)."""
    error: str
    """Why it was refused ("" when accepted)."""
    body_bytes: int
    """Bytes of the encrypted body that was posted (0 if it was not)."""
    headers: Mapping[str, str] | None = None
    """The request's headers as pywebpush sent them (``Authorization``, ``TTL``, ``Urgency``,
    ``Topic``, ``Content-Encoding`` ...), names case-insensitive; None when nothing was sent."""

    @property
    def ok(self) -> bool:
        return self.status == 201


class AppServer:
    """A site's back end that sends Web Push through pywebpush (see the module).

    ``vapid``: a py_vapid ``Vapid02`` with a private key (a new key pair if
    not given). ``subject``: the VAPID ``sub`` claim, how the push service
    can reach the site's operator. ``name`` names it in the trace.
    """

    def __init__(self, vapid: Vapid02 | None = None, *, subject: str = "mailto:lab@example.com",
                 name: str = "app-server", timeout: float = 10.0):
        if vapid is None:
            vapid = Vapid02()
            vapid.generate_keys()
        self.vapid = vapid
        self.subject = subject
        self.name = name
        self.timeout = timeout
        self.removed: list[str] = []
        """Endpoints dropped because the push service answered 404 or 410."""
        self._subscriptions: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()

    @property
    def application_server_key(self) -> str:
        """The public key, base64url (65 bytes uncompressed): what the page subscribes with."""
        return b64url_encode(public_key_bytes(self.vapid.public_key))

    @property
    def subscriptions(self) -> list[dict]:
        """The stored subscriptions."""
        with self._lock:
            return list(self._subscriptions.values())

    def add(self, subscription_info: dict) -> None:
        """Store a subscription a device handed over (``{"endpoint", "keys"}``)."""
        if not isinstance(subscription_info, dict) or "endpoint" not in subscription_info:
            raise LabkitError(f"a subscription is a dict with an 'endpoint' and 'keys', "
                              f"got {subscription_info!r:.80}")
        with self._lock:
            self._subscriptions[subscription_info["endpoint"]] = subscription_info

    def send(self, subscription_info: dict, data: str | bytes | Event | None = None, *,
             ttl: int = 60, urgency: str | None = None, topic: str | None = None) -> SendResult:
        """Encrypt ``data`` for one subscription and post it to its push service.

        ``data``: text, bytes, a feed :class:`~labkit.feed.Event` (sent as its
        JSON, so the device's trace records its latency) or None (a push
        without payload). ``ttl``: seconds the service may keep it for an
        offline device. ``urgency`` and ``topic`` become the RFC 8030 headers
        (not checked here: the push service says what it refuses).
        """
        if lab.in_lab_thread():
            raise LabLoopError("AppServer.send() blocks (pywebpush uses requests): call it "
                               "from a cell, a script or a thread, not on the lab loop")
        if isinstance(data, Event):
            data = data.to_json()
        headers = {CLIENT_HEADER: self.name}
        if urgency is not None:
            headers["Urgency"] = urgency
        if topic is not None:
            headers["Topic"] = topic
        try:
            response = webpush(subscription_info, data, vapid_private_key=self.vapid,
                               vapid_claims={"sub": self.subject}, ttl=ttl, headers=headers,
                               timeout=self.timeout, requests_session=self._session)
        except WebPushException as exc:
            response = exc.response
            if response is None:
                raise LabkitError(f"pywebpush refused to send: {exc.message}") from None
        except requests.RequestException as exc:
            return SendResult(None, None, None, f"cannot reach the push service: {exc}", 0)
        if response.status_code in (404, 410):
            self._forget(subscription_info["endpoint"])
        ttl_kept = response.headers.get("TTL", "")
        return SendResult(response.status_code, response.headers.get("Location"),
                          int(ttl_kept) if ttl_kept.isdigit() else None,
                          "" if response.status_code == 201 else _error_of(response),
                          len(response.request.body or b""), response.request.headers.copy())

    def broadcast(self, data: str | bytes | Event | None = None,
                  **options: Any) -> list[SendResult]:
        """:meth:`send` to every stored subscription (``options`` as for ``send``)."""
        return [self.send(subscription, data, **options) for subscription in self.subscriptions]

    def _forget(self, endpoint: str) -> None:
        with self._lock:
            if self._subscriptions.pop(endpoint, None) is not None:
                self.removed.append(endpoint)

    def close(self) -> None:
        """Close the HTTP session (its kept-alive connections)."""
        self._session.close()

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AppServer {self.name}, {len(self.subscriptions)} subscriptions>"


def _error_of(response: requests.Response) -> str:
    try:
        return response.json()["error"]
    except (ValueError, TypeError, KeyError):
        return response.text[:200] or response.reason or "(no body)"
