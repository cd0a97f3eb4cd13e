"""Retry schedules: how long a webhook sender waits before each retry.

When a delivery fails, retrying at once usually fails again, and if many
senders retry in lockstep they knock the receiver over as it recovers (a
"thundering herd"). Two ideas fix this: *backoff* (wait longer after each
failure) and *jitter* (randomise the waits so senders spread out).

A policy has a ``name``, ``retries`` (how many retries follow the first
attempt) and ``delays(rng)``: the waits, in simulated seconds, before retry
1, 2, ... ``retries``. Jittered policies draw from ``rng``, so passing
``random.Random(seed)`` makes a run repeatable.

The exponential family follows the AWS Architecture Blog post "Exponential
Backoff And Jitter" exactly, with ``attempt`` counted from 0:

=====================  ================================================
``Exponential``        ``min(cap, base * 2**attempt)``
``FullJitter``         ``uniform(0, min(cap, base * 2**attempt))``
``EqualJitter``        ``t = min(cap, base * 2**attempt)``; ``t/2 + uniform(0, t/2)``
``DecorrelatedJitter`` ``sleep = min(cap, uniform(base, sleep * 3))``, ``sleep`` starts at ``base``
=====================  ================================================

``FixedSchedule`` is a hand-written list of waits, like the ones webhook
providers publish; ``SVIX`` is Svix's (5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
10 h: about 27.6 hours in all) with ±20 % jitter added by this kit.

A receiver can also ask for a wait with a ``Retry-After`` header;
:func:`parse_retry_after` reads it.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import time
from datetime import timezone

from labkit.errors import PolicyError

__all__ = [
    "PolicyError",
    "Exponential",
    "FullJitter",
    "EqualJitter",
    "DecorrelatedJitter",
    "FixedSchedule",
    "SVIX",
    "NO_RETRY",
    "parse_retry_after",
]


def _check_retries(retries: int) -> None:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise PolicyError(f"retries must be a whole number >= 0, got {retries!r}")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class Exponential:
    """Double the wait after each failure, up to ``cap``; no jitter."""

    name = "exponential"

    def __init__(self, base: float = 1.0, cap: float = 60.0, retries: int = 8):
        if not _is_number(base) or base <= 0:
            raise PolicyError(f"base must be a number of seconds > 0, got {base!r}")
        if not _is_number(cap) or cap < base:
            raise PolicyError(f"cap must be a number of seconds >= base ({base}), got {cap!r}")
        _check_retries(retries)
        self.base = float(base)
        self.cap = float(cap)
        self.retries = retries

    def ceiling(self, attempt: int) -> float:
        """The un-jittered wait before retry ``attempt + 1``: ``min(cap, base * 2**attempt)``."""
        return min(self.cap, self.base * 2**attempt)

    def delays(self, rng: random.Random) -> list[float]:
        """The waits before retry 1 .. ``retries`` (``rng`` is unused: no jitter)."""
        return [self.ceiling(attempt) for attempt in range(self.retries)]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base={self.base:g}, cap={self.cap:g}, "
                f"retries={self.retries})")


class FullJitter(Exponential):
    """Wait a uniformly random time between 0 and the exponential ceiling."""

    name = "full_jitter"

    def delays(self, rng: random.Random) -> list[float]:
        return [rng.uniform(0, self.ceiling(attempt)) for attempt in range(self.retries)]


class EqualJitter(Exponential):
    """Keep half the exponential ceiling, randomise the other half."""

    name = "equal_jitter"

    def delays(self, rng: random.Random) -> list[float]:
        waits = []
        for attempt in range(self.retries):
            temp = self.ceiling(attempt)
            waits.append(temp / 2 + rng.uniform(0, temp / 2))
        return waits


class DecorrelatedJitter(Exponential):
    """Each wait is random between ``base`` and three times the previous one, capped."""

    name = "decorrelated_jitter"

    def delays(self, rng: random.Random) -> list[float]:
        waits = []
        sleep = self.base
        for _ in range(self.retries):
            sleep = min(self.cap, rng.uniform(self.base, sleep * 3))
            waits.append(sleep)
        return waits


class FixedSchedule:
    """A published list of waits, each stretched or shrunk by up to ``jitter``.

    ``FixedSchedule([5, 300], jitter=0.2)`` waits 4-6 s, then 240-360 s.
    The list without jitter is kept as ``nominal``.
    """

    def __init__(self, delays: list[float], jitter: float = 0.0, name: str = "fixed"):
        nominal = tuple(delays)
        if not all(_is_number(d) and d >= 0 for d in nominal):
            raise PolicyError(f"delays must be numbers of seconds >= 0, got {list(nominal)!r}")
        if not _is_number(jitter) or not 0 <= jitter < 1:
            raise PolicyError(
                f"jitter must be a fraction in [0, 1), e.g. 0.2 for ±20 %, got {jitter!r}"
            )
        self.nominal = tuple(float(d) for d in nominal)
        self.jitter = float(jitter)
        self.name = name
        self.retries = len(self.nominal)

    def delays(self, rng: random.Random) -> list[float]:
        """Each nominal wait times ``uniform(1 - jitter, 1 + jitter)``."""
        return [d * rng.uniform(1 - self.jitter, 1 + self.jitter) for d in self.nominal]

    def __repr__(self) -> str:
        return f"FixedSchedule({list(self.nominal)!r}, jitter={self.jitter:g}, name={self.name!r})"


#: Svix's published schedule after the immediate first attempt, ±20 % jitter.
SVIX = FixedSchedule([5, 300, 1800, 7200, 18000, 36000, 36000], jitter=0.2, name="svix")

#: Try once, never retry.
NO_RETRY = FixedSchedule([], name="no_retry")


_DELAY_SECONDS = re.compile(r"[0-9]+")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header, or None.

    RFC 9110 allows two forms: delay-seconds (``"120"``) or an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), which is turned into a wait from
    ``now`` (Unix time, default ``time.time()``); a date in the past means
    0. A missing (None) or unparseable header gives None, so the caller
    falls back to its own policy.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" zone: HTTP-dates are always UTC
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
