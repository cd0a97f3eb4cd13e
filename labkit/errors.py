"""The one exception family of labkit.

Every error the kit raises on purpose is a :class:`LabkitError`, so a student
can catch them all with one ``except``. Where an error is also one of
Python's own kinds (a bad argument, a wait that ran out), it is an instance
of that built-in too, as in ``requests``: ``except ValueError`` and ``except
TimeoutError`` keep working for code that never heard of labkit. Each message
says what went wrong and what to do next, because a stack trace from deep
inside tornado teaches nothing.
"""

from __future__ import annotations

__all__ = [
    "LabkitError",
    "PortInUseError",
    "LabLoopError",
    "WaitTimeout",
    "UsageError",
    "RejectedError",
    "SignatureError",
    "DeliveryError",
    "ClockError",
    "FeedError",
    "PolicyError",
    "RecordKindError",
    "UnknownTechniqueError",
    "CursorError",
    "HubError",
    "ExerciseNotYet",
    "EventStreamError",
    "BrokerUnavailable",
    "QueueError",
    "HubClosedError",
    "DecryptError",
    "DeviceError",
    "FrameError",
    "VapidError",
    "SettingError",
    "ProxyMissingError",
]


class LabkitError(Exception):
    """Base of every error labkit raises on purpose."""


class PortInUseError(LabkitError):
    """A server could not bind because another process holds the port."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        super().__init__(
            f"port {port} on {host} is already in use: stop whatever holds it, "
            f"pick another port, or pass port=0 to get a free one"
        )


class LabLoopError(LabkitError):
    """The background lab loop was used in a way that cannot work."""


class WaitTimeout(LabkitError, TimeoutError):
    """A wait (``wait_for``, ``lab.run(timeout=...)``) ran out before what it waited for.

    The message says what did happen, so a student can tell a slow server
    from a wrong URL.
    """


class UsageError(LabkitError, TypeError):
    """A labkit function was given arguments that do not fit together."""


class RejectedError(LabkitError):
    """A server refused an incoming request.

    ``status`` is the HTTP status the server answers with, ``reason`` a
    short machine-readable word (``missing``, ``malformed``, ``mismatch``,
    ``stale``, ``future``, ``forbidden``, ``too_large`` ...) so rejections can
    be counted by cause; the message is the human explanation.
    """

    status = 400

    def __init__(self, reason: str, message: str, status: int | None = None):
        self.reason = reason
        if status is not None:
            self.status = status
        super().__init__(message)


class SignatureError(RejectedError):
    """A webhook signature is missing, malformed, stale or does not match."""

    status = 401


class DeliveryError(LabkitError):
    """A webhook could not be delivered (used by senders and their logs)."""


class ClockError(LabkitError, ValueError):
    """A clock was created with an impossible speedup."""


class FeedError(LabkitError, ValueError):
    """An event, feed or schedule was asked for with impossible arguments."""


class PolicyError(LabkitError, ValueError):
    """A retry policy was given impossible arguments."""


class RecordKindError(LabkitError, ValueError):
    """A trace record kind that the trace does not know (see ``labkit.trace.KINDS``)."""


class UnknownTechniqueError(LabkitError, ValueError):
    """A technique name that is not in the kit's table (see ``labkit.techniques``)."""


class CursorError(RejectedError, ValueError):
    """A cursor (``?after=``, ``Last-Event-ID``) that is not a position in the hub.

    Servers answer it with 400 and this message.
    """

    status = 400

    def __init__(self, message: str):
        super().__init__("bad_cursor", message)


class HubError(LabkitError, ValueError):
    """A hub was given an impossible history size, limit or wait."""


class HubClosedError(LabkitError):
    """The hub was closed (its server stopped) while a client waited on it, or before a publish."""


class ExerciseNotYet(LabkitError, AssertionError):
    """An exercise's answer is not right yet; the message says what is wrong and hints at why."""


class EventStreamError(LabkitError, ValueError):
    """SSE was asked for something it cannot do: an id with a line break, a negative retry,
    a stream with a heartbeat of 0 s, a client for a URL that is not ``http://``."""


class BrokerUnavailable(LabkitError, ConnectionError):
    """Nobody answers at the message broker's URL; the message says where and what to do."""


class QueueError(LabkitError, ValueError):
    """A queue, group or consumer was given impossible arguments (a bad name, batch, URL)."""


class DecryptError(RejectedError, ValueError):
    """A body that is not a valid aes128gcm Web Push message (a push service answers 400)."""

    status = 400


class DeviceError(LabkitError):
    """The device could not do what it was asked (not subscribed, refused, gone...)."""


class FrameError(LabkitError, ValueError):
    """A device-connection frame that is not one of the three kinds (see the module)."""


class VapidError(RejectedError):
    """A push request whose VAPID authorization is absent (401) or invalid (403)."""

    status = 403


class SettingError(LabkitError, ValueError):
    """A setting (an environment variable such as ``LABKIT_BROWSER_URL``, or the function
    that sets it) has a value labkit does not understand; the message lists the good ones."""


class ProxyMissingError(LabkitError, ImportError):
    """A link must go through ``jupyter-server-proxy``, which this Python cannot import."""
