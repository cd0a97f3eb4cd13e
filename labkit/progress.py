"""A progress bar for experiments that take more than a moment, and silence elsewhere.

An experiment that runs for more than about two seconds should show a
student that something is happening. In a notebook, :class:`Progress` draws
one HTML bar under the cell and updates it in place (``update_display``);
in a plain script, a test or a pipe it prints nothing at all, so stderr
stays clean and CI logs stay readable. It never prints from a background
thread: the experiment's own thread (the cell) updates it.

Example::

    with Progress(total=30, label="retrying through an outage") as bar:
        for _ in range(30):
            ...
            bar.advance()
"""

from __future__ import annotations

import html
import itertools
import time

__all__ = ["Progress", "in_notebook"]

_IDS = itertools.count(1)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where rich output can be shown), else False."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """An in-place HTML progress bar in a notebook; nothing anywhere else.

    ``total`` steps; :meth:`advance` moves it on, :meth:`update` sets it. The
    bar is redrawn at most every ``every`` seconds, so a tight loop costs
    nothing noticeable.
    """

    def __init__(self, total: int, label: str = "", *, every: float = 0.2,
                 show: bool | None = None):
        self.total = max(1, int(total))
        self.label = label
        self.done = 0
        self.every = every
        self.show = in_notebook() if show is None else show
        self._id = f"labkit-progress-{next(_IDS)}"
        self._drawn = 0.0
        self._started = time.monotonic()
        self._handle = None

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(force=True)

    def advance(self, steps: int = 1) -> None:
        self.update(self.done + steps)

    def update(self, done: int) -> None:
        self.done = min(max(0, done), self.total)
        self._draw()

    def html(self) -> str:
        """The bar as HTML (what the notebook shows)."""
        share = self.done / self.total
        elapsed = time.monotonic() - self._started
        return (f"<div style='font-family:sans-serif;font-size:small'>"
                f"{html.escape(self.label)} <progress value='{self.done}' max='{self.total}' "
                f"style='width:40%'></progress> {self.done}/{self.total} "
                f"({share:.0%}, {elapsed:.1f} s)</div>")

    def _draw(self, force: bool = False) -> None:
        if not self.show:
            return
        now = time.monotonic()
        if not force and now - self._drawn < self.every and self.done < self.total:
            return
        self._drawn = now
        from IPython.display import HTML, display, update_display
        if self._handle is None:
            self._handle = display(HTML(self.html()), display_id=self._id)
        else:
            update_display(HTML(self.html()), display_id=self._id)
