"""The trace: one thread-safe record of everything that crosses the wire.

Every technique in the kit writes into the same kind of record, on the same
clock, so that polling, long polling, SSE, Web Push and webhooks can be
compared fairly: same events, same counting, same summaries.

A :class:`Record` is one thing that happened:

``request``     a request arrived at a server (bytes = request line + headers + body)
``response``    a server finished answering (bytes = status line + headers + body,
                ``duration`` = how long the request was open, ``events`` = how
                many new events it carried, 0 for a wasted poll); no ``status``
                when the client left before any answer
``event``       an event reached its consumer (``latency`` = delivered - created)
``connect``     a long-lived connection opened (a stream, a push subscription),
                written by the technique that holds it
``disconnect``  that connection closed (never written for an abandoned request)
``retry``       a sender is about to try a delivery again
``drop``        something was lost or dead-lettered on purpose or by failure

Times are ``time.monotonic()`` seconds, the clock :class:`labkit.feed.Event`
uses for ``created``, so ``latency`` needs no clock conversion. ``wall`` is
the Unix time, for humans.

Example::

    trace = Trace()
    trace.add("request", technique="polling", client="c1", bytes=120)
    trace.counts()            # {'polling': {'request': 1}}

How records are kept: not as :class:`Record` objects but as plain tuples of
strings and numbers, in :class:`Rows`, so that Python's cyclic garbage
collector never walks them. A collector that had to visit every record would
stop the server for longer the more it has recorded, and that pause would
show up in the very latencies a lesson measures (``bench/gc_pauses.py``:
100,000 records as named tuples added about 30 ms of CPU to every full
collection; kept this way they add nothing measurable). Readers rebuild the
:class:`Record` objects they return, with the very values that were added.

Thread-safety: :meth:`add` and every reader take one lock, so the lab loop's
thread can write while a notebook cell reads. Readers get snapshots.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from fractions import Fraction
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Iterable, NamedTuple

from labkit.errors import RecordKindError

__all__ = ["KINDS", "Record", "Rows", "Trace"]

_WIRE_KINDS = ("request", "response", "disconnect")

KINDS = ("request", "response", "event", "connect", "disconnect", "retry", "drop")


class Record(NamedTuple):
    """One thing that crossed (or failed to cross) the wire.

    Immutable, and a named tuple rather than a dataclass because a busy
    server makes two or three of these per request: it is the cheapest
    immutable record Python has. The trace keeps its fields as a plain tuple
    (see :class:`Rows`) and makes a ``Record`` again when it is read.
    """

    kind: str
    technique: str
    client: str
    t: float
    wall: float
    status: int | None = None
    bytes: int = 0
    duration: float | None = None
    latency: float | None = None
    events: int | None = None
    event_id: str | None = None
    detail: str = ""


_CHUNK = 1024
"""Rows per sealed chunk of :class:`Rows`."""


class Rows:
    """An append-only sequence of flat tuples that the garbage collector never walks,
    optionally keeping only the most recent ``limit`` of them.

    CPython stops tracking a tuple once a collection finds that it holds
    only strings, numbers, bytes, None or other such tuples: nothing in it
    can be part of a reference cycle. A *list* of a million such tuples is
    still walked item by item by every full collection, so rows are sealed
    into tuples of 1,024 rows (an eighth of ``limit`` when that is fewer),
    which the collector then stops tracking too. A full collection visits one list of
    chunks and at most one chunk of open rows, however many rows are held.

    With a ``limit``, the oldest sealed chunk is let go once the newer rows
    alone number ``limit``: memory stays bounded, and a long-running owner
    (the webhook receiver's delivery log) reuses what the forgotten rows held
    instead of growing for as long as it runs. Readers see exactly the last
    ``limit`` rows.

    ============  ===============================================
    ``append``    add one row (keep it flat: atoms and tuples only)
    ``len()``     how many rows a snapshot holds (at most ``limit``)
    ``snapshot``  a new list of those rows, oldest first
    ``total``     how many rows were ever appended
    ``held``      how many rows are in memory (with a limit, at most 1.25 x limit)
    ``dropped``   how many of them are forgotten (``total - len()``)
    ``clear``     forget every row
    ============  ===============================================

    A row that holds a list, a dict or an object stays tracked (and so does
    its chunk): correct, just not free. Not thread-safe on its own: its
    owner appends and takes snapshots under its own lock.
    """

    __slots__ = ("limit", "_chunk", "_sealed", "_open", "_let_go")

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ValueError(f"{limit!r}: keep at least 1 row, or None to keep them all")
        self.limit = limit
        # Bounded: chunks of an eighth of the limit (1,024 at most), so that few more are held.
        self._chunk = _CHUNK if limit is None else max(1, min(_CHUNK, limit // 8))
        self.clear()

    def append(self, row: tuple) -> None:
        rows = self._open
        rows.append(row)
        if len(rows) == self._chunk:
            sealed = self._sealed
            sealed.append(tuple(rows))
            self._open = []
            if self.limit is not None and (len(sealed) - 1) * self._chunk >= self.limit:
                del sealed[0]
                self._let_go += self._chunk

    @property
    def held(self) -> int:
        """How many rows are in memory: with a ``limit``, once that many were appended,
        from ``limit`` to less than ``limit`` plus two chunks (at most 1.25 x ``limit``)."""
        return len(self._sealed) * self._chunk + len(self._open)

    def __len__(self) -> int:
        held = self.held
        return held if self.limit is None else min(held, self.limit)

    @property
    def total(self) -> int:
        """How many rows were ever appended (since the last :meth:`clear`)."""
        return self._let_go + self.held

    @property
    def dropped(self) -> int:
        """How many appended rows a snapshot no longer holds, to respect ``limit``."""
        return self.total - len(self)

    def snapshot(self) -> list[tuple]:
        rows: list[tuple] = []
        for chunk in self._sealed:
            rows += chunk
        rows += self._open
        if self.limit is not None and len(rows) > self.limit:
            del rows[:-self.limit]
        return rows

    def clear(self) -> None:
        self._sealed: list[tuple[tuple, ...]] = []
        self._open: list[tuple] = []
        self._let_go = 0


_as_record = tuple.__new__
"""``_as_record(Record, row)``: a Record with exactly the row's values, cheaply."""


class Trace:
    """A thread-safe, append-only list of :class:`Record` with summaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows = Rows()
        self.t0 = time.monotonic()
        self._to_wall = time.time() - self.t0  # monotonic + this = Unix time

    # -- writing ---------------------------------------------------------

    def add(self, kind: str, *, technique: str, client: str = "", t: float | None = None,
            status: int | None = None, bytes: int = 0, duration: float | None = None,
            latency: float | None = None, events: int | None = None,
            event_id: str | None = None, detail: str = "") -> Record:
        """Append a record; ``t`` defaults to now. Returns the record.

        The fields are :class:`Record`'s, spelled out so that the row is built
        straight away as an exact tuple (the collector can stop tracking it):
        this runs two or three times for every request a lab server answers.
        """
        if kind not in KINDS:
            raise RecordKindError(f"unknown record kind {kind!r}: use one of {', '.join(KINDS)}")
        now = time.monotonic() if t is None else t
        row = (kind, technique, client, now, now + self._to_wall, status, bytes, duration,
               latency, events, event_id, detail)
        with self._lock:
            self._rows.append(row)
        return _as_record(Record, row)

    def delivered(self, event, *, technique: str, client: str = "", bytes: int = 0,
                  detail: str = "") -> Record:
        """Record that ``event`` (anything with ``id`` and ``created``) reached ``client``."""
        now = time.monotonic()
        return self.add("event", technique=technique, client=client, t=now, bytes=bytes,
                        latency=now - event.created, event_id=event.id, detail=detail)

    def clear(self) -> None:
        """Forget every record and restart the relative clock."""
        with self._lock:
            self._rows.clear()
            self.t0 = time.monotonic()

    # -- reading ---------------------------------------------------------

    def records(self, kind: str | None = None, technique: str | None = None,
                client: str | None = None) -> list[Record]:
        """A snapshot of the records, optionally filtered."""
        with self._lock:
            rows = self._rows.snapshot()
        # A row is a Record's values in order: kind, technique, client, t, ...
        return [_as_record(Record, row) for row in rows
                if (kind is None or row[0] == kind)
                and (technique is None or row[1] == technique)
                and (client is None or row[2] == client)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def techniques(self) -> list[str]:
        """Techniques in the order they first appear."""
        return list(dict.fromkeys(r.technique for r in self.records()))

    def clients(self, technique: str | None = None) -> list[str]:
        """Clients in the order they first appear."""
        return list(dict.fromkeys(r.client for r in self.records(technique=technique)))

    # -- summaries -------------------------------------------------------

    def counts(self, technique: str | None = None) -> dict[str, dict[str, int]]:
        """Number of records per technique and kind."""
        result: dict[str, Counter] = defaultdict(Counter)
        for r in self.records(technique=technique):
            result[r.technique][r.kind] += 1
        return {t: dict(c) for t, c in result.items()}

    def count(self, kind: str, technique: str | None = None) -> int:
        """How many records of one kind (optionally for one technique)."""
        return len(self.records(kind=kind, technique=technique))

    def latencies(self, technique: str | None = None) -> list[float]:
        """Delivery latencies (seconds) of every delivered event, in order."""
        return [r.latency for r in self.records(kind="event", technique=technique)
                if r.latency is not None]

    def latency_percentiles(self, technique: str | None = None,
                            percentiles: Iterable[float] = (50, 90, 99)) -> dict[float, float]:
        """Latency percentiles in seconds (nearest-rank); NaN when nothing was delivered."""
        values = sorted(self.latencies(technique))
        return {p: _nearest_rank(values, p) for p in percentiles}

    def bytes_total(self, technique: str | None = None) -> int:
        """Bytes on the wire: every request and response (headers included), plus the
        frames a long-lived connection carried past HTTP (a WebSocket's, a push
        service's), which its technique records on the connection's ``disconnect``."""
        return sum(r.bytes for r in self.records(technique=technique)
                   if r.kind in _WIRE_KINDS)

    def bytes_per_event(self, technique: str | None = None) -> float:
        """Wire bytes spent per delivered event; inf when nothing was delivered."""
        delivered = self.count("event", technique)
        return self.bytes_total(technique) / delivered if delivered else math.inf

    def wasted_share(self, technique: str | None = None) -> float:
        """Share of answered requests that carried nothing new (``events == 0``).

        Only responses that say how many events they carried count; NaN when
        there are none.
        """
        known = [r for r in self.records(kind="response", technique=technique)
                 if r.events is not None]
        if not known:
            return math.nan
        return sum(1 for r in known if r.events == 0) / len(known)

    def summary(self) -> list[dict]:
        """One row per technique: requests, events, bytes, latency p50/p99."""
        rows = []
        for tech in self.techniques():
            pct = self.latency_percentiles(tech, (50, 99))
            rows.append({
                "technique": tech,
                "requests": self.count("request", tech),
                "events": self.count("event", tech),
                "bytes": self.bytes_total(tech),
                "bytes/event": self.bytes_per_event(tech),
                "p50 latency (s)": pct[50],
                "p99 latency (s)": pct[99],
                "wasted share": self.wasted_share(tech),
            })
        return rows

    # -- export ----------------------------------------------------------

    def as_dicts(self) -> list[dict]:
        """Records as plain dicts, with ``t`` relative to the trace's start."""
        return [dict(r._asdict(), t=r.t - self.t0) for r in self.records()]

    def to_json(self, path: str | Path | None = None) -> str:
        """The records as a JSON array; also written to ``path`` if given."""
        text = json.dumps(self.as_dicts(), indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """The records as CSV with a header row; also written to ``path`` if given."""
        buffer = io.StringIO()
        _write_csv(buffer, self.as_dicts())
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def table(self, limit: int = 20, *, tail: bool = True, **filters) -> "TraceTable":
        """``limit`` records (filtered like :meth:`records`) as a table: the last
        ones, or the first ones with ``tail=False``; all of them with ``limit=0``."""
        rows = [dict(r._asdict(), t=r.t - self.t0) for r in self.records(**filters)]
        if limit:
            rows = rows[-limit:] if tail else rows[:limit]
        return TraceTable(rows)

    def __repr__(self) -> str:
        return f"<Trace {len(self)} records, techniques={self.techniques()}>"


class TraceTable:
    """Rows of a trace, shown as an HTML table in Jupyter and as text elsewhere."""

    columns = ("t", "kind", "technique", "client", "status", "bytes", "duration",
               "latency", "events", "event_id", "detail")

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def _cells(self, row: dict) -> list[str]:
        return [_fmt(row.get(c)) for c in self.columns]

    def __str__(self) -> str:
        table = [list(self.columns)] + [self._cells(r) for r in self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(self.columns))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                         for line in table)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in self._cells(r))
                       + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _nearest_rank(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile: the value at rank ceil(p/100 * n), computed exactly
    (in floating point 14 / 100 * 100 is 14.000000000000002, one rank too far)."""
    if not sorted_values:
        return math.nan
    exact = Fraction(str(p)) * len(sorted_values) / 100
    rank = max(1, math.ceil(exact))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _write_csv(out: IO[str], rows: list[dict]) -> None:
    writer = csv.DictWriter(out, fieldnames=Record._fields)
    writer.writeheader()
    writer.writerows(rows)
