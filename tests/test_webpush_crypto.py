"""Web Push decryption on the device's side: RFC 8291's example, and every malformed body."""

import http_ece
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pywebpush import WebPusher

from labkit.errors import LabkitError, RejectedError
from labkit.push.webpush.crypto import (HEADER_SIZE, DecryptError, DeviceKeys, b64url_decode,
                                        b64url_encode, decrypt, parse)

# RFC 8291 section 5 and Appendix A.
PLAINTEXT = b"When I grow up, I want to be a watermelon"
UA_PUBLIC = ("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNto"
             "IAiw4")
UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
AUTH_SECRET = "BTBZMqHH6r4Tts7J_aSIgg"
AS_PUBLIC = ("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3"
             "jl7A8")
AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
SALT = "DGv6ra1nlYgDCS1FRnbzlw"
BODY = ("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInm"
        "YWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexS"
        "gSxsj_Qulcy4a-fN")


@pytest.fixture
def keys():
    return DeviceKeys.from_raw(b64url_decode(UA_PRIVATE), b64url_decode(AUTH_SECRET))


def refused(body, keys, reason):
    with pytest.raises(DecryptError) as caught:
        decrypt(body, keys)
    assert caught.value.reason == reason, caught.value
    assert caught.value.status == 400
    return str(caught.value)


def records(keys, pieces, rs=4096):
    """A body for the RFC's keys whose records hold ``pieces`` exactly (padding included)."""
    salt = b64url_decode(SALT)
    sender = DeviceKeys.from_raw(b64url_decode(AS_PRIVATE), bytes(16)).private_key
    key, nonce = http_ece.derive_key("encrypt", version="aes128gcm", salt=salt, key=None,
                                     private_key=sender, dh=keys.public_key,
                                     auth_secret=keys.auth_secret, keyid=None)
    sealed = b"".join(AESGCM(key).encrypt(http_ece.iv(nonce, i), piece, None)
                      for i, piece in enumerate(pieces))
    return salt + rs.to_bytes(4, "big") + bytes([65]) + b64url_decode(AS_PUBLIC) + sealed


# -- RFC 8291's example ----------------------------------------------------------------


def test_the_rfc_8291_example_message_decrypts_with_its_keys(keys):
    assert decrypt(b64url_decode(BODY), keys) == PLAINTEXT


def test_the_example_keys_are_the_rfcs_own(keys):
    assert b64url_encode(keys.public_key) == UA_PUBLIC
    assert keys.subscription_keys() == {"p256dh": UA_PUBLIC, "auth": AUTH_SECRET}


def test_the_example_body_parses_into_the_rfcs_header_fields():
    header = parse(b64url_decode(BODY))
    assert b64url_encode(header.salt) == SALT
    assert header.rs == 4096
    assert b64url_encode(header.keyid) == AS_PUBLIC
    assert len(header.records) == 1
    assert len(header.records[0]) == len(PLAINTEXT) + 1 + 16  # delimiter and tag
    assert HEADER_SIZE == 86


def test_the_sending_library_makes_the_rfcs_bytes_from_the_rfcs_inputs(keys):
    # pywebpush encrypts with http_ece: with the example's salt and sender key
    # it must produce the example body byte for byte.
    sender = DeviceKeys.from_raw(b64url_decode(AS_PRIVATE), bytes(16)).private_key
    body = http_ece.encrypt(PLAINTEXT, salt=b64url_decode(SALT), private_key=sender,
                            dh=keys.public_key, auth_secret=keys.auth_secret,
                            version="aes128gcm")
    assert b64url_encode(body) == BODY


def test_what_pywebpush_encrypts_for_fresh_keys_decrypts_and_other_keys_cannot():
    device, stranger = DeviceKeys.generate(), DeviceKeys.generate()
    body = WebPusher({"endpoint": "http://x/", "keys": device.subscription_keys()}
                     ).encode(b"hello device")["body"]
    assert decrypt(body, device) == b"hello device"
    assert "authenticate" in refused(body, stranger, "auth_failed")


