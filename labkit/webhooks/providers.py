"""Simulated webhook providers that send what the real ones send.

A receiver is only tested properly by requests shaped like the real thing:
the same headers, the same body format, the same signature scheme. Each
provider here turns a :class:`labkit.feed.Event` into one such request:

==================================  ====================================================
:class:`GitHubProvider`             a ``push`` event: compact JSON, ``X-GitHub-*``
                                    headers, ``X-Hub-Signature-256`` (and the legacy
                                    ``X-Hub-Signature``); ``thin=True``
                                    sends a small notice with a ``url`` to fetch instead
:class:`TwilioProvider`             an SMS status callback: a form (``MessageSid``,
                                    ``MessageStatus`` ...), ``X-Twilio-Signature`` over
                                    the URL and the sorted parameters
:class:`PaymentProvider`            a Stripe-style ``payment_intent.*`` event:
                                    pretty-printed JSON, ``Stripe-Signature: t=..,v1=..``
:class:`StandardWebhooksProvider`   any event to the Standard Webhooks spec: headers
                                    ``webhook-id``, ``webhook-timestamp``,
                                    ``webhook-signature``
==================================  ====================================================

There is one mechanism for each job. Signing is done by the scheme classes
of :mod:`labkit.webhooks.signatures`, the same ones a receiver verifies with.
Building is :meth:`Provider.build`, which returns an :class:`OutgoingWebhook`
(URL, headers, raw body) you can inspect, count or tamper with. Sending is
:meth:`OutgoingWebhook.send`: one blocking POST, one attempt, no retries and
no redirects followed, as providers do; retrying is another module's job.

Ids are derived from the event id, so building the same event twice (a
redelivery) gives the same delivery id, as real providers keep it across
retries. Each provider registers its id rule with :func:`labkit.feed.id_rule`,
so :meth:`Feed.find` links a delivery back to its feed event without the
receiver knowing any provider.

Times in bodies and signatures come from ``clock`` (default ``time.time``, a
:data:`TimeSource`): pass ``clock=lambda: time.time() - 600`` to send a stale delivery.

Example::

    from labkit.feed import Feed
    from labkit.webhooks.receiver import serve_receiver
    from labkit.webhooks.signatures import StripeSignature

    server = serve_receiver(verifiers=[StripeSignature("whsec_test")])
    provider = PaymentProvider("whsec_test")
    webhook = provider.build(server.endpoint_url, Feed().make("payment", {"amount": 1999}))
    print(webhook.headers["Stripe-Signature"], len(webhook.body))
    webhook.send().status_code          # 200
"""

from __future__ import annotations

import abc
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlencode

import requests
import tornado.web

from labkit.errors import LabkitError
from labkit.feed import id_rule
from labkit.webhooks.signatures import (
    GitHubLegacySignature,
    GitHubSignature,
    StandardWebhooksSignature,
    StripeSignature,
    TwilioSignature,
)

__all__ = [
    "OutgoingWebhook",
    "Provider",
    "GitHubProvider",
    "TwilioProvider",
    "PaymentProvider",
    "StandardWebhooksProvider",
    "TWILIO_STATUSES",
    "PAYMENT_TYPES",
]

TimeSource = Callable[[], float]
"""A function that returns the provider's current Unix time (``time.time`` by default)."""


@dataclass(frozen=True)
class OutgoingWebhook:
    """A fully built webhook request, ready to send with any HTTP client."""

    url: str
    method: str
    headers: dict[str, str]
    body: bytes
    delivery_id: str
    event_type: str

    def send(self, *, session: requests.Session | None = None,
             timeout: float = 5.0) -> requests.Response:
        """Send it once (blocking) and return the response; redirects are not followed."""
        client = session if session is not None else requests
        return client.request(self.method, self.url, headers=self.headers, data=self.body,
                              timeout=timeout, allow_redirects=False)


