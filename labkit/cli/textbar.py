"""A progress bar for a terminal: one line on stderr, redrawn in place; silence elsewhere.

A comparison of four techniques, or a sweep up to 1,000 clients, runs for
a while; on a terminal the user should see that it moves and what it is
doing. When stderr is not a terminal (a test, a pipe, a CI log) the bar
draws nothing at all, so what a script captures stays clean. (In a
notebook, :class:`labkit.progress.Progress` draws the HTML bar instead.)

The work is a list of steps (one run each). A step cannot report from
inside :func:`~labkit.push.scale.run_clients`, so within a step the bar
moves by time against the step's expected length (its schedule of events),
never past the step's end until the step is done::

    [##########..............]  2/4  sse, 10 clients  3.1 s

Example::

    with TextBar(steps=2) as bar:
        bar.start("polling, 10 clients", expected=2.0)
        run()
        bar.start("sse, 10 clients", expected=2.0)
        run()

Thread-safety: the steps are set from the thread doing the work; a daemon
thread redraws every ``every`` seconds (only when shown), and writes under
a lock so a line is never drawn twice at once.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["TextBar"]

WIDTH = 24
"""Characters of the bar itself."""
_CLEAR = "\r\x1b[K"
"""Back to the start of the line, and erase it (ECMA-48 'erase in line')."""


class TextBar:
    """``steps`` steps on ``stream`` (stderr), drawn only if it is a terminal (or ``show``)."""

    def __init__(self, steps: int, *, stream: TextIO | None = None, show: bool | None = None,
                 every: float = 0.2):
        self.steps = max(1, steps)
        self.stream = stream if stream is not None else sys.stderr
        self.show = self.stream.isatty() if show is None else show
        self.every = every
        self.done = 0
        self.label = ""
        self._expected = 1.0
        self._step_started = time.monotonic()
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TextBar:
        if self.show:
            self._thread = threading.Thread(target=self._redraw, name="labkit-textbar",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            with self._lock:
                self.stream.write(_CLEAR)
                self.stream.flush()

    def start(self, label: str, expected: float) -> None:
        """Begin the next step (the previous one counts as done), expected to last
        ``expected`` seconds."""
        with self._lock:
            if self.label:
                self.done = min(self.done + 1, self.steps)
            self.label = label
            self._expected = max(expected, 0.1)
            self._step_started = time.monotonic()

    def line(self) -> str:
        """The bar as it would be drawn now."""
        now = time.monotonic()
        within = min((now - self._step_started) / self._expected, 0.95) if self.label else 0.0
        filled = round(WIDTH * (self.done + within) / self.steps)
        return (f"[{'#' * filled}{'.' * (WIDTH - filled)}]  {self.done + 1}/{self.steps}  "
                f"{self.label}  {now - self._started:.1f} s")

    def _redraw(self) -> None:
        while not self._stopped.wait(self.every):
            with self._lock:
                self.stream.write(_CLEAR + self.line())
                self.stream.flush()
