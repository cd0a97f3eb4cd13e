"""The receiver's safe default, over real loopback sockets: a repeated delivery id is
acknowledged with 200 and not processed again; ``duplicates="process"`` is the naive
receiver that does the work for every copy."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time

import pytest
import requests

from labkit.clock import Clock
from labkit.errors import LabkitError
from labkit.feed import Feed
from labkit.webhooks.backoff import FixedSchedule
from labkit.webhooks.faults import FailFirst, slow
from labkit.webhooks.providers import (GitHubProvider, PaymentProvider,
                                       StandardWebhooksProvider, TwilioProvider)
from labkit.webhooks.receiver import serve_receiver
from labkit.webhooks.sender import Sender
from labkit.webhooks.signatures import (GitHubSignature, StandardWebhooksSignature,
                                        StripeSignature, TwilioSignature, generate_secret)

SW_SECRET = generate_secret(random.Random(8))
PAIRS = {  # where each provider puts its delivery id: header, header, body, header
    "github": (GitHubProvider("gh"), GitHubSignature("gh")),
    "standard": (StandardWebhooksProvider(SW_SECRET), StandardWebhooksSignature(SW_SECRET)),
    "payment": (PaymentProvider("whsec_pay"), StripeSignature("whsec_pay")),
    "twilio": (TwilioProvider("tw"), TwilioSignature("tw")),
}


def responses(server) -> list:
    return server.trace.records(kind="response")


@pytest.mark.parametrize("name", list(PAIRS))
def test_a_repeated_delivery_is_acknowledged_and_not_processed_again(name):
    provider, verifier = PAIRS[name]
    processed = []
    with serve_receiver(verifiers=[verifier], process=processed.append) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=1).make("push", {}))
        assert [webhook.send().status_code for _ in range(3)] == [200, 200, 200]
        receiver = server.component
        assert [d.id for d in processed] == [webhook.delivery_id], "processed once"
        assert [d.id for d in receiver.deliveries] == [webhook.delivery_id], "recorded once"
        assert receiver.repeats == [webhook.delivery_id] * 2
        assert receiver.rejections == []
        first, *again = responses(server)
        assert (first.status, first.events) == (200, 1)
        assert all((r.status, r.events) == (200, 0) for r in again)
        assert all(r.detail.startswith(f"repeat of delivery {webhook.delivery_id}") for r in again)


def test_the_naive_option_processes_every_copy():
    provider, verifier = PAIRS["github"]
    processed = []
    with serve_receiver(verifiers=[verifier], process=processed.append,
                        duplicates="process") as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=2).make("push", {}))
        assert [webhook.send().status_code for _ in range(2)] == [200, 200]
        assert [d.id for d in processed] == [webhook.delivery_id] * 2
        assert len(server.component.deliveries) == 2 and server.component.repeats == []
        assert [r.events for r in responses(server)] == [1, 1]


def test_a_repeat_is_recognised_without_process_or_faults_too():
    provider, verifier = PAIRS["standard"]
    with serve_receiver(verifiers=[verifier]) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=3).make())
        assert webhook.send().status_code == webhook.send().status_code == 200
        assert len(server.component.deliveries) == 1
        assert server.component.repeats == [webhook.delivery_id]


def test_a_forged_copy_of_a_known_delivery_id_is_still_refused():
    provider, verifier = PAIRS["github"]
    with serve_receiver(verifiers=[verifier]) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=4).make("push", {}))
        assert webhook.send().status_code == 200
        forged = {**webhook.headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        answer = requests.post(server.endpoint_url, data=webhook.body + b" ", headers=forged,
                               timeout=5)
        assert answer.status_code == 401, "the signature is checked before the id is looked up"
        assert server.component.rejections[-1].reason == "mismatch"
        assert server.component.repeats == []


def test_a_copy_that_failed_is_not_remembered_so_the_retry_is_processed():
    provider, verifier = PAIRS["standard"]
    calls = []

    def process(delivery):
        calls.append(delivery.id)
        if len(calls) == 1:
            raise RuntimeError("database unavailable")

    with serve_receiver(verifiers=[verifier], process=process) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=5).make())
        assert [webhook.send().status_code for _ in range(3)] == [500, 200, 200]
        assert calls == [webhook.delivery_id] * 2, "the retry did the work, the third did not"
        assert server.component.repeats == [webhook.delivery_id]


def test_a_copy_answered_by_the_faults_hook_is_not_remembered():
    provider, verifier = PAIRS["standard"]
    with serve_receiver(verifiers=[verifier], faults=FailFirst(1)) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=6).make())
        assert [webhook.send().status_code for _ in range(3)] == [500, 200, 200]
        assert len(server.component.deliveries) == 1
        assert server.component.repeats == [webhook.delivery_id]


def test_deliveries_without_an_id_cannot_be_recognised_so_each_is_processed():
    processed = []
    with serve_receiver(process=processed.append) as server:
        for _ in range(2):
            answer = requests.post(server.endpoint_url, data=b'{"type": "ping"}', timeout=5,
                                   headers={"Content-Type": "application/json"})
            assert answer.status_code == 200
        assert len(processed) == 2 and server.component.repeats == []


def send_together(webhook, copies: int) -> list[int]:
    """Send ``copies`` of ``webhook`` at once, each on its own connection; their statuses."""
    with concurrent.futures.ThreadPoolExecutor(copies) as pool:
        return [f.result() for f in [pool.submit(lambda: webhook.send().status_code)
                                     for _ in range(copies)]]


def test_a_repeat_arriving_mid_work_waits_for_the_first_copy_then_is_only_acknowledged():
    provider, verifier = PAIRS["standard"]
    started, finished = [], []

    async def process(delivery):
        started.append(time.monotonic())
        await asyncio.sleep(0.2)
        finished.append(time.monotonic())

    with serve_receiver(verifiers=[verifier], process=process) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=7).make())
        assert send_together(webhook, 3) == [200, 200, 200]
        assert len(started) == len(finished) == 1, "the work was done once"
        assert server.component.repeats == [webhook.delivery_id] * 2
        # Each repeat was answered only after the first copy's work had ended.
        repeat_answers = [r.t for r in responses(server) if r.detail.startswith("repeat")]
        assert len(repeat_answers) == 2 and min(repeat_answers) >= finished[0]


def test_a_repeat_waiting_on_a_copy_that_fails_does_the_work_itself():
    provider, verifier = PAIRS["standard"]
    calls = []

    async def process(delivery):
        calls.append(delivery.id)
        await asyncio.sleep(0.1)
        if len(calls) == 1:
            raise RuntimeError("timed out talking to the bank")

    with serve_receiver(verifiers=[verifier], process=process) as server:
        webhook = provider.build(server.endpoint_url, Feed(seed=9).make())
        statuses = send_together(webhook, 3)
        # One copy failed (500); the next did the work; the last was a repeat: a 200
        # always means the work is done.
        assert sorted(statuses) == [200, 200, 500]
        assert len(calls) == 2 and server.component.repeats == [webhook.delivery_id]


def test_a_sender_that_times_out_and_retries_gets_its_work_done_once():
    provider = StandardWebhooksProvider(SW_SECRET)
    done = []
    feed = Feed(seed=10)
    with serve_receiver(process=slow(0.3, done.append)) as server, \
            Sender(provider, server.endpoint_url, policy=FixedSchedule([100, 100]),
                   clock=Clock(speedup=1000), timeout=(0.5, 0.15)) as sender:
        stats = sender.run([feed.make() for _ in range(3)], timeout=10)
    # Every first attempt timed out and was retried; the receiver did each event's work
    # once and acknowledged the retries.
    assert stats["retries"] >= 3 and stats["delivered"] == 3
    assert sorted(d.id for d in done) == sorted(e.event.id for e in sender.log.values())
    assert len(server.component.repeats) >= 1


def test_an_unknown_duplicates_option_says_what_the_choices_are():
    with pytest.raises(LabkitError, match="'ignore'.*'process'"):
        serve_receiver(duplicates="drop")
