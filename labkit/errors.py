"""The one exception family of labkit.

Every error the kit raises on purpose is a :class:`LabkitError`, so a student
can catch them all with one ``except``. Each message says what went wrong and
what to do next, because a stack trace from deep inside tornado teaches
nothing.
"""

from __future__ import annotations

__all__ = [
    "LabkitError",
    "PortInUseError",
    "LabLoopError",
    "RejectedError",
    "SignatureError",
    "DeliveryError",
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


class RejectedError(LabkitError):
    """A receiver refused an incoming request.

    ``status`` is the HTTP status the receiver answers with, ``reason`` a
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
