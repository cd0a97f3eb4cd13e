"""Lesson 07's experiments over real loopback sockets: each returns what really happened."""

import json

import matplotlib
import pytest

from labkit import lab
from labkit.errors import LabkitError
from labkit.experiments import sse as x
from labkit.feed import Feed
from labkit.push.sse_protocol import MessageEvent, parse

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    assert lab.running_servers() == []


def drawn(fig):
    """The figure has axes with something on them; closed afterwards."""
    import matplotlib.pyplot as plt
    try:
        assert fig.axes and all(ax.has_data() for ax in fig.axes)
    finally:
        plt.close(fig)


# -- the match ----------------------------------------------------------------------------


def test_an_innings_is_seeded_and_keeps_score():
    one, two = x.Innings(seed=3), x.Innings(seed=3)
    balls = [one.next_ball() for _ in range(12)]
    assert balls == [two.next_ball() for _ in range(12)]
    assert balls != [x.Innings(seed=4).next_ball() for _ in range(12)]
    runs = sum(payload["runs"] for _, payload in balls)
    wickets = sum(kind == "wicket" for kind, _ in balls)
    assert one.score == f"IND {runs}/{wickets} (2.0 ov)"
    assert [p["over"] for _, p in balls[:7]] == ["0.1", "0.2", "0.3", "0.4", "0.5", "1.0", "1.1"]
    assert balls[-1][1]["score"] == f"{runs}/{wickets}"


def test_an_innings_ends_after_twenty_overs():
    innings = x.Innings(seed=1)
    innings.balls = 120
    with pytest.raises(LabkitError, match="the innings is over"):
        innings.next_ball()


def test_the_scoreboard_shows_the_last_ball_and_skips_a_gap():
    event = x.Innings(seed=1).bowl(Feed(seed=1))
    ball = MessageEvent("ball", event.to_json(), "1")
    gap = MessageEvent("gap", json.dumps({"missed": 3, "from": 2, "to": 4}), "4")
    assert x.scoreboard([ball, gap]) == f"IND {event.payload['score']} (0.1 ov)"
    assert x.scoreboard([]) == "IND 0/0 (0.0 ov)"


# -- the experiments ------------------------------------------------------------------------


def test_first_bytes_are_a_real_stream_the_parser_reads_whole_or_byte_by_byte():
    first = x.first_bytes(heartbeat=0.05)
    assert first.head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/event-stream\r\n" in first.head
    assert b"Transfer-Encoding: chunked\r\n" in first.head
    assert first.stream.startswith(b"retry: 2000\n\n") and first.retry == 2000
    assert first.stream.endswith(b": heartbeat\n")
    assert len(first.wire) > len(first.stream)          # the chunk framing
    assert [e.type for e in first.events] == ["ball", "ball", "message"]
    assert [e.last_event_id for e in first.events] == ["1", "2", "3"]
    assert first.events[2].data.count("\n") == 1 and b"\ndata: IND " in first.stream
    assert first.one_byte_at_a_time == first.events
    notes = first.annotated().splitlines()
    assert len(notes) == first.stream.count(b"\n")
    assert notes[0].startswith("retry: 2000") and "reconnect" in notes[0]


def test_live_score_one_request_per_fan_and_every_ball_on_every_page():
    live = x.live_score(fans=2, balls=20, rate=500.0)
    assert live.requests == 2
    assert live.received == {"fan-1": list(range(1, 21)), "fan-2": list(range(1, 21))}
    assert set(live.boards.values()) == {live.score}
    assert live.trace.count("event", "sse") == 40
    assert 0 < live.latency[50] < 1.0 and live.bytes_per_event > 0
    assert len(live.worm) == 21 and live.worm[-1][0] == pytest.approx(20 / 6)
    drawn(live.figure())


def test_live_score_with_drops_costs_a_request_per_fan_per_drop_and_loses_nothing():
    live = x.live_score(fans=2, balls=20, rate=500.0, drops=2)
    assert live.requests == 2 * 3
    assert all(ids == list(range(1, 21)) for ids in live.received.values())
    assert live.trace.count("retry", "sse") == 2 * 2


def test_few_events_reach_both_pages_over_one_request_each():
    few = x.few_events(count=3, rate=40.0)
    assert few.requests == {"sse": 1, "websocket": 1}
    assert few.trace.count("event", "sse") == few.trace.count("event", "websocket") == 3
    assert all(0 < value < 1 for value in few.latency.values())
    drawn(few.figure())


def test_after_a_restart_sse_resumes_with_last_event_id_and_a_plain_websocket_does_not():
    run = x.server_restart(before=3, while_down=2, after=2, down=0.3)
    assert run.published == list(range(1, 8)) and run.down == [4, 5]
    assert run.received == {"fan": run.published, "app": run.published,
                            "browser": [1, 2, 3]}
    first, again = run.asked
    assert first[1].get("Last-Event-ID") is None and again[1]["Last-Event-ID"] == "3"
    assert run.resumed.count("resuming after id 3") == 1
    assert run.failed_attempts >= 1
    drawn(run.figure())


