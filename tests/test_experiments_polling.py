"""Lesson 06's experiments over real loopback sockets, small and fast: what each returns
is what the lesson asserts on."""

import math

import matplotlib
import pytest

from labkit import lab
from labkit.errors import LabkitError
from labkit.experiments import polling as lesson
from labkit.experiments.start import timeline_marks
from labkit.push.polling import LongPollingClient
from labkit.wire import LEFT_EARLY

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")
    assert lab.running_servers() == []


def test_plain_http_the_page_learns_of_news_only_when_it_asks_again():
    ask = lesson.ask_and_wait(news_at=0.1, ask_again_at=0.3)
    trace = ask.trace
    assert trace.count("request", "http") == 2 and trace.count("response", "http") == 2
    assert ask.asked[0] < ask.news < ask.asked[1]
    assert ask.to_page_meanwhile() == []
    assert ask.waited >= ask.asked[1] - ask.news > 0.1
    assert [r.client for r in trace.records(kind="event")] == [lesson.PAGE] * 2
    marks = timeline_marks(ask.figure().axes[0])
    assert marks["event created"] == 2 and marks["request"] == 2


@pytest.fixture(scope="module")
def weather():
    return lesson.weather_app(hours=4, intervals=(10, 60), phones=2, speedup=28800, story=10,
                              seed=6)


@pytest.fixture(scope="module")
def chat():
    return lesson.chat(pause=0.4, burst=4, seed=6)


@pytest.fixture(scope="module")
def same():
    return lesson.same_events(events=3, rate=5, interval=0.05, seed=6)


@pytest.fixture(scope="module")
def scale():
    return lesson.clients_at_scale((1, 3), events=2, rate=10, interval=0.2, load="inline")


def test_the_weather_app_measures_every_interval_beside_the_theory(weather):
    assert set(weather.intervals) == {10, 60} and weather.updates >= 1
    for minutes, interval in weather.intervals.items():
        assert len(interval.delays) == 2 * weather.updates  # every phone, every forecast
        assert interval.polls == pytest.approx(2 * 4 * 60 / minutes, rel=0.2)
        assert 0 <= interval.empty <= interval.polls and interval.skipped >= 0
        assert interval.due_per_update == pytest.approx(
            (interval.polls + interval.skipped) / 2 / weather.updates)
        assert interval.expected_wasted == pytest.approx(
            math.exp(-weather.updates / 4 * minutes / 60))
        assert interval.expected_polls_per_update == pytest.approx(
            4 * 60 / minutes / weather.updates)
        assert min(interval.delays) >= 0
        assert interval.standard_error == pytest.approx(
            interval.seconds / math.sqrt(12 * len(interval.delays)))
    responses = weather.trace.records(kind="response")
    assert {r.technique for r in responses} == {"polling: every 10 min", "polling: every 60 min"}
    assert weather.slack > 0 and weather.round_trip < 1.0
    assert weather.missed_polls() == 0  # every forecast came with its phone's next poll
    assert len(weather.polls_of("phone 1")) == pytest.approx(4 * 60 / 10, abs=2)
    assert weather.table().count("\n") == 3  # a header, a rule and a row per interval
    assert "| ticks skipped |" in weather.table()
    fig = weather.figure()
    lanes = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert lanes == ["events happen", "server (every 10 min)", "phone 1 (weather app)"]
    assert len(fig.axes[1].patches) == weather.updates  # a staleness bar per forecast
    assert len(weather.tradeoff_figure().axes) == 2


def test_the_weather_app_needs_its_story_among_the_intervals():
    with pytest.raises(LabkitError, match="story"):
        lesson.weather_app(intervals=(5, 20), story=10)


def test_the_chat_delivers_a_burst_in_one_answer_and_ends_held_requests_cleanly(chat):
    trace = chat.trace
    sent = [e.id for e in chat.sent]
    assert chat.received["ben"] == tuple(sent)  # all of them, in order, none twice
    assert chat.received["ana"] == tuple(sent[:-1])  # she left before the last one
    assert chat.held_at_burst == (1, 1, 1, 1)  # only ana's request was held
    answered, asked_again, carried = chat.burst_answer()
    assert all(answered.t < e.created < asked_again.t for e in chat.burst)
    assert carried.events == 4 and carried.status == 200
    assert sorted(chat.latencies("ana"))[len(chat.latencies("ana")) // 2] < 0.1
    left, stopped = chat.left(), chat.stopped()
    assert left.status is None and left.detail == LEFT_EARLY and left.duration > 0.1
    assert stopped.status == 503 and "same cursor" in stopped.detail
    assert not trace.records(kind="connect") and not trace.records(kind="disconnect")
    ax = chat.figure().axes[0]
    bars = {c.get_gid() for c in ax.collections}
    assert "held request" in bars and "open connection" not in bars


def test_a_burst_must_fit_in_the_pause():
    with pytest.raises(LabkitError, match="burst"):
        lesson.chat(pause=0.05, burst=4)


def test_a_long_poll_client_pauses_after_news_and_the_pause_is_checked():
    with pytest.raises(LabkitError):
        LongPollingClient("http://127.0.0.1:1/poll", pause=-1)
    assert LongPollingClient("http://127.0.0.1:1/poll").pause == 0


def test_the_same_events_cost_polling_more_requests_and_long_polling_more_bytes_than_sse(same):
    trace = same.trace
    for technique in ("polling", "long-polling", "sse"):
        assert trace.count("event", technique) == 3
    assert same.requests("sse") == 1
    assert same.requests("polling") > same.requests("long-polling")
    assert same.bytes_per_event("long-polling") > same.bytes_per_event("sse")
    assert same.p50("long-polling") < 0.5
    start, end = same.window
    assert start < end
    assert len(same.figure().axes) == 4


def test_clients_at_scale_counts_held_requests_connections_and_memory(scale):
    assert set(scale.rows) == {(t, n) for t in ("polling", "long-polling") for n in (1, 3)}
    assert scale.get("long-polling", "held") == [1, 3]
    assert scale.get("polling", "held") == [0, 0]
    assert all(row["complete"] for row in scale.rows.values())
    assert scale.get("polling", "requests")[1] > scale.get("polling", "requests")[0]
    assert "| long polling | 3 |" in scale.table()
    assert len(scale.figure().axes) == 8


def test_the_pros_and_cons_table_has_a_verdict_for_each_claim_of_the_notes(weather, chat,
                                                                             same, scale):
    table = lesson.pros_and_cons(weather, chat, same, scale).splitlines()
    assert len(table) == 2 + 6
    assert all(row.endswith(("| true |", "| partly |")) for row in table[2:])
