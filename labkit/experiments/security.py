"""Lesson 03's experiments: attack your own webhook receivers and watch each attack refused.

A receiver is a public URL, so the lesson plays the attacker: it forges,
tampers with, replays and spoofs requests against real receivers on
loopback, and reads each answer together with the reason the receiver
recorded for it.

=============================  ===================================================
call                           what it does
=============================  ===================================================
``Targets()``                  the receivers under attack: ``serve(name, ...)``
                               starts one (all share one trace), ``attack(...)``
                               sends raw bytes as the attacker, ``deliver(...)`` as
                               the genuine provider; each returns an
                               :class:`Outcome`; ``stop()`` stops them all
``targets.refusals()``         every refusal so far, counted by reason and receiver,
                               with the real statuses of each reason, and a chart
``rotate_secret(old, new)``    a live secret rotation, with an overlap and without
                               one, while a sender posts every ~10 ms
``bytes_examined(a, b)``       how many bytes ``==`` looks at before it stops: what
                               a timing attack measures
``compare_digest_calls(f)``    how many constant-time comparisons ``f()`` made
``ReserialisedCopy(v)``        the classic mistake as a verifier: it checks a
                               signature over ``json.dumps(json.loads(body))``
=============================  ===================================================

Example::

    targets = Targets()
    gh = targets.serve("github", verifiers=[GitHubSignature("s3cret")])
    forged = GitHubProvider("guess").build(gh.endpoint_url, Feed().make("push"))
    targets.attack(gh, forged.body, forged.headers)     # Outcome(status=401, reason='mismatch')
    targets.stop()

Thread-safety: call everything from a cell or a script, not from the lab
loop; :func:`rotate_secret` runs its sender in a thread of its own and joins it.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple
from unittest import mock

from labkit.errors import RejectedError
from labkit.experiments.start import client_session
from labkit.feed import Feed
from labkit.lab import Server
from labkit.trace import Trace
from labkit.webhooks.providers import OutgoingWebhook, StandardWebhooksProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.signatures import StandardWebhooksSignature

__all__ = ["Outcome", "Targets", "Refusals", "Rotation", "Rotations", "rotate_secret",
           "bytes_examined", "compare_digest_calls", "ReserialisedCopy"]


class Outcome(NamedTuple):
    """What one request got: its status, and what the receiver made of it.

    ``reason`` is the word the receiver recorded for a refusal (``missing``,
    ``mismatch``, ``stale`` ...), ``"accepted"`` for a new delivery, and
    ``"repeat"`` for a delivery id it had already accepted (acknowledged, not
    processed again).
    """

    status: int
    reason: str


class Targets:
    """Receivers to attack, all recording into one trace, stopped together.

    ``serve(name, **options)`` starts a receiver (options as for
    :func:`labkit.webhooks.serve_receiver`) under the technique
    ``"webhook: <name>"``. Requests go out from two named sessions, so the
    trace tells them apart: ``attacker`` and ``provider``.
    """

    def __init__(self, trace: Trace | None = None):
        self.trace = Trace() if trace is None else trace
        self.servers: dict[str, Server] = {}
        self._sessions = {name: client_session(name) for name in ("attacker", "provider")}

    def serve(self, name: str, **options: Any) -> Server:
        """Start receiver ``name``; returns its server (``server.component`` is the receiver)."""
        server = serve_receiver(trace=self.trace, technique=f"webhook: {name}", **options)
        self.servers[name] = server
        return server

    def attack(self, server: Server, body: bytes, headers: dict, *,
               as_client: str = "attacker") -> Outcome:
        """POST raw ``body`` with ``headers`` to ``server``, as anyone on the internet can."""
        receiver = server.component
        before = receiver.counts
        response = self._sessions[as_client].post(server.endpoint_url, data=body,
                                                  headers=headers, timeout=5)
        after = receiver.counts
        if after["rejected"] > before["rejected"]:
            return Outcome(response.status_code, receiver.rejections[-1].reason)
        accepted = after["accepted"] > before["accepted"]
        return Outcome(response.status_code, "accepted" if accepted else "repeat")

    def deliver(self, server: Server, webhook: OutgoingWebhook) -> Outcome:
        """Send a built webhook as the genuine provider."""
        return self.attack(server, webhook.body, webhook.headers, as_client="provider")

    def refusals(self) -> Refusals:
        """Every request the receivers refused so far, by reason (see :class:`Refusals`)."""
        by_receiver = {name: Counter(r.reason for r in server.component.rejections)
                       for name, server in self.servers.items()}
        statuses: dict[str, set[int]] = {}
        for server in self.servers.values():
            for rejection in server.component.rejections:
                statuses.setdefault(rejection.reason, set()).add(rejection.status)
        return Refusals(by_receiver={k: dict(v) for k, v in by_receiver.items() if v},
                        statuses={k: frozenset(v) for k, v in statuses.items()})

    def stop(self) -> None:
        """Stop every receiver and close both sessions."""
        for server in self.servers.values():
            server.stop()
        for session in self._sessions.values():
            session.close()

    def __enter__(self) -> Targets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Refusals:
    """Refused requests counted by reason and receiver, with every status each reason got.

    One reason can come with more than one status: ``malformed`` is 401 for
    an ``Authorization`` header that is not ``Bearer``, and 400 for a signed
    body that is not JSON. So statuses are kept as a set per reason, never
    one value per reason (where the last refusal would overwrite the others).
    """

    by_receiver: dict[str, dict[str, int]]
    """Receiver name -> reason -> how many requests it refused for that reason."""
    statuses: dict[str, frozenset[int]]
    """Reason -> every status a refusal for that reason was answered with."""

    @property
    def totals(self) -> Counter:
        """Reason -> refusals over all receivers."""
        total: Counter = Counter()
        for counts in self.by_receiver.values():
            total.update(counts)
        return total

    def label(self, reason: str) -> str:
        """The bar label of ``reason``: the word and every status it was answered with."""
        return f"{reason}\n({', '.join(map(str, sorted(self.statuses[reason])))})"

    def figure(self):
        """One stacked bar per reason, most frequent first, coloured by receiver."""
        import matplotlib.pyplot as plt

        reasons = [reason for reason, _ in self.totals.most_common()]
        fig, ax = plt.subplots(figsize=(11, 4.2), layout="constrained")
        bottom = [0] * len(reasons)
        palette = [c for n, c in enumerate(plt.get_cmap("tab10").colors) if n != 3]  # no red
        for (name, counts), colour in zip(self.by_receiver.items(), palette * 2):
            heights = [counts.get(reason, 0) for reason in reasons]
            ax.bar(range(len(reasons)), heights, bottom=bottom, label=name, color=colour,
                   edgecolor="white")
            bottom = [b + h for b, h in zip(bottom, heights)]
        for x, total in enumerate(bottom):
            ax.text(x, total, str(total), ha="center", va="bottom")
        ax.set_xticks(range(len(reasons)), [self.label(reason) for reason in reasons])
        ax.set_title("Every request our receivers refused in this lesson, by reason")
        ax.set_xlabel("reason recorded by the receiver (every HTTP status it was answered with)")
        ax.set_ylabel("requests refused")
        ax.legend(title="receiver", loc="upper right", fontsize="small", ncols=2)
        ax.margins(y=0.15)
        return fig


# -- rotating a secret ----------------------------------------------------------------

Step = tuple[str, list[str], list[str]]
"""One step of a rotation: (name, the sender's secrets, the receiver's secrets)."""


class Sent(NamedTuple):
    """One delivery during a rotation."""

    t: float                 # real seconds since the rotation began
    step: str                # the step in force when it was signed
    status: int
    signatures: int          # how many signatures it carried


@dataclass(frozen=True)
class Rotation:
    """One live rotation: every delivery sent while its steps were applied."""

    steps: tuple[str, ...]
    sent: tuple[Sent, ...]
    old_secret_after: int
    """The status a delivery signed with the first secret alone got after the last step."""

    @property
    def refused(self) -> list[Sent]:
        return [s for s in self.sent if s.status != 200]

    def per_step(self) -> dict[str, int]:
        """How many deliveries were sent during each step."""
        counts = Counter(s.step for s in self.sent)
        return {step: counts[step] for step in self.steps}

    def draw(self, ax, title: str) -> None:
        """Each delivery as a mark on its step's row: accepted or refused."""
        for ok, colour, label in ((True, "tab:green", "accepted (200)"),
                                  (False, "tab:red", "refused (401)")):
            points = [(s.t, self.steps.index(s.step)) for s in self.sent
                      if (s.status == 200) == ok]
            if points:
                ax.scatter(*zip(*points), color=colour, marker="|" if ok else "x", s=80,
                           label=label)
        ax.set_yticks(range(len(self.steps)), self.steps)
        ax.set_ylim(len(self.steps) - 0.5, -0.5)
        ax.set_xlabel("time since the rotation began (s)")
        ax.set_title(title)
        ax.legend(loc="lower left", fontsize="small")


