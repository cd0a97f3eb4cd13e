"""Checks for lesson 09 (head to head): a technique for an alert that must reach a closed app,
what polling costs when events are rare, and which of two pulls is cheaper when they are
frequent. Each check re-runs a small seeded comparison and answers with its numbers."""

from __future__ import annotations

from numbers import Real

from labkit.exercises import NotYet, exercise
from labkit.experiments.head_to_head import FREQUENT, RARE, TECHNIQUES, same_feed
from labkit.push.scale import run_clients


def _technique(answer, among: tuple[str, ...]) -> str:
    if answer not in among:
        raise NotYet(f"the answer is one of {', '.join(repr(t) for t in among)}, not {answer!r}",
                     hint="copy a technique's name exactly, e.g. 'long-polling'")
    return answer


@exercise("09.1", "A technique for an alert that must reach a closed app")
def _(answer):
    choice = _technique(answer, TECHNIQUES)
    race = same_feed(events=2, rate=20.0, interval=0.2, receivers=1, closed=2, seed=1)
    got = {name: row.closed for name, row in race.rows.items()}
    if choice == "webhook":
        raise NotYet("a webhook is a POST to a server with a public URL; the customer's phone "
                     "is not one (it sits behind a mobile network and may be switched off)",
                     hint="which technique ends on the device itself, through a push service?")
    if choice != "webpush":
        raise NotYet(f"with the app closed, {choice} delivered {got[choice]} of 2 events: it "
                     f"needs a running page to receive anything",
                     hint="run same_feed(closed=2) and read the 'app closed' column")
    return (f"Web Push: with every page closed it still delivered {got['webpush']} of 2 events, "
            f"the page techniques 0. The browser keeps one connection to its push service and "
            f"wakes the site's service worker, which shows the alert.")


@exercise("09.2", "Requests per event when events are rare")
def _(answer):
    if not isinstance(answer, Real) or isinstance(answer, bool) or answer <= 0:
        raise NotYet(f"the answer is a number of requests per event (> 0), not {answer!r}",
                     hint="result.requests / result.deliveries")
    result = run_clients("polling", clients=1, seed=1, **RARE)
    measured = result.requests / result.deliveries
    if abs(answer - measured) > 0.2 * measured:  # the compressed clock: 12 to 14 a run
        raise NotYet(f"{answer:g} requests per event is not what polling every 5 s spends on "
                     f"one event a minute", hint="run run_clients('polling', clients=1, seed=1, "
                     "**RARE) and divide its requests by its deliveries")
    return (f"About {measured:.1f}: one event a minute, a poll every 5 s, so about 12 polls per "
            f"event, 11 of them empty ({result.wasted_share:.0%} of answers carried nothing). "
            f"That is the notes' 'Low' efficiency.")


@exercise("09.3", "Which pull is cheaper when events are frequent")
def _(answer):
    choice = _technique(answer, ("polling", "long-polling"))
    cost = {}
    for name in ("polling", "long-polling"):
        result = run_clients(name, clients=1, seed=1, **FREQUENT)
        cost[name] = result.requests / result.deliveries
    cheaper = min(cost, key=cost.get)
    if choice != cheaper:
        raise NotYet(f"at 40 events a second {choice} spent {cost[choice]:.2f} requests per "
                     f"event, {cheaper} {cost[cheaper]:.2f}",
                     hint="a long poll is answered as soon as anything is new, so each answer "
                          "carries about one event; a poll every 0.5 s finds twenty waiting")
    return (f"Polling: {cost['polling']:.2f} requests per event against long polling's "
            f"{cost['long-polling']:.2f}. When events are frequent each poll collects many, "
            f"so the notes' 'Low' efficiency of polling holds only when events are rare.")
