"""Webhooks: a provider calls the receiver's URL when something happens.

The pieces, each in its own module: ``signatures`` and ``guards`` (how a
receiver tells a real delivery from a forged one), ``receiver`` (the endpoint),
``providers`` (what GitHub, Twilio, a payment gateway and a Standard Webhooks
sender put on the wire), ``backoff`` (retry schedules), ``sender`` (delivery
with retries and dead letters), ``faults`` (receivers that misbehave) and
``processing`` (idempotency, background work, ordering). The tools for
debugging them work on any HTTP traffic, so they live beside this package, in
:mod:`labkit.debug`.
"""

from labkit.webhooks.backoff import (NO_RETRY, SVIX, DecorrelatedJitter, EqualJitter,
                                     Exponential, FixedSchedule, FullJitter, parse_retry_after)
from labkit.webhooks.faults import FailFirst, Flaky, LostAck, combine, gone, outage, rate_limited, slow
from labkit.webhooks.guards import ApiKeyGuard, BearerTokenGuard, IpAllowlist
from labkit.webhooks.providers import (GitHubProvider, OutgoingWebhook, PaymentProvider, Provider,
                                       StandardWebhooksProvider, TwilioProvider)
from labkit.webhooks.processing import BackgroundWorker, Idempotent, LatestWins
from labkit.webhooks.receiver import Delivery, Rejection, WebhookReceiver, serve_receiver
from labkit.webhooks.sender import Attempt, DeliveryLog, Sender
from labkit.webhooks.signatures import (GitHubSignature, StandardWebhooksSignature,
                                        StripeSignature, TwilioSignature, generate_secret)

__all__ = [
    "Attempt", "BackgroundWorker", "DeliveryLog", "FailFirst", "Flaky", "Idempotent",
    "LatestWins", "LostAck", "Sender", "combine", "gone", "outage", "rate_limited", "slow",
    "ApiKeyGuard", "BearerTokenGuard", "DecorrelatedJitter", "Delivery", "EqualJitter",
    "Exponential", "FixedSchedule", "FullJitter", "GitHubProvider", "GitHubSignature",
    "IpAllowlist", "NO_RETRY", "OutgoingWebhook", "PaymentProvider", "Provider", "Rejection",
    "SVIX", "StandardWebhooksProvider", "StandardWebhooksSignature", "StripeSignature",
    "TwilioProvider", "TwilioSignature", "WebhookReceiver", "generate_secret",
    "parse_retry_after", "serve_receiver",
]
