"""Reference answers for lesson 00 (start here), and typical wrong ones."""

import requests

from labkit.feed import Feed
from labkit.webhooks import serve_receiver


def two_receivers(trace):
    """00.3: two receivers sharing one trace, one event each, both stopped."""
    feed = Feed(seed=1)
    for name in ("webhook: a", "webhook: b"):
        with serve_receiver(trace=trace, feed=feed, technique=name) as server:
            requests.post(server.endpoint_url, json=feed.make().to_dict(), timeout=5)


def one_technique_for_both(trace):
    feed = Feed(seed=1)
    for _ in range(2):
        with serve_receiver(trace=trace, feed=feed) as server:
            requests.post(server.endpoint_url, json=feed.make().to_dict(), timeout=5)


def trace_not_shared(trace):
    feed = Feed(seed=1)
    for name in ("webhook: a", "webhook: b"):
        with serve_receiver(feed=feed, technique=name) as server:
            requests.post(server.endpoint_url, json=feed.make().to_dict(), timeout=5)


def left_running(trace):
    feed = Feed(seed=1)
    for name in ("webhook: a", "webhook: b"):
        server = serve_receiver(trace=trace, feed=feed, technique=name)
        requests.post(server.endpoint_url, json=feed.make().to_dict(), timeout=5)


def unknown_technique(trace):
    with serve_receiver(trace=trace, technique="receiver a"):
        pass


ANSWERS = {
    "00.1": "about the same",
    "00.2": 0.0046,  # shop_sends_updates(count=1, payload_bytes=50_000).header_shares[0]
    "00.3": two_receivers,
}

WRONG = {
    "00.1": ["much higher", "much lower", "the same"],
    "00.2": [0.62, 62, 0.05, "0.005"],
    "00.3": [one_technique_for_both, trace_not_shared, left_running, unknown_technique,
             "two_receivers"],
}
