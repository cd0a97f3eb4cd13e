"""Checks for lesson 02 (webhooks): a retry that comes too early, a slow chat room behind a
relay, out-of-order status callbacks, and when polling costs as many requests as a webhook."""

from __future__ import annotations

from numbers import Real

from labkit.exercises import NotYet, attempted, exercise
from labkit.experiments.webhooks import github_to_chat


@exercise("02.1", "Which pushes arrive with one retry after 0.2 s?")
def _(answer):
    try:
        arrived = sorted(int(n) for n in answer)
    except (TypeError, ValueError):
        raise NotYet(f"the answer is a list of push numbers, such as [1, 2], not {answer!r}",
                     hint="look at run.received") from None
    if arrived != [1, 2, 5]:
        hint = ("a retry only helps if the receiver is back when it is sent: when does it "
                "come back, and when are the retries of pushes 3 and 4 sent?")
        if 3 in arrived or 4 in arrived:
            raise NotYet(f"{arrived}: pushes 3 or 4 did not arrive", hint=hint)
        raise NotYet(f"{arrived} is not the list of pushes the receiver accepted", hint=hint)
    return ("Pushes 1, 2 and 5. Each retry of 3 and 4 came 0.2 s later, while the receiver was "
            "still down, so it failed too: a retry must wait longer than the outage lasts, "
            "which is why real providers retry for hours with growing waits (lesson 04).")


@exercise("02.2", "GitHub's wait behind a slow chat room")
def _(answer):
    if not isinstance(answer, Real) or isinstance(answer, bool) or answer < 0:
        raise NotYet(f"the answer is a number of seconds, not {answer!r}",
                     hint="statistics.median(run.github_waits)")
    measured = github_to_chat(chat_delay=0.3, pushes=1, chat_down=False).github_waits[0]
    if abs(answer - measured) > 0.1:
        raise NotYet(f"{answer:g} s is not close to the {measured:.2f} s this machine measures",
                     hint="the relay calls the chat room inside GitHub's request: GitHub's "
                          "answer waits for the chat room's, once per push")
    return (f"About {measured:.2f} s: the relay posts to the chat room inside GitHub's request, "
            f"so every push now costs GitHub the chat room's 0.3 s. A slow or broken downstream "
            f"service becomes the provider's problem; answering first and relaying afterwards "
            f"(a queue, lesson 04) cuts the chain.")


_STATUS_CASES = [
    (None, "sent", True, "the first callback of a message"),
    ("sent", "delivered", True, "delivered after sent"),
    ("sent", "undelivered", True, "undelivered after sent"),
    ("queued", "failed", True, "failed after queued"),
    ("delivered", "sent", False, "a late sent after delivered"),
    ("undelivered", "sent", False, "a late sent after undelivered"),
    ("sent", "queued", False, "a late queued after sent"),
]


@exercise("02.3", "Ignore a status callback that arrives late")
def _(newer):
    if not callable(newer):
        raise NotYet("the answer is the function newer itself",
                     hint="write check('02.3', newer), without calling it")
    for current, incoming, keep, case in _STATUS_CASES:
        try:
            got = newer(current, incoming)
        except Exception as exc:  # the student's function: say what broke, do not crash
            raise NotYet(f"newer({current!r}, {incoming!r}) raised {exc!r}",
                         hint="current is None for a message's first callback") from None
        if bool(attempted(got)) != keep:
            raise NotYet(f"newer({current!r}, {incoming!r}) returned {got!r}: for {case} "
                         f"the answer is {keep}",
                         hint="rank the statuses, queued < sent < delivered, undelivered, "
                              "failed, and compare ranks; comparing the words themselves "
                              "compares them alphabetically")
    return ("A status callback says where a message is now, so a receiver keeps the furthest "
            "status it has seen and ignores one that arrives late. Without it, the late 'sent' "
            "would overwrite 'delivered'.")


@exercise("02.4", "When does polling cost as many requests as the webhook?")
def _(answer):
    if not isinstance(answer, Real) or isinstance(answer, bool) or answer <= 0:
        raise NotYet(f"the answer is a polling interval in seconds, not {answer!r}",
                     hint="try polling_race(interval=...) with a few intervals")
    if not 0.2 <= answer <= 0.32:
        direction = "more" if answer < 0.2 else "fewer"
        raise NotYet(f"polling every {answer:g} s makes clearly {direction} requests than the "
                     f"webhook's one per event",
                     hint="events come 4 per second on average: how far apart are they, and "
                          "how many polls does that make per event?")
    return ("Polling makes one request per interval, the webhook one per event; with 4 events a "
            "second they match at about 0.25 s, the mean gap between events. Polling slower "
            "saves requests but makes each event wait longer (half an interval on average); "
            "when events come faster than the polls, one poll brings several.")
