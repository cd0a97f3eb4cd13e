"""Web Push: a site reaches a device through the device's push service, even with no page open.

Three parties, three modules, and the standards they follow::

    application server  --POST, encrypted, VAPID-->  push service  --its own channel-->  device
    (app_server.py,                                  (service.py,                        (device.py,
     pywebpush)                                       RFC 8030 + 8292)                    RFC 8291)

1. The device makes keys and subscribes at its push service with the site's
   public VAPID key; it gives the site the subscription: an endpoint URL and
   its own public key and auth secret.
2. The site's application server encrypts each message for that device
   (RFC 8291) and posts it to the endpoint, proving who it is with a signed
   VAPID token (RFC 8292). The push service cannot read the message.
3. The push service stores it, up to its ``TTL``, and hands it to the device
   when the device is connected and takes messages of that ``Urgency``;
   a newer message with the same ``Topic`` replaces a waiting one (RFC 8030).
4. The device decrypts it, runs its service worker, and acknowledges it.

==========================  ========================================================================
module                      contents
==========================  ========================================================================
:mod:`.crypto`              the device's keys; the aes128gcm framing; decryption (via ``http_ece``)
:mod:`.vapid`               the push service's check of a VAPID ``Authorization`` header
:mod:`.protocol`            the RFC 8030 headers (TTL, Urgency, Topic) and the device's frames
:mod:`.service`             :class:`PushService`, :func:`serve_push_service`
:mod:`.device`              :class:`Device`: the browser and its service worker
:mod:`.app_server`          :class:`AppServer`: pywebpush, with a VAPID key
==========================  ========================================================================

Example::

    from labkit.push.webpush import AppServer, Device, serve_push_service

    with serve_push_service() as server, AppServer() as app:
        device = Device(server.url, app.application_server_key, trace=server.trace)
        app.add(device.subscribe())
        device.online()
        app.send(device.subscription_info, "Your order has shipped", ttl=3600)
        print(device.wait_for(1)[0].text)      # Your order has shipped
        device.close()
"""

from labkit.push.webpush.app_server import AppServer, SendResult
from labkit.push.webpush.crypto import DecryptError, DeviceKeys, decrypt
from labkit.push.webpush.device import Device, DeviceError, Notification, Push
from labkit.push.webpush.protocol import URGENCIES
from labkit.push.webpush.service import PushMessage, PushService, serve_push_service
from labkit.push.webpush.vapid import VapidError, verify

__all__ = ["AppServer", "SendResult", "DecryptError", "DeviceKeys", "decrypt", "Device",
           "DeviceError", "Notification", "Push", "URGENCIES", "PushMessage", "PushService",
           "serve_push_service", "VapidError", "verify"]
