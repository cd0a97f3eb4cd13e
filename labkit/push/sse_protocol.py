"""The ``text/event-stream`` format of Server-Sent Events: writing it, and reading it.

An SSE response is one long HTTP body of UTF-8 text lines. Lines group into
events; a blank line ends each event. A line is ``field: value``; a line
that starts with ``:`` is a comment (servers send them as heartbeats)::

    retry: 3000                  <- reconnect 3 s after a drop (no event yet)

    : heartbeat                  <- comment: ignored, keeps the connection busy
    event: price                 <- this event's type (default "message")
    id: 42                       <- the client remembers it, sends it back on reconnect
    data: {"sym": "YHOO",        <- data lines are joined with "\\n"
    data:  "price": 10}
                                 <- blank line: dispatch the event

This module follows the WHATWG HTML standard, section "Server-sent events"
(parsing and interpreting an event stream) to the letter, and is pure: no
sockets, so every rule can be tested on bytes alone.

======================  ==============================================================
name                    what it does
======================  ==============================================================
:func:`format_event`    one event as bytes; data with line breaks becomes several
                        ``data:`` lines; refuses an ``id`` or ``event`` that would
                        break the framing (CR, LF) or that a client ignores (NUL)
:func:`comment`         a comment line (``: heartbeat``)
:class:`EventStreamParser`  the spec's "event stream interpretation", fed bytes in
                        pieces of any size; returns the :class:`MessageEvent` s it
                        dispatches
:func:`parse`           a whole stream at once, for tests and examples
:func:`is_event_stream` the client's check of the response's ``Content-Type``
======================  ==============================================================

The rules the parser applies, in the spec's order:

* decode UTF-8, invalid bytes become U+FFFD; one byte order mark is dropped
  at the very start of a stream, and only there;
* a line ends with CRLF, LF or CR; a CR that ends one chunk and an LF that
  starts the next are *one* line end;
* ``:`` first: comment. Otherwise the field name runs up to the first ``:``
  and the value follows, minus *one* leading space; a line without ``:`` is
  a field with an empty value; unknown field names are ignored;
* ``event`` sets the type; ``data`` appends its value and a LF; ``id`` sets
  the last event ID (even to empty) unless it contains U+0000; ``retry``
  sets the reconnection time in ms if it is ASCII digits only;
* a blank line dispatches: the last event ID is committed, then, if no
  ``data`` line came, nothing is dispatched; otherwise one trailing LF is
  removed and a ``MessageEvent`` (type, data, last event ID) goes out;
* at the end of the stream, an event without its blank line is dropped.

Across reconnections the last event ID survives (the client sends it back
as ``Last-Event-ID``), and what a browser does is what the web-platform-tests
check: a new stream starts with the last event ID buffer holding the last
*dispatched* ID. :meth:`EventStreamParser.close` ends one stream that way,
so one parser can read every connection of a client.

Example::

    wire = format_event("line one\\nline two", event="note", id="7")
    # b'event: note\\nid: 7\\ndata: line one\\ndata: line two\\n\\n'
    parse(wire)
    # [MessageEvent(type='note', data='line one\\nline two', last_event_id='7')]

Thread-safety: the functions are pure; a parser holds one stream's state and
belongs to whoever feeds it (one connection, one thread or task).
"""

from __future__ import annotations

import codecs
import re
from typing import NamedTuple

from labkit.errors import EventStreamError

__all__ = ["MessageEvent", "EventStreamParser", "EventStreamError", "format_event", "comment",
           "parse", "is_event_stream", "MIME_TYPE"]

MIME_TYPE = "text/event-stream"

_LINE_END = re.compile(r"\r\n|\r|\n")


class MessageEvent(NamedTuple):
    """What the parser dispatches: the fields of the browser's ``MessageEvent``."""

    type: str
    data: str
    last_event_id: str


# -- writing -------------------------------------------------------------------


def _field(name: str, value: str) -> str:
    # Always a space after the colon: the reader drops exactly one, so a value
    # that itself starts with a space keeps it.
    return f"{name}: {value}\n"


def _single_line(what: str, value: object, *, nul: bool = False) -> str:
    """``value`` if it is a string that fits on one field line, else EventStreamError."""
    if not isinstance(value, str):
        raise EventStreamError(f"an event's {what} must be a string, got {value!r}")
    if "\r" in value or "\n" in value:
        raise EventStreamError(
            f"an event's {what} cannot contain a line break (CR or LF), got {value[:40]!r}: "
            f"the break would end the field and the rest would be read as another field")
    if nul and "\0" in value:
        raise EventStreamError(
            f"an event's {what} cannot contain U+0000, got {value[:40]!r}: "
            f"clients ignore such an id, so it would never come back as Last-Event-ID")
    return value


