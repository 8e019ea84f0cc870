"""Outbound webhooks without a network: signatures per the Standard Webhooks spec, the
structured-mode CloudEvent body, the back-off, and what a subscription may ask for."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from services.gateway.delivery.fanout import DELIVERABLE_TYPES, to_queued
from services.gateway.delivery.routes import SubscriptionRequest
from services.gateway.delivery.sender import backoff_s
from services.gateway.delivery.signing import (
    check_secret,
    generate_secret,
    signature_headers,
    structured_body,
)
from shared.cloudevents import decode, encode
from shared.contracts import ADVOCATE, AdvocateV1

# The example of the Standard Webhooks specification (and of its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

T = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def test_signature_matches_the_specs_known_example() -> None:
    at = datetime.fromtimestamp(SPEC_TIMESTAMP, UTC)
    headers = signature_headers(SPEC_SECRET, SPEC_ID, SPEC_BODY, at)
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_signature_is_the_specs_formula_computed_independently() -> None:
    secret = generate_secret()
    at = datetime(2026, 3, 2, 14, 30, 15, 999_000, tzinfo=UTC)
    body = '{"id":"e-1","data":{"x":"é"}}'
    headers = signature_headers(secret, "e-1", body, at)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"e-1.{int(at.timestamp())}.{body}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))


def test_the_reference_verifier_accepts_ours_and_rejects_a_changed_body() -> None:
    secret = generate_secret()
    body = '{"specversion":"1.0","id":"e-1"}'
    headers = signature_headers(secret, "e-1", body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("e-1", "e-2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_generated_secrets_are_in_the_standard_format_and_distinct() -> None:
    secrets = {generate_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
        assert check_secret(secret) == secret


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24 to 64"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64"),
    ],
)
def test_bad_secrets_are_refused_saying_why(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_secret(secret)


def _advocate_envelope() -> tuple[AdvocateV1, str]:
    data = AdvocateV1(
        member_id="m-42",
        score=88.5,
        evidence={"talks": 1},
        links=["https://x.test/1"],
        occurred_at=T,
    )
    record = encode(ADVOCATE, data, event_id="ev-1", source="/advocacy")
    envelope = decode(
        topic="signals.advocacy",
        partition=0,
        offset=7,
        key=record.key,
        value=record.value,
        headers=record.headers,
    )
    return data, structured_body(envelope)


def test_body_is_a_structured_mode_cloudevent() -> None:
    data, body = _advocate_envelope()
    document = json.loads(body)
    assert document == {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "/advocacy",
        "type": "signal.advocate.v1",
        "time": "2026-03-02T14:30:00+00:00",
        "subject": "m-42",
        "datacontenttype": "application/json",
        "data": data.model_dump(mode="json"),
    }
    # and the CloudEvents SDK reads it as the same event (HTTP binding, structured mode)
    try:
        from cloudevents.v1.http import from_http
    except ImportError:  # SDK 1.x
        from cloudevents.http import from_http  # type: ignore[no-redef]
    event = from_http({"content-type": "application/cloudevents+json"}, body)
    assert (event["id"], event["type"], event["subject"], event["source"]) == (
        "ev-1",
        "signal.advocate.v1",
        "m-42",
        "/advocacy",
    )
    assert datetime.fromisoformat(event["time"]) == T
    assert AdvocateV1.model_validate(event.get_data()) == data


def test_queued_event_carries_the_member_key_and_event_time() -> None:
    data, body = _advocate_envelope()
    record = encode(ADVOCATE, data, event_id="ev-1", source="/advocacy")
    envelope = decode(
        topic="signals.advocacy",
        partition=0,
        offset=7,
        key=record.key,
        value=record.value,
        headers=record.headers,
    )
    queued = to_queued(envelope)
    assert (queued.event_id, queued.member_key, queued.event_time, queued.body) == (
        "ev-1",
        "m-42",
        T,
        body,
    )


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    rng = random.Random(7)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (13, 3600.0), (500, 3600.0)]:
        waits = [backoff_s(attempt, initial_s=1.0, max_s=3600.0, rng=rng) for _ in range(300)]
        assert all(0.0 <= w <= cap for w in waits)
        assert max(waits) > cap * 0.8, "jitter spans the whole range"
        assert min(waits) < cap * 0.2


def test_only_output_events_can_be_subscribed_to() -> None:
    assert "journey.stage_changed.v1" in DELIVERABLE_TYPES
    assert "signal.peer_help.v1" in DELIVERABLE_TYPES
    assert "signal.advocate.v1" in DELIVERABLE_TYPES
    assert "community.activity.v1" not in DELIVERABLE_TYPES
    assert "system.clock_tick.v1" not in DELIVERABLE_TYPES


def test_subscription_request_validation() -> None:
    ok = SubscriptionRequest.model_validate(
        {
            "url": "https://crm.example.com/hooks",
            "event_types": ["signal.advocate.v1", "signal.advocate.v1", "journey.stage_changed.v1"],
        }
    )
    assert ok.event_types == ["signal.advocate.v1", "journey.stage_changed.v1"]
    assert ok.secret is None
    with pytest.raises(ValidationError) as caught:
        SubscriptionRequest.model_validate(
            {"url": "ftp://x", "event_types": ["signal.advocate.v1", "signal.nope.v1"]}
        )
    where = {tuple(e["loc"]) for e in caught.value.errors()}
    assert where == {("url",), ("event_types", 1)}
    assert "signal.nope.v1" in str(caught.value)
    with pytest.raises(ValidationError):
        SubscriptionRequest.model_validate({"url": "https://x.test", "event_types": []})
