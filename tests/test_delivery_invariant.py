"""The accounting invariant, under random faults (hypothesis property test).

For any run: every event given to the sender ends delivered or
dead-lettered at every endpoint, none pending, none lost; and each receiver
processed every delivered event exactly once, never twice, even though
lost acknowledgements make the sender deliver some events more than once.
"""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.clock import Clock
from labkit.feed import Feed
from labkit.webhooks.backoff import Exponential
from labkit.webhooks.faults import Flaky, LostAck
from labkit.webhooks.processing import Idempotent
from labkit.webhooks.providers import StandardWebhooksProvider
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.sender import DEAD_LETTERED, DELIVERED, DISABLED, EXHAUSTED, GONE, Sender
from labkit.webhooks.signatures import StandardWebhooksSignature

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Endpoint:
    """A receiver that fails at random, loses acknowledgements, and deduplicates."""

    def __init__(self, fault_rate, status, lost_rate, seed):
        self.processed = []
        self.once = Idempotent(self.processed.append)
        headers = {"Retry-After": "2"} if status == 429 else {}
        self.server = serve_receiver(
            verifiers=[StandardWebhooksSignature(SECRET)],
            faults=Flaky(fault_rate, status=status, headers=headers, seed=seed),
            process=LostAck(self.once, lost_rate, seed=seed + 1))


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(count=st.integers(1, 25), endpoints=st.integers(1, 2),
       fault_rate=st.floats(0, 0.6), status=st.sampled_from([500, 503, 429, 410]),
       lost_rate=st.floats(0, 0.5), retries=st.integers(0, 4),
       breaker_threshold=st.integers(1, 5), concurrency=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_every_event_ends_visible_and_is_processed_once(count, endpoints, fault_rate, status,
                                                        lost_rate, retries, breaker_threshold,
                                                        concurrency, seed):
    receivers = [Endpoint(fault_rate, status, lost_rate, seed + i) for i in range(endpoints)]
    feed = Feed(seed)
    events = [feed.make() for _ in range(count)]
    try:
        with Sender(StandardWebhooksProvider(SECRET), [r.server.endpoint_url for r in receivers],
                    policy=Exponential(base=1, cap=4, retries=retries),
                    clock=Clock(speedup=20_000), seed=seed, concurrency=concurrency,
                    breaker_threshold=breaker_threshold) as sender:
            stats = sender.run(events, timeout=30)
    finally:
        for receiver in receivers:
            receiver.server.stop()

    # Sender side: everything accounted for, visibly, within the policy's bound.
    assert stats["sent"] == count * endpoints and stats["pending"] == 0
    assert stats["delivered"] + stats["dead_lettered"] == stats["sent"]
    assert sender.trace.count("drop") == stats["dead_lettered"]
    assert all(len(e.attempts) <= retries + 1 for e in sender.log.values())
    assert {e.reason for e in sender.dead_letters} <= {EXHAUSTED, GONE, DISABLED}

    # Receiver side: each delivered event processed exactly once, nothing twice,
    # and every duplicate that arrived was recognised.
    sent_ids = {e.id for e in events}
    for receiver in receivers:
        states = {e.event.id: e.state for e in sender.log.values()
                  if e.url == receiver.server.endpoint_url}
        delivered = {id for id, state in states.items() if state == DELIVERED}
        processed = Counter(d.id for d in receiver.processed)
        assert set(processed.values()) <= {1}
        assert delivered <= set(processed) <= sent_ids
        # Processed but not delivered: the work was done, the answer lost every time.
        assert all(states[id] == DEAD_LETTERED for id in set(processed) - delivered)
        accepted = len(receiver.server.component.deliveries)
        assert accepted == receiver.once.processed + receiver.once.duplicates
