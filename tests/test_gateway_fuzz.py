"""Property-based fuzzing of the gateway's intake, with a recording fake publisher.

Whatever a client sends — valid activities, valid ones mutated field by field, arbitrary JSON,
arbitrary bytes under any content type, batches mixing all of them — the gateway never answers
5xx, publishes nothing for a request it refuses, and every record of a request it accepts
decodes back (the consumers' own `decode`) to exactly the activity that was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.gateway.bootstrap import create_app
from shared.cloudevents import decode, derive_event_id
from shared.contracts import KNOWN_KINDS, ActivityV1
from tests.test_gateway_api import (
    AUTH,
    MAX_BYTES,
    MAX_ITEMS,
    FakeJourney,
    Readiness,
    RecordingPublisher,
)
from tests.test_gateway_api import settings as gateway_settings

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[TestClient, RecordingPublisher]]:
    """One app for every example (building one per example would dominate the run)."""
    publisher = RecordingPublisher()
    app = create_app(
        publisher=publisher,
        journey=FakeJourney(),
        readiness=Readiness(),
        settings=gateway_settings(),
    )
    with TestClient(app, raise_server_exceptions=False, headers=AUTH) as client:
        yield client, publisher


# --- strategies ------------------------------------------------------------------------------

IDENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+=\-]{0,24}", fullmatch=True)
TEXT = st.text(max_size=40)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.isoformat())


@st.composite
def valid_activity(draw: st.DrawFn) -> dict[str, Any]:
    """An activity the contract accepts (most of the time: the gateway may still refuse it)."""
    actor: dict[str, Any] = {"member_id": draw(IDENT)}
    for name in ("anonymous", "is_team_member", "is_bot"):
        if draw(st.booleans()):
            actor[name] = draw(st.booleans())
    if draw(st.booleans()):
        actor["handle"] = draw(TEXT)
    body: dict[str, Any] = {
        "activity_id": draw(IDENT),
        "occurred_at": draw(TIMES),
        "source": draw(st.from_regex(r"[a-z][a-z0-9_\-]{0,12}", fullmatch=True)),
        "kind": draw(
            st.sampled_from(sorted(KNOWN_KINDS))
            | st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
        ),
        "actor": actor,
    }
    if draw(st.booleans()):
        body["target"] = {"thread_id": draw(IDENT), "thread_author_member_id": draw(IDENT)}
    if draw(st.booleans()):
        body["properties"] = draw(st.dictionaries(TEXT, JSON, max_size=3))
    return body


PATHS = [
    ("activity_id",),
    ("occurred_at",),
    ("source",),
    ("kind",),
    ("actor",),
    ("actor", "member_id"),
    ("actor", "anonymous"),
    ("target",),
    ("properties",),
    ("colour",),
]


@st.composite
def mutated_activity(draw: st.DrawFn) -> Any:
    """A valid activity with one to three fields deleted, retyped or added."""
    body = draw(valid_activity())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = body
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(JSON)
    return body


ITEM = st.one_of(valid_activity(), mutated_activity(), JSON)
BODY = st.one_of(
    ITEM,
    st.builds(lambda items: {"activities": items}, st.lists(ITEM, max_size=MAX_ITEMS + 1)),
    st.builds(
        lambda items: {"activities": items}, st.lists(valid_activity(), min_size=1, max_size=3)
    ),
)


# --- properties ------------------------------------------------------------------------------


def _check(response: Any, publisher: RecordingPublisher, sent: Any, *, fuzzed: bool = True) -> None:
    if fuzzed:
        event(f"status {response.status_code}")  # --hypothesis-show-statistics shows the mix
    assert response.status_code < 500, response.text
    if response.status_code != 202:
        assert 400 <= response.status_code < 500
        assert response.headers["content-type"].startswith("application/problem+json")
        assert publisher.records == [], "published something for a refused request"
        return
    items = sent["activities"] if isinstance(sent, dict) and "activities" in sent else [sent]
    expected = [ActivityV1.model_validate(item) for item in items]
    assert response.json() == {"accepted": [a.activity_id for a in expected]}
    assert len(publisher.records) == len(expected)
    for record, activity in zip(publisher.records, expected, strict=True):
        envelope = decode(
            topic=record.topic,
            partition=0,
            offset=0,
            key=record.key,
            value=record.value,
            headers=record.headers,
        )
        assert envelope.data == activity
        assert envelope.key == activity.actor.member_id
        assert envelope.id == derive_event_id("activity", activity.source, activity.activity_id)


@FUZZ
@given(body=BODY)
def test_any_json_body(gateway: tuple[TestClient, RecordingPublisher], body: Any) -> None:
    client, publisher = gateway
    publisher.records.clear()
    _check(client.post("/v1/activities", json=body), publisher, body)


def _with_non_finite(body: dict[str, Any], value: float) -> bytes:
    """Python's json writes NaN and Infinity, which JSON (RFC 8259) does not have."""
    return json.dumps({**body, "properties": {"score": value}}).encode()


NON_FINITE = st.builds(
    _with_non_finite, valid_activity(), st.sampled_from([float("nan"), float("inf")])
)


@FUZZ
@given(
    raw=st.binary(max_size=MAX_BYTES + 64) | TEXT.map(str.encode) | NON_FINITE,
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "application/cloudevents+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
            "application/json; boundary=\x00",
        ]
    ),
)
def test_any_bytes_under_any_content_type(
    gateway: tuple[TestClient, RecordingPublisher], raw: bytes, content_type: str
) -> None:
    client, publisher = gateway
    publisher.records.clear()
    response = client.post("/v1/activities", content=raw, headers={"content-type": content_type})
    try:
        sent = json.loads(raw)
    except ValueError:
        sent = None
    _check(response, publisher, sent)


@FUZZ
@given(member_id=st.text(max_size=60))
def test_any_member_id_in_the_journey_path(
    gateway: tuple[TestClient, RecordingPublisher], member_id: str
) -> None:
    client, _ = gateway
    response = client.get(f"/v1/members/{quote(member_id, safe='')}/journey")
    assert response.status_code < 500, response.text


def test_valid_activities_are_accepted_at_all(
    gateway: tuple[TestClient, RecordingPublisher],
) -> None:
    """The properties above say nothing if everything is refused: a plain valid one passes."""
    client, publisher = gateway
    publisher.records.clear()
    body = {
        "activity_id": "f-1",
        "occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "source": "discourse",
        "kind": "post",
        "actor": {"member_id": "m-1"},
    }
    response = client.post("/v1/activities", json=body)
    assert response.status_code == 202, response.text
    _check(response, publisher, body, fuzzed=False)
