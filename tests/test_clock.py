"""Tests for labkit.clock: conversions, now() and sleep() on a compressed clock."""

import asyncio
import time

import pytest

from labkit.clock import REAL_TIME, Clock, ClockError
from labkit.errors import LabkitError


def test_conversions_use_speedup():
    clock = Clock(speedup=3600)
    assert clock.speedup == 3600.0
    assert clock.to_real(7200) == pytest.approx(2.0)
    assert clock.to_sim(0.5) == pytest.approx(1800.0)
    assert clock.to_sim(clock.to_real(123.4)) == pytest.approx(123.4)


def test_default_and_real_time_run_at_real_speed():
    assert Clock().speedup == 1.0
    assert REAL_TIME.speedup == 1.0
    assert REAL_TIME.to_real(2.5) == 2.5


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "fast", None])
def test_rejects_impossible_speedup(bad):
    with pytest.raises(ClockError, match="speedup"):
        Clock(speedup=bad)


def test_clock_error_is_a_labkit_error_and_a_value_error():
    assert issubclass(ClockError, LabkitError)
    assert issubclass(ClockError, ValueError)


def test_now_starts_near_zero_and_runs_fast():
    clock = Clock(speedup=1000)
    assert 0 <= clock.now() < 50           # < 50 ms real since creation
    time.sleep(0.02)
    assert 20 <= clock.now() < 500         # 20 ms real is 20 s simulated


def test_now_is_monotonic():
    clock = Clock(speedup=10)
    readings = [clock.now() for _ in range(1000)]
    assert readings == sorted(readings)


def test_sleep_waits_the_real_equivalent():
    clock = Clock(speedup=100)

    async def main():
        t0 = time.monotonic()
        await clock.sleep(5)               # 5 simulated s = 50 ms real
        return time.monotonic() - t0

    elapsed = asyncio.run(main())
    assert 0.045 <= elapsed < 0.5
    assert clock.now() >= 5


def test_sleep_of_zero_or_negative_just_yields():
    async def main():
        t0 = time.monotonic()
        await Clock(speedup=2).sleep(0)
        await Clock(speedup=2).sleep(-10)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 0.1


def test_repr_shows_speedup():
    assert repr(Clock(speedup=3600)) == "Clock(speedup=3600)"
