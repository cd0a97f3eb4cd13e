"""The trace: one thread-safe record of what crossed the wire, with its summaries."""

import csv
import io
import json
import math
import threading
import time
from types import SimpleNamespace

import pytest

from labkit.trace import Record, Trace


def sample() -> Trace:
    trace = Trace()
    t0 = trace.t0
    for i, events in enumerate([0, 0, 1, 0]):
        trace.add("request", technique="polling", client="c1", t=t0 + i, bytes=100)
        trace.add("response", technique="polling", client="c1", t=t0 + i + 0.01, bytes=150,
                  status=200, duration=0.01, events=events)
    trace.add("request", technique="long-polling", client="c1", t=t0, bytes=100)
    trace.add("response", technique="long-polling", client="c1", t=t0 + 2, bytes=150,
              status=200, duration=2.0, events=1)
    for latency in (0.5, 0.1):
        trace.add("event", technique="polling", client="c1", latency=latency, event_id="e")
    trace.add("event", technique="long-polling", client="c1", latency=0.002, event_id="e")
    return trace


def test_counts_by_technique_and_kind():
    trace = sample()
    assert trace.counts() == {
        "polling": {"request": 4, "response": 4, "event": 2},
        "long-polling": {"request": 1, "response": 1, "event": 1},
    }
    assert trace.count("request", "polling") == 4
    assert trace.techniques() == ["polling", "long-polling"]


def test_latency_percentiles_nearest_rank():
    trace = sample()
    assert trace.latency_percentiles("polling", (50, 100)) == {50: 0.1, 100: 0.5}
    assert math.isnan(Trace().latency_percentiles(percentiles=(50,))[50])


def test_bytes_per_event_and_wasted_share():
    trace = sample()
    assert trace.bytes_total("polling") == 4 * 250
    assert trace.bytes_per_event("polling") == 500
    assert trace.bytes_per_event("long-polling") == 250
    assert trace.wasted_share("polling") == 0.75
    assert trace.wasted_share("long-polling") == 0
    assert trace.bytes_per_event("nothing") == math.inf
    assert math.isnan(trace.wasted_share("nothing"))


def test_delivered_measures_latency_from_the_events_creation():
    trace = Trace()
    event = SimpleNamespace(id="evt_1", created=time.monotonic() - 0.25)
    record = trace.delivered(event, technique="sse", client="c9")
    assert record.kind == "event" and record.event_id == "evt_1"
    assert 0.25 <= record.latency < 1.0


def test_unknown_kind_is_refused_with_the_valid_ones_named():
    with pytest.raises(ValueError, match="request, response"):
        Trace().add("sent", technique="x")


def test_concurrent_writers_lose_nothing():
    trace = Trace()

    def write(n):
        for _ in range(n):
            trace.add("request", technique="t", client=threading.current_thread().name)

    threads = [threading.Thread(target=write, args=(2000,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(trace) == 16000


def test_csv_and_json_exports_round_trip():
    trace = sample()
    rows = list(csv.DictReader(io.StringIO(trace.to_csv())))
    assert len(rows) == len(trace)
    assert set(rows[0]) == set(Record._fields)
    data = json.loads(trace.to_json())
    assert len(data) == len(trace)
    assert data[0]["kind"] == "request" and data[0]["t"] == pytest.approx(0.0)


def test_exports_write_files(tmp_path):
    trace = sample()
    trace.to_csv(tmp_path / "trace.csv")
    trace.to_json(tmp_path / "trace.json")
    assert (tmp_path / "trace.csv").read_text().startswith("kind,technique")
    assert len(json.loads((tmp_path / "trace.json").read_text())) == len(trace)


def test_table_shows_the_last_rows_as_html_and_text():
    trace = sample()
    table = trace.table(limit=3)
    assert len(table) == 3
    assert table._repr_html_().count("<tr>") == 4  # header + 3 rows
    assert str(table).splitlines()[0].split()[:3] == ["t", "kind", "technique"]
    assert len(trace.table(limit=0, technique="long-polling")) == 3
    first = trace.table(limit=2, tail=False)
    assert [row["kind"] for row in first.rows] == ["request", "response"]
    assert first.rows[0]["t"] == pytest.approx(0.0)


def test_summary_has_one_row_per_technique():
    rows = sample().summary()
    assert [row["technique"] for row in rows] == ["polling", "long-polling"]
    assert rows[0]["requests"] == 4 and rows[1]["events"] == 1


def test_clear_forgets_everything():
    trace = sample()
    trace.clear()
    assert len(trace) == 0 and trace.counts() == {}


def test_bytes_total_adds_the_frames_a_long_lived_connection_reports_on_disconnect():
    trace = Trace()
    trace.add("request", technique="websocket", client="c", bytes=300)   # the upgrade
    trace.add("response", technique="websocket", client="c", bytes=150)  # the 101
    trace.add("event", technique="websocket", client="c", bytes=40, latency=0.001)
    trace.add("disconnect", technique="websocket", client="c", bytes=1000)  # its frames
    trace.add("request", technique="sse", client="d", bytes=200)
    assert trace.bytes_total("websocket") == 1450  # event payloads are inside the frames
    assert trace.bytes_total() == 1650
    assert trace.bytes_per_event("websocket") == 1450
