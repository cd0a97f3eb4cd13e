"""Checks for lesson 07 (Server-Sent Events): writing an event by hand, what a gap reports,
what ends an EventSource for good, and how many requests a match with drops costs."""

from __future__ import annotations

from numbers import Real

from labkit.exercises import NotYet, exercise
from labkit.experiments.sse import live_score, lost_in_the_gap
from labkit.push.sse_protocol import MessageEvent, parse

WICKET = MessageEvent("wicket", "OUT! Bowled him.\nIND 87/3 (11.2 ov)", "42")
"""The event 07.1 asks for."""

ENDINGS = {
    "drop": "the network drops the connection",
    "restart": "the server restarts",
    "finish": "the server finishes the response cleanly",
    "204": "a reconnection is answered 204 No Content",
    "html": "the server answers 200 with Content-Type: text/html",
    "quiet": "ten minutes without an event (heartbeats only)",
}
"""The choices of 07.3, by name."""
FOR_GOOD = {"204", "html"}


def _count(answer, what: str, hint: str) -> int:
    if not isinstance(answer, Real) or isinstance(answer, bool) or answer < 0 \
            or answer != int(answer):
        raise NotYet(f"the answer is {what}, a whole number >= 0, not {answer!r}", hint=hint)
    return int(answer)


@exercise("07.1", "Write a wicket event by hand")
def _(answer):
    if isinstance(answer, str):
        answer = answer.encode("utf-8")
    if not isinstance(answer, bytes):
        raise NotYet(f"the answer is the text of the stream (a str or bytes), not {answer!r}",
                     hint="'event: wicket\\n...' with real line breaks")
    events = parse(answer)
    if not events:
        raise NotYet("a parser reading this dispatches no event at all",
                     hint="an event is dispatched by the blank line after it: end with '\\n\\n'")
    if len(events) > 1:
        raise NotYet(f"this is {len(events)} events, not one: {events}",
                     hint="a blank line ends an event; put one only at the very end")
    [event] = events
    if event.type != WICKET.type:
        raise NotYet(f"the event's type is {event.type!r}",
                     hint="the type is set by a field named 'event', not 'type'")
    if event.data != WICKET.data:
        raise NotYet(f"its data is {event.data!r}", hint="each line of the data needs a field "
                     "of its own: 'data: OUT! Bowled him.' then 'data: IND 87/3 (11.2 ov)'")
    if event.last_event_id != WICKET.last_event_id:
        raise NotYet(f"its id is {event.last_event_id!r}", hint="'id: 42' on a line of its own")
    return ("The parser dispatched exactly one event of type 'wicket', id 42, and the two "
            "data lines joined by a line feed. A browser's EventSource would hand it to the "
            "listener added with addEventListener('wicket', ...), not to onmessage.")


@exercise("07.2", "What a fan back from the tunnel missed")
def _(answer):
    count = _count(answer, "a number of balls", "count the ids the history no longer holds")
    gap = lost_in_the_gap(history=50, seen=30, bowled=120)
    if count == gap.bowled - gap.seen:
        raise NotYet(f"{count} balls were bowled while the fan was away, but the server still "
                     f"keeps some of them", hint="the history holds the last 50 events")
    if count == gap.history:
        raise NotYet("50 is what the history still holds: those are sent, not missed",
                     hint="which ids after 30 are older than the oldest one kept?")
    if count != gap.missed:
        raise NotYet(f"{count} is not what the gap event reports",
                     hint="the fan asks for everything after id 30; the server keeps ids "
                          "71 to 120")
    return (f"{gap.missed}: the fan asked for everything after id 30, but the history holds "
            f"only ids 71 to 120, so ids 31 to 70 are gone: the server says so in a gap event "
            f"({gap.gap}) and then sends the {len(gap.after)} it kept. A page can then reload "
            f"the scorecard in full instead of trusting its incremental updates.")


@exercise("07.3", "What ends an EventSource for good")
def _(answer):
    if isinstance(answer, str) or not isinstance(answer, (set, frozenset, list, tuple)):
        raise NotYet(f"the answer is a set of names from {sorted(ENDINGS)}, not {answer!r}",
                     hint="for example {'drop', 'quiet'}")
    chosen = set(answer)
    unknown = chosen - set(ENDINGS)
    if unknown:
        raise NotYet(f"{sorted(unknown)} are not among the choices {sorted(ENDINGS)}",
                     hint="copy the names from ENDINGS")
    wrongly = sorted(chosen - FOR_GOOD)
    if wrongly:
        raise NotYet(f"after {ENDINGS[wrongly[0]]!r} an EventSource reconnects by itself",
                     hint="a drop, a restart or a clean end are what reconnection is for; "
                          "a quiet stream is simply open")
    missing = sorted(FOR_GOOD - chosen)
    if missing:
        raise NotYet(f"one more stops it for good: did you consider {ENDINGS[missing[0]]!r}?",
                     hint="ended_for_good() shows both kinds of answer that stop it")
    return ("A 204 and a content type other than text/event-stream make the browser 'fail the "
            "connection': readyState becomes CLOSED and it never reconnects (any status other "
            "than 200 does). Everything else that ends a stream, it treats as a network "
            "problem and reconnects after the retry time, sending Last-Event-ID.")


@exercise("07.4", "Requests for a match with drops")
def _(answer):
    count = _count(answer, "a number of requests", "each stream is opened by one request")
    run = live_score(fans=3, balls=30, drops=2, rate=300.0)
    if count == run.fans:
        raise NotYet("3 is one request per fan, as if nothing had happened",
                     hint="after each drop every fan opens a new stream")
    if count in (run.balls, run.balls * run.fans):
        raise NotYet("SSE does not make a request per event",
                     hint="count the streams opened, not the events")
    if count != run.requests:
        raise NotYet(f"{count} is not what the server counted",
                     hint="each fan opens its first stream, then one more after each drop")
    return (f"{run.requests}: each of the 3 fans opened a stream at the start and one more "
            f"after each of the 2 drops; the 30 balls themselves cost no request. Every fan "
            f"still saw every ball once: {set(map(len, run.received.values()))}.")