def test_a_tampered_byte_fails_authentication(keys):
    body = bytearray(b64url_decode(BODY))
    body[100] ^= 1
    refused(bytes(body), keys, "auth_failed")


# -- malformed bodies --------------------------------------------------------------------


def test_a_body_shorter_than_the_fixed_header_is_refused(keys):
    assert "only 10 bytes" in refused(b"\x00" * 10, keys, "too_short")


def test_a_header_cut_inside_the_keyid_is_refused(keys):
    assert "only 50" in refused(b64url_decode(BODY)[:50], keys, "too_short")


def test_a_body_with_no_record_is_refused(keys):
    assert "no record" in refused(b64url_decode(BODY)[:HEADER_SIZE], keys, "no_record")


def test_a_truncated_record_is_refused(keys):
    body = b64url_decode(BODY)
    assert "cut short" in refused(body[:HEADER_SIZE + 10], keys, "truncated")
    refused(body[:-5], keys, "auth_failed")  # still tag-sized: the tag no longer matches


def test_a_keyid_that_is_not_65_bytes_or_not_a_point_is_refused(keys):
    body = bytearray(b64url_decode(BODY))
    body[20] = 16
    assert "idlen says 16" in refused(bytes(body), keys, "bad_keyid")
    body = bytearray(b64url_decode(BODY))
    body[30] ^= 0xFF  # no longer on the curve
    assert "not a P-256 public key" in refused(bytes(body), keys, "bad_keyid")


def test_a_record_size_below_18_is_refused(keys):
    body = bytearray(b64url_decode(BODY))
    body[16:20] = (17).to_bytes(4, "big")
    assert "at least 18" in refused(bytes(body), keys, "bad_rs")


def test_a_last_record_padded_with_0x01_is_refused(keys):
    body = records(keys, [PLAINTEXT + b"\x01"])
    assert "0x02" in refused(body, keys, "bad_padding")


def test_an_earlier_record_padded_with_0x02_is_refused(keys):
    first, rest = PLAINTEXT[:21], PLAINTEXT[21:]  # every record but the last is rs bytes
    body = records(keys, [first + b"\x02", rest + b"\x02\x00"], rs=22 + 16)
    assert "0x01" in refused(body, keys, "bad_padding")


def test_a_record_without_any_delimiter_is_refused(keys):
    refused(records(keys, [b"\x00" * 8]), keys, "bad_padding")


def test_well_padded_multiple_records_and_zero_padding_decrypt(keys):
    first, rest = PLAINTEXT[:21], PLAINTEXT[21:]
    body = records(keys, [first + b"\x01", rest + b"\x02\x00"], rs=22 + 16)
    assert len(parse(body).records) == 2
    assert decrypt(body, keys) == PLAINTEXT


def test_decrypt_errors_are_labkit_rejections_and_value_errors():
    assert issubclass(DecryptError, RejectedError)
    assert issubclass(DecryptError, ValueError)
    assert issubclass(DecryptError, LabkitError)


# -- keys and base64url ------------------------------------------------------------------


def test_base64url_is_strict_and_padding_is_optional():
    assert b64url_decode("AQI") == b"\x01\x02" == b64url_decode("AQI=")
    assert b64url_encode(b"\xfb\xff") == "-_8"
    for bad in ("ab$c", "a+b/", "abc==="):
        with pytest.raises(ValueError):
            b64url_decode(bad)


def test_device_keys_are_fresh_p256_keys_with_a_16_byte_secret():
    one, two = DeviceKeys.generate(), DeviceKeys.generate()
    assert len(one.public_key) == 65 and one.public_key[0] == 4
    assert len(one.auth_secret) == 16
    assert one.public_key != two.public_key and one.auth_secret != two.auth_secret
    assert "secret" in repr(one) and b64url_encode(one.auth_secret) not in repr(one)
    with pytest.raises(ValueError):
        DeviceKeys.from_raw(b"\x01" * 31, bytes(16))
