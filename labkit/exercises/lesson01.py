"""Checks for lesson 01 (direct calls vs queues): which queues keep order, retrying through
an outage, how long a lease hides a crashed message, when a body outweighs its headers, and
how many deliveries consumer groups on Redis make."""

from __future__ import annotations

from numbers import Real

from labkit.exercises import NotYet, exercise
from labkit.experiments.queues import crash_before_ack, fan_out, notification_sizes

ORDER_OPTIONS = {
    "broker, one consumer, no crash": True,
    "broker, one consumer, a crash before an ack": False,
    "broker, three consumers": False,
    "SQS standard queue": False,
    "SQS FIFO queue, one message group": True,
    "Kafka topic, one partition": True,
    "Kafka topic, across partitions": False,
}
"""Each setting, and whether a consumer sees its messages in publish order."""

_WHY = {
    "broker, one consumer, a crash before an ack":
        ("a redelivered message comes back after the later ones",
         "look at crash.processed in section 5"),
    "broker, three consumers":
        ("several workers finish in the order their work ends, not in publish order",
         "run several_workers() and compare processed with published"),
    "SQS standard queue":
        ("an SQS standard queue only tries to keep order (best effort) and may deliver twice",
         "the lecture notes list SQS as ordered: which kind of SQS queue promises it?"),
    "Kafka topic, across partitions":
        ("Kafka orders messages within a partition only",
         "two messages in different partitions are read by different consumers"),
    "broker, one consumer, no crash":
        ("one consumer of the kit's broker, with nothing failing, sees publish order",
         "section 3: the five orders were processed as published"),
    "SQS FIFO queue, one message group":
        ("an SQS FIFO queue keeps strict order within a message group",
         "FIFO means first in, first out"),
    "Kafka topic, one partition":
        ("a Kafka partition is an ordered log, read in order",
         "Kafka does keep order, within one partition"),
}


def _as_set(answer) -> set:
    if isinstance(answer, str) or not hasattr(answer, "__iter__"):
        raise NotYet(f"the answer is a list or set of options, not {answer!r}",
                     hint='for example {"broker, one consumer, no crash", ...}')
    chosen = set(answer)
    unknown = [option for option in chosen if option not in ORDER_OPTIONS]
    if unknown:
        raise NotYet(f"{unknown[0]!r} is not one of the options",
                     hint="copy names from labkit.exercises.lesson01.ORDER_OPTIONS")
    return chosen


@exercise("01.1", "Which queues keep publish order?")
def _(answer):
    chosen = _as_set(answer)
    for option in ORDER_OPTIONS:
        keeps = ORDER_OPTIONS[option]
        if (option in chosen) != keeps:
            problem, hint = _WHY[option]
            verdict = "keeps order but is missing" if keeps else "does not keep order"
            raise NotYet(f"{option!r} {verdict}: {problem}", hint=hint)
    return ("Order holds only where one reader takes one ordered line of messages and nothing "
            "is handed out twice: one consumer without failures, an SQS FIFO message group, a "
            "Kafka partition. Standard SQS, several workers, redeliveries and several "
            "partitions all break it.")


@exercise("01.2", "Retrying a direct call through the outage")
def _(answer):
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer <= 10:
        raise NotYet(f"the answer is how many of the 10 outage orders got through, "
                     f"a whole number from 0 to 10, not {answer!r}",
                     hint="run.reached_service_in_window")
    if answer != 10:
        raise NotYet(f"{answer} is not what the shop gets with 5 tries, 0.3 s apart",
                     hint="5 tries 0.3 s apart span 1.2 s, longer than the 1 s outage; and "
                          "while the shop retries, its later orders wait behind it")
    return ("All 10: the tries of the first outage order span 1.2 s, so the last one lands "
            "after the service is back, and the later orders, held up behind it, go out once "
            "it is. The price is the shop's wait: over a second for that order, the very "
            "coupling in time a queue removes.")


@exercise("01.3", "When does a crashed message come back with a 0.3 s lease?")
def _(answer):
    if not isinstance(answer, Real) or isinstance(answer, bool) or answer < 0:
        raise NotYet(f"the answer is a number of seconds >= 0, not {answer!r}",
                     hint="crash.redelivered_after")
    measured = crash_before_ack(lease=0.3).redelivered_after
    if abs(answer - measured) > 0.1:
        raise NotYet(f"{answer:g} s is not close to the {measured:.2f} s this machine measures",
                     hint="the broker hands a message out again when its lease (the "
                          "visibility timeout) runs out, counted from its delivery")
    return (f"About {measured:.2f} s: a crashed message stays hidden for exactly one lease. "
            f"A short lease brings it back sooner, but a consumer slower than the lease gets "
            f"its message handed to another worker while it still works on it.")


@exercise("01.4", "From which body size does the body outweigh the headers?")
def _(answer):
    if not isinstance(answer, int) or isinstance(answer, bool) or answer < 0:
        raise NotYet(f"the answer is a number of bytes, a whole number, not {answer!r}",
                     hint="compare sizes.bodies with sizes.wire")
    head = notification_sizes({"empty": b""}).heads[0]
    smallest = next(n for n in range(1, 10 * head)
                    if n > head - 1 + len(str(n)))  # Content-Length grows a digit at a time
    if abs(answer - smallest) > 5:
        raise NotYet(f"{answer} bytes is not where the body starts to be more than half "
                     f"of the request",
                     hint=f"the line and headers of an empty notification are {head} bytes; "
                          f"they hardly grow with the body")
    return (f"About {smallest} bytes: the request line and headers take ~{head} bytes "
            f"whatever the body, so only a body larger than that is most of the traffic. "
            f"Most webhooks are a few hundred bytes to a few KB, so their headers still matter.")


GROUPS = {"emails": 4, "analytics": 1, "invoices": 1}
"""Exercise 01.5's consumer groups and how many consumers each has."""


@exercise("01.5", "How many deliveries do three consumer groups make?")
def _(answer):
    if not isinstance(answer, int) or isinstance(answer, bool) or answer < 0:
        raise NotYet(f"the answer is a count of orders processed, a whole number, not "
                     f"{answer!r}", hint="sum(len(v) for v in run.received.values())")
    run = fan_out(orders=20, groups=GROUPS)
    total = sum(len(numbers) for numbers in run.received.values())
    if answer == 20:
        raise NotYet("20 is what one group processes: every group gets every order",
                     hint="count run.seen_by(group) for each of the three groups")
    if answer != total:
        raise NotYet(f"{answer} orders processed is not what the run shows",
                     hint="the four email workers share one group's 20 orders between them")
    return (f"{total}: each of the {len(GROUPS)} groups processes all 20 orders once (pub/sub), "
            f"and the four email workers split their group's 20 (a work queue), so adding "
            f"workers to a group shares work and adding a group adds a copy of every message.")
