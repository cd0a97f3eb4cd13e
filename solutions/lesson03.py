"""Reference answers for lesson 03 (securing webhooks), and typical wrong ones."""

ANSWERS = {
    "03.1": "the clocks' disagreement plus the time in transit",
    "03.2": b'{"ref": "refs/heads/main", "after": "ffd080f5"}',
    "03.3": [("old", ["old"]), ("old", ["old", "new"]), ("new", ["old", "new"]),
             ("new", ["new"])],
    "03.4": "192.30.252.7",
}

WRONG = {
    "03.1": ["the retry schedule", "the size of the body", "300 seconds"],
    "03.2": [b'{"ref":"refs/heads/main"}',                       # compact, as GitHub sends it
             '{"ref": "refs/heads/main"}',                       # text, not bytes
             b'{"ref": "caf\xc3\xa9"}',                          # json.dumps escapes non-ASCII
             b"<push/>"],
    "03.3": [[("old", ["old"]), ("new", ["new"])],               # a big bang
             [("old", ["old"]), ("new", ["old"]), ("new", ["new"])],   # sender first
             [("old", ["old"]), ("old", ["old", "new"]), ("new", ["old", "new"])],  # old kept
             "rotate"],
    "03.4": ["1.2.3.4", "10.0.0.5", "127.0.0.1", ["192.30.252.7"]],
}
