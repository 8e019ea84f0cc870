"""The CloudEvents Kafka binding: what goes out decodes back, what is wrong says why."""

from __future__ import annotations

import json

import pytest

from shared.cloudevents import DecodeError, decode, derive_event_id, encode
from shared.consumer import future_reason
from shared.contracts import ACTIVITY, STAGE_CHANGED, StageChangedV1
from tests.factories import T0, activity


def _decode(record_value: bytes, headers: list[tuple[str, bytes]], key: bytes | None = b"m-1"):
    return decode(
        topic="member-activity", partition=0, offset=7, key=key, value=record_value, headers=headers
    )


def test_activity_round_trips_in_binary_mode() -> None:
    data = activity("m-1", "post")
    record = encode(ACTIVITY, data, event_id="e-1", source="/gateway")
    headers = dict(record.headers)
    assert record.topic == "member-activity"
    assert record.key == b"m-1"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"community.activity.v1"
    assert headers["ce_id"] == b"e-1"
    assert headers["content-type"] == b"application/json"
    envelope = _decode(record.value, record.headers)
    assert envelope.data == data
    assert envelope.id == "e-1" and envelope.key == "m-1" and envelope.offset == 7


def test_stage_changed_is_keyed_by_member() -> None:
    data = StageChangedV1(
        member_id="m-9",
        dimension="engagement",
        from_stage=None,
        to_stage="engaged",
        reason="r",
        occurred_at=T0,
        caused_by=["a-1"],
    )
    record = encode(STAGE_CHANGED, data, event_id="e-2", source="/services/engagement")
    assert record.topic == "journey-transitions" and record.key == b"m-9"


def test_derived_ids_are_stable_and_distinct() -> None:
    assert derive_event_id("a", "b") == derive_event_id("a", "b")
    assert derive_event_id("a", "b") != derive_event_id("ab")


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"{}", [], "not a CloudEvent 1.0"),
        (b"{}", [("ce_specversion", b"1.0"), ("ce_type", b"x")], "missing CloudEvents header"),
        (
            b"{}",
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"s"),
                ("ce_type", b"community.activity.v9"),
            ],
            "unknown event type",
        ),
        (
            b"not json",
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"s"),
                ("ce_type", b"community.activity.v1"),
            ],
            "failed its schema",
        ),
    ],
)
def test_undecodable_records_say_why(
    value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason):
        _decode(value, headers)


def test_schema_failure_names_the_field() -> None:
    good = encode(ACTIVITY, activity("m-1", "post"), event_id="e", source="/t")
    bad = good.value.replace(b'"kind":"post"', b'"kind":"Not Snake"')
    with pytest.raises(DecodeError, match=r"kind: Value error, must be lower_snake_case"):
        _decode(bad, good.headers)


def test_oversized_and_tombstone_records_are_refused() -> None:
    good = encode(ACTIVITY, activity("m-1", "post"), event_id="e", source="/t")
    with pytest.raises(DecodeError, match="exceeds"):
        decode(
            topic="member-activity",
            partition=0,
            offset=0,
            key=b"k",
            value=good.value,
            headers=good.headers,
            max_value_bytes=10,
        )
    with pytest.raises(DecodeError, match="tombstone"):
        _decode(None, good.headers)  # type: ignore[arg-type]


# ---- tolerant reading: additive changes within a version ---------------------------------------


def _with_unknown_fields(value: bytes) -> bytes:
    """The event as a newer producer might send it: one new field at the top, one nested."""
    data = json.loads(value)
    data["channel"] = "forum"
    data["actor"]["pronouns"] = "she/her"
    return json.dumps(data).encode()


def test_unknown_fields_of_a_known_version_are_ignored() -> None:
    data = activity("m-1", "post", properties={"question": True})
    record = encode(ACTIVITY, data, event_id="e-1", source="/gateway")

    envelope = _decode(_with_unknown_fields(record.value), record.headers)

    assert envelope.data == data  # the known fields, exactly; the new ones dropped


def test_an_unknown_field_does_not_hide_a_real_error() -> None:
    record = encode(ACTIVITY, activity("m-1", "post"), event_id="e-1", source="/gateway")
    data = json.loads(_with_unknown_fields(record.value))
    data["kind"] = "Not Snake"

    with pytest.raises(DecodeError) as caught:
        _decode(json.dumps(data).encode(), record.headers)

    assert "kind" in caught.value.reason
    assert [e["loc"] for e in caught.value.detail] == ["kind"]  # not the unknown fields


# ---- times in the future ----------------------------------------------------------------------


def test_future_reason_measures_against_the_record_timestamp() -> None:
    envelope = _decode(
        encode(ACTIVITY, activity("m-1", "post"), event_id="e", source="/t").value,
        encode(ACTIVITY, activity("m-1", "post"), event_id="e", source="/t").headers,
    )
    written_ms = int(envelope.time.timestamp() * 1000)

    assert future_reason(envelope, written_ms - 300_000, 300) is None  # exactly the margin
    reason = future_reason(envelope, written_ms - 301_000, 300)
    assert reason is not None and "301 s ahead" in reason and "FLYWHEEL_MAX_FUTURE_S" in reason
    assert future_reason(envelope, written_ms + 86_400_000, 300) is None  # the past is fine
    assert future_reason(envelope, None, 0) is None  # no timestamp: nothing to compare
    assert future_reason(envelope, -1, 0) is None
