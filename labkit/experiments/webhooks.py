"""Lesson 02's experiments: webhooks as GitHub, Twilio and a payment gateway send them.

A webhook is one HTTP request from the service that has the news (the
*provider*, acting as a client) to a URL of yours (the *receiver*, acting as a
server). Each experiment starts the receivers and simulated services it
needs, lets the providers of :mod:`labkit.webhooks.providers` send, stops
everything and returns what happened.

============================  ==============================================================
call                          what it shows
============================  ==============================================================
``push_while_down()``         GitHub pushes while the receiver is down for a moment: one
                              attempt each, so a push sent then is lost (``retry_after=``
                              tries each failed push once more)
``provider_waits()``          the provider waits while the receiver processes
``github_to_chat()``          a relay: GitHub's webhook in, a chat room's incoming webhook
                              out, all before GitHub gets its 200
``twilio_status()``           SMS status callbacks, one per status change, as forms
``payment_confirmations()``   a gateway settles orders by naming the payment it confirms
``thin_vs_full()``            full payloads against thin notices plus a fetch of the details
``polling_race()``            the same events by webhook and by polling, with the roles of
                              client and server swapped between the two
============================  ==============================================================

The three examples (relay, Twilio, payments) take an optional ``trace=``, so
a lesson can count their requests on one chart.

Thread-safety: call them from a cell or a script, never from the lab loop.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import requests
import tornado.web

from labkit import lab
from labkit.experiments.start import client_session
from labkit.feed import Event, Feed, play, poisson
from labkit.hub import Hub
from labkit.progress import Progress
from labkit.push.polling import PollingClient, PollingServer
from labkit.trace import Trace
from labkit.webhooks.providers import GitHubProvider, PaymentProvider, TwilioProvider
from labkit.webhooks.receiver import WebhookReceiver, serve_receiver
from labkit.webhooks.signatures import GitHubSignature, StripeSignature, TwilioSignature
from labkit.wire import CLIENT_HEADER

__all__ = ["SECRET", "LostPush", "push_while_down", "ProviderWaits", "provider_waits",
           "Relay", "github_to_chat", "chat_text", "SmsStatus", "twilio_status", "Payments",
           "payment_confirmations", "Payloads", "thin_vs_full", "Race", "polling_race",
           "WEBHOOK", "POLLING"]

SECRET = "it-is-a-secret-to-everybody"
"""The secret GitHub and the receivers share in these experiments (lesson 03 is about it)."""


# -- a push while the receiver is down ------------------------------------------------


@dataclass(frozen=True)
class LostPush:
    """What :func:`push_while_down` saw, push by push (numbered from 1)."""

    trace: Trace
    outcome: dict
    """Push number -> the status of its last try, or ``"connection refused"``."""
    received: tuple[int, ...]
    """The pushes the receiver accepted, in the order it got them."""

    def figure(self):
        """The timeline: GitHub's requests and the receiver's answers, the lost push marked."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, ax = plt.subplots(figsize=(10, 2.6), layout="constrained")
        lost = [str(n) for n, status in self.outcome.items() if status != 200]
        names = " and ".join([", ".join(lost[:-1]), lost[-1]] if len(lost) > 1 else lost)
        plots.timeline(self.trace, ax=ax, source=False,
                       title=f"Push{'es' if len(lost) > 1 else ''} {names} sent while the "
                             f"receiver is down: no retry, so lost")
        return fig


def push_while_down(*, pushes: int = 5, down: tuple[int, ...] = (3,),
                    retry_after: float | None = None, seed: int = 11) -> LostPush:
    """GitHub sends ``pushes`` pushes; the receiver is down for the pushes numbered in ``down``.

    The receiver stops just before the first push of ``down`` and is back on
    the same URL before the push after the last one. GitHub makes one
    attempt per push; with ``retry_after`` it tries a failed push once more
    after that many seconds. A push that never got through is a ``drop``.
    """
    feed, trace = Feed(seed=seed), Trace()
    github = GitHubProvider(SECRET)
    receiver = WebhookReceiver([GitHubSignature(SECRET)], feed=feed)
    server = serve_receiver(receiver, trace=trace)
    port, outcome, numbers = server.port, {}, {}
    url = server.endpoint_url
    try:
        with client_session("github") as session:
            for n in range(1, pushes + 1):
                if n == min(down):
                    server.stop()                                   # the receiver goes down
                if n == max(down) + 1:
                    server = serve_receiver(receiver, trace=trace, port=port)   # and is back
                push = feed.make("push", {"repository": "acme/rockets", "message": f"commit {n}"})
                numbers[github.delivery_id(push)] = n
                outcome[n] = _send_once_or_twice(github, url, push, session, retry_after, trace)
                time.sleep(0.05)                       # space the pushes out for the timeline
    finally:
        server.stop()
    return LostPush(trace=trace, outcome=outcome,
                    received=tuple(numbers[d.id] for d in receiver.deliveries))


