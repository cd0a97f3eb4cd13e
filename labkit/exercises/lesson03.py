"""Checks for lesson 03 (securing webhooks): what limits a replay tolerance, the body that
survives re-serialising, an API key rotated without refusals, the client behind two proxies."""

from __future__ import annotations

import requests

from labkit.errors import RejectedError
from labkit.exercises import NotYet, exercise
from labkit.experiments.security import ReserialisedCopy
from labkit.webhooks.guards import ApiKeyGuard, IpAllowlist
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.signatures import GitHubSignature

LIMITS = ("the retry schedule", "the clocks' disagreement plus the time in transit",
          "the size of the body")

GITHUB_HOOKS = ["192.30.252.0/22", "185.199.108.0/22", "140.82.112.0/20", "143.55.64.0/20"]
TWO_PROXIES = ["127.0.0.1/32", "10.0.0.0/8"]
FORWARDED = "1.2.3.4, 192.30.252.7, 10.0.0.5"


@exercise("03.1", "What sets the smallest safe tolerance")
def _(answer):
    if answer not in LIMITS:
        raise NotYet(f"{answer!r} is not one of {LIMITS}", hint="copy one of the three exactly")
    if answer == "the retry schedule":
        raise NotYet("a retry hours later is not refused as stale",
                     hint="the provider signs every attempt afresh, with the time it is sent: "
                          "how old is a retry's signature when it arrives?")
    if answer == "the size of the body":
        raise NotYet("the body's size does not change the timestamp check",
                     hint="the check compares two clocks: the time signed and the receiver's now")
    return ("A signature is as old as the time since that attempt was signed: the moments it "
            "spent in transit, plus however far the two clocks disagree. Retries are signed "
            "afresh, so they never age. A tolerance of a few seconds works only with NTP on "
            "both sides; Stripe's 300 s leaves room for both.")


@exercise("03.2", "A push that survives a re-serialising verifier")
def _(answer):
    if not isinstance(answer, bytes):
        raise NotYet(f"the answer is the raw body as bytes (b'...'), not {type(answer).__name__}",
                     hint="write it as b'{...}': a signature covers bytes, not text")
    secret = "exercise-03-2"
    with serve_receiver(verifiers=[ReserialisedCopy(GitHubSignature(secret))]) as server:
        receiver = server.component
        headers = {"Content-Type": "application/json", **GitHubSignature(secret).sign(answer)}
        status = requests.post(server.endpoint_url, data=answer, headers=headers,
                               timeout=5).status_code
        reason = receiver.rejections[-1].reason if receiver.rejections else ""
    if reason == "malformed":
        raise NotYet("the receiver could not parse it as JSON",
                     hint="a push is a JSON object such as b'{\"ref\": \"refs/heads/main\"}'")
    if status != 200:
        raise NotYet(f"signed correctly, it was still refused ({status} {reason}): the bytes "
                     f"json.dumps writes differ from the ones that were signed",
                     hint="GitHub writes compact JSON ({\"a\":1}); json.dumps writes "
                          "{\"a\": 1}, with spaces after ':' and ','. Which body comes back "
                          "from json.dumps(json.loads(body)) unchanged?")
    return ("Only a body already written exactly as json.dumps writes it (', ' and ': ', ASCII "
            "escapes) survives the round trip. GitHub sends compact JSON, so every one of its "
            "real deliveries would be refused: verify the raw bytes.")


@exercise("03.3", "Rotate an API key without refusing a delivery")
def _(answer):
    steps = _steps(answer)
    if steps[0] != ("old", ["old"]) or steps[-1] != ("new", ["new"]):
        raise NotYet("start from ('old', ['old']) and end at ('new', ['new'])",
                     hint="before: both use the old key; after: only the new one is valid")
    for (sent, accepts), (next_sent, next_accepts) in zip(steps, steps[1:]):
        if sent != next_sent and sorted(accepts) != sorted(next_accepts):
            raise NotYet(f"from {(sent, accepts)} to {(next_sent, next_accepts)} both sides change "
                         f"at once", hint="two systems never switch in the same instant: change "
                                          "one side per step")
    with serve_receiver() as server:
        for number, (sent, accepts) in enumerate(steps, start=1):
            keys = {"old": "key-old-7d1e", "new": "key-new-b42c"}
            server.component.verifiers = [ApiKeyGuard([keys[k] for k in accepts])]
            status = requests.post(server.endpoint_url, json={"step": number}, timeout=5,
                                   headers={"X-Api-Key": keys[sent]}).status_code
            if status != 200:
                raise NotYet(f"step {number} {(sent, accepts)}: the sender's key is refused "
                             f"({status}), so every delivery in that step is lost",
                             hint="the receiver must accept a key before the sender uses it")
    return (f"{len(steps)} steps, no delivery refused: the receiver learns the new key first, "
            f"then the sender switches, then the old key is retired. An API key travels in "
            f"each request, so the sender can only send one: the overlap lives in the receiver.")


def _steps(answer) -> list[tuple[str, list[str]]]:
    """The answer as a list of (sender's key, receiver's keys), or NotYet."""
    shape = "a list of (sender's key, receiver's keys) steps, such as ('old', ['old'])"
    try:
        steps = [(sent, list(accepts)) for sent, accepts in answer]
    except (TypeError, ValueError):
        raise NotYet(f"the answer is {shape}", hint="one tuple per step, in order") from None
    names = {"old", "new"}
    if len(steps) < 2 or any(s not in names or not set(a) <= names or not a for s, a in steps):
        raise NotYet(f"the answer is {shape}, with at least two steps, each naming 'old' "
                     f"or 'new' only and a receiver that accepts at least one key",
                     hint="e.g. [('old', ['old']), ..., ('new', ['new'])]")
    return steps


@exercise("03.4", "The client behind two trusted proxies")
def _(answer):
    allowlist = IpAllowlist(GITHUB_HOOKS, trusted_proxies=TWO_PROXIES)
    client = allowlist.client_ip({"X-Forwarded-For": FORWARDED}, "127.0.0.1")
    if not isinstance(answer, str):
        raise NotYet("the answer is an address as a string, such as '1.2.3.4'",
                     hint="copy it from the X-Forwarded-For header")
    if answer.strip() == "1.2.3.4":
        raise NotYet("the leftmost entry is whatever the client wrote: anyone can put any "
                     "address there", hint="read from the right and skip only your own proxies")
    if answer.strip() in ("10.0.0.5", "127.0.0.1"):
        raise NotYet(f"{answer.strip()} is one of the trusted proxies, not the client",
                     hint="skip addresses inside trusted_proxies, reading from the right")
    if answer.strip() != client:
        raise NotYet(f"{answer!r} is not what IpAllowlist finds",
                     hint="run allowlist.client_ip({'X-Forwarded-For': ...}, '127.0.0.1')")
    try:
        allowlist.verify({"X-Forwarded-For": FORWARDED}, b"", remote_ip="127.0.0.1")
        verdict = "inside GitHub's hook ranges, so it is let in"
    except RejectedError:
        verdict = "outside GitHub's hook ranges, so it is refused"
    return (f"Reading from the right: 127.0.0.1 and 10.0.0.5 are trusted proxies, so the "
            f"client is {client}, {verdict}; 1.2.3.4 was written by whoever connected first.")
