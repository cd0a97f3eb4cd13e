"""RFC 8030's push headers and the device connection's frames, as pure functions."""

import json

import pytest

from labkit.errors import RejectedError
from labkit.push import websocket
from labkit.push.webpush import protocol


def rejected(function, value, reason):
    with pytest.raises(RejectedError) as caught:
        function(value)
    assert (caught.value.reason, caught.value.status) == (reason, 400)


def test_ttl_is_digits_only_and_required():
    assert protocol.parse_ttl("0") == 0
    assert protocol.parse_ttl(" 86400 ") == 86400
    rejected(protocol.parse_ttl, None, "missing_ttl")
    for bad in ("", "-1", "1.5", "+5", "1e3", "٣", "ten"):
        rejected(protocol.parse_ttl, bad, "bad_ttl")


def test_urgency_is_one_of_four_words_compared_without_case():
    assert protocol.parse_urgency(None) == "normal"
    assert protocol.parse_urgency(None, default="very-low") == "very-low"
    assert protocol.parse_urgency("HIGH") == "high"
    assert [protocol.urgency_rank(u) for u in protocol.URGENCIES] == [0, 1, 2, 3]
    for bad in ("", "urgent", "very low", "veryLow"):
        rejected(protocol.parse_urgency, bad, "bad_urgency")


def test_topic_is_at_most_32_base64url_characters():
    assert protocol.parse_topic(None) is None
    assert protocol.parse_topic("score_-9") == "score_-9"
    assert protocol.parse_topic("a" * 32) == "a" * 32
    for bad in ("", "a" * 33, "no spaces", "a+b", "a=", "é"):
        rejected(protocol.parse_topic, bad, "bad_topic")


def test_frames_round_trip_through_read_frame():
    push = protocol.read_frame(protocol.push_frame("msg_1", "AAEC", "high", None))
    assert push == {"type": "push", "id": "msg_1", "urgency": "high", "topic": None,
                    "data": "AAEC"}
    assert protocol.read_frame(protocol.ack_frame("msg_1")) == {"type": "ack", "id": "msg_1"}
    assert protocol.read_frame(protocol.error_frame("no"))["error"] == "no"


@pytest.mark.parametrize("frame", [b'{"type":"ack","id":"x"}', "not json", "[1]",
                                   '{"type":"hello"}', '{"type":"ack"}',
                                   '{"type":"ack","id":7}', '{"type":"push","id":"x"}'])
def test_frames_of_the_wrong_shape_are_refused(frame):
    with pytest.raises(protocol.FrameError):
        protocol.read_frame(frame)


def test_frame_size_is_the_one_rfc_6455_count_the_websocket_server_uses():
    # one computation for both (its RFC 6455 examples are in test_websocket.py)
    assert protocol.frame_size is websocket.frame_size
    assert protocol.frame_size(10, masked=True) == 16  # 2 of header, 4 of mask, the payload
    assert len(json.dumps({"type": "ack", "id": "msg_000001"}, separators=(",", ":"))) == \
        len(protocol.ack_frame("msg_000001"))
