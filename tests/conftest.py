"""Fixtures shared by several test modules."""

import os

import pytest

TEST_REDIS_URL = "LABKIT_TEST_REDIS_URL"
"""Where a real Redis server for the tests listens (.ci/redis.sh starts one and sets it)."""


@pytest.fixture(params=["embedded", "real"])
def redis_url(request):
    """Each broker a Redis test runs against: the embedded one (fakeredis, in this
    process) and the real server at ``$LABKIT_TEST_REDIS_URL``.

    Without that variable the real-server case is skipped on a developer's
    machine, but fails in CI (``CI`` set), so a CI run can never pass
    without having talked to a real Redis.
    """
    if request.param == "embedded":
        from labkit.redis_queue import EMBEDDED
        return EMBEDDED
    url = os.environ.get(TEST_REDIS_URL, "").strip()
    if url:
        return url
    message = (f"{TEST_REDIS_URL} is not set: run the tests through .ci/redis.sh, which "
               f"starts a redis-server, or point it at a running one")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
