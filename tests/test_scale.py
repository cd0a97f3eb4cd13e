"""Clients at scale over real loopback sockets: run_clients and scaling for every technique."""

import math
from pathlib import Path

import pytest

from labkit import Clock, lab
from labkit.errors import UnknownTechniqueError, UsageError
from labkit.push.scale import SETUPS, ScaleResult, run_clients, scaling

COUNTED = Path("/proc/net/tcp").exists()
"""Whether this machine lets run_clients count TCP connections."""


pytestmark = pytest.mark.usefixtures("nothing_goes_wrong_quietly")


@pytest.mark.parametrize("technique", sorted(SETUPS))
def test_ten_clients_of_each_technique_each_get_every_event(technique):
    result = run_clients(technique, 10, events=5, rate=20, seed=1, interval=0.1)
    assert isinstance(result, ScaleResult)
    assert result.complete, result.delivered
    assert result.delivered == {f"{technique}-{k:04d}": 5 for k in range(1, 11)}
    assert result.deliveries == 50 and result.trace.count("event", technique) == 50
    assert result.requests >= 10 and result.bytes > 0 and result.server_cpu > 0
    assert result.bytes_per_event == result.bytes / 50
    assert all(0 <= result.latency[p] < 5 for p in (50, 90, 99))
    assert result.peak_held == (0 if technique == "polling" else 10)
    assert result.peak_connections == (10 if COUNTED else None)
    assert result.client_cpu is None and result.load == "inline"
    row = result.row()
    assert row["clients"] == 10 and row["complete"] and row["deliveries"] == 50
    assert row["p99 latency (s)"] == result.latency[99]


def test_polling_makes_more_requests_than_long_polling_for_the_same_events():
    options = dict(events=4, rate=2, seed=2, interval=0.1, schedule="fixed")
    polling = run_clients("polling", 10, **options)
    long_polling = run_clients("long-polling", 10, **options)
    assert polling.complete and long_polling.complete
    assert polling.requests > long_polling.requests
    assert polling.wasted_share > 0.5 and long_polling.wasted_share == 0
    assert polling.bytes_per_event > long_polling.bytes_per_event


def test_websocket_keeps_one_connection_per_client_and_its_frames_are_in_the_bytes():
    result = run_clients("websocket", 10, events=6, rate=20, seed=3)
    trace = result.trace
    assert result.complete
    assert result.requests == 10  # the upgrades, and nothing more however many events
    for k in range(1, 11):
        name = f"websocket-{k:04d}"
        assert len(trace.records(kind="connect", client=name)) == 1
        assert len(trace.records(kind="disconnect", client=name)) == 1
    frames = sum(r.bytes for r in trace.records(kind="disconnect"))
    assert frames > 0
    http = sum(r.bytes for r in trace.records(technique="websocket")
               if r.kind in ("request", "response"))
    assert result.bytes == trace.bytes_total("websocket") == http + frames


def test_a_thousand_long_poll_clients_all_get_one_event():
    result = run_clients("long-polling", 1000, events=1, rate=10, seed=4, timeout=60)
    assert result.complete, sum(1 for n in result.delivered.values() if n == 0)
    assert result.deliveries == 1000
    assert result.peak_held == 1000
    assert result.requests >= 1000
    if COUNTED:
        assert result.peak_connections == 1000
    assert result.memory > 1000 * 1000  # a thousand connections take more than 1 KB each


def test_clients_in_a_separate_process_report_their_deliveries_back():
    result = run_clients("websocket", 20, events=5, rate=20, seed=5, load="process")
    assert result.complete and result.load == "process"
    assert result.client_cpu is not None and result.client_cpu > 0
    events = result.trace.records(kind="event")
    assert len(events) == 100
    assert {r.client for r in events} == {f"websocket-{k:04d}" for k in range(1, 21)}
    assert all(0 <= r.latency < 5 for r in events)  # one clock for both processes


def test_polling_on_a_compressed_clock_in_a_separate_process():
    clock = Clock(speedup=100)  # a 10-second interval is a tenth of a real second
    result = run_clients("polling", 5, events=3, rate=1, seed=6, interval=10, clock=clock,
                         load="process")
    assert result.complete
    assert 0 < result.latency[50] < 5
    assert result.wasted_share > 0


def test_a_run_that_cannot_finish_stops_at_its_bound_and_says_so():
    result = run_clients("polling", 3, events=2, rate=20, interval=100, timeout=1.0)
    assert not result.complete
    assert result.delivered == {f"polling-{k:04d}": 0 for k in range(1, 4)}
    assert 0.9 <= result.seconds < 10
    assert math.isinf(result.bytes_per_event)


def test_a_sweep_returns_one_row_per_number_of_clients():
    rows = scaling("sse", clients=(1, 3), events=3, rate=20, seed=7)
    assert [row["clients"] for row in rows] == [1, 3]
    assert all(row["complete"] and row["technique"] == "sse" for row in rows)
    assert [row["deliveries"] for row in rows] == [3, 9]
    assert all(row["requests"] == row["clients"] and row["held"] == row["clients"]
               for row in rows)


def test_bad_arguments_are_refused_with_a_clear_error():
    with pytest.raises(UnknownTechniqueError, match="long_polling"):
        run_clients("long_polling")
    with pytest.raises(UnknownTechniqueError, match="simulates"):
        run_clients("webhook")
    for bad in ({"clients": 0}, {"clients": True}, {"clients": 10_001}, {"events": 0},
                {"load": "thread"}, {"schedule": "sometimes"}, {"interval": 0},
                {"timeout": -1}, {"clock": 5}):
        with pytest.raises(UsageError):
            run_clients("polling", **{"clients": 1, **bad})
