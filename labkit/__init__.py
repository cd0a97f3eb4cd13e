"""labkit: a teaching kit on how services talk to each other, measured live.

The public face: the lab loop (``lab``), the event source (``Feed``), the
recorder (``Trace``), the charts (``plots``) and the techniques
(``labkit.webhooks``). Every error labkit raises on purpose is a
``LabkitError``. See docs/architecture.md for how the pieces fit.
"""

import logging

from labkit import lab, links, techniques
from labkit.clock import REAL_TIME, Clock
from labkit.errors import (BrokerUnavailable, ClockError, DecryptError, DeviceError, FrameError,
                           VapidError, CursorError, DeliveryError, EventStreamError,
                           ExerciseNotYet, FeedError,
                           HubClosedError,
                           HubError,
                           LabkitError, LabLoopError, PolicyError, PortInUseError, QueueError,
                           ProxyMissingError, RecordKindError, RejectedError,
                           SettingError, SignatureError,
                           UnknownTechniqueError, UsageError, WaitTimeout)
from labkit.feed import Event, Feed, fixed_rate, play, poisson
from labkit.lab import Server, run, serve, submit
from labkit.trace import Record, Trace
from labkit.wire import CLIENT_HEADER, annotate

__all__ = [
    "BrokerUnavailable", "CLIENT_HEADER", "Clock", "DecryptError", "DeviceError", "FrameError",
    "VapidError", "ClockError", "CursorError", "DeliveryError", "Event", "Feed",
    "EventStreamError", "ExerciseNotYet", "FeedError", "HubClosedError", "HubError", "LabLoopError", "LabkitError", "PolicyError",
    "PortInUseError", "ProxyMissingError", "QueueError", "REAL_TIME", "Record",
    "RecordKindError", "RejectedError", "Server", "SettingError", "SignatureError", "Trace",
    "UnknownTechniqueError", "UsageError", "WaitTimeout",
    "annotate", "fixed_rate", "lab", "links", "play", "plots", "poisson", "queues", "run", "serve",
    "submit", "techniques",
]


def __getattr__(name: str):
    """``labkit.plots`` and ``labkit.queues`` load on first use: plotting pulls in
    matplotlib and numpy (about half a second and 80 MB), which a script that
    only serves or sends never needs."""
    if name in ("plots", "queues"):
        import importlib
        return importlib.import_module(f"labkit.{name}")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")

logging.getLogger("labkit").addHandler(logging.NullHandler())
# Tornado reports handler errors on its own loggers; with no handler anywhere,
# Python's last-resort handler would print them from the lab thread into
# whatever notebook cell runs next. A NullHandler keeps them silent unless the
# student configures logging.
logging.getLogger("tornado").addHandler(logging.NullHandler())
