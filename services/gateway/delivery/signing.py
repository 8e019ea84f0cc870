"""Standard Webhooks (https://www.standardwebhooks.com/) signatures, and the CloudEvent body.

A receiver verifies `webhook-signature` = `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`
keyed by the base64-decoded part of the subscription's `whsec_...` secret, with any Standard
Webhooks library; the signing itself is the `standardwebhooks` package's, so both sides agree.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks import Webhook

from shared.cloudevents import SPEC_VERSION, Envelope, header_map

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24  # the spec's range: 24 to 64 random bytes
MAX_SECRET_BYTES = 64
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


def generate_secret() -> str:
    """A fresh secret in the format every Standard Webhooks library reads."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_secret(secret: str) -> str:
    """The secret if it is `whsec_` + base64 of 24..64 bytes; ValueError saying why if not."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r} (Standard Webhooks format)")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX!r} followed by standard base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes, not {len(key)}"
        )
    if len(set(key)) < MIN_SECRET_BYTES // 2:  # random bytes repeat rarely; a pattern does
        raise ValueError("must encode random bytes (these repeat too much to be a secret)")
    return secret


def signature_headers(
    secret: str, webhook_id: str, body: str, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (a retry gets a fresh timestamp)."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    # the library floors to whole seconds; so does the header
    signature = Webhook(secret).sign(msg_id=webhook_id, timestamp=at, data=body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def structured_event(envelope: Envelope) -> dict[str, Any]:
    """The CloudEvent in structured mode: attributes and data in one JSON object, the
    attributes exactly as they were on Kafka (the `ce_*` headers)."""
    attrs = header_map(envelope.headers)
    return {
        "specversion": SPEC_VERSION,
        "id": envelope.id,
        "source": envelope.source,
        "type": envelope.type,
        "time": attrs.get("ce_time") or envelope.time.astimezone(UTC).isoformat(),
        "subject": attrs.get("ce_subject") or envelope.key,
        "datacontenttype": "application/json",
        "data": envelope.data.model_dump(mode="json"),
    }


def structured_body(envelope: Envelope) -> str:
    """The exact text that is signed and sent."""
    return orjson.dumps(structured_event(envelope)).decode()
