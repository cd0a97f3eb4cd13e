"""A compressed clock: play out days of simulated time in seconds.

Retry experiments span long stretches of time (Svix keeps retrying a
webhook for about 27.6 hours), far too long to watch in a notebook. A
:class:`Clock` with a ``speedup`` runs simulated time faster than real time:
with ``speedup=3600`` one real second is one simulated hour, so the whole
Svix schedule plays out in under half a minute.

Code that waits should ask a clock instead of calling ``asyncio.sleep``
directly; then the same code runs in real time (``REAL_TIME``) for a demo and
compressed for an experiment.

Example::

    clock = Clock(speedup=3600)
    await clock.sleep(7200)     # two simulated hours, two real seconds
    clock.now()                 # about 7200.0

The clock reads ``time.monotonic()``, which never jumps when the computer's
wall clock is adjusted, so intervals measured on it are trustworthy.
"""

from __future__ import annotations

import asyncio
import math
import time

from labkit.errors import ClockError

__all__ = ["Clock", "ClockError", "REAL_TIME"]



class Clock:
    """Simulated time that runs ``speedup`` times faster than real time."""

    def __init__(self, speedup: float = 1.0):
        if not isinstance(speedup, (int, float)) or not math.isfinite(speedup) or speedup <= 0:
            raise ClockError(
                f"speedup must be a finite number > 0, got {speedup!r}: "
                f"use 1 for real time, 3600 for one simulated hour per real second"
            )
        self.speedup = float(speedup)
        self._start = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since this clock was created."""
        return self.to_sim(time.monotonic() - self._start)

    def to_real(self, sim_seconds: float) -> float:
        """How many real seconds ``sim_seconds`` of simulated time take."""
        return sim_seconds / self.speedup

    def to_sim(self, real_seconds: float) -> float:
        """How many simulated seconds pass in ``real_seconds`` of real time."""
        return real_seconds * self.speedup

    async def sleep(self, sim_seconds: float) -> None:
        """Wait ``sim_seconds`` of simulated time (like ``asyncio.sleep``, <= 0 just yields)."""
        await asyncio.sleep(max(0.0, self.to_real(sim_seconds)))

    def __repr__(self) -> str:
        return f"Clock(speedup={self.speedup:g})"


#: A shared clock that runs at real speed, the default wherever a clock is optional.
REAL_TIME = Clock()
