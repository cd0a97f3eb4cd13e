"""Tests for labkit.webhooks.backoff: the AWS formulas, fixed schedules, Retry-After."""

import os
import random
import time
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from labkit.errors import LabkitError
from labkit.webhooks.backoff import (
    NO_RETRY,
    SVIX,
    DecorrelatedJitter,
    EqualJitter,
    Exponential,
    FixedSchedule,
    FullJitter,
    PolicyError,
    parse_retry_after,
)

DRAWS = 2000
JITTERED = [FullJitter, EqualJitter, DecorrelatedJitter]


def many(policy, draws=DRAWS):
    """``draws`` delay lists from one seeded generator."""
    rng = random.Random(1234)
    return [policy.delays(rng) for _ in range(draws)]


# -- exponential family ------------------------------------------------------


def test_exponential_exact_values_and_cap():
    assert Exponential(base=1, cap=60, retries=8).delays(random.Random(0)) == [
        1, 2, 4, 8, 16, 32, 60, 60]
    assert Exponential(base=0.5, cap=100, retries=4).delays(random.Random(0)) == [0.5, 1, 2, 4]


def test_exponential_ignores_the_rng():
    policy = Exponential()
    assert policy.delays(random.Random(1)) == policy.delays(random.Random(2))


def test_defaults_and_names():
    for cls, name in [(Exponential, "exponential"), (FullJitter, "full_jitter"),
                      (EqualJitter, "equal_jitter"), (DecorrelatedJitter, "decorrelated_jitter")]:
        policy = cls()
        assert (policy.name, policy.base, policy.cap, policy.retries) == (name, 1.0, 60.0, 8)
        assert len(policy.delays(random.Random(0))) == 8


def test_full_jitter_stays_within_zero_and_the_ceiling():
    policy = FullJitter(base=1, cap=20, retries=8)
    runs = many(policy)
    for attempt in range(8):
        ceiling = min(20, 2**attempt)
        waits = [run[attempt] for run in runs]
        assert all(0 <= w <= ceiling for w in waits)
        # spread across the whole range, not bunched at one end
        assert min(waits) < 0.05 * ceiling and max(waits) > 0.95 * ceiling


def test_equal_jitter_stays_within_half_and_the_ceiling():
    policy = EqualJitter(base=1, cap=20, retries=8)
    runs = many(policy)
    for attempt in range(8):
        temp = min(20, 2**attempt)
        waits = [run[attempt] for run in runs]
        assert all(temp / 2 <= w <= temp for w in waits)
        assert min(waits) < 0.55 * temp and max(waits) > 0.95 * temp


def test_decorrelated_jitter_stays_within_base_and_cap():
    policy = DecorrelatedJitter(base=2, cap=30, retries=10)
    runs = many(policy)
    assert all(2 <= w <= 30 for run in runs for w in run)
    # each wait is drawn from [base, 3 * previous] before capping
    for run in runs:
        previous = 2
        for w in run:
            assert w <= min(30, 3 * previous)
            previous = w
    assert any(w == 30 for run in runs for w in run)        # the cap is reached


def test_decorrelated_jitter_first_wait_is_between_base_and_three_base():
    waits = [run[0] for run in many(DecorrelatedJitter(base=1, cap=60, retries=1))]
    assert all(1 <= w <= 3 for w in waits)


@pytest.mark.parametrize("cls", JITTERED + [Exponential])
def test_same_seed_same_delays(cls):
    policy = cls(base=0.5, cap=30, retries=6)
    assert policy.delays(random.Random(7)) == policy.delays(random.Random(7))


@pytest.mark.parametrize("cls", JITTERED)
def test_different_seed_different_delays(cls):
    policy = cls(base=0.5, cap=30, retries=6)
    assert policy.delays(random.Random(7)) != policy.delays(random.Random(8))


def test_zero_retries_gives_no_delays():
    for cls in JITTERED + [Exponential]:
        assert cls(retries=0).delays(random.Random(0)) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"base": -1}, "base"),
    ({"base": 0}, "base"),
    ({"base": float("nan")}, "base"),
    ({"base": 10, "cap": 5}, "cap"),
    ({"cap": float("inf")}, "cap"),
    ({"retries": -1}, "retries"),
    ({"retries": 2.5}, "retries"),
])
@pytest.mark.parametrize("cls", JITTERED + [Exponential])
def test_exponential_family_rejects_bad_arguments(cls, kwargs, message):
    with pytest.raises(PolicyError, match=message):
        cls(**kwargs)


def test_policy_error_is_a_labkit_error_and_a_value_error():
    assert issubclass(PolicyError, LabkitError)
    assert issubclass(PolicyError, ValueError)


def test_repr_is_readable():
    assert repr(FullJitter(base=0.5, cap=10, retries=3)) == (
        "FullJitter(base=0.5, cap=10, retries=3)")
    assert repr(SVIX).startswith("FixedSchedule([5.0, 300.0")


# -- fixed schedules ---------------------------------------------------------


def test_fixed_schedule_without_jitter_is_exact():
    policy = FixedSchedule([1, 2, 3])
    assert policy.retries == 3 and policy.name == "fixed"
    assert policy.delays(random.Random(0)) == [1, 2, 3]


