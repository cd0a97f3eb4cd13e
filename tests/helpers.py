"""Small helpers several test modules share."""

import os
import socket
import time


def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh loopback connection; return all that comes back.

    Bounded: at most 100 reads, each with a ``timeout``; a reset or a timeout
    ends the answer rather than failing, so tests can probe bad input.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while len(chunks) < 100:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def settle(check, what: str, seconds: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        time.sleep(0.005)


def needs(missing: str) -> None:
    """A test that cannot run here because ``missing`` is not installed: skipped on a
    developer's machine, with what to install, but failed in CI (``CI`` set), so a CI
    run can never pass without having run it."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{missing}: CI must run this test, not skip it")
    pytest.skip(missing)