@dataclass(frozen=True)
class Rotations:
    """The same rotation done safely (with an overlap) and as a big bang (without one)."""

    overlap: Rotation
    big_bang: Rotation

    def figure(self):
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), layout="constrained")
        self.overlap.draw(axes[0], f"With an overlap: {len(self.overlap.refused)} refused")
        self.big_bang.draw(axes[1], f"Without an overlap: {len(self.big_bang.refused)} "
                                    f"refused, all in the gap")
        axes[0].set_ylabel("configuration step")
        return fig


OVERLAP = ("1. both use the old secret", "2. sender signs with old + new",
           "3. receiver accepts either", "4. sender drops the old secret",
           "5. old secret retired")
BIG_BANG = ("1. both use the old secret", "2. sender switched, receiver not yet",
            "3. receiver switched too")


def rotate_secret(old: str, new: str, *, per_step: int = 3, seed: int = 3,
                  trace: Trace | None = None) -> Rotations:
    """Rotate a Standard Webhooks secret live, twice: with an overlap, then without one.

    With an overlap the sender first signs with both secrets (two signatures
    in ``webhook-signature``), then the receiver accepts either, then the
    sender drops the old one and the receiver retires it. Without an overlap
    the sender switches before the receiver knows the new secret. A sender
    thread posts a delivery every ~10 ms throughout; each step stays in force
    until at least ``per_step`` deliveries went out under it (5 s at most).
    """
    plan = {OVERLAP: [[old], [old, new], [old, new], [new], [new]],
            BIG_BANG: [[old], [new], [new]]}
    receiving = {OVERLAP: [[old], [old], [old, new], [old, new], [new]],
                 BIG_BANG: [[old], [old], [new]]}
    trace = Trace() if trace is None else trace
    runs = [_rotate(list(zip(names, plan[names], receiving[names])), old, per_step,
                    Feed(seed=seed), trace, technique)
            for names, technique in ((OVERLAP, "webhook: rotation"),
                                     (BIG_BANG, "webhook: no overlap"))]
    return Rotations(*runs)


