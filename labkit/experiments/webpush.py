"""Lesson 08's experiments: a food-delivery app reaches a customer's phone with Web Push.

Every experiment plays the same three parties on loopback: the app's back
end (the *application server*, :class:`~labkit.push.webpush.AppServer`,
named ``shop`` in the trace), a *push service*
(:func:`~labkit.push.webpush.serve_push_service`) and the customer's
*phone* (:class:`~labkit.push.webpush.Device`, a browser with the app's
service worker, :func:`show_card`). Messages are feed events whose payload
is a notification (``title``, ``body``, ``icon``), so the trace measures
each one's latency from the moment the shop made it.

=================================  ==============================================================
call                               what it shows
=================================  ==============================================================
``subscription_flow()``            keys, subscription, VAPID and the first notification, step by
                                   step with the bytes of each; ``figure()`` draws the sequence
``setup_cost(flow)``               what polling and SSE need before their first event, beside
                                   what Web Push needed in ``flow``
``offline_device()``               a phone offline for half an hour: what it gets when it comes
                                   back depends on each message's TTL (compressed by a
                                   :class:`~labkit.clock.Clock`); ``figure()``, ``timeline()``
``topic_updates()``                ETA updates with one ``Topic`` while the phone is offline: only
                                   the latest arrives
``low_battery()``                  a phone that takes only ``high`` urgency, then everything again
``gone_subscriptions()``           phones that unsubscribed answer 410; the shop forgets them
``vapid_refusals()``               pushes with a missing, foreign, expired or misaddressed VAPID
                                   token, each refused with its reason; then one that works
``beside_the_others()``            the same 25 events by Web Push, SSE, long polling and polling:
                                   latency and bytes per notification; ``figure()``, ``table()``
``pros_and_cons(...)``             the lecture notes' pros and cons, each with its measured number
``try_service_worker(worker, ...)``  runs any service worker on a real phone (for the exercises)
=================================  ==============================================================

Each experiment starts what it needs and stops all of it, also when
something fails, and returns a frozen result with the trace and the numbers
the lesson asserts on.

Thread-safety: call them from a cell or a script, never from the lab loop
(they block while they wait, and pywebpush blocks while it posts).
"""

from __future__ import annotations

import contextlib
import html
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

from pywebpush import WebPusher

from labkit import techniques
from labkit.clock import REAL_TIME, Clock
from labkit.feed import Feed
from labkit.hub import Hub
from labkit.lab import Server
from labkit.progress import Progress
from labkit.push.polling import LongPollingClient, PollingClient, serve_long_polling, \
    serve_polling
from labkit.push.sse import SSEClient, serve_sse
from labkit.push.webpush import AppServer, Device, Push, PushMessage, serve_push_service
from labkit.push.webpush import protocol
from labkit.push.webpush.app_server import SendResult
from labkit.push.webpush.crypto import parse
from labkit.trace import Trace, TraceTable
from labkit.wire import CLIENT_HEADER

__all__ = ["Card", "show_card", "Step", "Flow", "subscription_flow", "SetupCost", "setup_cost",
           "Sent", "Offline", "offline_device", "Coalescing", "topic_updates", "Battery",
           "low_battery", "Gone", "gone_subscriptions", "Refusal", "Refusals",
           "vapid_refusals", "Beside", "beside_the_others", "pros_and_cons",
           "try_service_worker"]

SHOP, PHONE = "shop", "phone"
ORDER = 4521
OUT_FOR_DELIVERY = {"title": f"Order #{ORDER}", "body": "Your order is out for delivery",
                    "icon": "🛵"}
"""The lecture notes' example, as the shop's payload."""


# -- the phone's notification -----------------------------------------------------------


class Card(NamedTuple):
    """A notification as the phone shows it (what :func:`show_card` makes of a push)."""

    title: str
    body: str
    icon: str = "🔔"
    app: str = "FoodDash"

    def __str__(self) -> str:
        return f"{self.icon} {self.title}: {self.body}"

    def _repr_html_(self) -> str:
        text = {k: html.escape(v) for k, v in self._asdict().items()}
        return ("<div style='display:flex;gap:12px;align-items:center;max-width:420px;"
                "padding:10px 14px;border-radius:14px;background:#f4f4f6;"
                "box-shadow:0 2px 6px rgba(0,0,0,.25);font-family:sans-serif'>"
                f"<div style='font-size:30px'>{text['icon']}</div><div>"
                f"<div style='font-size:11px;color:#666'>{text['app']} · now</div>"
                f"<div style='font-weight:bold'>{text['title']}</div>"
                f"<div>{text['body']}</div></div></div>")


