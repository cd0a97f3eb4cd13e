"""Fixtures shared by several test modules."""

import asyncio
import logging
import os

import pytest

from helpers import needs
from labkit import lab

TEST_REDIS_URL = "LABKIT_TEST_REDIS_URL"
"""Where a real Redis server for the tests listens (.ci/redis.sh starts one and sets it)."""


@pytest.fixture(params=["embedded", "real"])
def redis_url(request):
    """Each broker a Redis test runs against: the embedded one (fakeredis, in this
    process) and the real server (:func:`real_redis_url`)."""
    if request.param == "embedded":
        from labkit.redis_queue import EMBEDDED
        return EMBEDDED
    return request.getfixturevalue("real_redis_url")


@pytest.fixture
def real_redis_url():
    """The real Redis server at ``$LABKIT_TEST_REDIS_URL``.

    Without that variable the test is skipped on a developer's machine, but
    fails in CI (``CI`` set), so a CI run can never pass without having
    talked to a real Redis.
    """
    url = os.environ.get(TEST_REDIS_URL, "").strip()
    if url:
        return url
    needs(f"{TEST_REDIS_URL} is not set: run the tests with make test, which starts a "
          f"redis-server when one is installed (scripts/with-redis.sh), or point it at one")


@pytest.fixture
def nothing_goes_wrong_quietly(caplog):
    """Fail the test if anything reached the lab loop's exception handler or a log at
    WARNING or above: background errors must never pass unseen. Modules that serve
    long-lived connections use it for every test (``pytestmark``)."""
    loop = lab.run(asyncio.get_running_loop)
    previous = loop.get_exception_handler()
    seen = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    loop.set_exception_handler(previous)
    assert seen == []
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
