"""VAPID (RFC 8292): how a push service knows which application server is sending.

Anyone who learns a subscription's URL could post to it. So when a device
subscribes it names the application server's public key (the site's
``applicationServerKey``), and the push service then accepts messages for
that subscription only from whoever holds the matching private key. The
application server proves it on every request with a short signed token::

    Authorization: vapid t=<JWT>, k=<public key, base64url, 65 bytes uncompressed>

The JWT (RFC 7519) is ``header.claims.signature``, each part base64url:
the header says ``{"typ": "JWT", "alg": "ES256"}``, the claims say who may
use it (``aud``: the push service's origin), until when (``exp``) and whom
to contact (``sub``: a ``mailto:`` or ``https:`` URI), and the signature
is ECDSA P-256 with SHA-256 over ``header.claims``, written as the raw
64 bytes ``r || s``.

:func:`verify` checks, in this order, and refuses with a :class:`VapidError`
whose ``reason`` says which check failed:

===  ==============================================================  ======  ==================
#    check                                                           status  reason
===  ==============================================================  ======  ==================
1    an ``Authorization`` header is there                            401     ``missing``
2    its scheme is ``vapid`` (the draft's ``WebPush`` is not)        401     ``wrong_scheme``
3    it has exactly the parameters ``t`` and ``k``                   403     ``malformed``
4    ``k`` is a P-256 public key                                     403     ``bad_key``
5    ``t`` is three base64url parts; header and claims JSON objects  403     ``malformed``
6    the header's ``alg`` is ``ES256``                               403     ``bad_alg``
7    the signature verifies with ``k``                               403     ``bad_signature``
8    ``aud`` is the push service's origin                            403     ``wrong_audience``
9    ``exp`` is a number, not past                                   403     ``expired``
10   ``exp`` is at most 24 hours ahead                               403     ``too_far``
11   ``k`` is the key the subscription was restricted to             403     ``wrong_key``
===  ==============================================================  ======  ==================

RFC 8292 section 4.2 suggests 401 when the authentication is absent and
403 when it is invalid; the kit counts a header in another scheme as
absent. The ``sub`` claim is the sender's business (a SHOULD), so it is
read, not required.

Example::

    token = verify(request.headers.get("Authorization"),
                   audience="http://127.0.0.1:54321", key=subscription_key)
    token.claims["sub"]           # 'mailto:ops@example.com'

The application server side of VAPID (making the token) is py_vapid's, as
pywebpush uses it; this module is only the push service's check.

Thread-safety: the functions are pure.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from labkit.errors import VapidError
from labkit.push.webpush.crypto import b64url_decode, load_public_key

__all__ = ["VapidError", "VapidToken", "parse_authorization", "verify", "MAX_LIFETIME"]

MAX_LIFETIME = 24 * 60 * 60
"""Seconds ahead an ``exp`` may lie (RFC 8292 section 2)."""

_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*("[^"]*"|[^,\s]*)\s*')


@dataclass(frozen=True)
class VapidToken:
    """A verified VAPID authorization: who signed, and what they claimed."""

    key: bytes
    """The application server's public key (65 bytes, uncompressed)."""
    header: dict
    claims: dict

    @property
    def subject(self) -> str:
        """The ``sub`` claim (how to contact the sender), or ``""``."""
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) else ""


def parse_authorization(value: str | None) -> tuple[str, str]:
    """``(t, k)`` from an ``Authorization: vapid t=..., k=...`` header (checks 1-3)."""
    if value is None or not value.strip():
        raise VapidError("missing", "this subscription is restricted to one application "
                         "server: send 'Authorization: vapid t=<JWT>, k=<public key>' "
                         "(RFC 8292)", status=401)
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise VapidError("wrong_scheme", f"the authorization scheme must be 'vapid' (RFC 8292 "
                         f"section 3), got {scheme[:20]!r}: pywebpush and py_vapid's Vapid02 "
                         f"send it", status=401)
    params: dict[str, str] = {}
    for part in rest.split(","):
        match = _PARAM.fullmatch(part)
        if match is None or match.group(1).lower() in params:
            raise VapidError("malformed", f"cannot read {part.strip()[:40]!r}: the parameters "
                             f"are t=<JWT> and k=<key>, separated by a comma")
        params[match.group(1).lower()] = match.group(2).strip('"')
    if set(params) != {"t", "k"}:
        raise VapidError("malformed", f"the vapid scheme has exactly the parameters t and k, "
                         f"got {', '.join(sorted(params)) or 'none'}")
    return params["t"], params["k"]


def _json_part(part: str, what: str) -> dict:
    try:
        value = json.loads(b64url_decode(part))
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise VapidError("malformed", f"the token's {what} is not base64url of a JSON object")
    return value


def verify(value: str | None, *, audience: str, key: bytes | None = None,
           now: float | None = None) -> VapidToken:
    """Check an ``Authorization`` header value (the module's table); the verified token.

    ``audience``: the push service's origin (``http://127.0.0.1:54321``).
    ``key``: the public key the subscription is restricted to, if it is.
    ``now``: Unix time to judge ``exp`` by (default: the current time).
    """
    token, k = parse_authorization(value)
    try:
        raw_key = b64url_decode(k)
        public_key = load_public_key(raw_key)
    except ValueError:
        raise VapidError("bad_key", "k must be the application server's P-256 public key, "
                         "base64url, 65 bytes uncompressed") from None
    parts = token.split(".")
    if len(parts) != 3:
        raise VapidError("malformed", f"t must be a JWT of three dot-separated parts, this one "
                         f"has {len(parts)}")
    header = _json_part(parts[0], "header")
    claims = _json_part(parts[1], "claims")
    if header.get("alg") != "ES256":
        raise VapidError("bad_alg", f"VAPID tokens are signed with ES256 (ECDSA P-256, "
                         f"SHA-256), this one says alg={header.get('alg')!r}")
    try:
        signature = b64url_decode(parts[2])
    except ValueError:
        signature = b""
    if len(signature) != 64:
        raise VapidError("bad_signature", f"an ES256 signature is 64 bytes (r and s), "
                         f"got {len(signature)}")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        public_key.verify(utils.encode_dss_signature(r, s), f"{parts[0]}.{parts[1]}".encode(),
                          ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VapidError("bad_signature", "the token's signature does not verify with key k: "
                         "it was signed with another key, or changed") from None
    if claims.get("aud") != audience:
        raise VapidError("wrong_audience", f"aud must be this push service's origin "
                         f"{audience!r}, got {claims.get('aud')!r}")
    exp = claims.get("exp")
    now = time.time() if now is None else now
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp <= now:
        raise VapidError("expired", f"exp must be a time (Unix seconds) in the future, got "
                         f"{exp!r} (now is {int(now)})")
    if exp > now + MAX_LIFETIME:
        raise VapidError("too_far", f"exp may be at most 24 hours ahead (RFC 8292 section 2), "
                         f"this one is {(exp - now) / 3600:.1f} hours ahead")
    if key is not None and raw_key != key:
        raise VapidError("wrong_key", "this subscription was made for another application "
                         "server's key: only the holder of that key may push to it")
    return VapidToken(raw_key, header, claims)