def _rotate(steps: list[Step], old: str, per_step: int, feed: Feed, trace: Trace,
            technique: str) -> Rotation:
    provider = StandardWebhooksProvider(steps[0][1][0])
    server = serve_receiver(verifiers=[StandardWebhooksSignature(steps[0][2])], trace=trace,
                            technique=technique)
    sent: list[Sent] = []
    current = [steps[0][0]]
    done, switching = threading.Event(), threading.Lock()
    began = time.monotonic()

    def sender() -> None:
        with client_session("sender") as session:
            while not done.is_set() and len(sent) < 500:
                with switching:                # a step changes between two builds, never in one
                    step = current[0]
                    webhook = provider.build(server.endpoint_url, feed.make("tick"))
                status = webhook.send(session=session).status_code
                signatures = len(webhook.headers["webhook-signature"].split())
                sent.append(Sent(time.monotonic() - began, step, status, signatures))
                time.sleep(0.01)

    thread = threading.Thread(target=sender, name=technique, daemon=True)
    try:
        thread.start()
        for name, sender_secrets, receiver_secrets in steps:
            with switching:
                provider.signature = StandardWebhooksSignature(sender_secrets)
                server.component.verifiers = [StandardWebhooksSignature(receiver_secrets)]
                current[0] = name
            deadline = time.monotonic() + 5
            while sum(s.step == name for s in sent) < per_step and time.monotonic() < deadline:
                time.sleep(0.005)
        done.set()
        thread.join(5)
        leaked = StandardWebhooksProvider(old).build(server.endpoint_url, feed.make("tick"))
        old_status = leaked.send().status_code
    finally:
        done.set()
        server.stop()
    return Rotation(tuple(s[0] for s in steps), tuple(sent), old_status)


# -- timing ---------------------------------------------------------------------------


def bytes_examined(guess: bytes, secret: bytes) -> int:
    """How many bytes a comparison like ``==`` looks at before it stops.

    ``==`` on bytes stops at the first byte that differs, so its time grows
    with the number of leading bytes the guess got right. An attacker who
    can time it precisely enough learns a valid signature one byte at a
    time. This is that comparison spelled out, counting instead of timing.
    """
    examined = 0
    for mine, theirs in zip(guess, secret):
        examined += 1
        if mine != theirs:
            break
    return examined


def compare_digest_calls(check: Callable[[], Any]) -> int:
    """Run ``check()`` and count its calls to ``hmac.compare_digest`` (constant time)."""
    with mock.patch("hmac.compare_digest", wraps=hmac.compare_digest) as spy:
        check()
    return spy.call_count


class ReserialisedCopy:
    """The classic mistake, as a verifier: check ``verifier`` over a re-serialised body.

    A framework hands the handler the body parsed (``request.json``); the
    handler turns it back into text with ``json.dumps`` and verifies that.
    Only a body that ``json.dumps`` would write byte for byte the same still
    passes; every other genuine delivery is refused as a ``mismatch``.
    """

    def __init__(self, verifier):
        self.verifier = verifier

    def verify(self, headers, body: bytes, **context: Any) -> None:
        try:
            copy = json.dumps(json.loads(body)).encode()
        except ValueError:
            raise RejectedError("malformed", "the body is not JSON", status=400) from None
        self.verifier.verify(headers, copy, **context)
