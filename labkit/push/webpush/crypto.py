"""Web Push encryption, the device's side: keys, the aes128gcm framing, and decryption.

A push message crosses the push service, which belongs to the browser's
vendor, not to the site. So the application server encrypts every message
for the one device it is meant for (RFC 8291), and the push service
carries bytes it cannot read. The device made the keys when it subscribed:

==============  ============================================================================
key             what it is
==============  ============================================================================
``p256dh``      the device's P-256 public key (65 bytes, uncompressed), shared with the
                application server inside the subscription
``auth``        16 random bytes, also shared: mixed into the key derivation, so a party
                that knows only the public key cannot make messages the device accepts
private key     never leaves the device
==============  ============================================================================

The sender makes a fresh key pair per message; ECDH between its private key
and ``p256dh`` (or, on the device, between the device's private key and the
sender's public key) gives a shared secret; HKDF with ``auth`` and a random
salt turns it into an AES-128-GCM key and nonce. The body is RFC 8188's
``aes128gcm`` content coding::

    +-----------+--------+-----------+----------------------------+
    | salt (16) | rs (4) | idlen (1) | keyid (idlen)              |   the header: 86 bytes
    +-----------+--------+-----------+----------------------------+   in Web Push, where the
    | record: AES-GCM(plaintext + 0x02 + zero padding) + tag (16)  |   keyid is the sender's
    +---------------------------------------------------------------+   65-byte public key

A body may hold several records of ``rs`` bytes each (the last may be
shorter); every record's plaintext ends with a padding delimiter, ``0x01``
for all records but the last and ``0x02`` for the last one, followed by
optional zeros. RFC 8291 asks senders for a single record.

====================  ==========================================================================
name                  what it does
====================  ==========================================================================
:class:`DeviceKeys`   the device's key pair and auth secret; ``generate()``, ``from_raw()``
:func:`parse`         checks the framing (what a push service can check without keys) and
                      splits the body into its header fields and records
:func:`decrypt`       the plaintext, with the device's keys (the cryptography is ``http_ece``'s,
                      the maintained library pywebpush itself encrypts with)
:class:`DecryptError` why a body was refused: its ``reason`` is a word, its message explains
:func:`b64url_encode` base64url without padding, as Web Push writes keys and salts;
:func:`b64url_decode` and back (strict: a character outside the alphabet is an error)
====================  ==========================================================================

Example (RFC 8291's own example message)::

    keys = DeviceKeys.from_raw(b64url_decode("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"),
                               b64url_decode("BTBZMqHH6r4Tts7J_aSIgg"))
    decrypt(body, keys)          # b'When I grow up, I want to be a watermelon'

Thread-safety: the functions are pure; :class:`DeviceKeys` is immutable.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from dataclasses import dataclass

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from labkit.errors import DecryptError

__all__ = ["DeviceKeys", "Header", "parse", "decrypt", "DecryptError", "b64url_encode",
           "b64url_decode", "public_key_bytes", "load_public_key", "HEADER_SIZE", "TAG_SIZE"]

KEY_SIZE = 65
"""Bytes of an uncompressed P-256 public key (0x04, x, y)."""
HEADER_SIZE = 16 + 4 + 1 + KEY_SIZE
"""Bytes of the aes128gcm header in Web Push: salt, rs, idlen, the sender's key."""
TAG_SIZE = 16
"""Bytes of the AES-GCM authentication tag at the end of each record."""
_MIN_RS = TAG_SIZE + 2  # RFC 8188 section 2: rs below 18 is invalid

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url_encode(data: bytes) -> str:
    """``data`` as base64url without ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Base64url text (padding optional) as bytes; ``ValueError`` for anything else."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text):
        raise ValueError(f"not base64url text: {str(text)[:40]!r}")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except binascii.Error as exc:
        raise ValueError(f"not base64url text: {text[:40]!r} ({exc})") from None


def public_key_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """A P-256 public key as its 65-byte uncompressed point."""
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def load_public_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key whose uncompressed point is ``raw``; ``ValueError`` if none."""
    if len(raw) != KEY_SIZE or raw[0] != 4:
        raise ValueError(f"a P-256 public key here is 65 bytes starting with 0x04, "
                         f"got {len(raw)} bytes")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