def test_a_gap_reports_what_left_the_history_and_the_rest_follows():
    gap = x.lost_in_the_gap(history=10, seen=5, bowled=25)
    assert gap.gap == {"missed": 10, "from": 6, "to": 15} and gap.missed == 10
    assert gap.after == list(range(16, 26)) and gap.asked_with == "5"
    whole = x.lost_in_the_gap(history=100, seen=5, bowled=25)
    assert whole.gap is None and whole.missed == 0 and whole.after == list(range(6, 26))
    with pytest.raises(LabkitError, match="seen"):
        x.lost_in_the_gap(seen=0)


def test_a_204_and_a_wrong_content_type_stop_the_client_for_good():
    over, not_a_stream = x.ended_for_good(wait=0.2)
    assert over["requests"] == 2 and "204" in over["failure"]
    assert over["ended"][0] == "the server ended the stream"
    assert not_a_stream["requests"] == 1 and "application/json" in not_a_stream["failure"]
    assert not over["running"] and not not_a_stream["running"]
    table = x.Ended([over, not_a_stream]).table()
    assert table.count("stopped for good") == 2


def test_a_browser_with_three_connections_per_host_queues_the_fourth_tab():
    tabs = x.browser_tabs(tabs=4, per_host=3)
    assert tabs.open_while_full == ["tab-1", "tab-2", "tab-3"]
    assert tabs.requests_while_full == 3 and tabs.waiting_got == 0
    assert tabs.got_ball == {"tab-1": True, "tab-2": True, "tab-3": True, "tab-4": False}
    assert tabs.trace.count("request", "sse") == 4 and tabs.waited < 5
    shown = {(r.client, r.event_id[-8:]) for r in tabs.trace.records(kind="event")}
    assert len(shown) == 6 and {c for c, _ in shown} == {"tab-1", "tab-2", "tab-3", "tab-4"}
    drawn(tabs.figure())


def test_a_fan_that_stops_reading_is_dropped_holding_at_most_one_write():
    slow = x.slow_fan()
    assert slow.drop.client == "asleep" and "not reading" in slow.drop.detail
    assert 0 < slow.most_held <= slow.max_buffer + slow.frame
    assert slow.kernel_took < slow.published and slow.healthy_complete


def test_against_websocket_every_number_comes_from_the_trace():
    against = x.against_websocket(events=5, messages=4)
    assert against.status == {"sse": 200, "websocket": 101}
    assert against.back_requests == {"sse": 4, "websocket": 0}
    assert 0 < against.back["websocket"] < against.back["sse"]
    assert all(value > 0 for value in (*against.setup.values(), *against.per_event.values()))
    [event] = parse(against.frames["sse"])
    assert event.type == "ball" and event.last_event_id == "1"
    frame = against.frames["websocket"]
    assert frame[0] == 0x81 and json.loads(frame[4:])["id"] == 1  # FIN + text, 126: 2-byte len
    assert "| bytes per event |" in against.table()
    drawn(against.figure())


def test_an_http_only_proxy_carries_the_stream_but_not_the_websocket():
    proxy = x.through_a_proxy(events=3)
    assert proxy.sse_got == [1, 2, 3]
    assert proxy.ws_opened == 0 and "400" in proxy.ws_failure
    assert proxy.trace.count("request", "relay") >= 2


def test_at_scale_one_connection_and_one_request_per_client():
    scale = x.at_scale(clients=(1, 3), events=3, rate=100.0, traced=1)
    for technique in ("sse", "websocket"):
        for count in (1, 3):
            row = scale.row(technique, count)
            assert row["complete"] and row["requests"] == count
            assert row["connections"] in (None, count)
        assert scale.row(technique, 1)["memory (bytes)"] > 0  # traced: up to one client
        assert scale.row(technique, 3)["memory (bytes)"] is None
    assert scale.longer["clients"] == 3 and scale.longer["events"] == 15
    assert scale.longer["requests"] == 3 and scale.longer["complete"]
    drawn(scale.figure())


def test_pros_and_cons_carries_this_runs_numbers():
    live = x.live_score(fans=2, balls=10, rate=500.0)
    restart = x.server_restart(before=2, while_down=1, after=1, down=0.2)
    against = x.against_websocket(events=3, messages=3)
    proxy = x.through_a_proxy(events=2)
    table = x.pros_and_cons(live, restart, against, proxy)
    assert table.count("\n") == 7
    assert f"**{against.setup['sse']} B**" in table and f"**{live.requests} requests**" in table
