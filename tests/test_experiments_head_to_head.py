"""Lesson 09's experiments over real loopback sockets: the same events by six techniques, the
notes' table as HTML, who still delivers once the pages close, the notes' four examples (the
weather app's wait against its interval) and the scaling runs with the clients in a process."""

import matplotlib.pyplot as plt

from labkit import lab
from labkit.experiments.head_to_head import (PAGES, TECHNIQUES, WEATHER, efficiency,
                                             four_examples, same_feed, scaling_by_technique)


def test_the_same_events_reach_every_receiver_and_only_web_push_and_webhooks_reach_a_closed_app():
    race = same_feed(events=3, rate=20.0, interval=0.2, receivers=1, closed=2, seed=3)
    assert list(race.rows) == list(TECHNIQUES)
    for name, row in race.rows.items():
        assert row.delivered == 3, f"{name} delivered {row.delivered} of 3 while pages were open"
        assert 0 < row.p50 <= row.p99 < 5, f"{name}: latencies {row.p50}, {row.p99}"
        assert row.bytes > 0 and row.requests > 0
    assert race.rows["webpush"].closed == 2 and race.rows["webhook"].closed == 2
    assert [race.rows[n].closed for n in ("polling", "long-polling", "sse", "websocket")] == \
        [0, 0, 0, 0]
    assert race.trace.count("request", "sse") == 1 and race.rows["sse"].held == 1
    # Web Push's bytes are the trace's, its phone's frames included (on its disconnect record)
    (phone,) = race.trace.records(kind="disconnect", technique="webpush")
    assert phone.bytes > 0 and phone.events == 5  # 3 pushes with the page open, 2 after
    assert race.rows["webpush"].bytes == race.trace.bytes_per_event("webpush")
    assert race.rows["polling"].held == 0
    assert lab.running_servers() == []

    table = race.table()
    html = table._repr_html_()
    assert html.count("<tr>") == 1 + len(TECHNIQUES)
    assert "Very High" in html and "❌ (delayed)" in html and "&lt;" not in str(table)
    assert "2 of 2" in str(table) and "0 of 2" not in str(table).split("\n")[5]


def test_efficiency_counts_each_page_technique_on_the_same_rare_then_frequent_events():
    eff = efficiency(seed=2)
    for what in (eff.requests, eff.bytes):
        assert list(what) == ["rare", "frequent"]
        assert all(list(what[case]) == list(PAGES) and all(v > 0 for v in what[case].values())
                   for case in what)
    rare, frequent = eff.requests["rare"], eff.requests["frequent"]
    assert rare["polling"] > 5 * rare["long-polling"]  # a poll every 5 s, an event a minute
    assert frequent["polling"] < frequent["long-polling"]  # 40 events a second
    assert rare["sse"] == rare["websocket"] == 1 / 3  # one request for the 3 events
    assert lab.running_servers() == []


def test_the_weather_app_waits_about_half_its_interval_and_the_pushes_milliseconds():
    examples = four_examples(seed=2)
    weather, interval = examples.rows["weather app"], WEATHER["interval"]
    assert interval / 4 < weather.p50 < 3 * interval / 4, weather
    assert weather.p50 <= weather.p99 < 2 * interval, weather
    for product in ("simple chat", "cricket score", "delivery alert"):
        row = examples.rows[product]
        assert 0 < row.p50 <= row.p99 < 1 and row.bytes > 0, row
    assert lab.running_servers() == []


def test_scaling_by_technique_measures_each_count_with_the_clients_in_another_process():
    grow = scaling_by_technique((1, 3), names=("polling", "sse"), seed=2)
    assert list(grow.rows) == ["polling", "sse"]
    assert [r["clients"] for r in grow.rows["sse"]] == [1, 3]
    assert all(r["complete"] and r["load"] == "process" for t in grow.rows.values() for r in t)
    assert grow.largest["sse"]["requests"] == 3 and grow.largest["sse"]["deliveries"] == 9
    assert grow.largest["polling"]["requests"] >= 3
    figure = grow.figure()
    assert [len(ax.lines) for ax in figure.axes] == [2, 2, 2]
    assert "1 to 3 clients" in figure._suptitle.get_text()
    plt.close(figure)
    assert lab.running_servers() == []