@dataclass(frozen=True)
class DeviceKeys:
    """What a device makes when it subscribes: a P-256 key pair and a 16-byte auth secret."""

    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @classmethod
    def generate(cls) -> DeviceKeys:
        """Fresh keys, as a browser makes for each subscription."""
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    @classmethod
    def from_raw(cls, private_key: bytes, auth_secret: bytes) -> DeviceKeys:
        """Keys from a 32-byte private scalar and a 16-byte secret (to replay the RFC's example)."""
        if len(private_key) != 32 or len(auth_secret) != 16:
            raise ValueError(f"need a 32-byte private key and a 16-byte auth secret, got "
                             f"{len(private_key)} and {len(auth_secret)} bytes")
        key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1())
        return cls(key, auth_secret)

    @property
    def public_key(self) -> bytes:
        """The 65-byte uncompressed public key (``p256dh``)."""
        return public_key_bytes(self.private_key.public_key())

    def subscription_keys(self) -> dict[str, str]:
        """``{"p256dh": ..., "auth": ...}`` in base64url, as a subscription carries them."""
        return {"p256dh": b64url_encode(self.public_key), "auth": b64url_encode(self.auth_secret)}

    def __repr__(self) -> str:
        return f"DeviceKeys(p256dh={b64url_encode(self.public_key)[:12]}..., auth=<secret>)"


@dataclass(frozen=True)
class Header:
    """An aes128gcm body taken apart (see the module's picture)."""

    salt: bytes
    rs: int
    keyid: bytes
    """The sender's one-time public key (65 bytes in Web Push)."""
    records: tuple[bytes, ...]
    """The encrypted records, each ending with its 16-byte tag."""


def parse(body: bytes) -> Header:
    """Check an aes128gcm body's framing and take it apart; :class:`DecryptError` if it is bad.

    This is what a push service can check without the device's keys: the
    header is complete, its ``keyid`` is a P-256 public key (RFC 8291
    section 4), the record size is at least 18 (RFC 8188 section 2), at
    least one record follows, and the last record is long enough to hold
    its tag and padding delimiter.
    """
    if len(body) < 21:
        raise DecryptError("too_short", f"an aes128gcm body starts with a header of salt (16), "
                           f"rs (4) and idlen (1) bytes: this one has only {len(body)} bytes")
    salt, rs, idlen = body[:16], *struct.unpack("!IB", body[16:21])
    if idlen != KEY_SIZE:
        raise DecryptError("bad_keyid", f"in Web Push the keyid is the sender's 65-byte public "
                           f"key (RFC 8291 section 4), but idlen says {idlen}")
    if len(body) < HEADER_SIZE:
        raise DecryptError("too_short", f"the header is {HEADER_SIZE} bytes but the body has "
                           f"only {len(body)}")
    keyid = body[21:HEADER_SIZE]
    try:
        load_public_key(keyid)
    except ValueError:
        raise DecryptError("bad_keyid", "the keyid is not a P-256 public key in uncompressed "
                           "form (RFC 8291 section 4)") from None
    if rs < _MIN_RS:
        raise DecryptError("bad_rs", f"the record size rs must be at least {_MIN_RS} "
                           f"(RFC 8188 section 2), got {rs}")
    content = body[HEADER_SIZE:]
    if not content:
        raise DecryptError("no_record", "the header is followed by no record: an aes128gcm "
                           "body holds at least one")
    records = tuple(content[i:i + rs] for i in range(0, len(content), rs))
    if len(records[-1]) < TAG_SIZE + 1:
        raise DecryptError("truncated", f"the last record has {len(records[-1])} bytes, fewer "
                           f"than its {TAG_SIZE}-byte tag and the padding delimiter: the body "
                           f"was cut short")
    return Header(salt, rs, keyid, records)


_PADDING = {
    "last record delimiter != 2": "the last record's padding delimiter must be 0x02 "
                                  "(RFC 8188 section 2; RFC 8291 says discard the message)",
    "record delimiter != 1": "every record but the last must end its padding with 0x01 "
                             "(RFC 8188 section 2)",
    "all zero record plaintext": "a record holds no padding delimiter at all (RFC 8188 "
                                 "section 2)",
}


def decrypt(body: bytes, keys: DeviceKeys) -> bytes:
    """The plaintext of an aes128gcm Web Push body, decrypted with the device's ``keys``.

    The framing is checked first (:func:`parse`); then ``http_ece`` derives
    the key (RFC 8291 section 3.4), decrypts and authenticates each record
    and strips its padding. Every failure is a :class:`DecryptError`:
    ``auth_failed`` (wrong keys, or bytes changed on the way), ``bad_padding``.
    """
    parse(body)
    try:
        return http_ece.decrypt(body, private_key=keys.private_key,
                                auth_secret=keys.auth_secret, version="aes128gcm")
    except http_ece.ECEException as exc:
        if exc.message in _PADDING:
            raise DecryptError("bad_padding", _PADDING[exc.message]) from None
        if exc.message.startswith("Decryption error"):
            raise DecryptError("auth_failed", "a record did not authenticate (AES-GCM tag "
                               "mismatch): it was encrypted for other keys, or changed on "
                               "the way") from None
        raise DecryptError("undecryptable", f"http_ece refused the body: {exc.message}") \
            from None
