"""The trace's summaries, each checked so that a wrong answer cannot pass.

A lesson compares techniques through these numbers (polling against long
polling, webhooks against polling), so every summary is checked here on a
trace that holds two techniques with different answers: a summary that
forgot its technique filter would pool them and fail. Percentiles are
checked against published nearest-rank examples and against many values
with known answers, the records the summaries read (``add``, ``delivered``,
``records``, ``clients``) field by field, and the table and the exports
against their exact text, whatever the machine's locale.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import labkit
from labkit.trace import Trace


def two_techniques() -> Trace:
    """Polling and long polling in one trace, with a different answer to every summary.

    =============  ========  ==========================  ===============  ===============
    technique      requests  responses (events carried)  events (latency)  wire bytes
    =============  ========  ==========================  ===============  ===============
    polling        4         0, 0, 1, 0, and one with    2 (one unknown)  4 * (100 + 150)
                             no status and no count
    long-polling   2         2, 1                        3                2 * (300 + 500)
    =============  ========  ==========================  ===============  ===============

    Plus records that carry bytes, a latency or an event count but are no
    request, response or event, which no summary may count.
    """
    trace = Trace()
    t0 = trace.t0
    for i, carried in enumerate([0, 0, 1, 0]):
        trace.add("request", technique="polling", client="p", t=t0 + i, bytes=100)
        trace.add("response", technique="polling", client="p", t=t0 + i + 0.1, bytes=150,
                  status=200, events=carried)
    trace.add("event", technique="polling", client="p", t=t0 + 2.1, latency=1.5, event_id="a")
    for i, carried in enumerate([2, 1]):
        trace.add("request", technique="long-polling", client="l", t=t0 + i, bytes=300)
        trace.add("response", technique="long-polling", client="l", t=t0 + i + 0.5, bytes=500,
                  status=200, events=carried)
    for i, latency in enumerate([0.003, 0.001, 0.002]):
        trace.add("event", technique="long-polling", client="l", t=t0 + i, latency=latency,
                  event_id=f"b{i}")
    # Records that must never count as requests, responses, latencies or wire bytes.
    trace.add("connect", technique="long-polling", client="l", t=t0, bytes=7)
    trace.add("disconnect", technique="long-polling", client="l", t=t0 + 2, events=0,
              latency=9.0)  # no frames of its own: its bytes are in the responses
    trace.add("retry", technique="polling", client="p", t=t0 + 3, bytes=9)
    trace.add("event", technique="polling", client="p", t=t0 + 3, event_id="no-latency")
    trace.add("response", technique="polling", client="p", t=t0 + 3.5, bytes=0, status=None)
    return trace


# -- per-technique filters: each technique's own answer, and the pooled one --------------


def test_counts_are_per_technique():
    trace = two_techniques()
    polling = {"request": 4, "response": 5, "event": 2, "retry": 1}
    long_polling = {"request": 2, "response": 2, "event": 3, "connect": 1, "disconnect": 1}
    assert trace.counts("polling") == {"polling": polling}
    assert trace.counts("long-polling") == {"long-polling": long_polling}
    assert trace.counts() == {"polling": polling, "long-polling": long_polling}
    assert trace.counts("sse") == {}
    assert (trace.count("request", "polling"), trace.count("request", "long-polling"),
            trace.count("request")) == (4, 2, 6)


def test_records_and_clients_filter_by_kind_technique_and_client():
    trace = two_techniques()
    assert len(trace.records(client="p")) == 12 and len(trace.records(client="l")) == 9
    assert {r.client for r in trace.records(client="l")} == {"l"}
    assert len(trace.records(kind="event", client="p")) == 2
    assert trace.records(kind="event", technique="polling", client="l") == []
    assert trace.clients() == ["p", "l"]
    assert trace.clients("long-polling") == ["l"] and trace.clients("sse") == []


def test_latencies_are_per_technique_and_skip_events_without_one():
    trace = two_techniques()
    assert trace.latencies("polling") == [1.5]
    assert trace.latencies("long-polling") == [0.003, 0.001, 0.002]
    assert trace.latencies() == [1.5, 0.003, 0.001, 0.002]
    assert trace.latencies("sse") == []


def test_latency_percentiles_are_per_technique_and_never_nan_with_data():
    trace = two_techniques()
    assert trace.latency_percentiles("polling") == {50: 1.5, 90: 1.5, 99: 1.5}
    assert trace.latency_percentiles("long-polling") == {50: 0.002, 90: 0.003, 99: 0.003}
    assert trace.latency_percentiles(percentiles=(25, 50, 100)) == {
        25: 0.001, 50: 0.002, 100: 1.5}
    for technique in ("polling", "long-polling", None):
        assert not any(math.isnan(v) for v in trace.latency_percentiles(technique).values())
    nothing = trace.latency_percentiles("sse")
    assert list(nothing) == [50, 90, 99] and all(math.isnan(v) for v in nothing.values())


def test_bytes_total_counts_requests_and_responses_of_one_technique():
    trace = two_techniques()
    assert trace.bytes_total("polling") == 4 * (100 + 150)
    assert trace.bytes_total("long-polling") == 2 * (300 + 500)
    assert trace.bytes_total() == 4 * 250 + 2 * 800          # connect and retry bytes excluded


def test_bytes_per_event_divides_one_techniques_bytes_by_its_own_events():
    trace = two_techniques()
    assert trace.bytes_per_event("polling") == 1000 / 2
    assert trace.bytes_per_event("long-polling") == pytest.approx(1600 / 3)
    assert trace.bytes_per_event() == pytest.approx(2600 / 5)
    assert trace.bytes_per_event("sse") == math.inf


def test_wasted_share_is_per_technique_and_ignores_responses_without_a_count():
    trace = two_techniques()
    assert trace.wasted_share("polling") == 3 / 4             # the status-less response: no count
    assert trace.wasted_share("long-polling") == 0.0
    assert trace.wasted_share() == 3 / 6
    assert math.isnan(trace.wasted_share("sse"))


def test_summary_rows_use_each_techniques_own_figures():
    rows = {row["technique"]: row for row in two_techniques().summary()}
    assert rows["polling"] == {
        "technique": "polling", "requests": 4, "events": 2, "bytes": 1000,
        "bytes/event": 500.0, "p50 latency (s)": 1.5, "p99 latency (s)": 1.5,
        "wasted share": 0.75,
    }
    assert rows["long-polling"] == {
        "technique": "long-polling", "requests": 2, "events": 3, "bytes": 1600,
        "bytes/event": pytest.approx(1600 / 3), "p50 latency (s)": 0.002,
        "p99 latency (s)": 0.003, "wasted share": 0.0,
    }
    assert list(rows) == ["polling", "long-polling"]


# -- the records the summaries read -----------------------------------------------------


def test_add_defaults_and_wall_clock():
    trace = Trace()
    record = trace.add("request", technique="polling")
    assert (record.client, record.status, record.bytes, record.detail) == ("", None, 0, "")
    # t is monotonic; wall is the same instant in Unix time.
    assert trace.t0 <= record.t <= time.monotonic()
    assert abs(record.wall - time.time()) < 5
    assert record.wall - record.t == pytest.approx(time.time() - time.monotonic(), abs=5)
    later = trace.add("request", technique="polling", t=record.t + 60)
    assert later.wall == pytest.approx(record.wall + 60)


def test_delivered_writes_every_field_of_the_event_record():
    trace = Trace()
    event = SimpleNamespace(id="evt_9", created=time.monotonic() - 0.25)
    before = time.monotonic()
    record = trace.delivered(event, technique="sse", client="c9", bytes=42, detail="via stream")
    assert (record.kind, record.technique, record.client, record.event_id) == (
        "event", "sse", "c9", "evt_9")
    assert (record.bytes, record.detail) == (42, "via stream")
    assert before <= record.t <= time.monotonic()
    assert record.latency == record.t - event.created          # one clock reading for both
    assert record.wall == pytest.approx(time.time(), abs=5)
    plain = trace.delivered(event, technique="sse")
    assert (plain.client, plain.bytes, plain.detail) == ("", 0, "")
    assert trace.records() == [record, plain]


def test_clear_restarts_the_relative_clock():
    trace = two_techniques()
    old_t0 = trace.t0
    trace.clear()
    assert trace.records() == [] and trace.t0 > old_t0
    trace.add("request", technique="polling", t=trace.t0 + 1.5)
    assert trace.as_dicts()[0]["t"] == pytest.approx(1.5)


# -- nearest-rank percentiles ----------------------------------------------------------


def with_latencies(values) -> Trace:
    trace = Trace()
    for value in values:
        trace.add("event", technique="sse", client="c", latency=value)
    return trace


@pytest.mark.parametrize("values, expected", [
    # The two worked examples of the nearest-rank method on Wikipedia's "Percentile" page.
    ([15, 20, 35, 40, 50], {5: 15, 30: 20, 40: 20, 50: 35, 100: 50}),
    ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], {25: 7, 50: 8, 75: 15, 100: 20}),
], ids=["five-values", "ten-values"])
def test_nearest_rank_published_examples(values, expected):
    trace = with_latencies(reversed(values))                   # order of arrival is irrelevant
    assert trace.latency_percentiles(percentiles=expected) == expected


def test_nearest_rank_with_many_values():
    # 1000 latencies 1 ms .. 1000 ms, shuffled: the p-th percentile is p * 10 ms exactly.
    values = [(i * 389 % 1000 + 1) / 1000 for i in range(1000)]
    assert sorted(values) == [i / 1000 for i in range(1, 1001)]
    trace = with_latencies(values)
    assert trace.latency_percentiles(percentiles=(0, 0.1, 1, 50, 90, 99, 100)) == {
        0: 0.001, 0.1: 0.001, 1: 0.010, 50: 0.500, 90: 0.900, 99: 0.990, 100: 1.000}
    # Just above a rank boundary the next value is taken (ceil, never interpolation).
    assert trace.latency_percentiles(percentiles=(50.05,)) == {50.05: 0.501}


@pytest.mark.parametrize("count, p, rank", [(100, 14, 14), (100, 28, 28), (1000, 99.9, 999)])
def test_nearest_rank_is_exact_where_floating_point_is_not(count, p, rank):
    trace = with_latencies(range(1, count + 1))
    assert trace.latency_percentiles(percentiles=(p,)) == {p: rank}


def test_nearest_rank_of_one_value_is_that_value_for_every_percentile():
    assert with_latencies([0.25]).latency_percentiles(percentiles=(0, 1, 50, 100)) == {
        0: 0.25, 1: 0.25, 50: 0.25, 100: 0.25}


# -- the table -------------------------------------------------------------------------


def table_trace() -> Trace:
    trace = Trace()
    t0 = trace.t0
    trace.add("request", technique="polling", client="c1", t=t0 + 0.5, bytes=120)
    trace.add("response", technique="polling", client="c1", t=t0 + 1.25, bytes=300, status=200,
              duration=0.75, events=2, detail="<b>two</b> & more")
    trace.add("event", technique="polling", client="c1", t=t0 + 1.5, latency=1 / 3,
              event_id="e1")
    trace.add("drop", technique="webhook", client="sender", t=t0 + 2, event_id="e2",
              detail="retries exhausted")
    return trace


def test_table_tail_is_the_default_and_keeps_the_last_rows_in_order():
    trace = table_trace()
    last = trace.table(limit=2)
    assert [row["kind"] for row in last.rows] == ["event", "drop"]
    assert [row["kind"] for row in trace.table(limit=2, tail=True).rows] == ["event", "drop"]
    assert [row["kind"] for row in trace.table(limit=2, tail=False).rows] == [
        "request", "response"]
    assert [row["kind"] for row in trace.table(limit=0).rows] == [
        "request", "response", "event", "drop"]
    assert [row["kind"] for row in trace.table(limit=1, technique="polling").rows] == ["event"]
    assert [row["kind"] for row in trace.table(limit=1, technique="polling", tail=False).rows] \
        == ["request"]
    assert len(trace.table(limit=10)) == 4


def test_table_shows_the_last_twenty_rows_by_default():
    trace = Trace()
    for i in range(25):
        trace.add("request", technique="polling", t=trace.t0 + i)
    rows = trace.table().rows
    assert len(rows) == 20
    assert (rows[0]["t"], rows[-1]["t"]) == (pytest.approx(5), pytest.approx(24))


def test_table_text_cells():
    lines = str(table_trace().table(limit=0)).splitlines()
    assert lines[0].split() == ["t", "kind", "technique", "client", "status", "bytes",
                                "duration", "latency", "events", "event_id", "detail"]
    assert lines[1].split() == ["0.5000", "request", "polling", "c1", "120"]
    assert lines[2].split() == ["1.2500", "response", "polling", "c1", "200", "300", "0.7500",
                                "2", "<b>two</b>", "&", "more"]
    assert lines[3].split() == ["1.5000", "event", "polling", "c1", "0", "0.3333", "e1"]
    assert lines[4].split() == ["2.0000", "drop", "webhook", "sender", "0", "e2", "retries",
                                "exhausted"]
    # Columns line up: every cell starts where its header does.
    start = lines[0].index("technique")
    assert all(line[start:].startswith(("technique", "polling", "webhook")) for line in lines)
    assert all(line == line.rstrip() for line in lines)


def test_table_html_cells_are_escaped():
    html = table_trace().table(limit=0)._repr_html_()
    assert html.startswith("<table><thead><tr><th>t</th><th>kind</th>")
    assert html.count("<tr>") == 5 and html.endswith("</tbody></table>")
    assert "<td>&lt;b&gt;two&lt;/b&gt; &amp; more</td>" in html
    assert ("<tr><td>1.5000</td><td>event</td><td>polling</td><td>c1</td><td></td>"
            "<td>0</td><td></td><td>0.3333</td><td></td><td>e1</td><td></td></tr>") in html
    head = "".join(f"<th>{c}</th>" for c in ("t", "kind", "technique", "client", "status",
                                              "bytes", "duration", "latency", "events",
                                              "event_id", "detail"))
    last_two = table_trace().table(limit=2)._repr_html_()
    assert last_two == (
        f"<table><thead><tr>{head}</tr></thead><tbody>"
        "<tr><td>1.5000</td><td>event</td><td>polling</td><td>c1</td><td></td><td>0</td>"
        "<td></td><td>0.3333</td><td></td><td>e1</td><td></td></tr>"
        "<tr><td>2.0000</td><td>drop</td><td>webhook</td><td>sender</td><td></td><td>0</td>"
        "<td></td><td></td><td></td><td>e2</td><td>retries exhausted</td></tr>"
        "</tbody></table>")


# -- exports -------------------------------------------------------------------------------


def test_json_export_is_indented_one_space_per_level():
    trace = Trace()
    trace.add("request", technique="polling", client="c", t=trace.t0, bytes=1)
    text = trace.to_json()
    assert text.startswith('[\n {\n  "kind": "request",\n  "technique": "polling",\n')
    assert text.endswith('\n  "detail": ""\n }\n]')


DETAIL = "délai dépassé → 5 s"
# ASCII only: under the C locale the command line itself cannot carry "é".
EXPORT_SCRIPT = f"""
import sys
import warnings
from labkit.trace import Trace
# Files the trace opens (through pathlib or itself), not the tools around the test.
warnings.filterwarnings("error", category=EncodingWarning, module="pathlib|labkit")
trace = Trace()
trace.add("drop", technique="webhook", client="sender", detail={DETAIL!a})
trace.to_csv(sys.argv[1])
trace.to_json(sys.argv[2])
"""


def run_export(tmp_path, *flags: str, **env: str) -> tuple[Path, Path]:
    """Export a one-record trace from a fresh interpreter with these flags and settings.

    The same export runs here first, so both must agree on what a good file is (and a
    mutation tester sees this test reach ``to_csv`` and ``to_json``).
    """
    here = Trace()
    here.add("drop", technique="webhook", client="sender", detail=DETAIL)
    here.to_csv(tmp_path / "here.csv")
    here.to_json(tmp_path / "here.json")
    assert DETAIL in (tmp_path / "here.csv").read_text(encoding="utf-8")
    csv_path, json_path = tmp_path / "trace.csv", tmp_path / "trace.json"
    env = {**os.environ, "PYTHONPATH": str(Path(labkit.__file__).parents[1]), **env}
    done = subprocess.run([sys.executable, *flags, "-c", EXPORT_SCRIPT, str(csv_path),
                           str(json_path)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return csv_path, json_path


def test_exports_are_utf8_whatever_the_machines_locale(tmp_path):
    # The C locale without coercion makes Python's default file encoding ASCII, as a
    # Windows code page would make it cp1252: only an explicit UTF-8 keeps the arrow.
    c_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    probe = subprocess.run(
        [sys.executable, "-c", "import locale; print(locale.getpreferredencoding(False))"],
        env={**os.environ, **c_locale}, capture_output=True, text=True, timeout=30, check=True)
    assert probe.stdout.strip() != "UTF-8", "the locale is not pinned: this test proves nothing"
    csv_path, json_path = run_export(tmp_path, **c_locale)
    assert DETAIL in csv_path.read_text(encoding="utf-8")
    [record] = json.loads(json_path.read_text(encoding="utf-8"))
    assert record["detail"] == DETAIL


def test_exports_never_fall_back_on_the_locales_encoding(tmp_path):
    # PEP 597: Python can warn whenever a file is opened without an explicit encoding;
    # the script turns that warning into an error once labkit is imported.
    run_export(tmp_path, "-X", "warn_default_encoding")
