"""The live page: polling, long polling, SSE and a WebSocket racing in the browser.

See :mod:`labkit.live.page`.
"""

from labkit.live.page import EVENT_TYPE, LiveRace

__all__ = ["LiveRace", "EVENT_TYPE"]