def show_card(push: Push) -> Card:
    """The food app's service worker: turn a push into the notification the phone shows.

    The payload is a feed event whose ``payload`` holds ``title``, ``body``
    and ``icon`` (or such a JSON object on its own). A push without payload
    still shows a card: browsers insist that every push shows something
    (``userVisibleOnly``).
    """
    if push.data is None:
        return Card("FoodDash", "You have a new update")
    event = push.event
    try:
        note = event.payload if event is not None else push.json()
        return Card(str(note["title"]), str(note["body"]), str(note.get("icon", "🔔")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return Card("FoodDash", push.text or "")


@contextlib.contextmanager
def _stage(phones: tuple[str, ...] = (PHONE,), *, clock: Clock = REAL_TIME,
           trace: Trace | None = None, worker: Callable[[Push], Any] = show_card
           ) -> Iterator[tuple[Server, AppServer, list[Device]]]:
    """A push service, the shop and subscribed (offline) phones; all stopped on the way out."""
    server = serve_push_service(clock=clock, trace=trace)
    app, devices = AppServer(name=SHOP), []
    try:
        for name in phones:
            devices.append(Device(server.url, app.application_server_key, name=name,
                                  service_worker=worker, trace=server.trace))
            app.add(devices[-1].subscribe())
        yield server, app, devices
    finally:
        for device in devices:
            device.close()
        app.close()
        server.stop()


def _message_id(result: SendResult) -> str:
    return (result.location or "").rsplit("/", 1)[-1]


def _ack_bytes(message_id: str) -> int:
    """Bytes of the device's ack frame for one message (client frames are masked)."""
    return protocol.frame_size(len(protocol.ack_frame(message_id).encode()), masked=True)


def _markdown(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- the subscription flow --------------------------------------------------------------

LANES = ("app server", "push service", "browser", "service worker")
"""The sequence diagram's participants, left to right."""


class Step(NamedTuple):
    """One step of the flow: who, to whom, what, and its bytes if it crossed the kit's wire."""

    sender: str
    receiver: str
    what: str
    bytes: int | None
    """Bytes on the wire (HTTP message or WebSocket frame); None: no wire, or not simulated."""
    phase: str
    """``set-up`` (before the shop can send anything) or ``message``."""
    simulated: bool = True
    """False for what only a real browser does (a prompt, fetching ``sw.js``)."""


@dataclass(frozen=True)
class Flow:
    """What :func:`subscription_flow` did, step by step."""

    trace: Trace
    steps: tuple[Step, ...]
    subscription: dict
    """What the phone handed the shop: ``endpoint`` and ``keys`` (``p256dh``, ``auth``)."""
    application_server_key: str
    result: SendResult
    """The push service's answer to the first notification (``headers``: what was sent)."""
    stored: PushMessage = field(repr=False)
    """The message as the push service kept it: ciphertext only."""
    push: Push = field(repr=False)
    """The message as the phone's service worker got it: decrypted."""
    card: Card
    """What the phone's service worker showed."""
    plaintext: bytes = field(repr=False)
    """The exact bytes the shop encrypted."""

    @property
    def setup_steps(self) -> int:
        """Steps before the shop can send its first notification."""
        return sum(1 for s in self.steps if s.phase == "set-up")

    @property
    def setup_requests(self) -> int:
        """HTTP requests on the kit's wire before the first notification (subscribe, connect)."""
        return len(self.trace.records(kind="request", client=PHONE))

    @property
    def bytes_until_shown(self) -> int:
        """Bytes on the wire from nothing to the notification on the screen (every step but
        the last, the phone's ack)."""
        return sum(s.bytes or 0 for s in self.steps[:-1])

    def stored_vs_decrypted(self) -> str:
        """What the push service stored, taken apart, above what the phone decrypted."""
        body, header = self.stored.ciphertext, parse(self.stored.ciphertext)
        record = header.records[0]
        return "\n".join([
            f"the push service stored {len(body)} bytes (aes128gcm):",
            f"  salt    {header.salt.hex()}",
            f"  rs      {header.rs}",
            f"  keyid   {header.keyid.hex()[:48]}... (65 B: the shop's one-time public key)",
            f"  record  {record.hex()[:48]}... ({len(record)} B: {len(self.plaintext)} B of "
            f"text, a padding delimiter, a 16-byte tag)",
            f"the phone decrypted {len(self.push.data)} bytes:",
            f"  {self.push.text}"])

    def figure(self):
        """The flow as a sequence diagram: one lifeline per party, one arrow per step."""
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        x = {name: i for i, name in enumerate(LANES)}
        fig, ax = plt.subplots(figsize=(12, 0.42 * len(self.steps) + 1.4), layout="constrained")
        bottom = len(self.steps) + 0.7
        for name, i in x.items():
            ax.plot([i, i], [0.3, bottom], color="0.55", linewidth=1, zorder=0)
            ax.text(i, 0, name, ha="center", va="center", fontsize=11, fontweight="bold",
                    bbox=dict(boxstyle="round,pad=0.4", fc="#e6dcf0", ec="#9467bd"))
        first_message = next(k for k, s in enumerate(self.steps, 1) if s.phase == "message")
        ax.axhline(first_message - 0.5, color="#9467bd", linestyle=":", linewidth=1)
        ax.text(len(LANES) - 0.45, first_message - 0.55, "set-up above · the first notification "
                "below", ha="right", va="bottom", fontsize=8, color="#9467bd")
        for k, step in enumerate(self.steps, 1):
            _draw_step(ax, k, step, x)
        ax.set_xlim(-0.5, len(LANES) - 0.4)
        ax.set_ylim(bottom, -0.6)
        ax.axis("off")
        ax.set_title("Web Push: from no subscription to a notification on the screen "
                     "(bytes as measured on the kit's wire)")
        ax.legend(handles=[
            Line2D([], [], color="#9467bd", label="on the kit's wire (HTTP or WebSocket)"),
            Line2D([], [], color="0.5", linestyle="--", label="no wire here (inside one "
                   "party, or the page to its own site)"),
            Line2D([], [], color="0.75", linestyle=":", label="a real browser only: not "
                   "simulated")], loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
            fontsize=8, frameon=False)
        return fig


def _draw_step(ax: Any, k: int, step: Step, x: dict) -> None:
    """One step: a note on a lifeline, or an arrow between two, numbered and labelled."""
    label = f"{k}. {step.what}" + (f"  [{step.bytes} B]" if step.bytes is not None else "")
    colour = "#9467bd" if step.bytes is not None else "0.5" if step.simulated else "0.7"
    if step.sender == step.receiver:
        right = x[step.sender] == len(LANES) - 1
        ax.text(x[step.sender] + (-0.04 if right else 0.04), k, label, fontsize=8.5,
                ha="right" if right else "left", va="center",
                color="0.1" if step.simulated else "0.45",
                bbox=dict(boxstyle="round,pad=0.25", fc="#fff8dc" if step.simulated else
                          "white", ec=colour, linestyle="-" if step.simulated else ":"))
        return
    a, b = x[step.sender], x[step.receiver]
    ax.annotate("", xy=(b, k), xytext=(a, k),
                arrowprops=dict(arrowstyle="-|>", color=colour, linewidth=1.4,
                                linestyle="-" if step.bytes is not None else "--",
                                shrinkA=0, shrinkB=0))
    ax.text((a + b) / 2, k - 0.1, label, ha="center", va="bottom", fontsize=8.5,
            color="0.1", bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none",
                                   alpha=0.85))


def subscription_flow(*, seed: int = 1) -> Flow:
    """From nothing to the notes' example on the phone's screen, one measured step at a time.

    The shop makes its VAPID key pair; the phone (a browser) makes its
    P-256 keys and auth secret, subscribes at the push service with the
    shop's public key, hands the subscription to the shop and connects; the
    shop sends "Your order is out for delivery" (TTL 30 min, urgency high,
    topic ``order-4521``); the phone decrypts it, its service worker shows
    the card, and it acknowledges. Two steps only a real browser takes (the
    service worker's script, the permission prompt) are listed, not run.
    """
    event = Feed(seed=seed).make("order.out_for_delivery", OUT_FOR_DELIVERY)
    cards: list[Card] = []

    def service_worker(push: Push) -> Card:  # show_card, keeping the card it showed
        cards.append(show_card(push))
        return cards[-1]

    server = serve_push_service()
    app = AppServer(name=SHOP)
    device = Device(server.url, app.application_server_key, name=PHONE, trace=server.trace,
                    service_worker=service_worker)
    try:
        subscription = device.subscribe()
        app.add(subscription)
        device.online()
        result = app.send(subscription, event, ttl=1800, urgency="high", topic=f"order-{ORDER}")
        push = device.wait_for(1)[0]
        stored = server.component.wait_for(result.location, "acked")
    finally:
        device.close()
        app.close()
        server.stop()
    trace = server.trace
    (subscribe, connect), (subscribed, upgraded), (post,), (created,) = (
        [r.bytes for r in trace.records(kind=kind, client=client)]
        for client in (PHONE, SHOP) for kind in ("request", "response"))
    key = len(app.application_server_key)
    steps = (
        Step("app server", "app server", "makes its VAPID key pair (P-256)", None, "set-up"),
        Step("app server", "browser", f"the page gets the public key ({key} characters)",
             None, "set-up"),
        Step("browser", "browser", "registers the service worker (fetches sw.js)", None,
             "set-up", simulated=False),
        Step("browser", "browser", "asks the user: allow notifications?", None, "set-up",
             simulated=False),
        Step("browser", "browser", "makes a P-256 key pair and a 16-byte auth secret", None,
             "set-up"),
        Step("browser", "push service", "POST /subscribe  {vapid: <public key>}", subscribe,
             "set-up"),
        Step("push service", "browser", "201  Location: /s/<id>  Link: <endpoint>", subscribed,
             "set-up"),
        Step("browser", "app server", "the page sends the subscription (endpoint, p256dh, auth)",
             None, "set-up"),
        Step("browser", "push service", "GET /s/<id>  Upgrade: websocket", connect, "set-up"),
        Step("push service", "browser", "101 Switching Protocols: stays open", upgraded,
             "set-up"),
        Step("app server", "push service", "POST <endpoint>  aes128gcm + VAPID + TTL", post,
             "message"),
        Step("push service", "app server", "201  Location: /m/<id>", created, "message"),
        Step("push service", "browser", "push frame: the ciphertext", push.frame_bytes,
             "message"),
        Step("browser", "service worker", "decrypts it: a push event", None, "message"),
        Step("service worker", "service worker", f"shows “{OUT_FOR_DELIVERY['body']}”", None,
             "message"),
        Step("browser", "push service", "ack frame", _ack_bytes(push.id), "message"),
    )
    return Flow(trace=trace, steps=steps, subscription=subscription,
                application_server_key=app.application_server_key, result=result,
                stored=stored, push=push, card=cards[0],
                plaintext=event.to_json().encode())


# -- set-up beside polling and SSE ------------------------------------------------------


class Cost(NamedTuple):
    """What one technique needed from nothing to its first event on the client."""

    technique: str
    steps: int
    requests: int
    bytes: int


@dataclass(frozen=True)
class SetupCost:
    """What :func:`setup_cost` measured: one :class:`Cost` per technique."""

    trace: Trace
    costs: dict[str, Cost]

    def table(self) -> str:
        """The comparison as a Markdown table."""
        return _markdown(("technique", "set-up steps", "HTTP requests", "bytes on the wire"),
                         [(techniques.label(c.technique), c.steps, c.requests, c.bytes)
                          for c in self.costs.values()])


def setup_cost(flow: Flow, *, interval: float = 0.2, seed: int = 1) -> SetupCost:
    """Polling and SSE from nothing to their first event, beside Web Push's ``flow``.

    Each starts its own server; the client starts (a poller every
    ``interval`` seconds, an ``EventSource``), the server publishes the
    notes' example once the client listens, and the run ends when the
    client has it. Bytes are the trace's (request and response, headers
    included; the SSE stream's bytes up to the event); Web Push's are the
    flow's, frames included, ack excluded. A page needs one step for
    either: open the stream, or start asking.
    """
    trace, feed = Trace(), Feed(seed=seed)
    for serve, client in ((serve_polling, lambda url: PollingClient(
            url, interval=interval, trace=trace, name="poller")),
                          (serve_sse, lambda url: SSEClient(url, trace=trace, name="page"))):
        hub = Hub()
        server = serve(hub, trace=trace)
        try:
            with client(server.endpoint_url) as reader:
                hub.publish(feed.make("order.out_for_delivery", OUT_FOR_DELIVERY))
                reader.wait_for(1)
        finally:
            server.stop()
    costs = {"webpush": Cost("webpush", flow.setup_steps, flow.setup_requests + 1,
                             flow.bytes_until_shown)}
    costs.update((name, Cost(name, 1, trace.count("request", name), trace.bytes_total(name)))
                 for name in ("sse", "polling"))
    return SetupCost(trace, costs)


# -- an offline phone and TTLs ----------------------------------------------------------


class Sent(NamedTuple):
    """One message the shop sent, and what became of it (times in simulated seconds)."""

    text: str
    ttl: int
    sent: float
    state: str
    """Its final state at the push service: ``acked``, ``expired``, ``dropped`` ..."""
    shown: float | None
    """When the phone showed it (None: never)."""


OFFLINE_SENDS = (
    ("Your rider is 2 minutes away", 0),
    ("Flash deal: 20% off for 10 min", 600),
    ("Your order is out for delivery", 3600),
    (f"Receipt for order #{ORDER}", 86400),
)
"""What the shop sends while the phone is away: text and TTL in seconds."""


@dataclass(frozen=True)
class Offline:
    """What :func:`offline_device` saw. Times are simulated seconds since the start."""

    trace: Trace
    speedup: float
    away: tuple[float, float]
    """When the phone went offline and when it came back."""
    end: float
    before: Sent
    """The message sent while the phone was still online."""
    sent: tuple[Sent, ...]
    """The messages sent while it was offline."""

    def figure(self):
        """Each message's TTL window against the phone's offline spell (simulated minutes)."""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(10, 3.8), layout="constrained")
        end = self.end / 60
        ax.axvspan(self.away[0] / 60, self.away[1] / 60, color="0.9",
                   label="phone offline (page and browser closed)")
        ax.axvline(self.away[1] / 60, color="0.3", linestyle="--", linewidth=1,
                   label="phone back online")
        colour = techniques.colour("webpush")
        messages = (self.before, *self.sent)
        for row, m in enumerate(messages):
            expires = min(end, (m.sent + m.ttl) / 60)
            left = expires if m.shown is None else m.shown / 60
            ax.plot([m.sent / 60, max(left, m.sent / 60 + end * 0.004)], [row, row],
                    color=colour, linewidth=7, alpha=0.4, solid_capstyle="butt")
            ax.plot([left, expires], [row, row], color=colour, linestyle=":", linewidth=1.5)
            if m.shown is not None:
                ax.plot(m.shown / 60, row, "D", color=colour, markeredgecolor="k")
            else:
                ax.plot(expires, row, "x", color="red", markersize=9, markeredgewidth=2)
        ax.plot([], [], color=colour, linewidth=7, alpha=0.4, label="waiting at the push service")
        ax.plot([], [], color=colour, linestyle=":", label="the rest of its TTL")
        ax.plot([], [], "D", color=colour, markeredgecolor="k", label="shown on the phone")
        ax.plot([], [], "x", color="red", markeredgewidth=2, label="dropped: never shown")
        ax.set_yticks(range(len(messages)),
                      [f"{m.text} (TTL {_duration(m.ttl)})" for m in messages])
        ax.set_ylim(len(messages) - 0.5, -0.5)
        ax.set_xlim(0, end)
        ax.set_xlabel("simulated minutes since the start")
        ax.set_title("A phone offline for half an hour gets what is still within its TTL")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        return fig

    def timeline(self):
        """The run as a swimlane timeline (real seconds): shop -> push service -> phone."""
        from labkit.plots import timeline
        ax = timeline(self.trace, techniques=["webpush"], clients=[SHOP, PHONE],
                      roles={SHOP: "app server"},
                      title=f"The shop posts, the push service hands each message to the phone "
                            f"when it can (1 s = {self.speedup / 60:g} simulated minutes)")
        return ax.figure


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def offline_device(*, away: float = 30 * 60, sends: tuple = OFFLINE_SENDS,
                   speedup: float = 1800, seed: int = 1) -> Offline:
    """The phone goes offline, the shop sends ``sends``, the phone comes back after ``away`` s.

    Simulated time runs ``speedup`` times faster (1800: half an hour in a
    second), for the push service's TTLs and for the experiment's waits.
    At 0 the phone is online and gets "Order confirmed"; at 1 min it goes
    offline (the browser is closed, or the phone is in a tunnel); at 2 min
    the shop sends ``sends`` (text, TTL); at ``1 min + away`` the phone
    comes back; the run ends 5 minutes later, so a message that would come
    late has the time to show up. A message reaches the phone if and only
    if its TTL outlasts its wait: ``TTL > away - 1 min``.
    """
    clock, feed = Clock(speedup), Feed(seed=seed)
    start = time.monotonic()

    def now(t: float | None = None) -> float:  # simulated seconds since the start
        return clock.to_sim((time.monotonic() if t is None else t) - start)

    def sleep_until(sim_seconds: float) -> None:
        time.sleep(max(0.0, clock.to_real(sim_seconds - now())))

    with _stage(clock=clock) as (server, app, (phone,)):
        phone.online()
        first = app.send(phone.subscription_info, feed.make("order.confirmed", {
            "title": f"Order #{ORDER}", "body": "Order confirmed", "icon": "✅"}), ttl=3600)
        phone.wait_for(1)
        sleep_until(60)
        phone.offline()
        sleep_until(120)
        results = [(text, ttl, now(),
                    app.send(phone.subscription_info, feed.make("order.update", {
                        "title": f"Order #{ORDER}", "body": text, "icon": "🛵"}), ttl=ttl))
                   for text, ttl in sends]
        sleep_until(60 + away)
        back = now()
        phone.online()
        sleep_until(60 + away + 300)
        shown = {p.id: now(p.received) for p in phone.received}
        messages = {m.id: m for m in server.component.messages()}
    return Offline(
        trace=server.trace, speedup=speedup, away=(60.0, back), end=now(),
        before=Sent("Order confirmed", 3600, 0.0, messages[_message_id(first)].state,
                    shown.get(_message_id(first))),
        sent=tuple(Sent(text, ttl, at, messages[_message_id(r)].state, shown.get(_message_id(r)))
                   for text, ttl, at, r in results))


# -- topics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Coalescing:
    """What :func:`topic_updates` saw."""

    trace: Trace
    sent: tuple[tuple[str, str | None, str], ...]
    """Every message: text, topic, final state at the push service."""
    shown: tuple[str, ...]
    """What the phone showed when it came back, in order."""


def topic_updates(*, updates: int = 5, chats: int = 1) -> Coalescing:
    """While the phone is offline the shop sends ``updates`` ETAs with one ``Topic``, and
    ``chats`` chat messages without one; then the phone comes back.

    Each ETA replaces the one waiting before it (RFC 8030 section 5.4), so
    the phone shows only the latest ETA and every chat message.
    """
    with _stage() as (server, app, (phone,)):
        sub = phone.subscription_info
        texts = [(f"Your rider is {5 * (updates - k)} min away", "eta-4521")
                 for k in range(updates)]
        texts[1:1] = [(f"Rider: message {k + 1}", None) for k in range(chats)]
        results = [app.send(sub, text, topic=topic, ttl=1800) for text, topic in texts]
        phone.online()
        waiting = [r for r in results
                   if server.component.message(r.location).state != "replaced"]
        for result in waiting:
            server.component.wait_for(result.location, "acked")
        states = [server.component.message(r.location).state for r in results]
        shown = tuple(n.text for n in phone.notifications)
    return Coalescing(server.trace, tuple((text, topic, state) for (text, topic), state
                                          in zip(texts, states)), shown)


# -- urgency ----------------------------------------------------------------------------


BATTERY_SENDS = (
    ("Weekend deals: 2 pizzas for 1", "very-low"),
    ("Rate your last order", "low"),
    (f"Order #{ORDER} confirmed", "normal"),
    ("Your rider is at the door", "high"),
)
"""What the shop sends while the phone saves battery: text and urgency."""


@dataclass(frozen=True)
class Battery:
    """What :func:`low_battery` saw."""

    trace: Trace
    sent: tuple[tuple[str, str], ...]
    """Every message: text and urgency."""
    while_saving: tuple[str, ...]
    """What the phone showed while it took only ``high``."""
    waiting: tuple[str, ...]
    """What the push service still held for the phone then."""
    after: tuple[str, ...]
    """What the phone showed once it took everything again."""


def low_battery(*, sends: tuple = BATTERY_SENDS, saving: str = "high") -> Battery:
    """A phone on battery saver takes only ``saving`` urgency and up; then it recovers.

    The phone tells the push service which urgencies it takes when it
    connects (RFC 8030 section 5.3); the service holds the rest until the
    phone takes everything again.
    """
    with _stage() as (server, app, (phone,)):
        phone.online()
        phone.accept(saving)
        results = [app.send(phone.subscription_info, text, urgency=urgency)
                   for text, urgency in sends]
        phone.wait_for(sum(protocol.urgency_rank(urgency) >= protocol.urgency_rank(saving)
                           for _, urgency in sends))
        while_saving = tuple(n.text for n in phone.notifications)
        waiting = tuple(text for (text, _), r in zip(sends, results)
                        if server.component.message(r.location).state == "stored")
        phone.accept("very-low")
        phone.wait_for(len(sends))
        after = tuple(n.text for n in phone.notifications)[len(while_saving):]
    return Battery(server.trace, tuple(sends), while_saving, waiting, after)


# -- 410 Gone ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Gone:
    """What :func:`gone_subscriptions` saw."""

    trace: Trace
    statuses: tuple[tuple[int | None, ...], ...]
    """The push service's answers, one tuple per broadcast."""
    subscriptions: tuple[int, ...]
    """How many subscriptions the shop held before each broadcast, and at the end."""
    removed: tuple[str, ...]
    """Endpoints the shop dropped."""


def gone_subscriptions(*, phones: int = 4, gone: int = 2, broadcasts: int = 2) -> Gone:
    """``phones`` customers subscribe; ``gone`` of them unsubscribe (they turned notifications
    off); the shop broadcasts an offer ``broadcasts`` times.

    The push service answers 410 Gone for an ended subscription, and the
    shop (pywebpush with the kit's :class:`~labkit.push.webpush.AppServer`)
    removes it at once, so later broadcasts no longer post to it.
    """
    names = tuple(f"phone-{k + 1}" for k in range(phones))
    with _stage(names) as (server, app, devices):
        for device in (devices[1::2] + devices[::2])[:gone]:
            device.unsubscribe()
        statuses, held = [], []
        for k in range(broadcasts):
            held.append(len(app.subscriptions))
            statuses.append(tuple(r.status for r in app.broadcast(f"Weekend offer {k + 1}")))
        held.append(len(app.subscriptions))
    return Gone(server.trace, tuple(statuses), tuple(held), tuple(app.removed))


# -- VAPID refusals ---------------------------------------------------------------------


class Refusal(NamedTuple):
    """One push and the push service's answer."""

    case: str
    status: int
    reason: str
    """The word the push service gave (and wrote in the trace)."""
    error: str
    """Its explanation, for a human."""


@dataclass(frozen=True)
class Refusals:
    """What :func:`vapid_refusals` saw."""

    trace: Trace
    refusals: tuple[Refusal, ...]
    after: SendResult
    """The shop's correct push, sent after every refusal."""
    shown: tuple[str, ...]
    """What the phone showed."""
    stored: int
    """How many messages the push service accepted in all."""

    def table(self) -> str:
        """The refusals as a Markdown table."""
        return _markdown(("the push request", "status", "reason", "the push service says"),
                         [(r.case, r.status, f"`{r.reason}`", r.error) for r in self.refusals])


def vapid_refusals() -> Refusals:
    """Pushes whose VAPID proof is wrong in five ways, then a correct one.

    Every request is made by pywebpush (``WebPusher``) with a token signed
    by py_vapid, as a real application server would; only the claims or
    the key differ: no token at all, another site's key, a token whose
    ``exp`` has passed (cached too long), one valid for more than 24 hours,
    and one addressed (``aud``) to another push service.
    """
    with _stage() as (server, app, (phone,)), AppServer(name="other-site") as other:
        phone.online()
        sub = phone.subscription_info
        now = int(time.time())
        claims = {"sub": app.subject, "aud": server.url, "exp": now + 12 * 3600}
        cases = {
            "no VAPID token": {},
            "a token from another site's key": other.vapid.sign(claims),
            "a token whose exp has passed": app.vapid.sign({**claims, "exp": now - 60}),
            "a token valid for 25 hours": app.vapid.sign({**claims, "exp": now + 25 * 3600}),
            "a token for another push service": app.vapid.sign(
                {**claims, "aud": "https://fcm.googleapis.com"}),
        }
        refusals = []
        for case, headers in cases.items():
            answer = WebPusher(sub).send("Your order is out for delivery", ttl=60, timeout=10,
                                         headers={**headers, CLIENT_HEADER: SHOP})
            body = answer.json()
            refusals.append(Refusal(case, answer.status_code, body["reason"], body["error"]))
        after = app.send(sub, "Your order is out for delivery")
        phone.wait_for(1)
        stored = len(server.component.messages())
        shown = tuple(n.text for n in phone.notifications)
    return Refusals(server.trace, tuple(refusals), after, shown, stored)


# -- beside the others ------------------------------------------------------------------

WEBPUSH_PARTS = ("the shop's POST", "201 answer", "frames to and from the phone",
                 "the phone's set-up")
"""What one Web Push notification costs on the wire, part by part, as the trace has it: the
shop's requests and their answers, the frames on the phone's connection (each push, each ack,
the close handshake; its ``disconnect`` record), and the phone's subscribe and connect."""


class Row(NamedTuple):
    """One technique's numbers in :func:`beside_the_others`."""

    technique: str
    delivered: int
    p50: float
    p99: float
    """Latency percentiles, seconds."""
    bytes: float
    """Bytes on the wire per delivered notification."""
    requests: float
    """HTTP requests per delivered notification."""


@dataclass(frozen=True)
class Beside:
    """What :func:`beside_the_others` measured."""

    trace: Trace
    count: int
    interval: float
    rows: dict[str, Row]
    parts: dict[str, float]
    """Web Push's bytes per notification, by :data:`WEBPUSH_PARTS`: together, the trace's
    ``bytes_per_event("webpush")``."""
    first: str = field(repr=False)
    """The first Web Push message's id."""

    def table(self) -> str:
        """Latency and bytes per notification, one row per technique (Markdown)."""
        return _markdown(
            ("technique", "delivered", "p50 latency", "p99 latency", "bytes / notification",
             "requests / notification"),
            [(self._label(r.technique), r.delivered, f"{r.p50 * 1000:.1f} ms",
              f"{r.p99 * 1000:.1f} ms", f"{r.bytes:.0f} B", f"{r.requests:.2f}")
             for r in self.rows.values()])

    def _label(self, technique: str) -> str:
        label = techniques.label(technique)
        return f"{label} (every {self.interval:g} s)" if technique == "polling" else label

    def records(self) -> TraceTable:
        """The trace records behind the first Web Push notification."""
        rows = [dict(r._asdict(), t=r.t - self.trace.t0)
                for r in self.trace.records(technique="webpush")]
        answer = next(k for k, r in enumerate(rows) if r["detail"].startswith(self.first))
        return TraceTable([rows[answer - 1], rows[answer]] +
                          [r for r in rows if r["kind"] == "event" and r["detail"] == self.first])

    def figure(self):
        """Bytes per notification (Web Push part by part) and latency p50/p99, per technique."""
        import matplotlib.pyplot as plt
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
        names = list(self.rows)
        labels = [self._label(name) for name in names]
        colour = techniques.colour("webpush")
        start = 0.0
        for part, alpha, hatch in zip(WEBPUSH_PARTS, (1.0, 0.7, 0.45, 0.25),
                                      ("", "//", "..", "xx")):
            left.barh(0, self.parts[part], left=start, color=colour, alpha=alpha, hatch=hatch,
                      edgecolor="k", linewidth=0.5, label=f"Web Push: {part}")
            start += self.parts[part]
        for k, name in enumerate(names[1:], 1):
            left.barh(k, self.rows[name].bytes, color=techniques.colour(name),
                      edgecolor="k", linewidth=0.5)
        for k, name in enumerate(names):
            left.text(self.rows[name].bytes, k, f" {self.rows[name].bytes:.0f} B",
                      va="center", fontsize="small")
        left.set_yticks(range(len(names)), labels)
        left.invert_yaxis()
        left.set_xlim(0, max(r.bytes for r in self.rows.values()) * 1.25)
        left.set_xlabel("bytes on the wire per delivered notification")
        left.set_title(f"What each of {self.count} notifications cost")
        left.legend(loc="lower right", fontsize="x-small")
        for k, (pct, alpha) in enumerate((("p50", 1.0), ("p99", 0.45))):
            values = [getattr(self.rows[name], pct) * 1000 for name in names]
            right.barh([i + (k - 0.5) * 0.38 for i in range(len(names))], values, height=0.38,
                       color=[techniques.colour(n) for n in names], alpha=alpha,
                       edgecolor="k", linewidth=0.5, label=pct)
            for i, value in enumerate(values):
                right.text(value, i + (k - 0.5) * 0.38, f" {value:.1f} ms", va="center",
                           fontsize="x-small")
        right.set_yticks(range(len(names)), labels)
        right.invert_yaxis()
        right.set_xscale("log")
        right.set_xlim(right=max(r.p99 for r in self.rows.values()) * 1000 * 4)
        right.set_xlabel("latency from the event to the client, ms (log scale)")
        right.set_title("How long each took to arrive (p50 dark, p99 pale)")
        return fig


def beside_the_others(*, count: int = 25, rate: float = 25.0, interval: float = 0.2,
                      seed: int = 1) -> Beside:
    """The same ``count`` events, ``rate`` a second, by Web Push, SSE, long polling and polling.

    One hub feeds an SSE stream, a long-polling server and a polling server
    (its client asks every ``interval`` s); for each event the shop also
    sends it by Web Push to a connected phone. Everything records into one
    trace, so the latencies (event made -> client has it) and bytes compare:
    each technique's are ``Trace.bytes_per_event``, set-up included, read
    once everything has stopped. For Web Push that is the shop's requests and
    the 201s, the phone's subscribe and connect, and the WebSocket frames on
    the phone's connection, which the push service counts and records on the
    connection's ``disconnect`` when the phone goes offline.
    """
    trace, hub, feed = Trace(), Hub(), Feed(seed=seed)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(serve(hub, trace=trace))
                   for serve in (serve_sse, serve_long_polling, serve_polling)]
        push_server, app, (phone,) = stack.enter_context(_stage(trace=trace))
        phone.online()
        clients = [stack.enter_context(client) for client in (
            SSEClient(servers[0].endpoint_url, trace=trace, name="sse-page"),
            LongPollingClient(servers[1].endpoint_url, trace=trace, name="long-poller"),
            PollingClient(servers[2].endpoint_url, trace=trace, name="poller",
                          interval=interval))]
        bar = stack.enter_context(Progress(count, "the same events, four ways"))
        start, sent = time.monotonic(), []
        for k in range(count):
            time.sleep(max(0.0, start + (k + 1) / rate - time.monotonic()))
            event = feed.make("order.update", {"title": f"Order #{ORDER}",
                                               "body": f"update {k + 1}", "icon": "🛵"})
            hub.publish(event)
            sent.append(app.send(phone.subscription_info, event, ttl=60))
            bar.advance()
        phone.wait_for(count)
        for client in clients:
            client.wait_for(count)
        for result in sent:  # every ack is in before the phone goes offline
            push_server.component.wait_for(result.location, "acked")
    return _beside(trace, count, interval, _message_id(sent[0]))


