"""Each platform's webhook signature, verified exactly as the platform specifies it.

Every check is an HMAC-SHA256 over the raw request body as received (never re-serialised
JSON), compared with `hmac.compare_digest` so the comparison time says nothing about how much
of a forged signature was right. The `sign_*` functions produce what the platform would send;
tests and local tools use them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SLACK_MAX_AGE_S = 5 * 60
"""Slack: "if the timestamp is more than five minutes from local time, it could be a replay
attack" — refused, in either direction."""


class SignatureError(Exception):
    """The delivery is not proven to come from the platform: answered 401, nothing kept."""


def _hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    # Header values arrive as latin-1 text; comparing bytes also copes with non-ASCII input,
    # which compare_digest refuses for str.
    return hmac.compare_digest(expected.encode(), given.encode("latin-1", "replace"))


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name) or headers.get(name.lower())
    if not value:
        raise SignatureError(f"the {name} header is missing")
    return value.strip()


# --- GitHub: X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)> ---------------------


def sign_github(secret: str, body: bytes) -> str:
    return "sha256=" + _hex_hmac(secret, body)


def verify_github(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Only X-Hub-Signature-256: the legacy SHA-1 X-Hub-Signature is not accepted."""
    given = _header(headers, "X-Hub-Signature-256")
    if not _same(sign_github(secret, body), given):
        raise SignatureError("X-Hub-Signature-256 does not match the body")


# --- Discourse: X-Discourse-Event-Signature: sha256=<hex HMAC-SHA256(secret, body)> ----------


def sign_discourse(secret: str, body: bytes) -> str:
    return "sha256=" + _hex_hmac(secret, body)


def verify_discourse(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    given = _header(headers, "X-Discourse-Event-Signature")
    if not _same(sign_discourse(secret, body), given):
        raise SignatureError("X-Discourse-Event-Signature does not match the body")


# --- Slack v0: X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:{ts}:{body}")> ------------


def sign_slack(secret: str, body: bytes, timestamp: int) -> str:
    return "v0=" + _hex_hmac(secret, f"v0:{timestamp}:".encode() + body)


def verify_slack(secret: str, body: bytes, headers: Mapping[str, str], *, now: float) -> None:
    """The timestamp is part of what is signed and must be within five minutes of `now`."""
    raw_timestamp = _header(headers, "X-Slack-Request-Timestamp")
    given = _header(headers, "X-Slack-Signature")
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit():
        raise SignatureError("X-Slack-Request-Timestamp is not a Unix time in seconds")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > SLACK_MAX_AGE_S:
        raise SignatureError(
            f"X-Slack-Request-Timestamp is {abs(now - timestamp):.0f} s from now, more than "
            "five minutes: a replay, or a clock to fix"
        )
    if not _same(sign_slack(secret, body, timestamp), given):
        raise SignatureError("X-Slack-Signature does not match the timestamp and body")
