"""Reference answers for lesson 08 (Web Push), and typical wrong ones."""


def _service_worker(push):
    """Show '<icon> <title>: <body>', and something even for a push without payload."""
    if push.data is None:
        return "You have a new update"
    note = push.json()
    return f"{note.get('icon', '🔔')} {note['title']}: {note['body']}"


def _raw_text(push):
    return push.text  # the JSON itself, and nothing for an empty push


def _crashes_without_payload(push):
    note = push.json()  # a push without payload has no JSON: ValueError
    return f"{note.get('icon', '🔔')} {note['title']}: {note['body']}"


def _silent_without_payload(push):
    if push.data is None:
        return None  # shows nothing: a browser would not allow it
    note = push.json()
    return f"{note.get('icon', '🔔')} {note['title']}: {note['body']}"


def _no_default_icon(push):
    if push.data is None:
        return "You have a new update"
    note = push.json()
    return f"{note.get('icon', '')} {note['title']}: {note['body']}"


ANSWERS = {
    "08.1": _service_worker,
    "08.2": 300,    # the alert is useful for 5 minutes: TTL 5 * 60 seconds
    "08.3": 4,      # topic_updates(updates=12, chats=3): the last ETA and 3 chat messages
    "08.4": 347,    # len("Authorization: " + flow.result.headers["Authorization"] + "\r\n")
}

WRONG = {
    "08.1": [_raw_text, _crashes_without_payload, _silent_without_payload, _no_default_icon,
             "🛵 Order #4521: Your order is out for delivery"],
    "08.2": [0, 5, 3600, 240, "300"],
    "08.3": [15, 1, 3, 12],
    "08.4": [87, 0, 1000, 200],
}