def _send_once_or_twice(github: GitHubProvider, url: str, push: Event,
                        session: requests.Session, retry_after: float | None, trace: Trace):
    """One attempt, and one more after ``retry_after`` s if given; the last status."""
    for attempt in (1, 2):
        try:
            return github.send(url, push, session=session, timeout=2).status_code
        except requests.ConnectionError:
            if attempt == 2 or retry_after is None:
                break
            trace.add("retry", technique="webhook", client="github", event_id=push.id,
                      detail=f"trying again after {retry_after:g} s")
            time.sleep(retry_after)
    trace.add("drop", technique="webhook", client="github", event_id=push.id,
              detail="receiver down; no more attempts")
    return "connection refused"


# -- the provider waits ----------------------------------------------------------------


@dataclass(frozen=True)
class ProviderWaits:
    """How long GitHub waited for each answer, per kind of receiver, in seconds."""

    waits: dict
    """Receiver name -> the provider's wait for each delivery."""
    processing: float

    def figure(self):
        """A CDF of the provider's wait per delivery, one line per receiver."""
        from labkit import plots
        ax = plots.latency_cdf(self.waits, title="How long the provider waited for each answer")
        ax.set_xlabel("provider-side wait per delivery (ms)")
        ax.set_ylabel("share of deliveries")
        return ax.figure


def provider_waits(*, processing: float = 0.2, pushes: int = 5, seed: int = 11) -> ProviderWaits:
    """Two receivers get ``pushes`` pushes each: one answers at once, one processes first.

    The second spends ``processing`` seconds (an ``asyncio.sleep`` standing
    in for a database write) before it answers; the provider's wait is
    measured on the provider's side, around each ``send``.
    """
    async def slow_process(delivery) -> None:
        await asyncio.sleep(processing)

    feed, github = Feed(seed=seed), GitHubProvider(SECRET)
    names = ("answers at once", f"processes for {processing * 1000:.0f} ms first")
    waits: dict[str, list[float]] = {}
    with client_session("github") as session:
        for name, process in zip(names, (None, slow_process)):
            with serve_receiver(verifiers=[GitHubSignature(SECRET)], process=process) as server:
                waits[name] = []
                for _ in range(pushes):
                    started = time.perf_counter()
                    github.send(server.endpoint_url, feed.make("push"),
                                session=session).raise_for_status()
                    waits[name].append(time.perf_counter() - started)
    return ProviderWaits(waits=waits, processing=processing)


# -- GitHub to chat -----------------------------------------------------------------------


