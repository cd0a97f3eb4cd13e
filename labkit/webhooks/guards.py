"""Guards: simpler ways for a receiver to refuse requests from strangers.

Signatures (see :mod:`labkit.webhooks.signatures`) prove who sent a request
AND that its body is intact. The guards here check less, and it matters to
know what:

* :class:`ApiKeyGuard` and :class:`BearerTokenGuard` check a shared secret
  sent in a header. They keep out anyone who does not know the secret, but
  the secret travels with every request, so anyone who sees one request (a
  log, a proxy, plain HTTP) can replay it or send their own body. Use them
  over HTTPS only, and rotate keys: several keys can be valid at once so the
  sender can switch without downtime.
* :class:`IpAllowlist` accepts only requests from known networks, e.g. the
  ranges a provider publishes for its webhooks. It blocks strangers
  cheaply, but proves nothing about the body, and it is only as good as the
  client address it checks: ``X-Forwarded-For`` is an ordinary header that
  any client can write, so it is believed only when it was added by a proxy
  you trust.

All guards share the signature schemes' interface: ``verify(headers, body,
*, url=None, remote_ip=None, now=None)`` returns None or raises
:class:`~labkit.errors.RejectedError` with a ``reason`` word and an HTTP
status. Secrets are compared with ``hmac.compare_digest`` so response time
does not reveal how much of a guess was right.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping

from labkit.errors import LabkitError, RejectedError
from labkit.webhooks.signatures import get_header

__all__ = ["ApiKeyGuard", "BearerTokenGuard", "IpAllowlist"]

# RFC 6750 section 2.1: the characters a bearer token may contain.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _accepted(values: str | Iterable[str], what: str) -> list[bytes]:
    if isinstance(values, str):
        values = [values]
    encoded = [v.encode("utf-8") for v in values]
    if not encoded or not all(encoded):
        raise LabkitError(f"every {what} must be a non-empty string, and at least one is needed")
    return encoded


def _matches(given: str, accepted: list[bytes]) -> bool:
    given_bytes = given.encode("utf-8")
    return any(hmac.compare_digest(given_bytes, a) for a in accepted)


class ApiKeyGuard:
    """Accept requests whose ``header`` holds one of ``keys`` (401 otherwise)."""

    name = "api-key"

    def __init__(self, keys: str | Iterable[str], header: str = "X-Api-Key"):
        self._keys = _accepted(keys, "API key")
        self.header = header

    def verify(self, headers: Mapping[str, str], body: bytes, *, url: str | None = None,
               remote_ip: str | None = None, now: float | None = None) -> None:
        """Raise RejectedError (401) if the key is missing or not accepted."""
        given = get_header(headers, self.header)
        if given is None:
            raise RejectedError(
                "missing", f"no {self.header} header: send the shared API key in it", status=401
            )
        if not _matches(given, self._keys):
            raise RejectedError(
                "mismatch",
                f"the {self.header} value is not an accepted key: check for a typo or a "
                f"rotated-out key, and ask the receiver's owner for the current one",
                status=401,
            )


class BearerTokenGuard:
    """Accept ``Authorization: Bearer <token>`` with one of ``tokens`` (401 otherwise)."""

    name = "bearer"

    def __init__(self, tokens: str | Iterable[str]):
        self._tokens = _accepted(tokens, "bearer token")

    def verify(self, headers: Mapping[str, str], body: bytes, *, url: str | None = None,
               remote_ip: str | None = None, now: float | None = None) -> None:
        """Raise RejectedError (401) if the token is missing, malformed or not accepted."""
        value = get_header(headers, "Authorization")
        if value is None:
            raise RejectedError(
                "missing",
                "no Authorization header: send 'Authorization: Bearer <token>'",
                status=401,
            )
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(token):
            raise RejectedError(
                "malformed",
                f"Authorization must be 'Bearer <token>' (one token of letters, digits "
                f"and -._~+/), got scheme {scheme[:20]!r}: fix how the sender builds the header",
                status=401,
            )
        if not _matches(token, self._tokens):
            raise RejectedError(
                "mismatch",
                "the bearer token is not accepted: check for a typo or a rotated-out "
                "token, and ask the receiver's owner for the current one",
                status=401,
            )


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _networks(cidrs: str | Iterable[str], what: str) -> list[_Network]:
    if isinstance(cidrs, str):
        cidrs = [cidrs]
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise LabkitError(
                f"{cidr!r} in {what} is not an IPv4/IPv6 address or CIDR range "
                f"such as '192.30.252.0/22' or '2001:db8::/32'"
            ) from None
    return networks


def _address(text: str, source: str) -> _Address:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise RejectedError(
            "malformed",
            f"{source} {text.strip()[:60]!r} is not an IP address: send a plain "
            f"IPv4 or IPv6 address (no port, no brackets)",
        ) from None
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; compare them as IPv4.
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class IpAllowlist:
    """Accept only clients inside ``cidrs`` (403 otherwise).

    The client is ``remote_ip``, the peer of the TCP connection. Only when
    that peer is in ``trusted_proxies`` is ``X-Forwarded-For`` read: from
    the right, skipping trusted proxies, the first other address is the
    client. Entries further left were written by the client and are ignored.
    """

    name = "ip-allowlist"

    def __init__(self, cidrs: str | Iterable[str], trusted_proxies: str | Iterable[str] = ()):
        self.cidrs = _networks(cidrs, "cidrs")
        if not self.cidrs:
            raise LabkitError("the allowlist is empty, so it would refuse everyone: pass CIDRs")
        self.trusted_proxies = _networks(trusted_proxies, "trusted_proxies")

    def _trusted(self, address: _Address) -> bool:
        return any(address in network for network in self.trusted_proxies)

    def client_ip(self, headers: Mapping[str, str], remote_ip: str | None) -> str:
        """The address the allowlist is checked against, as a string."""
        if not remote_ip:
            raise LabkitError(
                "IpAllowlist needs remote_ip=: pass the connection's peer address "
                "(in tornado, request.remote_ip)"
            )
        client = _address(remote_ip, "remote_ip")
        if self._trusted(client):
            forwarded = get_header(headers, "X-Forwarded-For") or ""
            for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
                client = _address(hop, "X-Forwarded-For entry")
                if not self._trusted(client):
                    break
        return str(client)

    def verify(self, headers: Mapping[str, str], body: bytes, *, url: str | None = None,
               remote_ip: str | None = None, now: float | None = None) -> None:
        """Raise RejectedError: 403 if the client is outside the allowlist, 400 if malformed."""
        client = self.client_ip(headers, remote_ip)
        if not any(ipaddress.ip_address(client) in network for network in self.cidrs):
            ranges = ", ".join(str(n) for n in self.cidrs)
            raise RejectedError(
                "forbidden",
                f"client address {client} is not in the allowlist ({ranges}): if the "
                f"sender is genuine, update the ranges (providers publish theirs, e.g. "
                f"GitHub's 'hooks' list at https://api.github.com/meta); if a proxy "
                f"sits in front of this receiver, add it to trusted_proxies",
                status=403,
            )
