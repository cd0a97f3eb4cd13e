"""Checks for lesson 06 (polling and long polling): the share of empty polls, a refresh
interval for a staleness target, what an idle long poll costs, and when polling needs
fewer requests than long polling."""

from __future__ import annotations

import math
from numbers import Real

from labkit.exercises import NotYet, attempted, exercise

CASES = ((1, 10), (1, 60), (6, 5), (0.5, 30), (12, 10), (2, 45))
"""(forecasts per hour, minutes between polls) at which 06.1's check calls the answer."""
TARGET, PER_HOUR = 3, 1
"""06.2: the mean staleness allowed (minutes), and forecasts per hour."""
HOLD = 20
"""06.3: the long poll's hold, in seconds."""
OPTIONS = ("polling", "long-polling", "the same")
"""06.4's choices."""


def _number(value, what: str, hint: str) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise NotYet(f"{what} is a number, not {value!r}", hint=hint)
    return float(value)


@exercise("06.1", "The share of polls that come back empty")
def _(answer):
    if not callable(answer):
        raise NotYet(f"the answer is a function wasted_share(per_hour, minutes), not "
                     f"{answer!r}", hint="def wasted_share(per_hour, minutes): return ...")
    for per_hour, minutes in CASES:
        try:
            got = answer(per_hour, minutes)
        except Exception as exc:
            raise NotYet(f"wasted_share({per_hour}, {minutes}) raised {exc!r}",
                         hint="math.exp is what the model needs") from None
        got = _number(attempted(got), f"wasted_share({per_hour}, {minutes})",
                      "return a share, from 0 to 1")
        load = per_hour * minutes / 60  # λT: forecasts expected per interval
        want = math.exp(-load)
        if math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-6):
            continue
        named = {1 - want: ("the share of polls that bring news",
                            "a poll is wasted when *no* forecast came in its interval"),
                 max(0.0, 1 - load): ("the share for evenly spaced forecasts",
                                      "random forecasts cluster: some intervals get two, so "
                                      "more of them get none"),
                 load: ("λT itself, the forecasts expected per interval",
                        "turn it into the chance of none: e^(-λT)"),
                 math.exp(-per_hour * minutes): ("e^(-λT) with λ per hour and T in minutes",
                                                 "count both in hours: T = minutes / 60")}
        for value, (what, hint) in named.items():
            if math.isclose(got, value, rel_tol=1e-3, abs_tol=1e-6):
                raise NotYet(f"wasted_share({per_hour}, {minutes}) = {got:.4g} is {what}",
                             hint=hint)
        raise NotYet(f"wasted_share({per_hour}, {minutes}) = {got:.4g}, expected "
                     f"{want:.4g}", hint="the chance that a Poisson process with mean λT "
                     "per interval puts nothing in one interval")
    return ("A poll is empty when no forecast came since the poll before: for forecasts at "
            "random (a Poisson process) that chance is e^(-λT). It is over one half only "
            "while λT < ln 2 ≈ 0.69, so forecasts a bit rarer than polls do not yet make "
            "most polls empty; at the notes' hourly forecasts and 10-minute refresh it is "
            f"{math.exp(-1 / 6):.0%}.")


@exercise("06.2", "A refresh interval for a staleness target")
def _(answer):
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise NotYet(f"the answer is two numbers, (minutes between polls, polls per forecast), "
                     f"not {answer!r}", hint="answer = (interval, polls_per_forecast)")
    minutes = _number(attempted(answer[0]), "the interval", "in minutes")
    polls = _number(attempted(answer[1]), "polls per forecast", "each phone's polls per forecast")
    interval = 2 * TARGET
    if math.isclose(minutes, TARGET, abs_tol=0.1):
        raise NotYet(f"{minutes:g} minutes is the mean delay you want, not the interval",
                     hint="the mean delay is half the interval")
    if not math.isclose(minutes, interval, abs_tol=0.1):
        raise NotYet(f"polling every {minutes:g} minutes gives a mean delay of "
                     f"{minutes / 2:g} minutes, not {TARGET}", hint="the mean delay is T / 2")
    expected = 60 / (PER_HOUR * interval)
    if not math.isclose(polls, expected, rel_tol=0.02):
        raise NotYet(f"at {PER_HOUR} forecast an hour, a phone polling every {interval} "
                     f"minutes does not make {polls:g} polls per forecast",
                     hint="polls per forecast = 1 / (λT): polls an hour over forecasts an hour")
    return (f"Every {interval} minutes: forecasts then wait {TARGET} minutes on average (T/2), "
            f"and each phone makes {expected:g} polls per forecast, {expected - 1:g} of them "
            f"(or more) empty. Halving the staleness doubles the requests: see "
            f"weather_app(intervals=({interval},), story={interval}).")


@exercise("06.3", "What an idle long poll costs")
def _(answer):
    count = _number(answer, "a number of requests", "count the requests in one hour")
    expected = 3600 / HOLD
    if count in (0, 1):
        raise NotYet(f"{count:g}: a held request does not last the hour",
                     hint=f"the server answers an empty poll after the hold ({HOLD} s), "
                          f"and the client asks again at once")
    if math.isclose(count, 3600 / 30, rel_tol=0.01):
        raise NotYet(f"{count:g} is for a 30 s hold (the server's cap), but this client asks "
                     f"for {HOLD} s", hint="wait=20 holds 20 s")
    if not math.isclose(count, expected, rel_tol=0.01):
        raise NotYet(f"{count:g} requests is not what one client makes in a silent hour",
                     hint=f"one request per hold: 3600 / {HOLD}")
    return (f"{expected:.0f}: each held request ends empty after {HOLD} s and the client asks "
            f"again, so a silent hour costs {expected:.0f} exchanges per client (every one "
            f"'wasted'). Holds are kept under about 30 s because proxies cut requests that "
            f"stay silent longer; SSE's heartbeat comments (lesson 07) cost a few bytes "
            f"instead.")


@exercise("06.4", "When polling needs fewer requests")
def _(answer):
    if answer not in OPTIONS:
        raise NotYet(f"{answer!r} is not one of {OPTIONS}", hint="copy one of the names")
    if answer == "long-polling":
        raise NotYet("long polling answers as soon as there is news, so at 10 events a second "
                     "it makes about one request per event (or per few, when they bunch)",
                     hint="how many requests does polling every 2 s make, whatever happens?")
    if answer == "the same":
        raise NotYet("the two count requests differently: one per answer with news, or one "
                     "per interval, news or not", hint="compare 10 events a second with one "
                     "poll every 2 s")
    return ("Polling: one poll every 2 s brings the ~20 events that came since the last one, "
            "0.05 requests per event, while long polling pays about one request per event. "
            "Long polling saves requests only when events are rarer than polls; when they are "
            "more frequent, polling batches them (at the price of up to 2 s of delay). Section "
            "6 measured it: 12 events a second, polls every 0.5 s.")
