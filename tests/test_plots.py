"""Tests for labkit.plots: check what each chart draws, not only that it draws."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import same_color  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle, StepPatch  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from labkit import plots  # noqa: E402
from labkit.errors import LabkitError, UnknownTechniqueError  # noqa: E402
from labkit.trace import Trace  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def trace():
    """Three techniques, times in seconds after t0.

    polling: c1 polls at 1, 2, 3 (answered 10 ms later; the second brings an event).
    long-polling: c2 asks at 1, held until 3, answered with an event.
    sse: c3 streams 0.5..4 (two events), then retries; c4 connects at 1 and
    never disconnects (one event); the server drops something at 4.5.
    """
    tr = Trace()
    t0 = tr.t0
    for i, t in enumerate((1.0, 2.0, 3.0)):
        tr.add("request", technique="polling", client="c1", t=t0 + t, bytes=100)
        tr.add("response", technique="polling", client="c1", t=t0 + t + 0.01, bytes=50,
               duration=0.01, events=int(i == 1), status=200)
    tr.add("event", technique="polling", client="c1", t=t0 + 2.01, latency=0.8)
    tr.add("request", technique="long-polling", client="c2", t=t0 + 1.0, bytes=120)
    tr.add("response", technique="long-polling", client="c2", t=t0 + 3.0, bytes=200,
           duration=2.0, events=1, status=200)
    tr.add("event", technique="long-polling", client="c2", t=t0 + 3.0, latency=0.02)
    tr.add("connect", technique="sse", client="c3", t=t0 + 0.5)
    tr.add("request", technique="sse", client="c3", t=t0 + 0.5, bytes=150)
    tr.add("event", technique="sse", client="c3", t=t0 + 1.5, latency=0.005)
    tr.add("event", technique="sse", client="c3", t=t0 + 2.5, latency=0.007)
    tr.add("disconnect", technique="sse", client="c3", t=t0 + 4.0)
    tr.add("connect", technique="sse", client="c4", t=t0 + 1.0)
    tr.add("event", technique="sse", client="c4", t=t0 + 2.5, latency=0.006)
    tr.add("retry", technique="sse", client="c3", t=t0 + 4.2)
    tr.add("drop", technique="sse", client="", t=t0 + 4.5)
    return tr


LANES = ["events happen", "server (polling)", "c1 (client)", "server (long polling)",
         "c2 (client)", "server (SSE)", "c3 (client)", "c4 (client)"]


def lane_labels(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


def arrows(ax, kind=None):
    return [a for a in ax.texts if isinstance(a, Annotation) and a.arrow_patch is not None
            and (kind is None or a.get_gid() == kind)]


def bars(ax, style):
    """(x from, x to, row) of every bar drawn with this style."""
    found = []
    for collection in ax.collections:
        if collection.get_gid() == style:
            for path in collection.get_paths():
                xs, ys = path.vertices[:, 0], path.vertices[:, 1]
                found.append((xs.min(), xs.max(), (ys.min() + ys.max()) / 2))
    return sorted(found)


def points(ax, gid):
    """(x, row) of every marker drawn with this gid."""
    return sorted((x, y) for line in ax.get_lines() if line.get_gid() == gid
                  for x, y in zip(line.get_xdata(), line.get_ydata()))


def texts(ax):
    return [t.get_text() for t in ax.texts]


def legend_texts(ax):
    legend = ax.get_legend()
    assert legend is not None, "chart has no legend"
    return [t.get_text() for t in legend.get_texts()]


def bar_heights(ax):
    return [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]


def assert_labelled(ax):
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


# -- colours ---------------------------------------------------------------


def test_known_techniques_have_fixed_distinct_colours():
    known = ["polling", "long-polling", "sse", "webpush", "webhook", "websocket"]
    colours = [plots.technique_color(t) for t in known]
    assert len(set(colours)) == len(known)
    assert "red" not in colours and "tab:red" not in colours


def test_an_unknown_technique_is_a_clear_error_not_a_spare_colour():
    with pytest.raises(UnknownTechniqueError, match="carrier-pigeon.*register"):
        plots.technique_color("carrier-pigeon")
    tr = Trace()
    tr.add("request", technique="long_polling", client="c", t=tr.t0)
    with pytest.raises(UnknownTechniqueError, match="long_polling"):
        plots.timeline(tr)


def test_variants_get_shades_of_their_techniques_colour_and_their_own_words():
    thin, full = plots.technique_color("webhook: thin"), plots.technique_color("webhook: full")
    base = plots.technique_color("webhook")
    assert len({thin, full, base}) == 3  # told apart, in every chart of the run
    assert plots.technique_color("webhook: thin") == thin
    tr = Trace()
    tr.add("request", technique="webhook: thin", client="github", t=tr.t0)
    tr.add("request", technique="webhook: a long name for a variant", client="x", t=tr.t0)
    assert lane_labels(plots.timeline(tr, techniques=["webhook: thin"])) == [
        "events happen", "receiver (thin)", "github (sender)"]
    ticks = [t.get_text() for t in plots.request_counts(tr).get_xticklabels()]
    assert ticks[0] == "thin" and all(len(line) <= 14 for t in ticks for line in t.split("\n"))


# -- timeline --------------------------------------------------------------


def test_timeline_has_a_source_lane_then_server_and_client_lanes_per_technique(trace):
    ax = plots.timeline(trace)
    assert lane_labels(ax) == LANES
    assert ax.get_title() == "Timeline"
    assert_labelled(ax)
    lo, hi = ax.get_ylim()
    assert lo > hi  # first lane on top
    assert lane_labels(plots.timeline(trace, source=False)) == LANES[1:]


def test_timeline_lanes_are_named_for_who_talks_to_whom():
    tr = Trace()
    tr.add("request", technique="webhook", client="github", t=tr.t0)
    tr.add("request", technique="webpush", client="phone", t=tr.t0 + 1)
    assert lane_labels(plots.timeline(tr, techniques=["webhook"])) == [
        "events happen", "receiver (webhook)", "github (sender)"]
    assert lane_labels(plots.timeline(tr, techniques=["webpush"])) == [
        "events happen", "push service (Web Push)", "phone (device)"]
    tr.add("request", technique="webpush", client="shop", t=tr.t0 + 2)
    assert lane_labels(plots.timeline(tr, techniques=["webpush"], roles={"shop": "app server"})
                       )[-1] == "shop (app server)"


def test_timeline_of_one_technique_labels_clients_by_their_part(trace):
    ax = plots.timeline(trace, techniques=["sse"])
    assert lane_labels(ax) == ["events happen", "server (SSE)", "c3 (client)", "c4 (client)"]


def test_timeline_draws_one_arrow_per_request_and_response(trace):
    ax = plots.timeline(trace)
    assert len(arrows(ax, "request")) == 5
    assert len(arrows(ax, "response")) == 2  # the long poll's answer and the poll with news
    assert len(arrows(ax, "empty response")) == 2  # the two polls that brought nothing
    assert len(arrows(ax)) == 9


def test_timeline_keeps_a_loopback_answer_apart_from_its_request():
    tr = Trace()
    tr.add("request", technique="polling", client="c", t=tr.t0 + 1.0)
    tr.add("response", technique="polling", client="c", t=tr.t0 + 1.0002, duration=0.0002,
           events=1, status=200)
    tr.add("request", technique="polling", client="c", t=tr.t0 + 9.0)
    ax = plots.timeline(tr, source=False)  # rows: server 0, c 1; window 0..9 s
    (first, _), (answer,) = arrows(ax, "request"), arrows(ax, "response")
    slant = first.xy[0] - first.xyann[0]
    assert slant == pytest.approx(0.006 * 9)  # a visible lean, not a vertical line
    assert first.xyann == pytest.approx((1.0, 1)) and first.xy == pytest.approx((1.0 + slant, 0))
    # The answer leaves the server where the request arrived, not 0.2 ms later under it.
    assert answer.xyann == pytest.approx((1.0 + slant, 0))
    assert answer.xy == pytest.approx((1.0 + 2 * slant, 1))


def test_timeline_draws_answers_with_nothing_new_faded(trace):
    ax = plots.timeline(trace, techniques=["polling"])
    (news,) = arrows(ax, "response")
    empty = arrows(ax, "empty response")
    assert len(empty) == 2
    assert news.arrow_patch.get_alpha() in (None, 1.0)
    assert all(a.arrow_patch.get_alpha() < 0.5 for a in empty)


def test_timeline_draws_held_requests_and_open_connections_as_bars(trace):
    ax = plots.timeline(trace)
    # Only the long poll was held (polls took 10 ms < min_span): it began at 3 - 2.
    assert bars(ax, "held request") == [
        pytest.approx((1.0, 3.0, LANES.index("c2 (client)")))]
    # c3 was connected 0.5..4; c4 never disconnected, so its bar runs to the last record.
    assert bars(ax, "open connection") == [
        pytest.approx((0.5, 4.0, LANES.index("c3 (client)"))),
        pytest.approx((1.0, 4.5, LANES.index("c4 (client)"))),
    ]


def test_refused_failed_and_abandoned_answers_are_drawn_apart_from_empty_ones():
    tr = Trace()
    for i, status in enumerate((200, 401, 500, None)):
        tr.add("request", technique="webhook", client="github", t=tr.t0 + i)
        tr.add("response", technique="webhook", client="github", t=tr.t0 + i + 0.001,
               duration=0.001, events=int(status == 200), status=status)
    ax = plots.timeline(tr)
    assert len(arrows(ax, "response")) == 1 and len(arrows(ax, "failed response")) == 3
    assert not arrows(ax, "empty response")
    assert "refused, failed or abandoned" in legend_texts(ax)


def test_an_abandoned_long_poll_is_not_drawn_as_an_open_stream():
    tr = Trace()
    tr.add("request", technique="long-polling", client="c", t=tr.t0 + 1.0)
    tr.add("response", technique="long-polling", client="c", t=tr.t0 + 3.0, duration=2.0,
           status=None, detail="the client left before the answer")
    ax = plots.timeline(tr)
    assert bars(ax, "open connection") == []
    assert len(bars(ax, "held request")) == 1
    # A stray disconnect with no connect before it opens nothing either.
    tr.add("disconnect", technique="long-polling", client="c", t=tr.t0 + 3.0)
    assert bars(plots.timeline(tr), "open connection") == []


def test_timeline_min_span_decides_what_counts_as_held(trace):
    ax = plots.timeline(trace, techniques=["polling"], min_span=0.005)
    assert len(bars(ax, "held request")) == 3


def test_timeline_marks_events_when_learned_and_when_they_happened(trace):
    ax = plots.timeline(trace)
    events = points(ax, "event")
    assert len(events) == 5
    assert events[0] == pytest.approx((1.5, LANES.index("c3 (client)")))
    happened = points(ax, "event created")
    assert len(happened) == 5 and all(row == 0 for _, row in happened)
    assert (1.21, 0) in [(pytest.approx(x), y) for x, y in happened]  # the poll's: 2.01 - 0.8
    assert len([line for line in ax.get_lines() if line.get_gid() == "wait"]) == 5


def test_timeline_marks_retries_and_drops_on_their_lanes(trace):
    ax = plots.timeline(trace)
    assert points(ax, "retry") == [pytest.approx((4.2, LANES.index("c3 (client)")))]
    # A record without a client belongs to the server.
    assert points(ax, "drop") == [pytest.approx((4.5, LANES.index("server (SSE)")))]


def test_timeline_legend_names_what_was_drawn(trace):
    labels = legend_texts(plots.timeline(trace))
    for name in ("held request", "open connection", "request (up to the server)",
                 "answer (back down)", "answer with nothing new", "event learned",
                 "event happens", "retry", "drop", "polling", "long polling", "SSE"):
        assert name in labels


def test_timeline_legend_leaves_out_what_was_not_drawn(trace):
    labels = legend_texts(plots.timeline(trace, techniques=["long-polling"]))
    assert "open connection" not in labels and "drop" not in labels
    assert "answer with nothing new" not in labels
    assert "request (up to the server)" in labels and "held request" in labels


def test_timeline_clients_picks_lanes(trace):
    ax = plots.timeline(trace, techniques=["sse"], clients=["c3", "nobody"])
    assert lane_labels(ax) == ["events happen", "server (SSE)", "c3 (client)"]
    assert len(points(ax, "event")) == 2
    assert len(arrows(ax)) == 1
    assert len(bars(ax, "open connection")) == 1


def test_timeline_window_clips_and_shifts_the_origin(trace):
    t0 = trace.t0
    ax = plots.timeline(trace, start=t0 + 2.0, end=t0 + 3.5)
    assert "since start" in ax.get_xlabel()
    # Polls at 2 and 3 (request and answer each) and the long poll's answer at 3.
    assert len(arrows(ax)) == 5
    assert bars(ax, "held request") == [
        pytest.approx((0.0, 1.0, LANES.index("c2 (client)")))]
    assert bars(ax, "open connection")[0][:2] == pytest.approx((0.0, 1.5))
    lo, hi = ax.get_xlim()
    assert lo <= 0 < 1.5 <= hi < 2


def test_timeline_caps_arrows_for_big_runs():
    tr = Trace()
    for i in range(1000):
        tr.add("request", technique="polling", client=f"c{i}", t=tr.t0 + i * 0.01)
        tr.add("response", technique="polling", client=f"c{i}", t=tr.t0 + i * 0.01 + 0.002,
               duration=0.002)
    ax = plots.timeline(tr, max_arrows=400, source=False)
    assert len(lane_labels(ax)) == 1001
    assert len(arrows(ax)) == 400
    assert "arrows: 400 of 2000 shown" in texts(ax)
    # Sampled across the whole run, not just its start.
    xs = sorted(a.xyann[0] for a in arrows(ax))
    assert xs[0] == pytest.approx(0.0) and xs[-1] > 9.9
    ax.figure.canvas.draw()


def test_timeline_without_cap_draws_every_arrow():
    tr = Trace()
    for i in range(30):
        tr.add("request", technique="polling", client="c", t=tr.t0 + i)
    assert len(arrows(plots.timeline(tr, max_arrows=None))) == 30
    ax = plots.timeline(tr)
    assert len(arrows(ax)) == 30
    assert not any(t.startswith("arrows:") for t in texts(ax))


def test_timeline_of_empty_trace_says_no_data():
    ax = plots.timeline(Trace())
    assert "no data" in texts(ax)
    assert_labelled(ax)
    ax.figure.canvas.draw()


def test_timeline_uses_the_technique_colours(trace):
    ax = plots.timeline(trace)
    for line in ax.get_lines():
        if line.get_gid() == "event":
            assert line.get_color() in [plots.technique_color(t) for t in trace.techniques()]
    (request,) = arrows(plots.timeline(trace, techniques=["sse"]), "request")
    assert same_color(request.arrow_patch.get_edgecolor(), plots.technique_color("sse"))


def test_timeline_draws_on_a_given_axes(trace):
    fig, ax = plt.subplots()
    assert plots.timeline(trace, ax=ax) is ax


# -- latency CDF -----------------------------------------------------------


def test_latency_cdf_draws_one_step_line_per_technique(trace):
    ax = plots.latency_cdf(trace)
    lines = ax.get_lines()
    assert len(lines) == 3
    for line in lines:
        assert line.get_ydata()[0] == 0.0
        assert line.get_ydata()[-1] == pytest.approx(1.0)
    sse = lines[2]
    assert max(sse.get_xdata()) == pytest.approx(7.0)  # ms
    assert sse.get_color() == plots.technique_color("sse")
    assert ax.get_xlabel() == "latency (ms)"
    assert ax.get_ylabel() == "share of events delivered"
    assert ax.get_title()


def test_latency_cdf_legend_gives_each_median(trace):
    labels = legend_texts(plots.latency_cdf(trace))
    assert labels == ["polling (p50 800 ms)", "long polling (p50 20 ms)", "SSE (p50 6 ms)"]


def test_latency_cdf_accepts_a_dict_of_runs():
    ax = plots.latency_cdf({"jitter": [0.1, 0.2, 0.3, 0.4], "no jitter": [1.0]}, unit="s")
    lines = ax.get_lines()
    assert len(lines) == 2
    assert list(lines[0].get_ydata()) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert list(lines[0].get_xdata()) == pytest.approx([0.1, 0.1, 0.2, 0.3, 0.4])
    assert ax.get_xlabel() == "latency (s)"
    assert legend_texts(ax) == ["jitter (p50 0.2 s)", "no jitter (p50 1 s)"]


def test_latency_cdf_techniques_picks_lines(trace):
    ax = plots.latency_cdf(trace, techniques=["sse"])
    assert len(ax.get_lines()) == 1


def test_latency_cdf_without_events_says_so():
    tr = Trace()
    tr.add("request", technique="polling", client="c", t=tr.t0)
    ax = plots.latency_cdf(tr)
    assert ax.get_lines() == []
    assert "no events delivered" in texts(ax)
    assert_labelled(ax)


def test_latency_cdf_rejects_an_unknown_unit(trace):
    with pytest.raises(LabkitError, match="unit"):
        plots.latency_cdf(trace, unit="minutes")


# -- request counts and bytes -----------------------------------------------


def test_request_counts_bars_equal_the_counts(trace):
    ax = plots.request_counts(trace)
    assert bar_heights(ax) == [3, 1, 1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["polling", "long polling", "SSE"]
    assert ax.get_ylabel() == "requests"
    assert_labelled(ax)
    assert ["3", "1", "1"] == texts(ax)  # values written on the bars
    colours = [p.get_facecolor() for p in ax.patches]
    assert same_color(colours[2], plots.technique_color("sse"))


def test_request_counts_groups_bars_for_several_kinds(trace):
    ax = plots.request_counts(trace, kinds=("request", "response"))
    assert bar_heights(ax) == [3, 1, 1, 3, 1, 0]
    assert legend_texts(ax) == ["request", "response"]


def test_request_counts_rejects_an_unknown_kind(trace):
    with pytest.raises(LabkitError, match="kind"):
        plots.request_counts(trace, kinds=("requests",))


def test_bytes_chart_bars_equal_bytes_total(trace):
    ax = plots.bytes_chart(trace)
    techniques = trace.techniques()
    assert bar_heights(ax) == [trace.bytes_total(t) for t in techniques] == [450, 320, 150]
    assert texts(ax) == ["450 B", "320 B", "150 B"]
    assert ax.get_ylabel() == "bytes"
    assert_labelled(ax)


def test_bytes_chart_per_event(trace):
    ax = plots.bytes_chart(trace, per_event=True)
    assert bar_heights(ax) == pytest.approx([trace.bytes_per_event(t)
                                             for t in trace.techniques()])
    assert bar_heights(ax) == pytest.approx([450, 320, 50])
    assert ax.get_ylabel() == "bytes per delivered event"


def test_bytes_chart_per_event_without_events_shows_an_empty_marked_bar():
    tr = Trace()
    tr.add("request", technique="webhook", client="r", t=tr.t0, bytes=300)
    ax = plots.bytes_chart(tr, per_event=True)
    assert bar_heights(ax) == [0]
    assert texts(ax) == ["no events"]


@pytest.mark.parametrize("chart", [plots.request_counts, plots.bytes_chart])
def test_bar_charts_of_empty_trace_say_no_data(chart):
    ax = chart(Trace())
    assert "no data" in texts(ax)
    assert_labelled(ax)
    ax.figure.canvas.draw()


# -- rate over time -----------------------------------------------------------


def test_rate_over_time_bins_sum_to_the_record_count(trace):
    ax = plots.rate_over_time(trace, bin_width=0.5)
    (steps,) = [p for p in ax.patches if isinstance(p, StepPatch)]
    values, edges, _ = steps.get_data()
    assert values.sum() == trace.count("request") == 5
    assert edges[1] - edges[0] == pytest.approx(0.5)
    assert edges[0] <= 0.5 and edges[-1] > 3.0
    assert ax.get_ylabel() == "requests per 0.5 s"
    assert_labelled(ax)
    assert legend_texts(ax) == ["all techniques"]


def test_rate_over_time_shows_a_synchronised_wave_as_a_spike():
    synchronised, jittered = Trace(), Trace()
    for i in range(20):
        synchronised.add("retry", technique="webhook", client="r", t=synchronised.t0 + 2.0)
        jittered.add("retry", technique="webhook", client="r", t=jittered.t0 + 0.1 + i * 0.2)
    ax = plots.rate_over_time(synchronised, kind="retry", label="synchronised")
    plots.rate_over_time(jittered, kind="retry", ax=ax, label="jittered")
    wave, spread = [p.get_data().values for p in ax.patches if isinstance(p, StepPatch)]
    assert list(wave) == [20] and max(spread) == 5 and spread.sum() == 20
    assert ax.get_ylabel() == "retries per second"
    assert legend_texts(ax) == ["synchronised", "jittered"]


def test_rate_over_time_overlays_one_technique_with_new_line_styles(trace):
    ax = plots.rate_over_time(trace, techniques=["polling"])
    plots.rate_over_time(trace, techniques=["polling"], kind="response", ax=ax, label="answers")
    first, second = [p for p in ax.patches if isinstance(p, StepPatch)]
    assert first.get_data().values.sum() == 3 and second.get_data().values.sum() == 3
    assert same_color(first.get_edgecolor(), plots.technique_color("polling"))
    assert same_color(second.get_edgecolor(), first.get_edgecolor())
    assert first.get_linestyle() != second.get_linestyle()
    assert legend_texts(ax) == ["polling", "answers"]


def test_rate_over_time_of_empty_trace_says_so():
    ax = plots.rate_over_time(Trace())
    assert "no requests recorded" in texts(ax)
    assert_labelled(ax)


def test_rate_over_time_rejects_a_bad_bin_width(trace):
    with pytest.raises(LabkitError, match="bin_width"):
        plots.rate_over_time(trace, bin_width=0)


# -- dashboard ----------------------------------------------------------------


def test_dashboard_puts_four_charts_in_one_figure(trace):
    fig = plots.dashboard(trace)
    assert isinstance(fig, Figure)
    timeline, cdf, counts, wire = fig.axes
    assert lane_labels(timeline) == LANES
    assert len(cdf.get_lines()) == 3
    assert bar_heights(counts) == [3, 1, 1]
    assert bar_heights(wire) == [450, 320, 150]
    for ax in fig.axes:
        assert_labelled(ax)
    fig.canvas.draw()


def test_dashboard_techniques_picks_techniques(trace):
    fig = plots.dashboard(trace, techniques=["sse", "polling"])
    timeline, cdf, counts, wire = fig.axes
    assert lane_labels(timeline) == ["events happen", "server (SSE)", "c3 (client)",
                                     "c4 (client)", "server (polling)", "c1 (client)"]
    assert bar_heights(counts) == [1, 3]


def test_dashboard_of_empty_trace_draws():
    fig = plots.dashboard(Trace())
    assert all("no data" in texts(ax) or "no events delivered" in texts(ax) for ax in fig.axes)
    fig.canvas.draw()


def test_rate_over_time_overlays_a_taller_series_without_clipping_it():
    small, tall = Trace(), Trace()
    for i in range(3):
        small.add("request", technique="a", t=small.t0 + 0.1 * i)
    for i in range(30):
        tall.add("request", technique="b", t=tall.t0 + 0.01 * i)
    ax = plots.rate_over_time(small, bin_width=1.0)
    plots.rate_over_time(tall, bin_width=1.0, ax=ax)
    assert ax.get_ylim()[1] >= 30
    assert ax.get_ylim()[0] == 0
    plt.close(ax.figure)


def test_latency_cdf_on_a_log_scale_keeps_both_ends_readable():
    ax = plots.latency_cdf({"sse": [0.002, 0.003], "polling": [1.5, 2.5]}, log=True)
    assert ax.get_xscale() == "log"
    assert len(ax.get_lines()) == 2
    low, high = ax.get_xlim()
    assert low <= 2 and high >= 2500   # milliseconds: both techniques are on the axis
    plt.close(ax.figure)
