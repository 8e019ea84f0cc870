"""From raw request bytes to validated activities and their CloudEvents, or a precise problem.

The body is read and parsed here rather than by FastAPI so that size limits apply to the bytes
actually received, a batch is validated in one pass with every bad field named as a JSON
pointer, and nothing reaches the publisher unless the whole request is valid.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from pydantic import Field, ValidationError

from services.gateway.http.problems import (
    BODY_TOO_LARGE,
    INVALID_ACTIVITY,
    MALFORMED_BODY,
    UNSUPPORTED_MEDIA_TYPE,
    ProblemError,
    json_pointer,
)
from services.gateway.http.views import FieldError
from shared.cloudevents import OutgoingRecord, derive_event_id, encode, source_of
from shared.contracts import ACTIVITY, ActivityV1, Contract

SOURCE = source_of("gateway")
MAX_RECORD_BYTES = 1_000_000
"""Below the producer's max_request_size and the broker's message.max.bytes (both ~1 MiB):
an activity over it is refused up front rather than failing half-way through a batch."""
MAX_REPORTED_ERRORS = 100


class ActivityBatch(Contract):
    """Several activities in one request: all are accepted, or none."""

    activities: list[ActivityV1] = Field(
        min_length=1, description="At most `max_batch_items` (default 1000) activities."
    )


def check_content_type(content_type: str | None) -> None:
    """JSON (`application/json`, `application/*+json`) or no declared type at all."""
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise ProblemError(
        415,
        UNSUPPORTED_MEDIA_TYPE,
        "Unsupported media type",
        f"the body must be application/json, not {media!r}",
    )


def _too_large(max_bytes: int) -> ProblemError:
    return ProblemError(
        413,
        BODY_TOO_LARGE,
        "Request body too large",
        f"the body exceeds {max_bytes} bytes; send fewer activities per request",
    )


async def read_body(
    declared_length: str | None, chunks: AsyncIterator[bytes], max_bytes: int
) -> bytes:
    """The body, refused as soon as it is known to exceed max_bytes (declared or received)."""
    if declared_length is not None:
        try:
            length = int(declared_length)
        except ValueError:
            raise ProblemError(
                400, MALFORMED_BODY, "Malformed request", "Content-Length is not a number"
            ) from None
        if length > max_bytes:
            raise _too_large(max_bytes)
    received: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        received.append(chunk)
    return b"".join(received)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise ProblemError(400, MALFORMED_BODY, "Malformed JSON", "the body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProblemError(
            400, MALFORMED_BODY, "Malformed JSON", f"the body is not valid JSON: {exc}"
        ) from None


def _invalid(errors: list[FieldError], detail: str) -> ProblemError:
    shown = errors[:MAX_REPORTED_ERRORS]
    if len(errors) > len(shown):
        detail += f" (the first {len(shown)} of {len(errors)} errors are listed)"
    return ProblemError(
        422, INVALID_ACTIVITY, "Invalid activity", detail + "; nothing was accepted", shown
    )


def body_location(body: Any, loc: Sequence[str | int]) -> list[str | int]:
    """The part of a pydantic error location that is a path in the body.

    Pydantic also puts union member tags in it (`properties/x/list[...]/0`); a segment is kept
    when it leads somewhere in the body, or names a missing field of the last object.
    """
    path: list[str | int] = []
    node = body
    for i, segment in enumerate(loc):
        in_object = isinstance(node, dict) and isinstance(segment, str) and segment in node
        in_array = isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node)
        if in_object or in_array:
            node = node[segment]
        elif i < len(loc) - 1 or not isinstance(node, dict):
            continue  # a union tag, not a step into the body
        path.append(segment)
    return path


def _field_errors(exc: ValidationError, body: Any) -> list[FieldError]:
    return [
        FieldError(pointer=json_pointer(body_location(body, err["loc"])), detail=err["msg"])
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def parse_activities(body: Any, *, max_items: int) -> list[ActivityV1]:
    """One activity, or `{"activities": [...]}`; any invalid field fails the whole request."""
    if not isinstance(body, dict):
        raise _invalid(
            [FieldError(pointer="", detail="expected a JSON object")],
            'the body must be one activity or {"activities": [...]}',
        )
    if "activities" not in body:
        try:
            return [ActivityV1.model_validate(body)]
        except ValidationError as exc:
            errors = _field_errors(exc, body)
            raise _invalid(errors, f"the activity has {len(errors)} invalid field(s)") from None

    items = body["activities"]
    if isinstance(items, list) and len(items) > max_items:
        raise _invalid(
            [FieldError(pointer="/activities", detail=f"at most {max_items} items allowed")],
            f"{len(items)} activities in one request; the limit is {max_items}",
        )
    try:
        activities = ActivityBatch.model_validate(body).activities
    except ValidationError as exc:
        errors = _field_errors(exc, body)
        bad = {e.pointer.split("/")[2] for e in errors if e.pointer.count("/") >= 2}
        detail = f"{len(errors)} invalid field(s)"
        if bad and isinstance(items, list):
            detail += f" in {len(bad)} of {len(items)} activities"
        raise _invalid(errors, detail) from None

    first_seen: dict[tuple[str, str], int] = {}
    duplicates: list[FieldError] = []
    for i, activity in enumerate(activities):
        seen = first_seen.setdefault((activity.source, activity.activity_id), i)
        if seen != i:
            duplicates.append(
                FieldError(
                    pointer=f"/activities/{i}/activity_id",
                    detail=f"same source and activity_id as /activities/{seen}",
                )
            )
    if duplicates:
        raise _invalid(duplicates, "an activity appears twice in the batch")
    return activities


def event_id(activity: ActivityV1) -> str:
    """Stable per activity: a client's retry re-sends the same event, and consumers drop it."""
    return derive_event_id("activity", activity.source, activity.activity_id)


def record_size(record: OutgoingRecord) -> int:
    return len(record.value) + len(record.key) + sum(len(n) + len(v) for n, v in record.headers)


def to_records(activities: Sequence[ActivityV1], *, batch: bool) -> list[OutgoingRecord]:
    """The CloudEvents to publish, once every one of them is known to fit in a record."""
    records = [encode(ACTIVITY, a, event_id=event_id(a), source=SOURCE) for a in activities]
    for i, record in enumerate(records):
        if record_size(record) > MAX_RECORD_BYTES:
            raise ProblemError(
                413,
                BODY_TOO_LARGE,
                "Activity too large",
                f"an activity must encode to at most {MAX_RECORD_BYTES} bytes; nothing was "
                "accepted",
                [
                    FieldError(
                        pointer=f"/activities/{i}" if batch else "",
                        detail=f"encodes to {record_size(record)} bytes",
                    )
                ],
            )
    return records