def _hex(*parts: object, length: int) -> str:
    """A deterministic hex string from ``parts``: same event, same ids."""
    return hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).hexdigest()[:length]


def _guid(*parts: object) -> str:
    """A deterministic GUID (UUID version 5) from ``parts``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ":".join(map(str, ("labkit",) + parts))))


def _iso(now: float, timespec: str = "seconds") -> str:
    """ISO-8601 in UTC with a ``Z``, e.g. ``2024-06-20T12:00:00Z``."""
    stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec=timespec)
    return stamp.replace("+00:00", "Z")


def _occurred(event, now: float) -> float:
    """When ``event`` happened, on the provider's clock (``now`` is the sending time).

    Bodies carry this, not the sending time: a retry re-signs with a new
    timestamp in its headers, but the event it describes happened only once.
    """
    return now - max(0.0, time.monotonic() - event.created)


def _json(value: Any, *, indent: int | None = None) -> bytes:
    """UTF-8 JSON; compact (no spaces) unless ``indent`` is given."""
    separators = None if indent else (",", ":")
    return json.dumps(value, ensure_ascii=False, indent=indent,
                      separators=separators).encode("utf-8")


class Provider(abc.ABC):
    """Base of every provider: subclasses say what to send, this class builds it.

    A subclass sets ``name`` and implements :meth:`delivery_id`,
    :meth:`event_type` and :meth:`content`; ``self.signature`` (a scheme from
    :mod:`labkit.webhooks.signatures`) adds the signature headers.
    """

    name = "provider"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every provider's id rule is registered, so a receiver with a feed finds its events."""
        super().__init_subclass__(**kwargs)
        if not getattr(cls.delivery_id, "__isabstractmethod__", False):
            id_rule(cls.delivery_id)

    def __init__(self, signature, *, clock: TimeSource = time.time):
        if not callable(clock):
            raise LabkitError(
                f"clock= takes a function that returns the Unix time, such as time.time or "
                f"lambda: time.time() - 600, not {clock!r}: a labkit.clock.Clock compresses "
                f"waits (give it to the Sender), it does not set the time a body carries")
        self.signature = signature
        self.clock = clock

    @staticmethod
    @abc.abstractmethod
    def delivery_id(event) -> str:
        """The id the receiver finds for this event (stable across redeliveries)."""

    @abc.abstractmethod
    def event_type(self, event) -> str:
        """The event type as this provider names it."""

    @abc.abstractmethod
    def content(self, event, delivery_id: str, event_type: str,
                now: float) -> tuple[dict[str, str], bytes]:
        """The headers (without signature) and the raw body for ``event``."""

    def build(self, url: str, event) -> OutgoingWebhook:
        """The signed request this provider would send to ``url`` for ``event``."""
        now = self.clock()
        delivery_id, event_type = self.delivery_id(event), self.event_type(event)
        headers, body = self.content(event, delivery_id, event_type, now)
        headers.update(self.signature.sign(body, url=url, msg_id=delivery_id,
                                           timestamp=int(now)))
        return OutgoingWebhook(url=url, method="POST", headers=headers, body=body,
                               delivery_id=delivery_id, event_type=event_type)

    def send(self, url: str, event, *, session: requests.Session | None = None,
             timeout: float = 5.0) -> requests.Response:
        """Build and send one attempt (blocking); no retries."""
        return self.build(url, event).send(session=session, timeout=timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# -- GitHub ---------------------------------------------------------------------------

_HOOKSHOT = "GitHub-Hookshot/5d5b9c1"
"""GitHub's User-Agent: always ``GitHub-Hookshot/`` and a short version hash."""

_REPO_API_URLS = (
    ("forks_url", "/forks"), ("keys_url", "/keys{/key_id}"),
    ("collaborators_url", "/collaborators{/collaborator}"), ("teams_url", "/teams"),
    ("hooks_url", "/hooks"), ("issue_events_url", "/issues/events{/number}"),
    ("events_url", "/events"), ("assignees_url", "/assignees{/user}"),
    ("branches_url", "/branches{/branch}"), ("tags_url", "/tags"),
    ("blobs_url", "/git/blobs{/sha}"), ("git_tags_url", "/git/tags{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"), ("trees_url", "/git/trees{/sha}"),
    ("statuses_url", "/statuses/{sha}"), ("languages_url", "/languages"),
    ("stargazers_url", "/stargazers"), ("contributors_url", "/contributors"),
    ("subscribers_url", "/subscribers"), ("subscription_url", "/subscription"),
    ("commits_url", "/commits{/sha}"), ("git_commits_url", "/git/commits{/sha}"),
    ("comments_url", "/comments{/number}"), ("issue_comment_url", "/issues/comments{/number}"),
    ("contents_url", "/contents/{+path}"), ("compare_url", "/compare/{base}...{head}"),
    ("merges_url", "/merges"), ("archive_url", "/{archive_format}{/ref}"),
    ("downloads_url", "/downloads"), ("issues_url", "/issues{/number}"),
    ("pulls_url", "/pulls{/number}"), ("milestones_url", "/milestones{/number}"),
    ("notifications_url", "/notifications{?since,all,participating}"),
    ("labels_url", "/labels{/name}"), ("releases_url", "/releases{/id}"),
    ("deployments_url", "/deployments"),
)
"""The URL templates every repository object in a GitHub payload carries (most of its bytes)."""

_API_PATH = "/api/webhook-events/"
"""Where :meth:`GitHubProvider.api_rules` serves the full payload of a thin delivery."""


def _github_user(login: str) -> dict:
    user_id = int(_hex("user", login, length=7), 16)
    return {
        "login": login, "id": user_id, "node_id": f"U_kgDO{_hex('node', login, length=8)}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "url": f"https://api.github.com/users/{login}", "html_url": f"https://github.com/{login}",
        "type": "User", "site_admin": False,
    }


def _github_repository_id(full_name: str) -> int:
    return int(_hex("repo", full_name, length=8), 16)


def _github_repository(full_name: str, now: float) -> dict:
    owner, _, name = full_name.partition("/")
    api = f"https://api.github.com/repos/{full_name}"
    return {
        "id": _github_repository_id(full_name),
        "node_id": f"R_kgDO{_hex('node', full_name, length=8)}",
        "name": name, "full_name": full_name, "private": False,
        "owner": {"name": owner, "email": None, **_github_user(owner)},
        "html_url": f"https://github.com/{full_name}", "description": None, "fork": False,
        "url": f"https://github.com/{full_name}",
        **{key: api + suffix for key, suffix in _REPO_API_URLS},
        "created_at": 1_600_000_000, "updated_at": _iso(now),
        "pushed_at": int(now),
        "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git",
        "clone_url": f"https://github.com/{full_name}.git",
        "homepage": None, "size": 42, "stargazers_count": 0, "watchers_count": 0,
        "language": "Python", "has_issues": True, "has_projects": True,
        "has_downloads": True, "has_wiki": True, "has_pages": False,
        "forks_count": 0, "archived": False, "disabled": False, "open_issues_count": 0,
        "license": None, "topics": [], "visibility": "public", "forks": 0,
        "open_issues": 0, "watchers": 0, "default_branch": "main",
        "stargazers": 0, "master_branch": "main",
    }


class GitHubProvider(Provider):
    """A repository webhook sending ``push`` events as GitHub does.

    ``event.payload`` may set ``repository`` ("owner/name"), ``ref``,
    ``message``, ``author`` (a login), ``added``, ``removed`` and
    ``modified`` (lists of paths); the rest of GitHub's payload is filled in
    with realistic defaults. Like GitHub, it signs twice: ``X-Hub-Signature-256``
    (HMAC-SHA256, the one to verify) and the legacy ``X-Hub-Signature`` (HMAC-SHA1,
    still sent for old integrations), both over the same body with the same secret.

    ``thin=True`` sends a small notice instead: the event, the delivery id,
    the repository and a ``url`` where the full payload can be fetched. Serve
    :meth:`api_rules` (e.g. ``lab.serve(provider.api_rules())``) and set
    ``api_url`` to that server's URL, so the fetch is real HTTP.
    """

    name = "github"

    def __init__(self, secret: str | bytes, *, hook_id: int = 123456789, thin: bool = False,
                 api_url: str | None = None, clock: TimeSource = time.time):
        super().__init__(GitHubSignature(secret), clock=clock)
        self.legacy_signature = GitHubLegacySignature(secret)
        self.hook_id = hook_id
        self.thin = thin
        self.api_url = api_url
        self._lock = threading.Lock()
        self._full: dict[str, bytes] = {}

    @staticmethod
    def delivery_id(event) -> str:
        """A GUID derived from the event id, as in ``X-GitHub-Delivery``."""
        return _guid("github", event.id)

    def event_type(self, event) -> str:
        return "push"

    @staticmethod
    def repository(event) -> str:
        """The repository pushed to: ``event.payload["repository"]`` or a default."""
        return event.payload.get("repository", "octo-org/hello-world")

    def push_payload(self, event, now: float) -> dict:
        """The full ``push`` payload GitHub would send for ``event``; its times are when the
        push happened, so every copy of it (a retry, the API's answer) says the same."""
        now = _occurred(event, now)
        p = event.payload
        full_name = self.repository(event)
        author = p.get("author", "octocat")
        before, after = _hex("parent", event.id, length=40), _hex("commit", event.id, length=40)
        commit = {
            "id": after, "tree_id": _hex("tree", event.id, length=40), "distinct": True,
            "message": p.get("message", f"{event.type} #{event.seq}"),
            "timestamp": _iso(now),
            "url": f"https://github.com/{full_name}/commit/{after}",
            "author": {"name": author, "email": f"{author}@users.noreply.github.com",
                       "username": author},
            "committer": {"name": "GitHub", "email": "noreply@github.com",
                          "username": "web-flow"},
            "added": p.get("added", []), "removed": p.get("removed", []),
            "modified": p.get("modified", ["README.md"]),
        }
        return {
            "ref": p.get("ref", "refs/heads/main"), "before": before, "after": after,
            "repository": _github_repository(full_name, now),
            "pusher": {"name": author, "email": f"{author}@users.noreply.github.com"},
            "sender": _github_user(author),
            "created": False, "deleted": False, "forced": False, "base_ref": None,
            "compare": f"https://github.com/{full_name}/compare/{before[:12]}...{after[:12]}",
            "commits": [commit], "head_commit": commit,
        }

    def thin_payload(self, event, delivery_id: str) -> dict:
        """A small notice: what happened and where to fetch the rest."""
        if not self.api_url:
            raise LabkitError(
                "a thin GitHubProvider needs api_url: serve provider.api_rules() with "
                "lab.serve and set provider.api_url = that server's url"
            )
        return {
            "event": "push", "delivery": delivery_id,
            "repository": {"full_name": self.repository(event)},
            "url": f"{self.api_url.rstrip('/')}{_API_PATH}{delivery_id}",
        }

    def content(self, event, delivery_id, event_type, now):
        full = _json(self.push_payload(event, now))
        repository_id = _github_repository_id(self.repository(event))
        if self.thin:
            body = _json(self.thin_payload(event, delivery_id))
            with self._lock:
                self._full[delivery_id] = full
        else:
            body = full
        headers = {
            "User-Agent": _HOOKSHOT,
            "Content-Type": "application/json",
            "X-GitHub-Event": event_type,
            "X-GitHub-Delivery": delivery_id,
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-GitHub-Hook-Installation-Target-ID": str(repository_id),
            **self.legacy_signature.sign(body),
        }
        return headers, body

    def full_payload(self, delivery_id: str) -> bytes | None:
        """The full payload behind a thin delivery, as the API serves it (None if unknown)."""
        with self._lock:
            return self._full.get(delivery_id)

    def api_rules(self) -> list:
        """Tornado rules for the simulated API that serves thin deliveries' full payloads."""
        return [(_API_PATH + r"([0-9a-f-]+)", _GitHubApiHandler, {"provider": self})]


class _GitHubApiHandler(tornado.web.RequestHandler):
    """GET the full payload of a thin delivery (404 if this provider never sent it)."""

    def initialize(self, provider: GitHubProvider) -> None:
        self.provider = provider

    def get(self, delivery_id: str) -> None:
        full = self.provider.full_payload(delivery_id)
        if full is None:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.write(full)


# -- Twilio ---------------------------------------------------------------------------

TWILIO_STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")
"""SMS statuses a status callback reports (``failed``/``undelivered`` carry an ErrorCode)."""


_DEFAULT_ERRORS = {"undelivered": 30003, "failed": 30008}


class TwilioProvider(Provider):
    """An SMS status callback, as Twilio POSTs it to a message's StatusCallback URL.

    ``event.payload`` may set ``status`` (one of :data:`TWILIO_STATUSES`,
    default ``delivered``), ``message`` (which text message the callback is
    about: callbacks naming the same message share its ``MessageSid``; by
    default each event is its own message), ``from``, ``to`` and
    ``error_code`` (sent only for ``failed`` and ``undelivered``; by default
    30003, "unreachable destination handset", for a message the carrier could
    not deliver, and 30008, "unknown error", for one Twilio could not send).

    Twilio sends no callback for a message's first status (``queued``); a
    message then moves to ``sent`` and on to ``delivered`` or ``undelivered``,
    or straight to ``failed`` if it could not be sent at all.

    One message gets several callbacks (queued, sent, delivered ...), so the
    ``MessageSid`` does not identify a delivery; the
    ``I-Twilio-Idempotency-Token`` header does, and it is the delivery id.
    """

    name = "twilio"

    def __init__(self, auth_token: str | bytes, *,
                 account_sid: str = "AC" + _hex("labkit", "account", length=32),
                 clock: TimeSource = time.time):
        super().__init__(TwilioSignature(auth_token), clock=clock)
        self.account_sid = account_sid

    @staticmethod
    def delivery_id(event) -> str:
        """The ``I-Twilio-Idempotency-Token`` of this callback, derived from the event id."""
        return _guid("twilio", event.id)

    @staticmethod
    def message_sid(event) -> str:
        """The SID of the message a callback is about: ``SM`` and 32 hex digits."""
        return "SM" + _hex("message", str(event.payload.get("message", event.id)), length=32)

    def event_type(self, event) -> str:
        status = event.payload.get("status", "delivered")
        if status not in TWILIO_STATUSES:
            raise LabkitError(
                f"Twilio status {status!r} is not one of {', '.join(TWILIO_STATUSES)}")
        return status

    def params(self, event, sid: str, status: str, now: float) -> dict[str, str]:
        """The form parameters of the callback, in the order Twilio sends them."""
        p = event.payload
        params = {"SmsSid": sid, "SmsStatus": status, "MessageStatus": status,
                  "To": p.get("to", "+15558675310"), "MessageSid": sid,
                  "AccountSid": self.account_sid, "From": p.get("from", "+15005550006"),
                  "ApiVersion": "2010-04-01"}
        if status in ("failed", "undelivered"):
            params["ErrorCode"] = str(p.get("error_code", _DEFAULT_ERRORS[status]))
        if status in ("delivered", "undelivered"):
            # When the carrier reported the final status, as YYMMDDhhmm (UTC).
            done = datetime.fromtimestamp(now, timezone.utc)
            params["RawDlrDoneDate"] = done.strftime("%y%m%d%H%M")
        return params

    def content(self, event, delivery_id, event_type, now):
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "Content-Type": "application/x-www-form-urlencoded",
            "I-Twilio-Idempotency-Token": delivery_id,
        }
        body = urlencode(self.params(event, self.message_sid(event), event_type,
                                     now)).encode("ascii")
        return headers, body


