"""A Kafka subscriber using the official CloudEvents SDK reads our events as we meant them.

Every event type of the registry, encoded the way the services encode it
(`shared.cloudevents.encode`), goes through the SDK's Kafka protocol binding, binary mode:
`from_binary` sees the same attributes and data, and what the SDK's `to_binary` writes back
decodes (`shared.cloudevents.decode`) to the same event. Both SDK APIs are checked: the 2.x
core bindings and the 1.x-compatible `cloudevents.v1.kafka` module.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

try:  # SDK 2.x: the core bindings, and the 1.x API kept under cloudevents.v1
    from cloudevents.core.bindings import kafka as core_kafka
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.v1 import kafka as v1_kafka
except ImportError:  # SDK 1.x
    from cloudevents import kafka as v1_kafka  # type: ignore[no-redef]

    core_kafka = None  # type: ignore[assignment]

from shared.cloudevents import OutgoingRecord, decode, derive_event_id, encode
from shared.contracts import EVENT_TYPES, Contract, EventType

WHEN = "2026-03-02T14:30:15.250000Z"

FIELDS: dict[str, dict[str, Any]] = {
    "community.activity.v1": {
        "activity_id": "d-1",
        "occurred_at": WHEN,
        "source": "discourse",
        "kind": "post",
        "actor": {"member_id": "m-42", "handle": "ada"},
        "target": {"thread_id": "t-9", "thread_title": "How do I replay a topic?"},
        "properties": {"question": True, "tags": ["kafka"], "words": 12},
    },
    "journey.stage_changed.v1": {
        "member_id": "m-42",
        "dimension": "engagement",
        "from_stage": "engaged",
        "to_stage": "at_risk",
        "reason": "no activity for 30 days",
        "score": 12.5,
        "occurred_at": WHEN,
        "caused_by": ["discourse:d-1", "discourse:d-2"],
    },
    "member.acquired.v1": {
        "member_id": "m-43",
        "via": "referral",
        "referrer_member_id": "m-42",
        "occurred_at": WHEN,
        "activity_id": "web:s-1",
    },
    "member.merged.v1": {
        "survivor_member_id": "m-42",
        "merged_member_id": "anon-7",
        "occurred_at": WHEN,
        "reason": "signup carried the anonymous id",
    },
    "member.erased.v1": {"member_id": "m-13", "occurred_at": WHEN},
    "signal.peer_help.v1": {
        "helper_member_id": "m-42",
        "helped_member_id": "m-7",
        "thread_id": "t-9",
        "url": "https://forum.example.com/t/9",
        "accepted": True,
        "occurred_at": WHEN,
        "activity_id": "discourse:r-3",
    },
    "signal.prospect_intent.v1": {
        "member_id": "m-8",
        "thread_id": "t-11",
        "url": None,
        "matched": ["pricing", "enterprise"],
        "excerpt": "What does the enterprise plan cost?",
        "occurred_at": WHEN,
        "activity_id": "discourse:p-4",
    },
    "signal.churn_risk.v1": {
        "member_id": "m-9",
        "stage": "at_risk",
        "last_active_at": WHEN,
        "score": 3.25,
        "occurred_at": WHEN,
    },
    "signal.advocate.v1": {
        "member_id": "m-42",
        "score": 88.0,
        "evidence": {"accepted_answers": 5, "talks": 1},
        "links": ["https://forum.example.com/t/9"],
        "occurred_at": WHEN,
    },
    "signal.champion_nominated.v1": {
        "member_id": "m-42",
        "rank": 1,
        "score": 140.5,
        "window_start": WHEN,
        "window_end": WHEN,
        "evidence": {"accepted_answers": 9},
        "links": [],
        "occurred_at": WHEN,
    },
    "signal.newcomer_drop_off.v1": {
        "member_id": "m-50",
        "newcomer_as": "member",
        "started_at": WHEN,
        "last_active_at": WHEN,
        "activities": {"signup": 1, "post": 1},
        "quiet_days": 14.0,
        "occurred_at": WHEN,
    },
    "signal.question_unanswered.v1": {
        "member_id": "m-51",
        "thread_id": "t-12",
        "question_activity_id": "discourse:p-5",
        "url": "https://forum.example.com/t/12",
        "title": "Why does replay stall?",
        "asked_at": WHEN,
        "unanswered_hours": 24.0,
        "occurred_at": WHEN,
    },
    "signal.question_answered.v1": {
        "member_id": "m-51",
        "thread_id": "t-12",
        "question_activity_id": "discourse:p-5",
        "answer_activity_id": "discourse:r-6",
        "answered_by_member_id": "m-42",
        "asked_at": WHEN,
        "first_response_s": 5400.0,
        "was_unanswered": False,
        "url": None,
        "occurred_at": WHEN,
    },
    "signal.product_feedback.v1": {
        "member_id": "m-42",
        "feedback_kind": "feature_request",
        "matched": "github:tag:enhancement",
        "source": "github",
        "activity_id": "github:issue:7",
        "thread_id": "github:1#7",
        "title": "Dark mode",
        "excerpt": None,
        "url": None,
        "stages": {"engagement": "engaged", "advocacy": "champion"},
        "from_champion": True,
        "occurred_at": WHEN,
    },
    "member.first_touch.v1": {
        "member_id": "m-42",
        "channel": "search",
        "detail": "www.google.com",
        "first_seen_at": WHEN,
        "joined_at": WHEN,
        "occurred_at": WHEN,
    },
    "signal.champion_feedback.v1": {
        "member_id": "m-42",
        "feedback_event_id": "1f0c3d9e-8f51-5b7a-9a51-3f2d4c6b7e80",
        "feedback_kind": "feature_request",
        "source": "github",
        "activity_id": "github:issue:7",
        "title": "Dark mode",
        "url": "https://github.com/acme/widget/issues/7",
        "occurred_at": WHEN,
    },
    "system.clock_tick.v1": {"clock": "gateway", "occurred_at": WHEN},
    "system.watermark.v1": {"service": "engagement", "watermark": WHEN, "occurred_at": WHEN},
}
"""One filled-in instance of each event type (a type not registered yet is skipped)."""

SAMPLES: dict[str, Contract] = {
    name: EVENT_TYPES[name].model.model_validate(fields)
    for name, fields in FIELDS.items()
    if name in EVENT_TYPES
}


def test_every_registered_event_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(EVENT_TYPES), "add a sample of the new event type to FIELDS"


def _encoded(event_type: EventType) -> OutgoingRecord:
    data = SAMPLES[event_type.type]
    return encode(
        event_type,
        data,
        event_id=derive_event_id(event_type.type, "sample"),
        source="/tests/sdk",
    )


def _headers(record: OutgoingRecord) -> dict[str, bytes]:
    headers = dict(record.headers)
    assert len(headers) == len(record.headers), "a header name is repeated"
    return headers


def _assert_same_event(
    record: OutgoingRecord, event_type: EventType, attrs: dict[str, Any]
) -> None:
    data = SAMPLES[event_type.type]
    assert attrs["specversion"] == "1.0"
    assert attrs["id"] == record.event_id
    assert attrs["source"] == "/tests/sdk"
    assert attrs["type"] == event_type.type
    assert attrs["subject"] == event_type.key_of(data)
    assert attrs["datacontenttype"] == "application/json"


@pytest.mark.skipif(core_kafka is None, reason="the SDK 1.x has no core bindings")
@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_sdk_core_binding_reads_and_writes_our_binary_mode(type_name: str) -> None:
    event_type = EVENT_TYPES[type_name]
    data = SAMPLES[type_name]
    record = _encoded(event_type)
    message = core_kafka.KafkaMessage(headers=_headers(record), key=record.key, value=record.value)

    event = core_kafka.from_binary(message, JSONFormat())

    _assert_same_event(record, event_type, event.get_attributes())
    assert event.get_time() == data.occurred_at  # type: ignore[attr-defined]
    assert event.get_extension("partitionkey") == event_type.key_of(data)
    assert event.get_data() == data.model_dump(mode="json")
    assert event_type.model.model_validate(event.get_data()) == data

    back = core_kafka.to_binary(event, JSONFormat(), key_mapper=lambda e: e.get_subject())
    envelope = decode(
        topic=event_type.topic.name,
        partition=0,
        offset=0,
        key=back.key.encode() if isinstance(back.key, str) else back.key,
        value=back.value,
        headers=list(back.headers.items()),
    )
    assert (envelope.id, envelope.type, envelope.source) == (
        record.event_id,
        type_name,
        "/tests/sdk",
    )
    assert envelope.data == data
    assert envelope.key == event_type.key_of(data)
    assert envelope.time == data.occurred_at  # type: ignore[attr-defined]


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_sdk_v1_binding_reads_and_writes_our_binary_mode(type_name: str) -> None:
    event_type = EVENT_TYPES[type_name]
    data = SAMPLES[type_name]
    record = _encoded(event_type)
    message = v1_kafka.KafkaMessage(headers=_headers(record), key=record.key, value=record.value)

    event = v1_kafka.from_binary(message)

    attrs = event.get_attributes()
    _assert_same_event(record, event_type, dict(attrs))
    assert datetime.fromisoformat(attrs["time"]) == data.occurred_at  # type: ignore[attr-defined]
    assert event.get_data() == json.loads(record.value)
    assert event_type.model.model_validate(event.get_data()) == data

    back = v1_kafka.to_binary(event)
    assert back.key == record.key
    envelope = decode(
        topic=event_type.topic.name,
        partition=0,
        offset=0,
        key=back.key if isinstance(back.key, bytes) else str(back.key).encode(),
        value=back.value if isinstance(back.value, bytes) else back.value.encode(),
        headers=list(back.headers.items()),
    )
    assert (envelope.id, envelope.type, envelope.data) == (record.event_id, type_name, data)