def _beside(trace: Trace, count: int, interval: float, first: str) -> Beside:
    """The rows and Web Push's parts, from the trace of a run that has stopped."""
    pushed = max(1, trace.count("event", "webpush"))

    def part(client: str, *kinds: str) -> float:
        records = trace.records(technique="webpush", client=client)
        return sum(r.bytes for r in records if r.kind in kinds) / pushed

    parts = dict(zip(WEBPUSH_PARTS, (part(SHOP, "request"), part(SHOP, "response"),
                                     part(PHONE, "disconnect"),
                                     part(PHONE, "request", "response"))))
    rows = {}
    for name in ("webpush", "sse", "long-polling", "polling"):
        delivered = trace.count("event", name)
        p50, p99 = trace.latency_percentiles(name, (50, 99)).values()
        rows[name] = Row(name, delivered, p50, p99, trace.bytes_per_event(name),
                         trace.count("request", name) / max(1, delivered))
    return Beside(trace, count, interval, rows, parts, first)


# -- the notes' pros and cons -----------------------------------------------------------


def pros_and_cons(flow: Flow, setup: SetupCost, offline: Offline, battery: Battery) -> str:
    """The lecture notes' pros and cons of push notifications, each with this run's number."""
    late = [m for m in offline.sent if m.shown is not None]
    polling, sse, push = setup.costs["polling"], setup.costs["sse"], setup.costs["webpush"]
    vapid = len("Authorization: \r\n") + len(flow.result.headers["Authorization"])
    rows = [
        ("pro: works even if the app isn't open",
         f"**{len(late)} of {len(offline.sent)}** messages sent while the phone was offline were "
         f"shown after it came back, by the service worker alone (no page); the other "
         f"{len(offline.sent) - len(late)} had a TTL shorter than the wait", "true"),
        ("pro: supports urgency/priority levels",
         f"on battery saver the phone took **{len(battery.while_saving)} of "
         f"{len(battery.sent)}** (only `high`); the push service held "
         f"**{len(battery.waiting)}** until it recovered", "true"),
        ("con: requires registration & authentication with providers",
         f"**{flow.setup_steps} set-up steps**, {flow.setup_requests} requests to the push "
         f"service, and a VAPID token (**{vapid} B**) on every push; but no account with "
         f"Google or Apple: the site makes its own key pair", "partly"),
        ("con: more setup compared to polling/SSE",
         f"before the first event: Web Push **{push.steps} steps, {push.requests} requests, "
         f"{push.bytes} B**; SSE {sse.steps} step, {sse.requests} request, {sse.bytes} B; "
         f"polling {polling.steps} step, {polling.requests} requests, {polling.bytes} B", "true"),
    ]
    return _markdown(("the notes say", "this run measured", "verdict"), rows)


# -- for the exercises ------------------------------------------------------------------


def try_service_worker(worker: Callable[[Push], Any], payloads: tuple) -> tuple[tuple, tuple]:
    """Run ``worker`` as a phone's service worker on a real push service.

    The shop sends each of ``payloads`` (a dict is sent as JSON text, None
    as a push without payload). Returns what the phone showed (the texts of
    its notifications, in order) and what went wrong (``device.errors``).
    """
    with _stage(worker=worker) as (server, app, (phone,)):
        phone.online()
        for payload in payloads:
            app.send(phone.subscription_info,
                     None if payload is None else json.dumps(payload, ensure_ascii=False))
        phone.wait_for(len(payloads))
        return tuple(n.text for n in phone.notifications), tuple(phone.errors)