# -- Stripe-style payments ----------------------------------------------------------

PAYMENT_TYPES = {"succeeded": "payment_intent.succeeded",
                 "failed": "payment_intent.payment_failed"}
"""Event type for each outcome a payment event's ``status`` may name."""


class PaymentProvider(Provider):
    """A Stripe-style payment provider sending ``payment_intent.*`` events.

    ``event.payload`` may set ``status`` (``succeeded``, the default, or
    ``failed``), ``amount`` (in cents), ``currency`` and ``metadata`` (your own
    keys, such as an order number, echoed back as Stripe does). Like Stripe, the body
    is pretty-printed JSON and the signature covers ``t`` and the body.
    """

    name = "stripe"

    def __init__(self, secret: str | bytes, *, api_version: str = "2024-06-20",
                 clock: TimeSource = time.time):
        super().__init__(StripeSignature(secret), clock=clock)
        self.api_version = api_version

    @staticmethod
    def delivery_id(event) -> str:
        """The Stripe event id in the body: the feed's id when it starts with ``evt_``."""
        return event.id if event.id.startswith("evt_") else f"evt_{event.id}"

    def event_type(self, event) -> str:
        status = event.payload.get("status", "succeeded")
        if status not in PAYMENT_TYPES:
            raise LabkitError(
                f"payment status {status!r} is not one of {', '.join(PAYMENT_TYPES)}")
        return PAYMENT_TYPES[status]

    def payment_intent(self, event, event_type: str, now: float) -> dict:
        """The ``data.object`` of the event: the payment as it is now."""
        p = event.payload
        failed = event_type == PAYMENT_TYPES["failed"]
        amount = p.get("amount", 2000)
        return {
            "id": "pi_" + _hex("payment", event.id, length=24), "object": "payment_intent",
            "amount": amount, "amount_received": 0 if failed else amount,
            "currency": p.get("currency", "usd"), "created": int(now), "livemode": False,
            "last_payment_error": ({"code": "card_declined", "decline_code": "generic_decline",
                                    "type": "card_error"} if failed else None),
            "metadata": dict(p.get("metadata", {})),
            "status": "requires_payment_method" if failed else "succeeded",
        }

    def content(self, event, delivery_id, event_type, now):
        body = {
            "id": delivery_id, "object": "event", "api_version": self.api_version,
            "created": int(_occurred(event, now)),
            "data": {"object": self.payment_intent(event, event_type, now)},
            "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        headers = {"User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                   "Content-Type": "application/json; charset=utf-8"}
        return headers, _json(body, indent=2)


# -- Standard Webhooks -----------------------------------------------------------------


class StandardWebhooksProvider(Provider):
    """A generic sender following the Standard Webhooks spec (standardwebhooks.com).

    The body is ``{"type": event.type, "timestamp": ISO-8601, "data": event.payload}``,
    where ``timestamp`` is when the event happened (the spec's meaning); the
    ``webhook-timestamp`` header is when this attempt was signed.
    ``webhook-id`` is the event id, so a redelivery keeps it.
    """

    name = "standard-webhooks"

    def __init__(self, secret: str | bytes, *, clock: TimeSource = time.time):
        super().__init__(StandardWebhooksSignature(secret), clock=clock)

    @staticmethod
    def delivery_id(event) -> str:
        return event.id

    def event_type(self, event) -> str:
        return event.type

    def content(self, event, delivery_id, event_type, now):
        body = {"type": event_type, "timestamp": _iso(_occurred(event, now), "milliseconds"),
                "data": event.payload}
        headers = {"User-Agent": "labkit-webhooks/0.1", "Content-Type": "application/json"}
        return headers, _json(body)
