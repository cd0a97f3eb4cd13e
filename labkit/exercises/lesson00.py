"""Checks for lesson 00 (start here): latency at another rate, the headers' share of a
large event, and two receivers writing into one trace."""

from __future__ import annotations

from numbers import Real

from labkit import lab
from labkit.errors import LabkitError
from labkit.exercises import NotYet, attempted, exercise
from labkit.experiments.start import shop_sends_updates
from labkit.trace import Trace

LATENCY_CHOICES = ("about the same", "much higher", "much lower")


@exercise("00.1", "The median latency at rate=200")
def _(answer):
    if answer not in LATENCY_CHOICES:
        raise NotYet(f"{answer!r} is not one of {LATENCY_CHOICES}",
                     hint="copy one of the three phrases exactly")
    if answer != "about the same":
        raise NotYet(f"the median latency is not {answer} at rate=200",
                     hint="latency runs from an event's creation to its arrival, and the shop "
                          "makes each event just before it posts it: what does a shorter gap "
                          "between events change about one POST?")
    return ("Each event is created the moment it is posted, so its latency is one POST on "
            "loopback, a few milliseconds at any rate; the rate only changes the gaps between "
            "posts (as long as one POST is done before the next event is due).")


@exercise("00.2", "The headers' share of a 50 KB event")
def _(answer):
    if not isinstance(answer, Real) or isinstance(answer, bool):
        raise NotYet(f"the answer is a number (a share such as 0.62), not {answer!r}",
                     hint="1 - body bytes / request bytes, from the run's trace")
    if not 0 <= answer <= 1:
        raise NotYet(f"{answer} is not a share between 0 and 1",
                     hint="write 62 % as 0.62, and 0.5 % as 0.005")
    run = shop_sends_updates(count=1, payload_bytes=50_000)
    share = run.header_shares[0]
    if abs(answer - share) > 0.002:
        small = "; that is about the share of the small event" if answer > 0.3 else ""
        raise NotYet(f"{answer:.4f} is not close to the share this machine measures{small}",
                     hint="the headers stay about the same size while the body grows to "
                          "50,000 bytes: divide, do not subtract")
    return (f"The headers are about {run.request_bytes[0] - run.body_bytes[0]} bytes whatever "
            f"the body, so for a 50 KB event they are {share:.1%} of the request instead of "
            f"about 60 %: HTTP's envelope only matters for small messages.")


@exercise("00.3", "Two receivers, one trace")
def _(two_receivers):
    if not callable(two_receivers):
        raise NotYet("the answer is the function two_receivers itself",
                     hint="write check('00.3', two_receivers), without calling it")
    trace = Trace()
    before = set(lab.running_servers())
    try:
        attempted(two_receivers(trace))
    except LabkitError as exc:
        raise NotYet(f"two_receivers raised {type(exc).__name__}: {exc}",
                     hint="name the receivers with variants of webhook, such as "
                          "technique='webhook: a'") from None
    finally:
        left = [server for server in lab.running_servers() if server not in before]
        for server in left:
            server.stop()
    if left:
        raise NotYet(f"{len(left)} receiver(s) were still running when the function returned "
                     f"(the check stopped them)", hint="stop each server, or use 'with'")
    served = {technique: counts for technique, counts in trace.counts().items()
              if counts.get("request") and counts.get("response")}
    if not served:
        raise NotYet("the trace passed to two_receivers recorded no request at all",
                     hint="pass trace=trace to serve_receiver, so both write into it")
    if len(served) < 2:
        raise NotYet(f"every request in the trace is under one technique, {list(served)}",
                     hint="give each receiver its own technique name, such as "
                          "'webhook: a' and 'webhook: b', or the timeline draws one lane")
    return (f"Both receivers wrote into one trace ({', '.join(served)}), so one timeline "
            f"draws both on one clock, each with its own lanes.")
