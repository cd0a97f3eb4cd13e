"""Edge cases of labkit.push.sse_protocol that its mutation run showed no test pinned.

Each test fails on one kind of small wrong change to the writer or the parser
(WHATWG HTML, "Server-sent events", section 9.2.6 "Interpreting an event stream"):
which values a field refuses and why, the smallest retry, comments, the MIME
type's essence, and what ``close()`` reports as dropped.
"""

from __future__ import annotations

import pytest

from labkit.errors import EventStreamError
from labkit.push.sse_protocol import EventStreamParser, comment, format_event, is_event_stream


# -- writing -----------------------------------------------------------------


def test_event_type_may_hold_nul_only_the_id_may_not():
    # Only an id with U+0000 is ignored by readers; an event type with it is fine.
    assert format_event("x", event="a\0b") == "event: a\0b\ndata: x\n\n".encode()
    with pytest.raises(EventStreamError) as caught:
        format_event("x", id="a\0b")
    assert str(caught.value).startswith("an event's id cannot contain U+0000, got 'a\\x00b': ")


def test_refusals_name_the_field():
    with pytest.raises(EventStreamError) as caught:
        format_event("x", event=7)
    assert str(caught.value) == "an event's event type must be a string, got 7"
    with pytest.raises(EventStreamError) as caught:
        format_event("x", event="a\nb")
    assert str(caught.value).startswith(
        "an event's event type cannot contain a line break (CR or LF), got 'a\\nb': ")
    with pytest.raises(EventStreamError) as caught:
        format_event("x", id="a\rb")
    assert str(caught.value).startswith(
        "an event's id cannot contain a line break (CR or LF), got 'a\\rb': ")
    with pytest.raises(EventStreamError) as caught:
        format_event("x", id=["1"])
    assert str(caught.value) == "an event's id must be a string, got ['1']"


def test_retry_zero_is_allowed_and_minus_one_is_not():
    assert format_event(None, retry=0) == b"retry: 0\n\n"
    assert format_event(None, retry=1) == b"retry: 1\n\n"
    with pytest.raises(EventStreamError):
        format_event(None, retry=-1)


def test_comment_default_and_several_lines():
    assert comment() == b": \n"
    assert comment("a\nb\r\nc") == b": a\n: b\n: c\n"
    with pytest.raises(EventStreamError) as caught:
        comment(3)
    assert str(caught.value) == "a comment is a string, got 3"


# -- the MIME type ----------------------------------------------------------------


@pytest.mark.parametrize("content_type, expected", [
    ("text/event-stream", True),
    (" TEXT/Event-Stream \t", True),
    ("text/event-stream;charset=utf-8;x=y", True),
    ("text/event-stream ; a=b ; c=d", True),
    # Only HTTP whitespace (space, tab, CR, LF) is stripped, not form feed or VT.
    ("text/event-stream\x0c", False),
    ("\x0btext/event-stream", False),
    ("Xtext/event-streamX", False),
    ("text/event-streams", False),
])
def test_is_event_stream_compares_the_essence(content_type, expected):
    assert is_event_stream(content_type) is expected


# -- close(): what an ended stream drops ----------------------------------------------


def test_close_reports_a_pending_event_type_alone():
    parser = EventStreamParser()
    assert parser.feed(b"event: x\n") == []
    assert parser.close() is True
    # After the reconnection the old type is gone: a new event is a "message".
    assert [e.type for e in parser.feed(b"data: y\n\n")] == ["message"]


def test_close_reports_pending_data_without_a_type():
    parser = EventStreamParser()
    assert parser.feed(b"data: x\n") == []
    assert parser.close() is True


def test_close_reports_a_pending_id_alone_and_not_a_finished_stream():
    parser = EventStreamParser("5")
    assert parser.feed(b"id: 6\n") == []
    assert parser.close() is True
    assert parser.last_event_id == "5"
    parser.feed(b"data: a\n\n")
    assert parser.close() is False


def test_close_flushes_an_unfinished_utf8_sequence():
    # The decoder holds the first byte of a 3-byte character; at the end of the
    # stream it becomes U+FFFD on an unfinished line, which close() reports.
    parser = EventStreamParser()
    assert [e.data for e in parser.feed(b"data: x\n\n\xe2\x82")] == ["x"]
    assert parser.close() is True
    assert parser.feed(b"data: \xe2\x82\xac\n\n")[0].data == "\u20ac"
