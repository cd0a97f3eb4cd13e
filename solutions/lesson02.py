"""Reference answers for lesson 02 (webhooks), and typical wrong ones."""

RANK = {"queued": 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2}


def newer(current, incoming):
    """02.3: keep the furthest status seen; a late, earlier one is ignored."""
    return current is None or RANK[incoming] > RANK[current]


def last_wins(current, incoming):
    return True


def alphabetical(current, incoming):
    return current is None or incoming > current


def first_wins(current, incoming):
    return current is None


ANSWERS = {
    "02.1": [1, 2, 5],     # push_while_down(down=(3, 4), retry_after=0.2).received
    "02.2": 0.31,          # median of github_to_chat(chat_delay=0.3).github_waits
    "02.3": newer,
    "02.4": 0.25,          # 1 / rate: one poll per event on average
}

WRONG = {
    "02.1": [[1, 2, 3, 4, 5], [1, 2, 4, 5], [1, 2], "1, 2, 5"],
    "02.2": [0.005, 0.6, 1.2],
    "02.3": [last_wins, alphabetical, first_wins, "newer"],
    "02.4": [0.1, 4, 0.5, 2.5],
}
