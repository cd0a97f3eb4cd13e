"""labkit: a teaching kit on how services talk to each other, measured live.

The public face: the lab loop (``lab``), the event source (``Feed``), the
recorder (``Trace``), the charts (``plots``) and the techniques
(``labkit.webhooks``). Every error labkit raises on purpose is a
``LabkitError``. See docs/architecture.md for how the pieces fit.
"""

import logging

from labkit import lab, plots, queues
from labkit.clock import REAL_TIME, Clock
from labkit.errors import (DeliveryError, LabkitError, LabLoopError, PortInUseError,
                           RejectedError, SignatureError)
from labkit.feed import Event, Feed, fixed_rate, play, poisson
from labkit.lab import Server, run, serve, submit
from labkit.trace import Record, Trace
from labkit.wire import CLIENT_HEADER, annotate

__all__ = [
    "CLIENT_HEADER", "Clock", "DeliveryError", "Event", "Feed", "LabLoopError", "LabkitError",
    "PortInUseError", "REAL_TIME", "Record", "RejectedError", "Server",
    "SignatureError", "Trace", "annotate", "fixed_rate", "lab", "play", "plots", "poisson",
    "queues", "run", "serve", "submit",
]

logging.getLogger("labkit").addHandler(logging.NullHandler())
# Tornado reports handler errors on its own loggers; with no handler anywhere,
# Python's last-resort handler would print them from the lab thread into
# whatever notebook cell runs next. A NullHandler keeps them silent unless the
# student configures logging.
logging.getLogger("tornado").addHandler(logging.NullHandler())
