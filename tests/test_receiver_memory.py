"""What a receiver remembers, over real loopback sockets: the last ``keep`` deliveries,
rejections and repeats, and a count of every one in ``counts``."""

from __future__ import annotations

import pytest
import requests

from labkit.feed import Feed
from labkit.webhooks.providers import GitHubProvider
from labkit.webhooks.receiver import WebhookReceiver, serve_receiver
from labkit.webhooks.signatures import GitHubSignature


def send_mix(server, *, genuine: int, forged: int, repeats: int) -> list[str]:
    """Send ``genuine`` signed deliveries, then ``forged`` ones with the wrong secret, then
    ``repeats`` copies of the first; check every status; return the genuine ids in order."""
    right, wrong, feed = GitHubProvider("s3cret"), GitHubProvider("wrong"), Feed(seed=3)
    ids, first = [], None
    for _ in range(genuine):
        webhook = right.build(server.endpoint_url, feed.make("push", {}))
        assert webhook.send().status_code == 200
        ids.append(webhook.delivery_id)
        first = first or webhook
    for _ in range(forged):
        assert wrong.build(server.endpoint_url, feed.make("push", {})).send().status_code == 401
    for _ in range(repeats):
        assert first.send().status_code == 200
    return ids


def test_the_last_keep_of_each_are_remembered_and_every_one_is_counted():
    with serve_receiver(verifiers=[GitHubSignature("s3cret")], keep=3) as server:
        ids = send_mix(server, genuine=7, forged=5, repeats=4)
        receiver = server.component
        assert receiver.counts == {"accepted": 7, "rejected": 5, "repeats": 4}
        assert [d.id for d in receiver.deliveries] == ids[-3:]
        assert [r.status for r in receiver.rejections] == [401] * 3
        assert receiver.repeats == [ids[0]] * 3
        assert [d.id for d in receiver.wait_for(7)] == ids[-3:], "waits on the count"
        assert "7 delivered, 5 rejected" in repr(receiver)
        # What was forgotten still counted: a repeat of the oldest is still only acknowledged.
        assert receiver.counts["repeats"] == 4 and len(receiver.deliveries) == 3
        assert len(server.trace.records(kind="response")) == 16, "the trace keeps every one"


def test_keep_none_remembers_every_delivery():
    with serve_receiver(verifiers=[GitHubSignature("s3cret")], keep=None) as server:
        ids = send_mix(server, genuine=12, forged=0, repeats=0)
        assert [d.id for d in server.component.deliveries] == ids


def test_by_default_a_thousand_are_remembered():
    assert WebhookReceiver().keep == 1000


def test_waiting_for_more_than_arrived_says_how_many_did():
    with serve_receiver(verifiers=[GitHubSignature("s3cret")], keep=2) as server:
        send_mix(server, genuine=3, forged=1, repeats=0)
        with pytest.raises(TimeoutError, match="only 3 of 4 deliveries .* 1 requests were "
                                               "rejected .last: 401 mismatch"):
            server.component.wait_for(4, timeout=0.2)


@pytest.mark.parametrize("keep", [0, -5, 1.5, "all"])
def test_keep_must_be_a_positive_integer_or_none(keep):
    with pytest.raises(ValueError, match="keep at least 1 row, or None"):
        WebhookReceiver(keep=keep)


def test_a_malformed_request_after_the_log_is_full_is_still_refused_and_counted():
    with serve_receiver(keep=1) as server:
        for _ in range(3):
            answer = requests.post(server.endpoint_url, data=b"{not json",
                                   headers={"Content-Type": "application/json"}, timeout=5)
            assert answer.status_code == 400
        receiver = server.component
        assert receiver.counts["rejected"] == 3
        assert [r.reason for r in receiver.rejections] == ["malformed"]
