"""Reference answers for lesson 06 (polling and long polling), and typical wrong ones."""

import math


def _wasted_share(per_hour, minutes):
    """A poll is empty when no forecast came in its interval: e^(-λT), λT = per_hour × hours."""
    return math.exp(-per_hour * minutes / 60)


def _share_with_news(per_hour, minutes):
    return 1 - math.exp(-per_hour * minutes / 60)


def _evenly_spaced(per_hour, minutes):
    return max(0.0, 1 - per_hour * minutes / 60)


def _minutes_not_hours(per_hour, minutes):
    return math.exp(-per_hour * minutes)


ANSWERS = {
    "06.1": _wasted_share,
    "06.2": (6, 10),    # mean delay T/2 = 3 min -> T = 6 min; 60 / 6 = 10 polls per forecast
    "06.3": 180,        # 3600 s / a 20 s hold
    "06.4": "polling",  # one poll every 2 s brings ~20 events; long polling ~1 request each
}

WRONG = {
    "06.1": [_share_with_news, _evenly_spaced, _minutes_not_hours, lambda p, m: p * m / 60,
             0.85],
    "06.2": [(3, 20), (6, 1), (12, 5), 6],
    "06.3": [1, 0, 120, 3600],
    "06.4": ["long-polling", "the same", "sse"],
}
