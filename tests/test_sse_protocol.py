"""The text/event-stream format: the encoder, and the parser against the spec and the WPT.

The cases named ``wpt-...`` replay the streams of the web-platform-tests
``eventsource/`` suite (file named in the id; the stream is what its
``resources/`` script sends: ``message.py`` appends its ``newline`` parameter,
"\\n\\n" by default, and then one more "\\n"). A browser reconnects when a
stream ends, so where a WPT test reads several connections, the case feeds
the streams one after the other to one parser, closing each, as the client
does. The cases named ``spec-...`` are the examples of the WHATWG standard's
"Interpreting an event stream" section.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.errors import LabkitError
from labkit.push.sse_protocol import (EventStreamError, EventStreamParser, MessageEvent,
                                      comment, format_event, is_event_stream, parse)


def message(data, last_event_id="", type="message"):
    return MessageEvent(type, data, last_event_id)


def message_py(message, newline=b"\n\n"):
    """What WPT's resources/message.py answers for ``?message=...&newline=...``."""
    return message + newline + b"\n"


def read_streams(*streams, last_event_id=""):
    """Feed each stream whole to one parser, closing it between: one client, reconnecting."""
    parser = EventStreamParser(last_event_id)
    events = []
    for stream in streams:
        events += parser.feed(stream)
        parser.close()
    return events, parser


LONG = b"x" * 2048