def test_fixed_schedule_accepts_zero_and_sub_second_waits():
    policy = FixedSchedule([0, 0.25, 0.5, 1])
    assert policy.nominal == (0.0, 0.25, 0.5, 1.0)
    assert policy.delays(random.Random(0)) == [0.0, 0.25, 0.5, 1.0]
    jittered = FixedSchedule([0, 0.5], jitter=0.2).delays(random.Random(0))
    assert jittered[0] == 0.0 and 0.4 <= jittered[1] <= 0.6


def test_exponential_accepts_sub_second_base_and_a_cap_equal_to_it():
    assert Exponential(base=0.25, cap=0.25, retries=3).delays(random.Random(0)) == [0.25] * 3
    assert Exponential(base=0.1, cap=1, retries=5).delays(random.Random(0)) == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0])


def test_fixed_schedule_jitter_bounds():
    policy = FixedSchedule([10, 100], jitter=0.5)
    for run in many(policy):
        assert 5 <= run[0] <= 15 and 50 <= run[1] <= 150


@pytest.mark.parametrize("kwargs, message", [
    ({"delays": [1, -1]}, "delays"),
    ({"delays": ["5"]}, "delays"),
    ({"delays": [1], "jitter": 1.0}, "jitter"),
    ({"delays": [1], "jitter": -0.1}, "jitter"),
])
def test_fixed_schedule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(PolicyError, match=message):
        FixedSchedule(**kwargs)


def test_svix_is_the_published_schedule():
    assert SVIX.name == "svix"
    assert SVIX.retries == 7
    assert SVIX.jitter == 0.2
    assert SVIX.nominal == (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
    # 5 s + 5 min + 30 min + 2 h + 5 h + 10 h + 10 h = 27 h 35 min 5 s
    assert sum(SVIX.nominal) == 27 * 3600 + 35 * 60 + 5 == 99_305


def test_svix_delays_stay_within_twenty_percent():
    runs = many(SVIX)
    for run in runs:
        assert len(run) == 7
        for wait, nominal in zip(run, SVIX.nominal):
            assert 0.8 * nominal <= wait <= 1.2 * nominal
    assert SVIX.delays(random.Random(5)) == SVIX.delays(random.Random(5))


@pytest.mark.parametrize("policy", [SVIX, FixedSchedule([10, 100], jitter=0.5)],
                         ids=["svix", "fixed-50%"])
def test_fixed_schedule_jitter_really_spreads_the_waits(policy):
    """The jitter spreads each wait over the whole band, not to one fixed value."""
    runs = many(policy)
    low, high = 1 - policy.jitter, 1 + policy.jitter
    for attempt, nominal in enumerate(policy.nominal):
        ratios = [run[attempt] / nominal for run in runs]
        assert all(low <= r <= high for r in ratios)
        band = high - low
        assert min(ratios) < low + 0.02 * band and max(ratios) > high - 0.02 * band
        assert len(set(ratios)) == len(ratios)           # 2000 draws, no two alike
        # Centred on the nominal wait: the mean of 2000 draws is within 2 % of it.
        assert sum(ratios) / len(ratios) == pytest.approx(1, abs=0.02)


@pytest.mark.parametrize("policy", [SVIX, FixedSchedule([10, 100], jitter=0.5)],
                         ids=["svix", "fixed-50%"])
def test_fixed_schedule_seed_decides_the_jitter(policy):
    assert policy.delays(random.Random(5)) == policy.delays(random.Random(5))
    first, other = policy.delays(random.Random(5)), policy.delays(random.Random(6))
    assert all(a != b for a, b in zip(first, other))


def test_no_retry():
    assert NO_RETRY.retries == 0
    assert NO_RETRY.delays(random.Random(0)) == []


# -- Retry-After -------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 20, tzinfo=timezone.utc).timestamp()


@pytest.fixture(params=["UTC0", "<+0530>-5:30", "<-10>10"], ids=["utc", "utc+5:30", "utc-10"])
def machine_zone(request):
    """Run the test with the machine's local time zone set to each of a few zones.

    HTTP-dates are UTC whatever the machine's zone, so the answers must not change.
    POSIX zone strings need no time zone database on the machine.
    """
    saved = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_machine_zone_fixture_really_changes_the_local_zone(machine_zone):
    offsets = {"UTC0": 0, "<+0530>-5:30": -19800, "<-10>10": 36000}
    assert time.timezone == offsets[machine_zone]


@pytest.mark.parametrize("value, expected", [
    ("120", 120.0),
    (" 0 ", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 480.0),
    ("Wed, 21 Oct 2015 07:20:30 -0000", 30.0),       # no zone: taken as UTC
    ("Wed, 21 Oct 2015 07:20:30 +0000", 30.0),
    ("Wed, 21 Oct 2015 09:20:30 +0200", 30.0),       # a zone offset is honoured
    ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),          # in the past: go now
])
def test_retry_after_both_forms_in_any_machine_zone(value, expected, machine_zone):
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize("value", [
    None, "", "soon", "-5", "1.5", "12 s", "Wed, 32 Oct 2015 07:28:00 GMT",
])
def test_retry_after_garbage_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


def test_retry_after_date_defaults_to_the_current_time():
    soon = datetime.fromtimestamp(
        datetime.now(timezone.utc).timestamp() + 3600, timezone.utc).replace(microsecond=0)
    wait = parse_retry_after(format_datetime(soon, usegmt=True))
    assert 3590 <= wait <= 3600
