"""The one table of techniques the kit teaches: name, label, colour, and who talks.

Every record in a trace names its technique, every server is served under
one, and every chart colours and labels it from this table, so a technique
has the same colour and the same words in every plot of every lesson. A
misspelt name (``long_polling`` for ``long-polling``) is a clear
:class:`~labkit.errors.UnknownTechniqueError`, not a quietly different
colour.

=============  ================  ======================  ==========================
name           label             the serving side        the other side
=============  ================  ======================  ==========================
webhook        webhook           receiver                sender (a provider)
polling        polling           server                  client
long-polling   long polling      server                  client
sse            SSE               server                  client (an EventSource)
websocket      WebSocket         server                  client
webpush        Web Push          push service            device (and app server)
queue          message queue     broker                  producer / consumer
direct         direct call       service                 caller
http           plain HTTP        server                  client
relay          relay (tunnel)    relay                   sender
inspector      request bin       request bin             sender
=============  ================  ======================  ==========================

An experiment that runs one technique in several ways names each run
``"<technique>: <words>"`` (``"webhook: thin payload"``): same colour, its
own label. A lesson or an exercise that invents a technique of its own adds
it with :func:`register` first; its name then works everywhere the built-in
ones do.

Example::

    from labkit import techniques
    techniques.get("sse").colour        # 'tab:green'
    techniques.register("grpc", "gRPC stream", "#00897b")
"""

from __future__ import annotations

from typing import NamedTuple

from labkit.errors import UnknownTechniqueError

__all__ = ["Technique", "get", "names", "register", "label", "colour"]


class Technique(NamedTuple):
    """One row of the table."""

    name: str
    label: str
    colour: str
    server: str = "server"
    """What the lane of the serving side is called in a timeline."""
    client: str = "client"
    """What a lane of the other side is called."""


_TABLE: dict[str, Technique] = {}


def register(name: str, label: str, colour: str, *, server: str = "server",
             client: str = "client") -> Technique:
    """Add a technique (or redefine one) so every chart knows its label and colour.

    Red is kept for drops and failures; pick any other matplotlib colour.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise UnknownTechniqueError(f"a technique name is a non-empty word, got {name!r}")
    technique = Technique(name, label, colour, server, client)
    _TABLE[name] = technique
    return technique


def get(name: str) -> Technique:
    """The table's row for ``name``; :class:`UnknownTechniqueError` if there is none.

    ``"<technique>: <words>"`` names a variant of a known technique for one
    experiment (``"webhook: github → relay"``, ``"polling: every 2 s"``): it
    has its technique's colour and lanes, and a label with the words added.
    """
    row = _TABLE.get(name) if isinstance(name, str) else None
    if row is not None:
        return row
    base, colon, words = name.partition(":") if isinstance(name, str) else ("", "", "")
    if colon and base in _TABLE and words.strip():
        row = _TABLE[base]
        return row._replace(name=name, label=f"{row.label}: {words.strip()}")
    known = ", ".join(_TABLE)
    raise UnknownTechniqueError(
        f"unknown technique {name!r}: the kit knows {known} (and variants such as "
        f"'webhook: github'); add your own with labkit.techniques.register(name, label, colour)")


def names() -> list[str]:
    """Every known technique name, built-in ones first."""
    return list(_TABLE)


def label(name: str) -> str:
    """The human label of ``name`` (``long polling`` for ``long-polling``)."""
    return get(name).label


def colour(name: str) -> str:
    """The colour ``name`` has in every chart."""
    return get(name).colour


for _row in (
    ("webhook", "webhook", "tab:brown", "receiver", "sender"),
    ("polling", "polling", "tab:blue", "server", "client"),
    ("long-polling", "long polling", "tab:orange", "server", "client"),
    ("sse", "SSE", "tab:green", "server", "client"),
    ("websocket", "WebSocket", "tab:pink", "server", "client"),
    ("webpush", "Web Push", "tab:purple", "push service", "device"),
    ("queue", "message queue", "tab:olive", "broker", "client"),
    ("direct", "direct call", "tab:cyan", "service", "caller"),
    ("http", "plain HTTP", "tab:gray", "server", "client"),
    ("relay", "relay (tunnel)", "#8c6d31", "relay", "sender"),
    ("inspector", "request bin", "#1f3d7a", "request bin", "sender"),
):
    register(*_row[:3], server=_row[3], client=_row[4])
del _row
