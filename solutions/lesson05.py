"""Reference answers for lesson 05 (debugging webhooks), and typical wrong ones."""

ANSWERS = {
    "05.1": "Twilio signed the bin's URL, not the receiver's",
    "05.2": 2.67,
    "05.3": "a timeout, and the receiver never gets the event",
    "05.4": 502,
}

WRONG = {
    "05.1": ["the bin changed the body", "the signature expired", "wrong token"],
    "05.2": [2, 1.33, 2.25, "2.67"],
    "05.3": ["a timeout, but the receiver gets the event anyway", "a 504 from the relay",
             "timeout"],
    "05.4": ["connection error", 504, 200, "502"],
}
