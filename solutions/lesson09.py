"""Reference answers for lesson 09 (head to head), and typical wrong ones."""

ANSWERS = {
    "09.1": "webpush",       # the only one that delivered with every page closed
    "09.2": 12.3,            # run_clients("polling", clients=1, seed=1, **RARE): ~12 polls/event
    "09.3": "polling",       # at 40 events/s a poll every 0.5 s collects ~20 events
}

WRONG = {
    "09.1": ["sse", "long-polling", "webhook", "Web Push"],
    "09.2": [1, 0.2, 60, "12"],
    "09.3": ["long-polling", "sse", "Polling"],
}
