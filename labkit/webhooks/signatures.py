"""Webhook signature schemes: how a receiver knows a request really came from
the sender and was not changed on the way.

A webhook endpoint is a public URL, so anyone who learns it can POST to it.
Each scheme here uses a secret shared by sender and receiver: the sender
computes an HMAC (a keyed hash) over the request and sends it in a header,
the receiver recomputes it and compares. Without the secret nobody can forge
a matching HMAC, and changing a single byte of the body changes it entirely.
That protects against:

* forged requests: someone who found the URL but not the secret;
* tampering: a proxy or attacker altering the body in transit;
* replays (Stripe, Standard Webhooks): an old, genuinely signed request sent
  again later. These schemes sign a timestamp along with the body, and the
  receiver refuses timestamps too far from its own clock.

Three rules every verifier here follows, and every receiver should:

1. Verify the RAW body bytes exactly as received. Parsing JSON and
   serialising it again changes spacing or key order, and the signature no
   longer matches.
2. Compare in constant time (``hmac.compare_digest``). With ``==`` the
   comparison stops at the first differing byte, so response times leak how
   much of a guessed signature is right.
3. Look headers up case-insensitively: HTTP header names are not case
   sensitive, and proxies and frameworks change their case.

Every class has the same interface, so a receiver can run a list of them:
``verify(headers, body, *, url=None, remote_ip=None, now=None)`` raises
:class:`~labkit.errors.SignatureError` (status 401) with a ``reason`` word
(``missing``, ``malformed``, ``mismatch``, ``stale``, ``future``) and a
message saying what to do next; ``sign(body, ...)`` returns the headers a
sender adds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

from labkit.errors import LabkitError, SignatureError

__all__ = [
    "get_header",
    "GitHubSignature",
    "GitHubLegacySignature",
    "StripeSignature",
    "StandardWebhooksSignature",
    "TwilioSignature",
    "generate_secret",
]

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]+")


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """Return header ``name`` (any case) stripped, or None if absent or blank."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    if value is None or not value.strip():
        return None
    return value.strip()


def _raw(body: bytes) -> bytes:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise LabkitError(
            f"body must be the raw request bytes, got {type(body).__name__}: pass "
            f"the body exactly as received (e.g. request.body), not a decoded or "
            f"re-serialised copy"
        )
    return bytes(body)


def _key(secret: str | bytes, what: str) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise LabkitError(f"the {what} is empty: pass the secret both sides share")
    return key


def _keys(secrets, what: str, to_key=None) -> list[bytes]:
    """One secret or several (during a rotation) as HMAC keys, newest first.

    Every scheme verifies against all of them and signs with the first (or,
    where the header can carry several signatures, with each).
    """
    if isinstance(secrets, (str, bytes, bytearray)):
        secrets = [secrets]
    keys = [to_key(s) if to_key else _key(s, what) for s in secrets]
    if not keys:
        raise LabkitError(f"no {what} given: pass at least one")
    return keys


def _require(headers: Mapping[str, str], name: str, hint: str) -> str:
    value = get_header(headers, name)
    if value is None:
        raise SignatureError("missing", f"no {name} header: {hint}")
    return value


