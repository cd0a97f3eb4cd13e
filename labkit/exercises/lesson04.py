"""Checks for lesson 04 (reliable webhooks): the outage a schedule rides out, equal jitter in
a herd, one background worker, and charging once when answers are lost after the work."""

from __future__ import annotations

from collections import Counter
from numbers import Real

from labkit.clock import Clock
from labkit.exercises import NotYet, attempted, exercise
from labkit.experiments.reliability import MINUTE, PROVIDER, modelled_peak
from labkit.feed import Feed
from labkit.webhooks.backoff import EqualJitter, Exponential, FixedSchedule, FullJitter
from labkit.webhooks.faults import LostAck
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.sender import DELIVERED, Sender

HERD_CHOICES = ("closer to no jitter", "closer to full jitter")


def _number(answer, what: str, hint: str) -> float:
    if not isinstance(answer, Real) or isinstance(answer, bool):
        raise NotYet(f"the answer is a number of {what}, not {answer!r}", hint=hint)
    return float(answer)


@exercise("04.1", "The longest outage FixedSchedule([15, 15, 15]) rides out")
def _(answer):
    seconds = _number(answer, "simulated seconds", "e.g. 90 for a minute and a half")
    waits = FixedSchedule([15, 15, 15]).nominal
    longest = sum(waits)
    if abs(seconds - waits[0]) <= 2:
        raise NotYet(f"{answer} s is one wait; an event has three retries",
                     hint="an event sent just as the receiver goes down: when is its last try?")
    if abs(seconds - longest) > 5:
        raise NotYet(f"{answer} s is not what the schedule allows",
                     hint="run receiver_goes_down(policy=FixedSchedule([15, 15, 15]), "
                          "down_for=...) with outages just below and just above your answer")
    return (f"An event sent as the receiver goes down is tried again {longest:.0f} s later for "
            f"the last time, so an outage up to about {longest:.0f} s loses nothing, and a "
            f"longer one loses the events sent at its start. Svix's schedule rides out a day.")


@exercise("04.2", "Equal jitter in a herd")
def _(answer):
    if answer not in HERD_CHOICES:
        raise NotYet(f"{answer!r} is not one of {HERD_CHOICES}", hint="copy one exactly")
    peaks = {kind.__name__: modelled_peak(kind(base=MINUTE, cap=16 * MINUTE, retries=12))
             for kind in (Exponential, FullJitter, EqualJitter)}
    closer = ("closer to full jitter" if abs(peaks["EqualJitter"] - peaks["FullJitter"])
              < abs(peaks["EqualJitter"] - peaks["Exponential"]) else "closer to no jitter")
    if answer != closer:
        raise NotYet("that is not what the herd shows",
                     hint="equal jitter keeps half of each wait fixed and draws the other half "
                          "at random: do 60 senders still arrive in the same minute? Try "
                          "thundering_herd(policies={...}) or modelled_peak(EqualJitter(...))")
    return (f"Busiest minute (model without network time): no jitter {peaks['Exponential']}, "
            f"equal jitter {peaks['EqualJitter']}, full jitter {peaks['FullJitter']}. Half a "
            f"wait at random already breaks the lockstep; full jitter spreads a little more, "
            f"but may retry almost at once.")


@exercise("04.3", "One background worker")
def _(answer):
    seconds = _number(answer, "real seconds", "e.g. 1.5")
    reports, work = 6, 0.6
    if abs(seconds - work) < 0.1:
        raise NotYet("0.6 s is one report's work: with six workers they ran side by side",
                     hint="with workers=1, how many reports are worked on at a time?")
    if seconds < 0.1:
        raise NotYet("that is how long the provider waits, not when the work is done",
                     hint="answer_first(workers=1).last_done['answers first']")
    if abs(seconds - reports * work) > 0.4:
        raise NotYet(f"{answer} s is not when the last of six 0.6-second reports is done",
                     hint="one worker takes the reports from the queue one after another")
    return (f"One worker does the six reports one after another: the last is done about "
            f"{reports * work:.1f} s after the first request. The provider does not notice: "
            f"each answer still comes back in milliseconds. Only the queue grows.")


@exercise("04.4", "Charge once, even when the answer is lost after the work")
def _(charge_once):
    if not callable(charge_once):
        raise NotYet("the answer is the function charge_once itself",
                     hint="write check('04.4', charge_once), without calling it")
    charged: Counter = Counter()
    process = attempted(charge_once(lambda d: charged.update([d.payload["data"]["order"]])))
    if not callable(process):
        raise NotYet(f"charge_once(charge) returned {process!r}, not a process function",
                     hint="return something the receiver can call with each delivery")
    feed = Feed(seed=44)
    payments = [feed.make("payment.succeeded", {"order": 5000 + n}) for n in range(12)]
    with serve_receiver(process=LostAck(process, rate=0.3, seed=4)) as server, \
            Sender(PROVIDER, server.endpoint_url, policy=Exponential(base=1, cap=4, retries=8),
                   clock=Clock(speedup=2000), seed=4) as sender:
        sender.run(payments, timeout=20)
    delivered = sum(e.state == DELIVERED for e in sender.log.values())
    twice = sorted(order for order, times in charged.items() if times > 1)
    never = [p.payload["order"] for p in payments if p.payload["order"] not in charged]
    if twice:
        raise NotYet(f"orders {twice} were charged more than once",
                     hint="the receiver saw a 500 after the charge, so it let the retry in: "
                          "remember the delivery ids whose work is done (lesson 04, "
                          "processing.Idempotent)")
    if never or delivered < len(payments):
        raise NotYet(f"{len(never)} payments were never charged",
                     hint="the process must still call charge for each new delivery")
    return ("Every customer charged once. The receiver only knows what it answered: a 500 "
            "after the work makes it process the retry. Idempotency that sits next to the "
            "work (the same transaction, in production) covers that case too.")