def format_event(data: str | None, *, event: str | None = None, id: str | int | None = None,
                 retry: int | None = None) -> bytes:
    """One event in the ``text/event-stream`` format, as UTF-8 bytes ending in a blank line.

    ``data``: any text; each of its lines (split at CR, LF and CRLF) becomes a
    ``data:`` line, and the reader joins them back with LF (so a CRLF or CR
    in ``data`` arrives as LF). ``None`` writes no data line: the reader then
    dispatches nothing, but still takes the ``id`` and ``retry``.
    ``event``: the type (``None`` or ``""``: the reader says ``"message"``).
    ``id``: the id the client will send back as ``Last-Event-ID`` (``""``
    resets it). ``retry``: the client's reconnection delay, in milliseconds.
    """
    out = []
    if event:
        out.append(_field("event", _single_line("event type", event)))
    if id is not None:
        if isinstance(id, int) and not isinstance(id, bool):
            id = str(id)
        out.append(_field("id", _single_line("id", id, nul=True)))
    if retry is not None:
        if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
            raise EventStreamError(f"retry is a whole number of milliseconds >= 0, "
                                   f"got {retry!r}")
        out.append(_field("retry", str(retry)))
    if data is not None:
        if not isinstance(data, str):
            raise EventStreamError(f"an event's data must be a string (encode other things, "
                                   f"as JSON say), got {type(data).__name__}")
        out.extend(_field("data", line) for line in _LINE_END.split(data))
    out.append("\n")
    return _encode("".join(out))


def comment(text: str = "") -> bytes:
    """A comment line (``: heartbeat``); text with line breaks becomes several comments.

    Readers ignore comments. Servers send them to keep a quiet connection
    busy, so proxies and the client can tell it is still alive.
    """
    if not isinstance(text, str):
        raise EventStreamError(f"a comment is a string, got {text!r}")
    return _encode("".join(f": {line}\n" for line in _LINE_END.split(text)))


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EventStreamError(f"an event stream is UTF-8, and this text cannot be: "
                               f"{exc.reason} at {exc.start}") from None


# -- reading -------------------------------------------------------------------


def is_event_stream(content_type: str | None) -> bool:
    """True if a response's ``Content-Type`` is ``text/event-stream``, parameters aside.

    A client must "fail the connection" otherwise (and not reconnect). The
    comparison is on the MIME type's essence: case-insensitive, parameters
    such as ``;charset=...`` ignored (the stream is UTF-8 whatever they say).
    """
    if not content_type:
        return False
    essence = content_type.split(";", 1)[0].strip(" \t\r\n").lower()
    return essence == MIME_TYPE


class EventStreamParser:
    """The spec's event stream interpretation, fed bytes in pieces of any size.

    ``feed(chunk)`` returns the events the chunk completes; ``retry`` holds
    the reconnection time (ms) the stream last set, or None; ``last_event_id``
    is the last event ID of the event source (what a reconnecting client
    sends as ``Last-Event-ID``). ``close()`` ends the stream.
    """

    def __init__(self, last_event_id: str = ""):
        self.last_event_id = last_event_id
        """The last event ID string: set on each dispatch, kept across streams."""
        self.retry: int | None = None
        """The reconnection time in milliseconds the stream set (None: never set)."""
        self._start_stream()

    def _start_stream(self) -> None:
        # utf-8-sig drops one BOM at the start of its input, even if the BOM
        # arrives a byte at a time, and never a later one.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._line: list[str] = []      # the line read so far (its pieces)
        self._after_cr = False          # the last line ended in CR: skip one LF next
        self._data: list[str] = []      # the data buffer, as its lines
        self._type = ""                 # the event type buffer
        self._id = self.last_event_id   # the last event ID buffer

    def feed(self, chunk: bytes) -> list[MessageEvent]:
        """Read the next bytes of the stream; return the events they dispatch, in order."""
        return self._read(self._decoder.decode(chunk))

    def close(self) -> bool:
        """End the stream: an event without its final blank line is dropped.

        Returns True if something unfinished was dropped (a partial line or
        an event still missing its blank line). The parser is then ready for
        the next stream of the same source (a reconnection): the BOM rule
        starts over, ``last_event_id`` and ``retry`` are kept.
        """
        self._read(self._decoder.decode(b"", True))
        dropped = bool(self._line or self._data or self._type or self._id != self.last_event_id)
        self._start_stream()
        return dropped

    def _read(self, text: str) -> list[MessageEvent]:
        if not text:
            return []
        if self._after_cr and text[0] == "\n":
            text = text[1:]
        self._after_cr = text.endswith("\r")
        events = []
        start = 0
        for end in _LINE_END.finditer(text):
            self._line.append(text[start:end.start()])
            line = "".join(self._line)
            self._line.clear()
            start = end.end()
            event = self._process(line)
            if event is not None:
                events.append(event)
        if start < len(text):
            self._line.append(text[start:])
        return events

    def _process(self, line: str) -> MessageEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> MessageEvent | None:
        self.last_event_id = self._id
        data, self._data = self._data, []
        event_type, self._type = self._type, ""
        if not data:
            return None
        # The spec appends LF after every data value, then removes the last
        # one: the same as joining the values with LF.
        return MessageEvent(event_type or "message", "\n".join(data), self.last_event_id)


def parse(stream: bytes, last_event_id: str = "") -> list[MessageEvent]:
    """Every event a whole stream dispatches (an unfinished last event is dropped)."""
    parser = EventStreamParser(last_event_id)
    events = parser.feed(stream)
    parser.close()
    return events
