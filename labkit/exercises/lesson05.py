"""Checks for lesson 05 (debugging webhooks): a replayed Twilio callback, losses and refusals
adding up, a slow network against a slow receiver, and a relay that answers 502."""

from __future__ import annotations

import time
from numbers import Real

import requests

from labkit.debug.relay import serve_relay
from labkit.exercises import NotYet, exercise
from labkit.experiments.debugging import GITHUB_SECRET
from labkit.feed import Feed
from labkit.webhooks.providers import GitHubProvider
from labkit.webhooks.receiver import serve_receiver

REPLAY_REASONS = ("the bin changed the body", "Twilio signed the bin's URL, not the receiver's",
                  "the signature expired")
SLOW_NETWORK = ("a timeout, and the receiver never gets the event",
                "a timeout, but the receiver gets the event anyway", "a 504 from the relay")


@exercise("05.1", "Why a replayed Twilio callback is refused")
def _(answer):
    if answer not in REPLAY_REASONS:
        raise NotYet(f"{answer!r} is not one of {REPLAY_REASONS}", hint="copy one exactly")
    if answer == REPLAY_REASONS[0]:
        raise NotYet("the bin keeps the body byte for byte, and replay sends those bytes",
                     hint="compare captured.body with what Twilio built: what else does "
                          "Twilio's signature cover?")
    if answer == REPLAY_REASONS[2]:
        raise NotYet("Twilio signs no timestamp, so its signature never expires",
                     hint="lesson 03's table: what does Twilio sign?")
    return ("Twilio's HMAC covers the URL it called: the bin's, path /bin/... included. The "
            "receiver recomputes it over its own URL, so no secret and no PublicUrl (which "
            "swaps only scheme, host and port) can make the replay pass; verify it against "
            "captured.url instead.")


@exercise("05.2", "Losses and refusals add up")
def _(answer):
    if not isinstance(answer, Real) or isinstance(answer, bool):
        raise NotYet(f"the answer is a number of attempts per event, not {answer!r}",
                     hint="attempts divided by events, from sender.stats()")
    getting_through = 1 / (1 - 0.25)            # tries until one passes a relay losing 25 %
    expected = 2 * getting_through              # once to be refused (503), once to be accepted
    if abs(answer - 2) < 0.1:
        raise NotYet("2 counts the refusal and the success, but not the losses",
                     hint="each of those two tries must first get through the relay")
    if abs(answer - expected) > 0.35:
        raise NotYet(f"{answer} attempts per event is not what a 25 % loss and a first "
                     f"refusal give", hint="how many tries does it take, on average, to get "
                                           "one request through a relay that loses 1 in 4?")
    return (f"Each event needs one request that reaches the receiver to be refused and one to "
            f"be accepted, and each of those takes 1 / 0.75 = {getting_through:.2f} tries on "
            f"average through the relay: {expected:.2f} attempts per event. Losses and refusals "
            f"multiply the work; retries make it all arrive.")


def _through_slow_relay() -> tuple[str, int]:
    """Send one push through a relay that waits 0.3 s, giving up after 0.2 s; return what
    the provider saw and how many deliveries the receiver got."""
    feed = Feed(seed=55)
    with serve_receiver() as receiver, \
            serve_relay(receiver.url, latency=0.3) as relay:
        try:
            GitHubProvider(GITHUB_SECRET).send(relay.component.public(receiver.endpoint_url),
                                               feed.make("push"), timeout=0.2)
            saw = "an answer"
        except requests.Timeout:
            saw = "a timeout"
        time.sleep(0.4)
        return saw, receiver.component.counts["accepted"]


@exercise("05.3", "A slow network against a slow receiver")
def _(answer):
    if answer not in SLOW_NETWORK:
        raise NotYet(f"{answer!r} is not one of {SLOW_NETWORK}", hint="copy one exactly")
    saw, delivered = _through_slow_relay()
    right = SLOW_NETWORK[0] if (saw, delivered) == ("a timeout", 0) else SLOW_NETWORK[1]
    if answer == SLOW_NETWORK[2]:
        raise NotYet("the relay answers 504 only when its target is slow, not when the "
                     "provider leaves", hint="who gives up first: the provider (0.2 s) or the "
                                             "relay, still waiting out its 0.3 s delay?")
    if answer != right:
        raise NotYet("that is not what happens through a relay that delays by 0.3 s",
                     hint="read the relay's log: did it forward the request at all?")
    return ("The provider gave up after 0.2 s, while the request still sat in the slow "
            "network; the relay's log says client_gone, and the receiver never saw it. A slow "
            "receiver is the opposite: it got the event and did the work, and only its answer "
            "came too late, so the provider's retry is a repeat.")


@exercise("05.4", "A relay that loses with 502")
def _(answer):
    if answer == "connection error":
        raise NotYet("that is what drop_with=None (the default) gives",
                     hint="with drop_with=502 the relay answers instead of closing")
    if not isinstance(answer, int) or isinstance(answer, bool):
        raise NotYet(f"the answer is the status the provider gets, a number, not {answer!r}",
                     hint="github.send(...).status_code")
    feed = Feed(seed=56)
    with serve_receiver() as receiver, \
            serve_relay(receiver.url, drop=1.0, drop_with=502) as relay:
        status = GitHubProvider(GITHUB_SECRET).send(
            relay.component.public(receiver.endpoint_url), feed.make("push"),
            timeout=2).status_code
    if answer != status:
        raise NotYet(f"the provider does not get {answer}",
                     hint="serve_relay(..., drop=1.0, drop_with=502) and send one push")
    return (f"The provider gets a {status}: a status, so it knows something answered (a "
            f"gateway whose target failed), where a closed connection says nothing at all. "
            f"Both are worth retrying; a 5xx at least shows which hop broke.")
