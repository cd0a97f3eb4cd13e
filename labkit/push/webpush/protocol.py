"""What Web Push puts on the wire, besides the encryption: headers and device frames.

Two conversations meet at the push service, and this module holds the
rules of both, as pure functions (no sockets), so each rule can be tested
on its own:

**The application server's request** (RFC 8030 section 5). Its headers say
how the push service should treat a message:

===========  ==================================================  ===========================
header       meaning                                             refused with 400 when
===========  ==================================================  ===========================
``TTL``      seconds the service may keep the message for an     missing, or not a whole
             offline device; ``0``: deliver now or never         number (digits only)
``Urgency``  ``very-low``, ``low``, ``normal`` (the default),    any other value
             ``high``: lets a device on a low battery take only
             what matters
``Topic``    a name: a newer message with the same topic         longer than 32 characters,
             replaces the stored, undelivered one                or outside ``A-Z a-z 0-9 - _``
===========  ==================================================  ===========================

Header values are compared as RFC 8030's grammar says: the urgency words
case-insensitively (ABNF strings are), the TTL as ASCII digits only.

**The device's connection**. RFC 8030 section 6 lets the user agent
receive messages by HTTP/2 server push; no browser does that. Firefox's
push service (Mozilla autopush) talks to the browser over a WebSocket with
JSON messages; Chrome receives through Firebase Cloud Messaging's own
channel. The kit does what autopush does, in a smaller dialect: JSON text
frames over a WebSocket.

=========================  =========  =============================================
frame                      direction  meaning
=========================  =========  =============================================
``{"type": "push", "id",   service    one message: ``data`` is the ciphertext,
"urgency", "topic",        -> device  base64url (empty for a push without payload)
"data"}``
``{"type": "ack", "id"}``  device     done with it: the service may forget it
                           -> service (RFC 8030 section 6.2)
``{"type": "error",        either     a frame the other side could not use
"error"}``
=========================  =========  =============================================

Which urgencies the device takes travels as RFC 8030 section 5.3 says: an
``Urgency`` header on the request that opens the connection. A device that
changes its mind (its battery runs low) opens a new connection with a new
header, as a user agent re-issues its request in the RFC.

:func:`frame_size` says how many bytes a frame takes on the wire (WebSocket
header included). It is :func:`labkit.push.websocket.frame_size`, the one
RFC 6455 count of the kit: the push service counts its device connections'
frames with it, as the WebSocket server counts its own.

Thread-safety: the functions are pure, except :func:`write_frame`, which
writes on a connection and belongs on the lab loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import tornado.websocket

from labkit.errors import FrameError, RejectedError
from labkit.push.websocket import frame_size

__all__ = ["URGENCIES", "MAX_PAYLOAD", "parse_ttl", "parse_urgency", "parse_topic",
           "urgency_rank", "push_frame", "ack_frame", "error_frame",
           "read_frame", "write_frame", "frame_size", "FrameError"]

URGENCIES = ("very-low", "low", "normal", "high")
"""RFC 8030 section 5.3, least urgent first."""

MAX_PAYLOAD = 4096
"""Bytes of body a push service must accept (RFC 8030 section 7.2); it may refuse more."""

_DIGITS = re.compile(r"[0-9]+")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


def parse_ttl(value: str | None) -> int:
    """The ``TTL`` header as seconds; a 400 :class:`RejectedError` if missing or not digits."""
    if value is None:
        raise RejectedError("missing_ttl", "a push message needs a TTL header (RFC 8030 "
                            "section 5.2): seconds the service may keep it, 0 for 'now or "
                            "never'", status=400)
    value = value.strip()
    if not _DIGITS.fullmatch(value):
        raise RejectedError("bad_ttl", f"TTL must be a whole number of seconds (digits only), "
                            f"got {value[:40]!r}", status=400)
    return int(value)


def parse_urgency(value: str | None, default: str = "normal") -> str:
    """The ``Urgency`` header, lower-cased; ``default`` if absent; 400 if not one of the four."""
    if value is None:
        return default
    word = value.strip().lower()
    if word not in URGENCIES:
        raise RejectedError("bad_urgency", f"Urgency must be one of {', '.join(URGENCIES)} "
                            f"(RFC 8030 section 5.3), got {value[:40]!r}", status=400)
    return word


def parse_topic(value: str | None) -> str | None:
    """The ``Topic`` header, or None; 400 unless 1-32 characters of base64url's alphabet."""
    if value is None:
        return None
    if not _TOPIC.fullmatch(value):
        raise RejectedError("bad_topic", f"Topic must be 1 to 32 characters from A-Z a-z 0-9 "
                            f"'-' '_' (RFC 8030 section 5.4), got {value[:40]!r}", status=400)
    return value


def urgency_rank(urgency: str) -> int:
    """0 for very-low up to 3 for high, so urgencies compare as numbers."""
    return URGENCIES.index(urgency)


# -- the device's connection ---------------------------------------------------------


def push_frame(message_id: str, data: str, urgency: str, topic: str | None) -> str:
    """The frame that carries one message (``data``: base64url ciphertext) to the device."""
    return json.dumps({"type": "push", "id": message_id, "urgency": urgency, "topic": topic,
                       "data": data}, separators=(",", ":"))


def ack_frame(message_id: str) -> str:
    """The device's acknowledgement of one message."""
    return json.dumps({"type": "ack", "id": message_id}, separators=(",", ":"))


def error_frame(message: str) -> str:
    """Tells the other side that a frame it sent could not be used."""
    return json.dumps({"type": "error", "error": message}, separators=(",", ":"))


_FIELDS = {"push": ("id", "urgency", "data"), "ack": ("id",), "error": ("error",)}


def read_frame(text: str | bytes) -> dict:
    """A frame as a dict, after checking its shape; :class:`FrameError` says what is wrong."""
    if not isinstance(text, str):
        raise FrameError("frames are JSON text, not binary")
    try:
        frame = json.loads(text)
    except ValueError:
        raise FrameError(f"a frame must be a JSON object, got {text[:60]!r}") from None
    if not isinstance(frame, dict) or frame.get("type") not in _FIELDS:
        raise FrameError(f"a frame is a JSON object whose type is one of "
                         f"{', '.join(_FIELDS)}, got {text[:60]!r}")
    for name in _FIELDS[frame["type"]]:
        if not isinstance(frame.get(name), str):
            raise FrameError(f"a {frame['type']} frame needs a string {name!r}, "
                             f"got {text[:60]!r}")
    return frame


def write_frame(connection: Any, frame: str) -> bool:
    """Send ``frame`` on a WebSocket (either side's); if the connection has closed, drop it.

    True if the frame was handed to the connection, False if it was dropped.
    Losing a frame that way is safe: an unacknowledged message is sent again
    on the next connection, and a lost ack makes it come again.
    """
    try:
        connection.write_message(frame).add_done_callback(_taken)
    except tornado.websocket.WebSocketClosedError:
        return False
    return True


def _taken(future: asyncio.Future) -> None:
    """Take a failed write's exception (the connection closed), so nothing logs it."""
    if not future.cancelled():
        future.exception()