def _timestamp(value: str, header: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise SignatureError(
            "malformed",
            f"{header} timestamp {value[:40]!r} is not an integer number of Unix "
            f"seconds: the sender must sign the current time, e.g. {int(time.time())}",
        )
    return int(value)


def _b64_digest(encoded: str, size: int, complaint: str) -> bytes:
    """Decode a base64 signature of ``size`` bytes, or raise ``malformed`` with ``complaint``."""
    try:
        digest = base64.b64decode(encoded, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != size:
        raise SignatureError("malformed", complaint)
    return digest


def _matches_any(candidates: list[bytes], expected: list[bytes]) -> bool:
    """True if any received signature equals any expected one, compared in constant time."""
    return any(hmac.compare_digest(c, e) for c in candidates for e in expected)


def _check_fresh(timestamp: int, now: float | None, tolerance: int, header: str, *,
                 future_too: bool = True) -> None:
    """Refuse a timestamp older than ``tolerance`` (and, if ``future_too``, newer)."""
    now = time.time() if now is None else now
    if now - timestamp > tolerance:
        raise SignatureError(
            "stale",
            f"{header} timestamp is {now - timestamp:.0f} s old, "
            f"{now - timestamp - tolerance:.0f} s beyond the {tolerance} s tolerance: "
            f"a replay of an old request, or the sender's clock is behind; re-sign "
            f"with the current time and check both clocks (NTP)",
        )
    if future_too and timestamp - now > tolerance:
        raise SignatureError(
            "future",
            f"{header} timestamp is {timestamp - now:.0f} s in the future, "
            f"{timestamp - now - tolerance:.0f} s beyond the {tolerance} s tolerance: "
            f"the sender's clock is ahead (or this receiver's is behind); sync both "
            f"clocks (NTP) and re-sign",
        )


class _GitHubHMAC:
    """What GitHub's two signature headers share: ``<algorithm>=<hex HMAC(secret, raw body)>``.

    A subclass names its header, its hash and what to say when the header is
    missing; signing and checking are the same for both.
    """

    name: str
    header: str
    algorithm: str  # "sha256" or "sha1": the prefix and the hashlib name
    missing_hint: str
    malformed_hint: str = ""

    def __init__(self, secrets: str | bytes | Iterable[str | bytes]):
        self._keys = _keys(secrets, "GitHub webhook secret")
        digits = 2 * hashlib.new(self.algorithm).digest_size
        self._hex = re.compile(f"[0-9a-fA-F]{{{digits}}}")
        self._shape = f"'{self.algorithm}=' followed by {digits} hex digits"

    def _digests(self, body: bytes) -> list[bytes]:
        return [hmac.new(key, body, self.algorithm).digest() for key in self._keys]

    def sign(self, body: bytes, *, url: str | None = None, msg_id: str | None = None,
             timestamp: int | None = None) -> dict[str, str]:
        """The header GitHub would send for ``body`` (GitHub signs no timestamp)."""
        return {self.header: f"{self.algorithm}=" + self._digests(_raw(body))[0].hex()}

    def verify(self, headers: Mapping[str, str], body: bytes, *, url: str | None = None,
               remote_ip: str | None = None, now: float | None = None) -> None:
        """Raise SignatureError unless the header matches the HMAC of ``body``."""
        body = _raw(body)
        value = _require(headers, self.header, self.missing_hint)
        algorithm, _, hexdigest = value.partition("=")
        if algorithm != self.algorithm or not self._hex.fullmatch(hexdigest):
            raise SignatureError(
                "malformed",
                f"{self.header} must be {self._shape}, got {value[:80]!r}: send the "
                f"header exactly as GitHub produced it{self.malformed_hint}",
            )
        if not _matches_any([bytes.fromhex(hexdigest)], self._digests(body)):
            raise SignatureError(
                "mismatch",
                f"{self.header} does not match the body: check that both sides use "
                f"the same secret and that you verify the raw body bytes, not a "
                f"re-serialised copy",
            )


class GitHubSignature(_GitHubHMAC):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``.

    GitHub holds one secret per hook, so a rotation happens on the receiving
    side: pass ``[new, old]`` while the change propagates; ``verify`` accepts
    either, ``sign`` uses the first.
    """

    name = "github"
    header = "X-Hub-Signature-256"
    algorithm = "sha256"
    missing_hint = ("set a secret on the webhook in GitHub's settings so deliveries are "
                    "signed (the SHA-1 X-Hub-Signature header alone is not accepted)")


class StripeSignature:
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``.

    The whole secret string, ``whsec_`` prefix included, is the HMAC key.
    Several ``v1`` entries may appear (during secret rotation); one match is
    enough. Other schemes such as ``v0`` are ignored. ``secrets`` is one secret
    or several: ``sign`` adds a ``v1`` per secret, ``verify`` accepts any.
    Like Stripe's libraries, only a timestamp *older* than ``tolerance`` is
    refused (``stale``); Standard Webhooks also refuses one too far ahead.
    """

    name = "stripe"
    header = "Stripe-Signature"

    def __init__(self, secrets: str | bytes | Iterable[str | bytes], tolerance: int = 300):
        self._keys = _keys(secrets, "Stripe signing secret")
        self.tolerance = tolerance

    def _digests(self, timestamp: int | str, body: bytes) -> list[bytes]:
        content = f"{timestamp}.".encode() + body
        return [hmac.new(key, content, hashlib.sha256).digest() for key in self._keys]

    def sign(self, body: bytes, *, url: str | None = None, msg_id: str | None = None,
             timestamp: int | None = None) -> dict[str, str]:
        """Headers Stripe would send for ``body`` at ``timestamp`` (default now)."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        signatures = ",".join(f"v1={d.hex()}" for d in self._digests(timestamp, _raw(body)))
        return {self.header: f"t={timestamp},{signatures}"}

    def verify(self, headers: Mapping[str, str], body: bytes, *, url: str | None = None,
               remote_ip: str | None = None, now: float | None = None) -> None:
        """Raise SignatureError unless a v1 signature matches and ``t`` is fresh."""
        body = _raw(body)
        value = _require(headers, self.header,
                         "send the request from Stripe, or sign it with StripeSignature.sign")
        timestamps, candidates = [], []
        for item in value.split(","):
            scheme, sep, field = item.strip().partition("=")
            if not sep:
                raise SignatureError(
                    "malformed",
                    f"{self.header} item {item.strip()[:80]!r} is not 'key=value': the "
                    f"header must look like 't=1700000000,v1=<64 hex digits>'",
                )
            if scheme == "t":
                timestamps.append(field)
            elif scheme == "v1":
                candidates.append(field)
        if len(timestamps) != 1:
            raise SignatureError(
                "malformed",
                f"{self.header} needs exactly one t=<unix seconds>, found "
                f"{len(timestamps)}: the timestamp is signed, so it cannot be left out",
            )
        timestamp = _timestamp(timestamps[0], self.header)
        if not candidates or not all(_HEX_SHA256.fullmatch(c) for c in candidates):
            raise SignatureError(
                "malformed",
                f"{self.header} needs v1=<64 hex digits> entries: v0 and other "
                f"schemes are not verified here",
            )
        expected = self._digests(timestamps[0], body)
        if not _matches_any([bytes.fromhex(c) for c in candidates], expected):
            raise SignatureError(
                "mismatch",
                f"no v1 signature in {self.header} matches the body: check the "
                f"endpoint's signing secret (each endpoint has its own) and verify "
                f"the raw body bytes, not a re-serialised copy",
            )
        # Only a genuine signature makes the timestamp trustworthy, so check it second.
        # Stripe's own libraries refuse only old timestamps, so a sender clock ahead passes.
        _check_fresh(timestamp, now, self.tolerance, self.header, future_too=False)


def generate_secret(rng=None) -> str:
    """A new Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes.

    ``rng`` (e.g. ``random.Random(42)``) makes notebook demos reproducible;
    never use it for a real secret, which must come from :mod:`secrets`.
    """
    raw = rng.randbytes(24) if rng is not None else _secrets.token_bytes(24)
    return "whsec_" + base64.b64encode(raw).decode("ascii")


def _whsec_key(secret: str | bytes) -> bytes:
    if isinstance(secret, (bytes, bytearray)):
        return _key(secret, "Standard Webhooks secret")
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        raise LabkitError(
            f"Standard Webhooks secret {secret[:10]!r}... is not 'whsec_' + base64: "
            f"copy it exactly from the sender, or make one with generate_secret()"
        ) from None
    return _key(key, "Standard Webhooks secret")


class StandardWebhooksSignature:
    """Standard Webhooks (standardwebhooks.com), symmetric ``v1`` signatures.

    Headers ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature:
    v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>``, where the key is the
    base64-decoded secret after its ``whsec_`` prefix. ``secrets`` is one
    secret or a list (rotation): ``sign`` sends one signature per secret,
    ``verify`` accepts any signature made with any of them. Asymmetric
    ``v1a`` signatures are ignored.
    """

    name = "standard-webhooks"

    def __init__(self, secrets: str | bytes | Iterable[str | bytes], tolerance: int = 300):
        self._keys = _keys(secrets, "Standard Webhooks secret", _whsec_key)
        self.tolerance = tolerance

    def _digests(self, msg_id: str, timestamp: int | str, body: bytes) -> list[bytes]:
        content = f"{msg_id}.{timestamp}.".encode() + body
        return [hmac.new(key, content, hashlib.sha256).digest() for key in self._keys]

    def sign(self, body: bytes, *, url: str | None = None, msg_id: str | None = None,
             timestamp: int | None = None) -> dict[str, str]:
        """The three ``webhook-*`` headers for ``body``; id and time default to new ones."""
        msg_id = f"msg_{_secrets.token_hex(12)}" if msg_id is None else msg_id
        if "." in msg_id:
            raise LabkitError(
                f"webhook id {msg_id!r} contains '.', the separator of the signed "
                f"content: use an id without dots"
            )
        timestamp = int(time.time()) if timestamp is None else timestamp
        signatures = " ".join(
            "v1," + base64.b64encode(d).decode("ascii")
            for d in self._digests(msg_id, timestamp, _raw(body))
        )
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures,
        }

    def verify(self, headers: Mapping[str, str], body: bytes, *, url: str | None = None,
               remote_ip: str | None = None, now: float | None = None) -> None:
        """Raise SignatureError unless a v1 signature matches and the time is fresh."""
        body = _raw(body)
        hint = "Standard Webhooks senders send webhook-id, webhook-timestamp and webhook-signature"
        msg_id = _require(headers, "webhook-id", hint)
        stamp = _require(headers, "webhook-timestamp", hint)
        value = _require(headers, "webhook-signature", hint)
        timestamp = _timestamp(stamp, "webhook-timestamp")
        candidates = []
        for entry in value.split():
            version, sep, encoded = entry.partition(",")
            if not sep:
                raise SignatureError(
                    "malformed",
                    f"webhook-signature entry {entry[:80]!r} is not 'version,signature': "
                    f"entries look like 'v1,<base64>' separated by spaces",
                )
            if version == "v1":
                candidates.append(_b64_digest(
                    encoded, hashlib.sha256().digest_size,
                    f"webhook-signature entry {entry[:80]!r} is not v1 followed "
                    f"by the base64 of a 32-byte HMAC-SHA256: send the header exactly as the "
                    f"sender produced it (standard base64, not URL-safe)"))
        if not candidates:
            raise SignatureError(
                "malformed",
                "webhook-signature has no v1 entry: only symmetric v1 signatures "
                "are verified here",
            )
        expected = self._digests(msg_id, stamp, body)
        if not _matches_any(candidates, expected):
            raise SignatureError(
                "mismatch",
                "no webhook-signature matches: check the secret (the part after "
                "whsec_ is base64 and is decoded before use), that webhook-id and "
                "webhook-timestamp arrive unchanged, and that you verify the raw body bytes",
            )
        _check_fresh(timestamp, now, self.tolerance, "webhook-timestamp")


def _require_url(url: str | None) -> str:
    if not url:
        raise LabkitError(
            "Twilio signs the request URL, so url= is required: pass the full "
            "public URL Twilio requested, including the query string"
        )
    return url


_DEFAULT_PORTS = {"http": 80, "https": 443}
# The host (a bracketed IPv6 literal or a name) and an optional ":port" of a URL's netloc.
_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:]*)(?::(?P<port>[0-9]*))?")


def _port_variants(url: str) -> list[str]:
    """``url`` and the same URL with its port taken out, or, without one, the scheme's default
    port put in (``:443`` for https, ``:80`` for http).

    Twilio's back end does not always sign the URL with the port as it was configured, so its
    helper libraries accept a signature over either form; so does :class:`TwilioSignature`.
    Only the port changes: the rest of the URL is kept character for character.
    """
    parts = urlsplit(url)
    head, _, tail = url.partition("//")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    match = _HOST_PORT.fullmatch(hostport)
    if not parts.netloc or match is None:
        return [url]
    if match["port"] is not None:
        other = match["host"]
    elif parts.scheme in _DEFAULT_PORTS:
        other = f"{match['host']}:{_DEFAULT_PORTS[parts.scheme]}"
    else:
        return [url]
    return [url, f"{head}//{userinfo}{at}{other}{tail[len(parts.netloc):]}"]


def _body_hash(url: str) -> bytes | None:
    """The SHA-256 a JSON request's URL announces in ``bodySHA256``, or None for a form request."""
    query = urlsplit(url).query
    announced = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "bodySHA256"]
    if not announced:
        return None
    if len(announced) != 1 or not _HEX_SHA256.fullmatch(announced[0]):
        raise SignatureError(
            "malformed",
            f"the URL must carry exactly one bodySHA256=<64 hex digits>, got {announced!r}: "
            f"pass the URL exactly as Twilio requested it",
        )
    return bytes.fromhex(announced[0])


class TwilioSignature:
    """Twilio: ``X-Twilio-Signature: base64(HMAC-SHA1(auth_token, url + params))``.

    ``url`` is the full URL Twilio requested, query string included, exactly as
    configured in Twilio (scheme and host too, so a TLS-terminating proxy must
    pass the public URL). What follows the URL depends on the body:

    =====================  ==================================================
    form body (the usual)  every POST parameter, blank ones too (``Body=``),
                           sorted by name then value, each written as name
                           followed by value, no separators
    JSON body              nothing: the URL carries ``bodySHA256=<hex
                           SHA-256 of the raw body>`` instead, and the body
                           must hash to it (:meth:`json_url` builds such a URL)
    =====================  ==================================================

    Like Twilio's helper libraries, :meth:`verify` accepts a signature over
    the URL with or without its port (``https://host/`` and
    ``https://host:443/`` alike); :meth:`sign` signs the URL as given.
    """

    name = "twilio"
    header = "X-Twilio-Signature"
    # Twilio accounts have a primary and a secondary auth token: pass both
    # while promoting the secondary; ``verify`` accepts either, ``sign`` uses the first.

    def __init__(self, auth_tokens: str | bytes | Iterable[str | bytes]):
        self._keys = _keys(auth_tokens, "Twilio auth token")

    @staticmethod
    def json_url(url: str, body: bytes) -> str:
        """``url`` with ``bodySHA256`` added: what Twilio requests when it POSTs JSON ``body``."""
        separator = "&" if urlsplit(_require_url(url)).query else "?"
        return f"{url}{separator}bodySHA256={hashlib.sha256(_raw(body)).hexdigest()}"

    @staticmethod
    def _form_params(body: bytes) -> str:
        """What Twilio appends to the URL of a form request before signing it."""
        try:
            form = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError(
                "malformed",
                "the body is not UTF-8 form data: Twilio posts forms "
                "(application/x-www-form-urlencoded), and signs a JSON body through the "
                "bodySHA256 in the URL instead",
            ) from None
        params = sorted(set(parse_qsl(form, keep_blank_values=True)))
        return "".join(name + value for name, value in params)

    def _announced_and_params(self, url: str, body: bytes) -> tuple[bytes | None, str]:
        """The body hash the URL announces (None for a form request) and the parameters
        Twilio appends to the URL before signing it ("" for a JSON request)."""
        announced = _body_hash(url)
        return announced, "" if announced is not None else self._form_params(body)

    def _digests(self, urls: list[str], params: str) -> list[bytes]:
        return [hmac.new(key, (url + params).encode("utf-8"), hashlib.sha1).digest()
                for url in urls for key in self._keys]

    def sign(self, body: bytes, *, url: str | None = None, msg_id: str | None = None,
             timestamp: int | None = None) -> dict[str, str]:
        """Headers Twilio would send when POSTing ``body`` to ``url``.

        For a JSON body, pass ``url=TwilioSignature.json_url(url, body)``.
        """
        url, body = _require_url(url), _raw(body)
        announced, params = self._announced_and_params(url, body)
        if announced is not None and announced != hashlib.sha256(body).digest():
            raise LabkitError(
                "the url's bodySHA256 is not the SHA-256 of this body: build the URL "
                "with TwilioSignature.json_url(url, body)"
            )
        digest = self._digests([url], params)[0]
        return {self.header: base64.b64encode(digest).decode("ascii")}

    def verify(self, headers: Mapping[str, str], body: bytes, *, url: str | None = None,
               remote_ip: str | None = None, now: float | None = None) -> None:
        """Raise SignatureError unless the header matches ``url`` and the body."""
        url, body = _require_url(url), _raw(body)
        value = _require(headers, self.header,
                         "send the request from Twilio, or sign it with TwilioSignature.sign")
        candidate = _b64_digest(value, hashlib.sha1().digest_size,
                                f"{self.header} {value[:80]!r} is not the base64 of a 20-byte "
                                f"HMAC-SHA1: send the header exactly as Twilio produced it")
        announced, params = self._announced_and_params(url, body)
        if not _matches_any([candidate], self._digests(_port_variants(url), params)):
            raise SignatureError(
                "mismatch",
                f"{self.header} does not match: check the auth token, and that url "
                f"is exactly the URL configured in Twilio (https vs http behind a "
                f"proxy, query string) and the body is the form Twilio posted",
            )
        if announced is not None and not _matches_any([hashlib.sha256(body).digest()],
                                                      [announced]):
            raise SignatureError(
                "mismatch",
                "the body's SHA-256 differs from the bodySHA256 Twilio signed in the URL: "
                "the body was changed on the way, or you hashed a decoded or re-serialised "
                "copy instead of the raw body bytes",
            )


class GitHubLegacySignature(_GitHubHMAC):
    """GitHub's legacy signature: ``X-Hub-Signature: sha1=<hex HMAC-SHA1(secret, body)>``.

    GitHub still sends it, beside ``X-Hub-Signature-256``, on every delivery of a
    webhook that has a secret, so that receivers written before the SHA-256 header
    keep working. It is a signature made with the secret, not the secret itself:
    the secret never travels. Both headers sign the same raw body with the same
    secret; they differ only in the hash:

    =======================  =================  ===========================
    header                   HMAC               value
    =======================  =================  ===========================
    ``X-Hub-Signature``      SHA-1, 20 bytes    ``sha1=`` + 40 hex digits
    ``X-Hub-Signature-256``  SHA-256, 32 bytes  ``sha256=`` + 64 hex digits
    =======================  =================  ===========================

    Check :class:`GitHubSignature` (the SHA-256 one): GitHub recommends it, SHA-1
    is broken for collisions, and a receiver that accepts *either* header is only
    as strong as the weaker, since a forger picks which one to send. This class
    is for reading old integrations and for showing that difference. Rotation
    works as in :class:`GitHubSignature`: pass ``[new, old]``.
    """

    name = "github-legacy"
    header = "X-Hub-Signature"
    algorithm = "sha1"
    missing_hint = ("set a secret on the webhook in GitHub's settings so deliveries are "
                    "signed, and prefer X-Hub-Signature-256 (GitHubSignature)")
    malformed_hint = " (the sha256= value belongs in X-Hub-Signature-256)"
