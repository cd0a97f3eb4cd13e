"""Checks for lesson 08 (Web Push): a service worker that shows every push, a TTL that
expires a stale alert, what topics leave of a burst of updates, and what VAPID costs."""

from __future__ import annotations

import json
import time
from numbers import Real

from labkit.exercises import NotYet, attempted, exercise
from labkit.experiments.webpush import OUT_FOR_DELIVERY, topic_updates, try_service_worker
from labkit.push.webpush import AppServer, Push

PAYLOADS = (OUT_FOR_DELIVERY, {"title": "Order #4522", "body": "Delivered. Enjoy!"}, None)
"""What 08.1's check sends: the notes' example, a payload with no icon, no payload at all."""
SHOWN = ("🛵 Order #4521: Your order is out for delivery", "🔔 Order #4522: Delivered. Enjoy!",
         "You have a new update")
"""What the phone must show for them."""


def _number(answer, what: str, hint: str) -> Real:
    if not isinstance(answer, Real) or isinstance(answer, bool) or answer < 0:
        raise NotYet(f"the answer is {what}, a number >= 0, not {answer!r}", hint=hint)
    return answer


@exercise("08.1", "A service worker that shows every push")
def _(answer):
    if not callable(answer):
        raise NotYet(f"the answer is a function service_worker(push), not {answer!r}",
                     hint="def service_worker(push): ... then check('08.1', service_worker)")
    sample = Push("msg_sample", json.dumps(OUT_FOR_DELIVERY).encode(), "high", None, 0, 0, 0.0)
    try:
        first = answer(sample)
    except Exception as exc:
        raise NotYet(f"called with the notes' example push, it raised {exc!r}",
                     hint="push.json() is the payload as a dict; push.data is None when the "
                          "push has no payload") from None
    attempted(first)
    shown, errors = try_service_worker(answer, PAYLOADS)
    if errors:
        raise NotYet(f"on the phone, {errors[0]}", hint="which of the three pushes has no "
                     "payload, and what does push.json() do then?")
    if len(shown) < len(PAYLOADS):
        raise NotYet(f"the phone showed {len(shown)} notifications for {len(PAYLOADS)} pushes: "
                     f"{list(shown)}", hint="returning None shows nothing, but a browser wants "
                     "every push to show a notification (userVisibleOnly)")
    for got, want in zip(shown, SHOWN):
        if got != want:
            raise NotYet(f"the phone showed {got!r} where it should show {want!r}",
                         hint="'<icon> <title>: <body>', with 🔔 when the payload has no icon, "
                              "and 'You have a new update' when there is no payload")
    return ("The service worker is the only code of the site that runs when a push arrives, "
            "with no page open, and it must show something every time: Chrome and Safari let "
            "a site subscribe only with userVisibleOnly, and Chrome shows its own generic "
            "notice when a push shows none.")


@exercise("08.2", "A TTL for 'your rider is at the door'")
def _(answer):
    ttl = _number(answer, "a TTL in seconds", "the TTL header counts seconds")
    if ttl == 0:
        raise NotYet("TTL 0 means now or never: a phone that is offline at that moment never "
                     "gets it, even if it is back a minute later",
                     hint="the alert is still useful for 5 minutes")
    if ttl < 10:
        raise NotYet(f"{ttl:g} seconds is far too short: did you give minutes?",
                     hint="the TTL header counts seconds")
    if ttl < 295:
        raise NotYet(f"with TTL {ttl:g} s a phone that comes back after {ttl / 60 + 0.5:.1f} "
                     f"minutes misses an alert that was still true",
                     hint="the alert is useful for 5 minutes")
    if ttl > 305:
        raise NotYet(f"with TTL {ttl:g} s a phone that comes back after {ttl / 60 - 0.5:.1f} "
                     f"minutes is told the rider is at the door long after the rider left",
                     hint="the push service keeps a message exactly as long as its TTL; "
                          "try offline_device(away=6 * 60, sends=[('at the door', ttl)])")
    return ("300 s: the push service keeps the alert for 5 minutes and then drops it, so a "
            "phone back within 5 minutes still shows it and a phone back later never does. "
            "Pick each message's TTL from how long it stays true: 0 for live positions, "
            "minutes for 'at the door', days for a receipt.")


@exercise("08.3", "What topics leave of a burst of updates")
def _(answer):
    _number(answer, "a number of notifications", "count what the phone shows")
    shown = topic_updates(updates=12, chats=3).shown
    if answer == 15:
        raise NotYet("15 is every message sent: the topic changed nothing?",
                     hint="a newer message with the same Topic replaces the one still waiting")
    if answer != len(shown):
        raise NotYet(f"{answer} is not what the phone shows when it comes back",
                     hint="the 12 ETAs share one topic; the 3 chat messages have none")
    return (f"{len(shown)}: the last ETA and the 3 chat messages. While the phone was away "
            f"each ETA replaced the one before it, so 11 were dropped at the push service; "
            f"messages without a topic are never replaced.")


@exercise("08.4", "What VAPID adds to every push request")
def _(answer):
    _number(answer, "a number of bytes", "len('Authorization: ' + value + '\\r\\n')")
    with AppServer() as app:
        claims = {"sub": app.subject, "aud": "http://127.0.0.1:40000",
                  "exp": int(time.time()) + 12 * 3600}
        header = app.vapid.sign(claims)["Authorization"]
    size = len("Authorization: \r\n") + len(header)
    if abs(answer - size) > 6:
        raise NotYet(f"{answer:g} B is not what the Authorization header takes on the wire",
                     hint="flow.result.headers['Authorization'] is its value; add the name, "
                          "': ' and the line end")
    token, key = header.split(",k=")
    return (f"About {size} B: a signed JWT ({len(token) - 8} characters: header, claims and a "
            f"64-byte signature, all base64url) and the shop's public key ({len(key)} "
            f"characters). pywebpush signs a new one for every push, so this is paid on every "
            f"notification, often more than the encrypted message itself.")
