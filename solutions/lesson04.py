"""Reference answers for lesson 04 (reliable webhooks), and typical wrong ones."""

from labkit.webhooks import Idempotent


def charge_once(charge):
    """04.4: remember the delivery ids whose charge went through."""
    return Idempotent(charge)


def charge_every_time(charge):
    return charge


def never_charge(charge):
    return lambda delivery: None


def forgot_to_return(charge):
    Idempotent(charge)


ANSWERS = {
    "04.1": 45,
    "04.2": "closer to full jitter",
    "04.3": 3.6,
    "04.4": charge_once,
}

WRONG = {
    "04.1": [15, 60, 180, "45 s"],
    "04.2": ["closer to no jitter", "the same"],
    "04.3": [0.6, 0.013, 1.2],
    "04.4": [charge_every_time, never_charge, forgot_to_return, "Idempotent"],
}