class ChatIncomingWebhook(tornado.web.RequestHandler):
    """A chat room's incoming webhook: POST ``{"text": ...}`` and the text appears in the room.

    ``delay`` seconds pass before the message is posted (a slow chat service).
    """

    def initialize(self, room: list, delay: float) -> None:
        self.room = room
        self.delay = delay

    async def post(self, space: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        text = json.loads(self.request.body)["text"]
        self.room.append(text)
        self.write({"name": f"spaces/{space}/messages/{len(self.room)}", "text": text})


def chat_text(push: dict) -> str:
    """The chat message for a GitHub push payload."""
    count = len(push["commits"])
    branch = push["ref"].removeprefix("refs/heads/")
    return (f"{push['pusher']['name']} pushed {count} commit{'' if count == 1 else 's'} to "
            f"{push['repository']['full_name']} ({branch}): {push['head_commit']['message']}")


@dataclass(frozen=True)
class Relay:
    """What :func:`github_to_chat` saw."""

    trace: Trace
    room: tuple[str, ...]
    """The chat room's messages, in order."""
    expected: tuple[str, ...]
    """The messages the pushes should have produced."""
    statuses: tuple[int, ...]
    """GitHub's status for each push while the chat room was up."""
    github_waits: tuple[float, ...]
    """How long GitHub waited for each of those answers, in seconds."""
    chat_down: tuple[int, str] | None
    """Status and body GitHub got for a push sent after the chat room went down."""
    chat_down_at: float | None = field(default=None, repr=False)
    """When the chat room went down (``time.monotonic()``): the figure ends there."""

    @property
    def chat_before_answer(self) -> bool:
        """True if every chat message was answered before GitHub got its answer."""
        chat = self.trace.records(kind="response", technique=CHAT)
        hook = self.trace.records(kind="response", technique=GITHUB)
        return all(c.t < g.t for c, g in zip(chat, hook))

    def figure(self):
        """The timeline of the relay: each push in, each chat message out."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, ax = plt.subplots(figsize=(10, 3.4), layout="constrained")
        plots.timeline(self.trace, ax=ax, techniques=[GITHUB, CHAT], end=self.chat_down_at,
                       title="Each push: GitHub → our relay → the chat room, "
                             "before GitHub gets its answer")
        return fig


GITHUB, CHAT = "webhook: github → relay", "webhook: relay → chat"


def github_to_chat(*, pushes: int = 4, chat_delay: float = 0.0, chat_down: bool = True,
                   seed: int = 11, trace: Trace | None = None) -> Relay:
    """GitHub pushes to our relay, which posts a one-line summary to a chat room.

    The relay is a webhook receiver whose ``process`` calls the chat room's
    incoming webhook (tornado's non-blocking client, since ``process`` runs
    on the lab loop), so GitHub's answer waits for the chat room's.
    ``chat_delay`` slows the chat room down; ``chat_down`` stops it at the end
    and sends one more push, to see what GitHub gets then.
    """
    feed, rng, trace = Feed(seed=seed), random.Random(seed), trace if trace is not None else Trace()
    github, room = GitHubProvider(SECRET), []
    chat = lab.serve([(r"/v1/spaces/(\w+)/messages", ChatIncomingWebhook,
                       {"room": room, "delay": chat_delay})], trace=trace, technique=CHAT)
    chat_url = chat.url + "/v1/spaces/TEAM/messages?key=demo-key&token=demo-token"
    client = lab.run(lab.http_client)

    async def relay_to_chat(delivery) -> None:
        await client.fetch(chat_url, method="POST", request_timeout=5,
                           body=json.dumps({"text": chat_text(delivery.payload)}),
                           headers={"Content-Type": "application/json; charset=UTF-8",
                                    CLIENT_HEADER: "relay"})

    relay = serve_receiver(verifiers=[GitHubSignature(SECRET)], process=relay_to_chat,
                           feed=feed, trace=trace, technique=GITHUB)
    expected, statuses, waits, down, down_at = [], [], [], None, None
    try:
        with client_session("github") as session:
            for n, author in enumerate(["ada", "grace", "linus", "margaret"][:pushes]):
                repo = rng.choice(["acme/rockets", "acme/launchpad"])
                message = f"Step {n + 1} of the countdown"
                push = feed.make("push", {"repository": repo, "author": author,
                                          "message": message})
                started = time.perf_counter()
                statuses.append(github.send(relay.endpoint_url, push, session=session).status_code)
                waits.append(time.perf_counter() - started)
                expected.append(f"{author} pushed 1 commit to {repo} (main): {message}")
                time.sleep(0.03)
            if chat_down:
                down_at = time.monotonic()
                chat.stop()
                reply = github.send(relay.endpoint_url, feed.make("push", {"message": "Hello?"}),
                                    session=session)
                down = (reply.status_code, reply.text)
    finally:
        relay.stop()
        chat.stop()
        lab.run(client.close)
    return Relay(trace=trace, room=tuple(room), expected=tuple(expected),
                 statuses=tuple(statuses), github_waits=tuple(waits), chat_down=down,
                 chat_down_at=down_at)


# -- Twilio status callbacks ----------------------------------------------------------------


@dataclass(frozen=True)
class SmsStatus:
    """What :func:`twilio_status` saw."""

    trace: Trace
    fates: tuple[str, ...]
    """Each message's final status, as planned."""
    sids: tuple[str, ...]
    """Each message's ``MessageSid``."""
    history: dict
    """MessageSid -> the statuses its callbacks reported, in arrival order."""
    callbacks: tuple = field(repr=False)
    """Every callback as sent (:class:`~labkit.webhooks.providers.OutgoingWebhook`)."""
    arrivals: tuple[tuple[float, int, str], ...] = field(repr=False)
    """(seconds since the first callback, message row, status) for each callback received."""

    def figure(self):
        """One row per text message: a dot for each status callback, coloured by status."""
        import matplotlib.pyplot as plt
        colours = {"sent": "tab:blue", "delivered": "tab:green", "failed": "tab:red",
                   "undelivered": "tab:orange"}
        fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
        for status, colour in colours.items():
            points = [(t * 1000, row) for t, row, s in self.arrivals if s == status]
            if points:
                ax.scatter(*zip(*points), color=colour, s=60, label=status, zorder=3)
        for row in range(len(self.sids)):
            ax.axhline(row, color="0.9", zorder=0)
        ax.set_yticks(range(len(self.sids)), [sid[:10] + "…" for sid in self.sids])
        ax.invert_yaxis()
        ax.set_xlabel("time since the first callback (ms)")
        ax.set_ylabel("message (MessageSid)")
        ax.set_title("Twilio status callbacks: one row per text message")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
        return fig


PATHS = {"delivered": ("sent", "delivered"), "undelivered": ("sent", "undelivered"),
         "failed": ("failed",)}
"""The statuses a message's callbacks report, by its fate (``queued`` gets no callback)."""
FATES = ("delivered", "undelivered", "delivered", "failed")
"""How messages end, in these proportions (shuffled with the seed)."""


def twilio_status(*, messages: int = 6, seed: int = 11,
                  trace: Trace | None = None) -> SmsStatus:
    """Twilio reports what happened to ``messages`` text messages, one callback per change.

    Each message gets a fate (half delivered, a quarter each undelivered and
    failed, shuffled with ``seed``) and
    moves one step at a time; the receiver verifies Twilio's signature and
    keeps each message's status history, keyed by its ``MessageSid``.
    """
    feed, rng, trace = Feed(seed=seed), random.Random(seed), trace if trace is not None else Trace()
    twilio = TwilioProvider("twilio-auth-token")
    history: dict[str, list[str]] = {}

    def track_status(delivery) -> None:
        history.setdefault(delivery.payload["MessageSid"], []).append(delivery.event_type)

    fates = [FATES[n % len(FATES)] for n in range(messages)]
    rng.shuffle(fates)
    texts = [{"message": f"text-{n}", "to": f"+1555010{n:04d}"} for n in range(messages)]
    callbacks, sids = [], []
    with serve_receiver(verifiers=[TwilioSignature("twilio-auth-token")], process=track_status,
                        trace=trace, technique="webhook: twilio") as sms, \
            client_session("twilio") as session:
        for step in range(2):                          # every message moves one step at a time
            for text, fate in zip(texts, fates):
                if step < len(PATHS[fate]):
                    update = feed.make("sms", {**text, "status": PATHS[fate][step]})
                    if step == 0:
                        sids.append(TwilioProvider.message_sid(update))
                    callbacks.append(twilio.build(sms.endpoint_url, update))
                    callbacks[-1].send(session=session).raise_for_status()
                    time.sleep(rng.uniform(0.005, 0.03))
        got = sms.component.deliveries
    arrivals = tuple((d.received - got[0].received, sids.index(d.payload["MessageSid"]),
                      d.event_type) for d in got)
    return SmsStatus(trace=trace, fates=tuple(fates), sids=tuple(sids), history=history,
                     callbacks=tuple(callbacks), arrivals=arrivals)


# -- payment confirmations ----------------------------------------------------------------


@dataclass(frozen=True)
class Payments:
    """What :func:`payment_confirmations` saw."""

    trace: Trace
    orders: dict
    """Order number -> {"amount", "intent", "state"} after the webhooks."""
    planned: dict
    """Order number -> the state its payment should leave it in."""
    statuses: tuple[int, ...]
    """The shop's answer to each webhook."""


def payment_confirmations(*, payments: int = 6, seed: int = 11,
                          trace: Trace | None = None) -> Payments:
    """A Stripe-style gateway confirms ``payments`` payments; the shop settles its orders.

    When the shop created each payment it stored the payment intent's id
    with the order; the webhook names that id in ``data.object.id``, which
    is how the receiver finds the order to mark paid or failed.
    """
    feed, rng, trace = Feed(seed=seed), random.Random(seed), trace if trace is not None else Trace()
    gateway = PaymentProvider("whsec_shop_demo")
    orders, order_of_intent, planned, attempts = {}, {}, {}, []
    for number in range(1001, 1001 + payments):
        outcome = rng.choice(["succeeded", "succeeded", "failed"])
        attempt = feed.make("payment", {"amount": rng.randrange(500, 9000), "currency": "eur",
                                        "status": outcome})
        intent = gateway.payment_intent(attempt, gateway.event_type(attempt), time.time())["id"]
        orders[number] = {"amount": attempt.payload["amount"], "intent": intent,
                          "state": "awaiting payment"}
        order_of_intent[intent] = number
        planned[number] = "paid" if outcome == "succeeded" else "payment failed"
        attempts.append(attempt)

    def settle(delivery) -> None:
        order = orders[order_of_intent[delivery.payload["data"]["object"]["id"]]]
        order["state"] = ("paid" if delivery.event_type == "payment_intent.succeeded"
                          else "payment failed")

    with serve_receiver(verifiers=[StripeSignature("whsec_shop_demo")], process=settle,
                        feed=feed, trace=trace, technique="webhook: payments") as shop, \
            client_session("gateway") as session:
        statuses = [gateway.send(shop.endpoint_url, a, session=session).status_code
                    for a in attempts]
    return Payments(trace=trace, orders=orders, planned=planned, statuses=tuple(statuses))


# -- thin and full payloads ---------------------------------------------------------------


@dataclass(frozen=True)
class Payloads:
    """What :func:`thin_vs_full` measured; techniques ``FULL``, ``THIN`` and ``API``."""

    trace: Trace
    pushes: int
    details_match: bool
    """True if every detail fetched for a thin notice equals the full payload's."""
    thin_notice: dict
    """The first thin notice, as the receiver got it."""

    def per_push(self, technique: str) -> float:
        """Wire bytes per push under ``technique`` (requests and answers, headers included)."""
        return self.trace.bytes_total(technique) / self.pushes

    def requests_per_push(self, technique: str) -> float:
        return self.trace.count("request", technique) / self.pushes

    def figure(self):
        """Bytes per push (left) and requests per push (right), the fetch stacked on top."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
        names = ["full payload", "thin payload"]
        for ax, measure, unit in ((left, self.per_push, "bytes"),
                                  (right, self.requests_per_push, "requests")):
            hook = [measure(FULL), measure(THIN)]
            fetch = [0, measure(API)]
            ax.bar(names, hook, color=plots.technique_color("webhook"), label="the webhook")
            bars = ax.bar(names, fetch, bottom=hook, color="0.75", hatch="//",
                          label="fetching the details (API)")
            ax.bar_label(bars, [_sum_label(h, f, unit) for h, f in zip(hook, fetch)])
            ax.set_xlabel("payload style")
            ax.set_ylabel(f"{unit} per push")
            ax.margins(y=0.2)
            ax.legend(loc="upper left")
        left.set_title("Bytes on the wire per push (headers included)")
        right.set_title(f"HTTP requests per push ({self.pushes} pushes each)")
        right.set_yticks([0, 1, 2])
        return fig


def _sum_label(hook: float, fetch: float, unit: str) -> str:
    """``6,063 bytes``, ``871 + 5,806 bytes``, ``1 request``, ``1 + 1 requests``."""
    total = f"{hook:,.0f}" + (f" + {fetch:,.0f}" if fetch else "")
    return f"{total} {unit.rstrip('s') if hook + fetch == 1 else unit}"


FULL, THIN, API = "webhook: full payload", "webhook: thin payload", "http: github API"


def thin_vs_full(*, pushes: int = 8, seed: int = 11) -> Payloads:
    """The same ``pushes`` pushes go to two receivers: full payloads, and thin notices.

    The thin receiver fetches each push's details from the provider's
    simulated API (``GitHubProvider.api_rules()``), as a real receiver would
    fetch them with its own credentials; that costs one more request per push.
    """
    feed, rng, trace = Feed(seed=seed), random.Random(seed), Trace()
    github, thin = GitHubProvider(SECRET), GitHubProvider(SECRET, thin=True)
    api = lab.serve(thin.api_rules(), trace=trace, technique=API)
    thin.api_url = api.url
    client = lab.run(lab.http_client)
    details = {}

    async def fetch_details(delivery) -> None:
        reply = await client.fetch(delivery.payload["url"], request_timeout=5,
                                   headers={CLIENT_HEADER: "thin receiver"})
        details[delivery.id] = json.loads(reply.body)

    full_rx = serve_receiver(verifiers=[GitHubSignature(SECRET)], trace=trace, technique=FULL)
    thin_rx = serve_receiver(verifiers=[GitHubSignature(SECRET)], process=fetch_details,
                             trace=trace, technique=THIN)
    try:
        with client_session("github") as session:
            for n in range(pushes):
                push = feed.make("push", {"repository": "acme/rockets", "message": f"change {n}",
                                          "author": rng.choice(["ada", "grace", "linus"])})
                github.send(full_rx.endpoint_url, push, session=session).raise_for_status()
                thin.send(thin_rx.endpoint_url, push, session=session).raise_for_status()
    finally:
        for server in (full_rx, thin_rx, api):
            server.stop()
        lab.run(client.close)
    full = {d.id: d.payload for d in full_rx.component.deliveries}
    return Payloads(trace=trace, pushes=pushes,
                    details_match=details.keys() == full.keys() and all(
                        details[i]["head_commit"] == full[i]["head_commit"] for i in full),
                    thin_notice=thin_rx.component.deliveries[0].payload)


# -- webhook against polling ----------------------------------------------------------------


WEBHOOK = "webhook: the shop calls your app"
POLLING = "polling: your app calls the shop"


@dataclass(frozen=True)
class Race:
    """What :func:`polling_race` measured; techniques :data:`WEBHOOK` and :data:`POLLING`."""

    trace: Trace
    events: int
    interval: float

    def requests_per_event(self, technique: str) -> float:
        return self.trace.count("request", technique) / self.trace.count("event", technique)

    def p50(self, technique: str) -> float:
        """Median seconds from an event happening to your app knowing of it."""
        return self.trace.latency_percentiles(technique, (50,))[50]

    @property
    def empty_polls(self) -> int:
        """Polls whose answer brought nothing new."""
        return sum(1 for r in self.trace.records(kind="response", technique=POLLING)
                   if r.events == 0)

    def figure(self):
        """Both timelines, one above the other, then request counts and latency CDFs."""
        import matplotlib.pyplot as plt

        from labkit import plots
        fig = plt.figure(figsize=(12, 8), layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.25, 1])
        lanes = top.subplots(2, 1, sharex=True)
        records = self.trace.records()
        window = dict(start=self.trace.t0, end=max(r.t for r in records))
        plots.timeline(self.trace, ax=lanes[0], techniques=[WEBHOOK], **window,
                       title="Webhook: the shop is the client (it sends), your app the server")
        plots.timeline(self.trace, ax=lanes[1], techniques=[POLLING], **window,
                       title=f"Polling every {self.interval * 1000:.0f} ms: your app is the "
                             f"client (it asks), the shop the server")
        lanes[0].set_xlabel("")
        left, right = bottom.subplots(1, 2)
        plots.request_counts(self.trace, ax=left,
                             title=f"Requests to learn {self.events} events")
        plots.latency_cdf(self.trace, ax=right,
                          title="From the event to your app knowing of it")
        return fig


def polling_race(*, events: int = 10, rate: float = 4.0, interval: float = 0.1,
                 seed: int = 11) -> Race:
    """The shop's events reach your app twice: by webhook, and by polling every ``interval`` s.

    ``events`` events happen at the moments of a Poisson schedule (``rate``
    per second on average). At each one the shop adds it to the hub behind
    its event API (a :class:`~labkit.push.polling.PollingServer` at
    ``GET /events?after=<id>``) and POSTs it to your app's receiver: a
    webhook, the shop is the client. Meanwhile your app's
    :class:`~labkit.push.polling.PollingClient` asks that API every
    ``interval`` seconds: polling, your app is the client. Both start together.
    """
    feed, trace = Feed(seed=seed, prefix="ord"), Trace()
    api = PollingServer(Hub(name="shop events"), path="/events")
    api.technique = POLLING                     # a variant: lanes and bars say who calls whom
    shop_api = lab.serve(api, trace=trace)
    poller = PollingClient(shop_api.endpoint_url, interval=interval, name="your app",
                           trace=trace, after=0)
    poller.technique = POLLING
    hook = serve_receiver(feed=feed, trace=trace, technique=WEBHOOK)
    client = lab.run(lab.http_client)

    async def shop_publishes(event: Event) -> None:
        api.hub.publish(event)
        await client.fetch(hook.endpoint_url, method="POST", body=event.to_json(),
                           headers={"Content-Type": "application/json", CLIENT_HEADER: "shop"})

    schedule = poisson(rate, count=events, seed=seed)
    try:
        poller.start()
        shop = lab.submit(play(feed, schedule, shop_publishes, type="order.updated"))
        with Progress(events, "the shop's events, by webhook and by polling") as bar:
            for learned in range(1, events + 1):
                poller.wait_for(learned, timeout=schedule[-1] + 5 + interval)
                bar.update(learned)
        shop.result(timeout=10)
    finally:
        poller.stop()
        hook.stop()
        shop_api.stop()
        lab.run(client.close)
    return Race(trace=trace, events=events, interval=interval)