CASES = [
    pytest.param([message_py(b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3")],
                 [message("1"), message("3")], id="wpt-format-bom: only the first BOM goes"),
    pytest.param([message_py(b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\ndata:3")],
                 [message("2"), message("3")], id="wpt-format-bom-2: a second BOM stays"),
    pytest.param([message_py(b"data:1\r:\0\n:\r\ndata:2\n:" + LONG + b"\rdata:3\n:data:fail\r:"
                             + LONG + b"\ndata:4\n", newline=b"")],
                 [message("1\n2\n3\n4")], id="wpt-format-comments"),
    pytest.param([b"retry:1000\ndata:test1\n\nid:test\ndata:test2\n"] * 2,
                 [message("test1"), message("test1")],
                 id="wpt-format-data-before-final-empty-line: unfinished event dropped"),
    pytest.param([message_py(b"data:\n\ndata\ndata\n\ndata:test")],
                 [message(""), message("\n"), message("test")], id="wpt-format-field-data"),
    pytest.param([message_py(b"event:test\ndata:x\n\ndata:x")],
                 [message("x", type="test"), message("x")], id="wpt-format-field-event"),
    pytest.param([message_py(b"event: \ndata:data")], [message("data")],
                 id="wpt-format-field-event-empty"),
    pytest.param([b"id: \xe2\x80\xa6\nretry: 200\ndata: hello\n\n",
                  b"data: \xe2\x80\xa6\n\n"],
                 [message("hello", "\u2026"), message("\u2026", "\u2026")],
                 id="wpt-format-field-id: last-event-id.py, then its echo"),
    pytest.param([b"id: \xe2\x80\xa6\nretry: 200\ndata: hello\n\n"]
                 + [b"data: \xe2\x80\xa6\n\n"] * 2,
                 [message("hello", "\u2026")] + [message("\u2026", "\u2026")] * 2,
                 id="wpt-format-field-id-2: the id survives two reconnections"),
    pytest.param([b"id: 1\ndata: 1\n\ndata: 2\n\nid: 2\ndata:3\n\ndata:4\n\n"],
                 [message("1", "1"), message("2", "1"), message("3", "2"), message("4", "2")],
                 id="wpt-format-field-id-3: lastEventId persists"),
    pytest.param([b"id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n"],
                 [message("1", "1"), message("2"), message("3")],
                 id="wpt-format-field-id-3: lastEventId resets"),
    pytest.param([b"id: 1\ndata: 1\n\nid\ndata:2\n\ndata:3\n\n"],
                 [message("1", "1"), message("2"), message("3")],
                 id="wpt-format-field-id-3: lastEventId resets (id without colon)"),
    *[pytest.param([b"id: " + value.encode() + b"\nretry: 200\ndata: hello\n\n"] * 2,
                   [message("hello"), message("hello")],
                   id=f"wpt-format-field-id-null: id {value!r} ignored")
      for value in ("\0\0", "x\0", "\0x", "x\0x", " \0")],
    pytest.param([message_py(b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3"
                             b"\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n", newline=b"")],
                 [message("\0\n 2\n1\n3\n\n4")], id="wpt-format-field-parsing"),
    pytest.param([message_py(b"retry:02000\ndata:x")], [message("x")],
                 id="wpt-format-field-retry"),
    pytest.param([message_py(b"retry:2000\nretry:1000x\ndata:x")], [message("x")],
                 id="wpt-format-field-retry-bogus"),
    pytest.param([message_py(b"retry\ndata:test")], [message("test")],
                 id="wpt-format-field-retry-empty"),
    pytest.param([message_py(b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n"
                             b":thisisacommentyay\ndata:test")],
                 [message("test\n\ntest")], id="wpt-format-field-unknown"),
    pytest.param([message_py(b"data:\ttest\rdata: \ndata:test")], [message("\ttest\n\ntest")],
                 id="wpt-format-leading-space"),
    pytest.param([message_py(b"data:test\r\ndata\ndata:test\r\n\r", newline=b"")],
                 [message("test\n\ntest")], id="wpt-format-newlines"),
    pytest.param([message_py(b"data:\0\n\n")], [message("\0")], id="wpt-format-null-character"),
    pytest.param([message_py(b"data:ok\xe2\x80\xa6")], [message("ok\u2026")],
                 id="wpt-format-utf-8"),
    pytest.param([b"data:msg\ndata: msg\n\n:\nfalsefield:msg\n\nfalsefield:msg\nData:data\n\n"
                  b"data\n\ndata:end\n\n"],
                 [message("msg\nmsg"), message(""), message("end")],
                 id="wpt-event-data: message2.py"),
    pytest.param([b"data: YHOO\ndata: +2\ndata: 10\n\n"], [message("YHOO\n+2\n10")],
                 id="spec-stock-ticker: three data lines, one event"),
    pytest.param([b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
                  b"data:  third event\n\n"],
                 [message("first event", "1"), message("second event"),
                  message(" third event")],
                 id="spec-four-blocks: comment, id, id reset, one space dropped"),
    pytest.param([b"data\n\ndata\ndata\n\ndata:"], [message(""), message("\n")],
                 id="spec-empty-data: the last block has no blank line"),
    pytest.param([b"data:test\n\ndata: test\n\n"], [message("test"), message("test")],
                 id="spec-space-optional: data:test and data: test are the same"),
]


@pytest.mark.parametrize("streams, expected", CASES)
def test_streams_dispatch_what_a_browser_dispatches(streams, expected):
    assert read_streams(*streams)[0] == expected


@pytest.mark.parametrize("streams, expected", CASES)
def test_one_byte_at_a_time_gives_the_same_events(streams, expected):
    parser = EventStreamParser()
    events = []
    for stream in streams:
        for i in range(len(stream)):
            events += parser.feed(stream[i:i + 1])
        parser.close()
    assert events == expected


@pytest.mark.parametrize("stream, retry", [
    pytest.param(message_py(b"retry:02000\ndata:x"), 2000, id="wpt-format-field-retry: decimal"),
    pytest.param(message_py(b"retry:2000\nretry:1000x\ndata:x"), 2000,
                 id="wpt-format-field-retry-bogus"),
    pytest.param(message_py(b"retry\ndata:test"), None, id="wpt-format-field-retry-empty"),
    pytest.param(b"id: \xe2\x80\xa6\nretry: 200\ndata: hello\n\n", 200, id="wpt-last-event-id"),
    pytest.param(b"retry: 1.5\n\nretry: -1\n\nretry: +3\n\nretry:\n\n", None,
                 id="not ASCII digits only: ignored"),
    pytest.param("retry: \u0663\n\n".encode(), None, id="an Arabic-Indic three is no ASCII digit"),
    pytest.param(b"retry: 700\nretry: 7x\n", 700, id="applies at once, without a blank line"),
])
def test_retry_takes_only_ascii_digits(stream, retry):
    parser = EventStreamParser()
    parser.feed(stream)
    assert parser.retry == retry


@pytest.mark.parametrize("content_type, ok", [
    pytest.param("text/event-stream", True, id="plain"),
    pytest.param("text/event-stream;", True, id="wpt-format-mime-trailing-semicolon"),
    pytest.param("text/event-stream;charset=windows-1252", True, id="wpt-format-utf-8: charset"),
    pytest.param("Text/Event-Stream ; charset=utf-8", True, id="case and spaces"),
    pytest.param("text/x-bogus", False, id="wpt-format-mime-valid-bogus"),
    pytest.param("x bogus", False, id="wpt-format-mime-bogus"),
    pytest.param("text/event-streams", False, id="a longer type"),
    pytest.param("", False, id="empty"),
    pytest.param(None, False, id="missing"),
])
def test_content_type_check(content_type, ok):
    assert is_event_stream(content_type) is ok


# -- line ends and chunks ------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_every_line_end_works(end):
    stream = end.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert parse(stream) == [message("a\nb", type="e"), message("c")]


def test_a_cr_lf_split_across_chunks_is_one_line_end():
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    # Had the LF counted as a second line end, "a" would have been dispatched alone.
    assert parser.feed(b"\n\r") == [message("a\nb")]
    assert parser.feed(b"\n") == []   # the LF of the CRLF, not another blank line


def test_cr_then_cr_is_two_line_ends():
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\r") == [message("a")]


def test_a_multibyte_character_split_across_chunks():
    euro = "\u20ac".encode()
    parser = EventStreamParser()
    events = parser.feed(b"data: " + euro[:1]) + parser.feed(euro[1:2])
    events += parser.feed(euro[2:] + b"\n\n")
    assert events == [message("\u20ac")]


def test_invalid_utf8_becomes_replacement_characters():
    assert parse(b"data: a\xffb\xc3\n\n") == [message("a\ufffdb\ufffd")]


def test_a_bom_split_into_bytes_is_still_dropped():
    parser = EventStreamParser()
    events = []
    for byte in b"\xef\xbb\xbfdata: x\n\n":
        events += parser.feed(bytes([byte]))
    assert events == [message("x")]


def test_a_bom_later_in_the_stream_is_part_of_the_field_name():
    assert parse(b"data: 1\n\n\xef\xbb\xbfdata: 2\n\n") == [message("1")]


# -- fields ----------------------------------------------------------------------------


def test_only_one_space_after_the_colon_is_dropped():
    assert parse(b"data:   three\n\n") == [message("  three")]
    assert parse(b"data:\tx\n\n") == [message("\tx")]


def test_a_line_without_colon_is_a_field_with_an_empty_value():
    assert parse(b"data\n\n") == [message("")]
    assert parse(b"id: 5\ndata: a\n\nid\ndata: b\n\n") == [message("a", "5"), message("b")]


def test_an_id_with_nul_is_ignored_and_the_old_one_kept():
    assert parse(b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n") == [message("a", "1"),
                                                                 message("b", "1")]


def test_an_id_is_committed_even_by_a_blank_line_without_data():
    parser = EventStreamParser()
    assert parser.feed(b"id: 9\n\n") == []
    assert parser.last_event_id == "9"
    assert parser.feed(b"data: x\n\n") == [message("x", "9")]


def test_a_blank_line_without_data_forgets_the_event_type():
    assert parse(b"event: a\n\ndata: x\n\n") == [message("x")]


def test_unknown_fields_and_case_are_ignored():
    assert parse(b"Data: no\nDATA: no\nfoo: bar\nid : no\ndata: yes\n\n") == [message("yes")]


# -- end of stream ---------------------------------------------------------------------


def test_an_unfinished_event_at_the_end_is_dropped():
    parser = EventStreamParser()
    assert parser.feed(b"data: kept\n\nid: 3\nevent: e\ndata: lost\n") == [message("kept")]
    assert parser.close() is True
    assert parser.last_event_id == ""       # id 3 was never dispatched
    assert parser.feed(b"data: next\n\n") == [message("next")]


def test_a_partial_last_line_is_dropped_too():
    parser = EventStreamParser()
    parser.feed(b"data: a\n\ndata: b")
    assert parser.close() is True
    parser.feed(b"data: c\n\n")
    assert parser.close() is False


def test_each_stream_may_start_with_a_bom_and_keeps_the_id():
    events, parser = read_streams(b"\xef\xbb\xbfid: 4\ndata: a\n\n",
                                  b"\xef\xbb\xbfdata: b\n\n")
    assert events == [message("a", "4"), message("b", "4")]
    assert parser.last_event_id == "4"


def test_a_parser_may_start_from_a_known_last_event_id():
    assert parse(b"data: x\n\n", last_event_id="41") == [message("x", "41")]


# -- the encoder -------------------------------------------------------------------------


def test_format_event_writes_every_field():
    assert format_event("hi", event="greeting", id=7, retry=1500) == (
        b"event: greeting\nid: 7\nretry: 1500\ndata: hi\n\n")


@pytest.mark.parametrize("data", ["a\nb", "a\rb", "a\r\nb"], ids=["LF", "CR", "CRLF"])
def test_every_line_end_in_data_starts_a_new_data_line(data):
    assert format_event(data) == b"data: a\ndata: b\n\n"
    assert parse(format_event(data)) == [message("a\nb")]


def test_data_with_leading_spaces_and_empty_lines_survives():
    data = "  indented\n\n\nlast\n"
    assert parse(format_event(data)) == [message(data)]


def test_data_none_sets_fields_without_dispatching():
    assert format_event(None, retry=3000) == b"retry: 3000\n\n"
    parser = EventStreamParser()
    assert parser.feed(format_event(None, id="12", retry=3000)) == []
    assert (parser.retry, parser.last_event_id) == (3000, "12")


def test_an_empty_id_resets_the_last_event_id():
    stream = format_event("a", id="1") + format_event("b", id="")
    assert parse(stream) == [message("a", "1"), message("b")]


@pytest.mark.parametrize("field, value", [
    ("id", "1\n2"), ("id", "1\r2"), ("id", "a\0"), ("event", "a\nb"), ("event", "a\rb"),
    ("id", 1.5), ("event", 3),
])
def test_a_field_that_would_break_the_framing_is_refused(field, value):
    with pytest.raises(EventStreamError) as raised:
        format_event("x", **{field: value})
    assert isinstance(raised.value, LabkitError) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize("retry", [-1, 1.5, "100", True])
def test_retry_must_be_whole_milliseconds(retry):
    with pytest.raises(EventStreamError, match="retry"):
        format_event("x", retry=retry)


def test_data_must_be_text_that_utf8_can_carry():
    with pytest.raises(EventStreamError, match="must be a string"):
        format_event({"a": 1})
    with pytest.raises(EventStreamError, match="UTF-8"):
        format_event("lone surrogate \ud800")


def test_comments_are_ignored_by_the_reader():
    assert comment("heartbeat") == b": heartbeat\n"
    stream = b"data: a\n" + comment("two\nlines") + b"data: b\n\n" + comment()
    assert parse(stream) == [message("a\nb")]


# -- round trip ----------------------------------------------------------------------------

single_line = st.text().filter(lambda s: "\r" not in s and "\n" not in s)


@settings(max_examples=300, deadline=None)
@given(data=st.text(), event=single_line, id=single_line.filter(lambda s: "\0" not in s),
       chunk=st.integers(min_value=1, max_value=7))
def test_format_then_parse_gives_back_data_event_and_id(data, event, id, chunk):
    wire = format_event(data, event=event, id=id)
    parser = EventStreamParser()
    events = []
    for start in range(0, len(wire), chunk):
        events += parser.feed(wire[start:start + chunk])
    expected_data = data.replace("\r\n", "\n").replace("\r", "\n")
    assert events == [MessageEvent(event or "message", expected_data, id)]
