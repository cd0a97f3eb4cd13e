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
``"<technique>: <words>"`` (``"webhook: thin payload"``): a shade of its
technique's colour, its own label. A lesson or an exercise that invents a technique of its own adds
it with :func:`register` first; its name then works everywhere the built-in
ones do.

Example::

    from labkit import techniques
    techniques.get("sse").colour        # '#2ca02c' (matplotlib's tab:green)
    techniques.register("grpc", "gRPC stream", "#00897b")
"""

from __future__ import annotations

import re
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
    variant: str = ""
    """For ``"webhook: thin payload"``, the words after the colon; else empty."""

    @property
    def tag(self) -> str:
        """The shortest name that tells it apart in a chart: the variant's words, or the label."""
        return self.variant or self.label


_TABLE: dict[str, Technique] = {}
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def register(name: str, label: str, colour: str, *, server: str = "server",
             client: str = "client") -> Technique:
    """Add a technique (or redefine one) so every chart knows its label and colour.

    Red is kept for drops and failures; pick any other matplotlib colour.
    """
    if not isinstance(name, str) or not name or name != name.strip() or ":" in name:
        raise UnknownTechniqueError(f"a technique name is a non-empty word without ':', "
                                    f"got {name!r}")
    if not _HEX.fullmatch(colour):
        raise UnknownTechniqueError(f"give the colour as #rrggbb (so its variants can be "
                                    f"shaded), got {colour!r}")
    technique = Technique(name, label, colour, server, client)
    _TABLE[name] = technique
    return technique


def get(name: str) -> Technique:
    """The table's row for ``name``; :class:`UnknownTechniqueError` if there is none.

    ``"<technique>: <words>"`` names a variant of a known technique for one
    experiment (``"webhook: github → relay"``, ``"polling: every 2 s"``): it
    has its technique's lanes, a shade of its colour, and a label with the words added.
    """
    row = _TABLE.get(name) if isinstance(name, str) else None
    if row is not None:
        return row
    base, colon, words = name.partition(":") if isinstance(name, str) else ("", "", "")
    if colon and base in _TABLE and words.strip():
        row, words = _TABLE[base], words.strip()
        return row._replace(name=name, label=f"{row.label}: {words}", variant=words,
                            colour=_shade(base, row.colour, words))
    known = ", ".join(_TABLE)
    raise UnknownTechniqueError(
        f"unknown technique {name!r}: the kit knows {known} (and variants such as "
        f"'webhook: github'); add your own with labkit.techniques.register(name, label, colour)")


_SHADES = (-0.45, 0.35, -0.25, 0.55, -0.6, 0.2)
"""How far a variant's colour moves towards black (<0) or white (>0) from its technique's."""


_VARIANTS: dict[str, list[str]] = {}  # technique -> its variants' words, in order first seen


def _shade(base: str, colour: str, words: str) -> str:
    """A shade of ``colour`` for a variant: the first variant of a technique seen gets the
    first shade, the next the next, so variants in one lesson are told apart and each
    keeps its shade in every chart of the run."""
    seen = _VARIANTS.setdefault(base, [])
    if words not in seen:
        seen.append(words)
    amount = _SHADES[seen.index(words) % len(_SHADES)]
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    target = 255 if amount > 0 else 0
    mixed = (round(c + (target - c) * abs(amount)) for c in (red, green, blue))
    return "#" + "".join(f"{c:02x}" for c in mixed)


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
    ("webhook", "webhook", "#8c564b", "receiver", "sender"),
    ("polling", "polling", "#1f77b4", "server", "client"),
    ("long-polling", "long polling", "#ff7f0e", "server", "client"),
    ("sse", "SSE", "#2ca02c", "server", "client"),
    ("websocket", "WebSocket", "#e377c2", "server", "client"),
    ("webpush", "Web Push", "#9467bd", "push service", "device"),
    ("queue", "message queue", "#bcbd22", "broker", "client"),
    ("direct", "direct call", "#17becf", "service", "caller"),
    ("http", "plain HTTP", "#7f7f7f", "server", "client"),
    ("relay", "relay (tunnel)", "#008080", "relay", "sender"),
    ("inspector", "request bin", "#1f3d7a", "request bin", "sender"),
):
    register(*_row[:3], server=_row[3], client=_row[4])
del _row
