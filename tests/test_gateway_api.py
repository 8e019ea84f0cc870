"""The gateway's HTTP API with in-memory fakes: no Kafka, no PostgreSQL.

What a client sends is either accepted whole (every activity acknowledged by the broker) or
refused whole with a problem document naming each bad field; never a 5xx for its own mistake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi.testclient import TestClient

from services.gateway.bootstrap import create_app
from services.gateway.http.asyncapi import build_asyncapi
from services.gateway.http.problems import Unavailable
from services.gateway.ingest.intake import body_location, to_records
from services.gateway.ingest.publisher import KafkaActivityPublisher
from services.gateway.journey.models import MemberJourney, StageCounts, StageView, TimelineEntry
from shared.cloudevents import OutgoingRecord, decode, derive_event_id
from shared.contracts import EVENT_TYPES, ActivityV1
from shared.settings import Settings
from shared.topics import DATA_TOPICS

MAX_BYTES = 4096
MAX_ITEMS = 5
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
API_KEY = "test-key-with-every-scope"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
"""What a test client sends: access itself is tested in test_access.py."""


class RecordingPublisher:
    """Keeps what it was asked to publish; fails on demand like an unreachable broker."""

    def __init__(self) -> None:
        self.records: list[OutgoingRecord] = []
        self.fail = False

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if self.fail:
            raise Unavailable("kafka", "KafkaConnectionError")
        self.records.extend(records)


class FakeJourney:
    def __init__(self) -> None:
        self.journeys: dict[str, MemberJourney] = {}
        self.down = False

    async def member_journey(self, member_id: str) -> MemberJourney | None:
        if self.down:
            raise Unavailable("database", "ConnectionRefusedError")
        return self.journeys.get(member_id)

    async def stage_counts(self) -> StageCounts:
        return StageCounts(
            members=2,
            dimensions={"awareness": {"member": 2}, "engagement": {"engaged": 1}, "advocacy": {}},
        )


class Readiness:
    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    async def __call__(self) -> dict[str, str]:
        return self.problems


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "max_request_bytes": MAX_BYTES,
        "max_batch_items": MAX_ITEMS,
        "topic_prefix": "",
        "kafka_bootstrap_servers": "kafka-1:9092,kafka-2:9092",
        "api_keys": f"tests={API_KEY}:ingest,read,admin",
    }
    return Settings(**(values | overrides))


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def journey() -> FakeJourney:
    return FakeJourney()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
def client(
    publisher: RecordingPublisher, journey: FakeJourney, readiness: Readiness
) -> Iterator[TestClient]:
    app = create_app(publisher=publisher, journey=journey, readiness=readiness, settings=settings())
    with TestClient(app, raise_server_exceptions=False, headers=AUTH) as test_client:
        yield test_client


def activity(n: int = 1, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "activity_id": f"a-{n}",
        "occurred_at": "2026-01-05T09:00:00+00:00",
        "source": "discourse",
        "kind": "post",
        "actor": {"member_id": f"m-{n}"},
    }
    body.update(overrides)
    return body


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] and body["title"] and body["detail"]
    return body


def pointers(problem: dict[str, Any]) -> dict[str, str]:
    return {e["pointer"]: e["detail"] for e in problem["errors"]}


# ---- accepting --------------------------------------------------------------------------------


def test_one_activity_is_published_as_one_cloudevent(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    response = client.post("/v1/activities", json=activity(1))

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": ["a-1"]}
    [record] = publisher.records
    assert record.topic == "member-activity"
    assert record.key == b"m-1"
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"community.activity.v1"
    assert headers["ce_source"] == b"/gateway"
    assert headers["ce_id"] == derive_event_id("activity", "discourse", "a-1").encode()
    assert headers["ce_subject"] == b"m-1"
    assert headers["ce_time"] == b"2026-01-05T09:00:00+00:00"
    assert headers["content-type"] == b"application/json"
    envelope = decode(
        topic=record.topic,
        partition=0,
        offset=0,
        key=record.key,
        value=record.value,
        headers=record.headers,
    )
    assert envelope.data == ActivityV1.model_validate(activity(1))


def test_resending_an_activity_repeats_its_event_id(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    for _ in range(2):
        assert client.post("/v1/activities", json=activity(1)).status_code == 202
    first, second = publisher.records
    assert dict(first.headers)["ce_id"] == dict(second.headers)["ce_id"]


def test_a_batch_is_published_in_order(client: TestClient, publisher: RecordingPublisher) -> None:
    response = client.post("/v1/activities", json={"activities": [activity(n) for n in (1, 2, 3)]})

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": ["a-1", "a-2", "a-3"]}
    assert [r.key for r in publisher.records] == [b"m-1", b"m-2", b"m-3"]


def test_json_with_a_charset_or_a_json_suffix_is_json(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/cloudevents+json"):
        response = client.post(
            "/v1/activities",
            content=json.dumps(activity(1)),
            headers={"content-type": content_type},
        )
        assert response.status_code == 202, response.text
    assert len(publisher.records) == 2


# ---- refusing: validation -------------------------------------------------------------------


def test_one_bad_item_refuses_the_whole_batch(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    bad = activity(2)
    del bad["actor"]["member_id"]
    response = client.post("/v1/activities", json={"activities": [activity(1), bad, activity(3)]})

    problem = assert_problem(response, 422)
    assert pointers(problem) == {"/activities/1/actor/member_id": "Field required"}
    assert publisher.records == []


def test_every_bad_item_of_a_batch_is_named(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    items = [activity(0, kind="Bad Kind"), activity(1), activity(2, source=7)]
    response = client.post("/v1/activities", json={"activities": items})

    problem = assert_problem(response, 422)
    assert set(pointers(problem)) == {"/activities/0/kind", "/activities/2/source"}
    assert "2 of 3 activities" in problem["detail"]
    assert publisher.records == []


def _without_member(body: dict[str, Any]) -> None:
    del body["actor"]["member_id"]


def _naive_time(body: dict[str, Any]) -> None:
    body["occurred_at"] = "2026-01-05T09:00:00"


@pytest.mark.parametrize(
    ("change", "pointer", "says"),
    [
        pytest.param(_without_member, "/actor/member_id", "Field required", id="missing"),
        pytest.param(
            lambda b: b.update(actor="m-1"), "/actor", "valid dictionary", id="wrong-type"
        ),
        pytest.param(
            lambda b: b["actor"].update(is_bot="perhaps"), "/actor/is_bot", "boolean", id="bool"
        ),
        pytest.param(lambda b: b.update(kind="Page-View"), "/kind", "lower_snake_case", id="kind"),
        pytest.param(
            lambda b: b.update(colour="blue"), "/colour", "Extra inputs", id="extra-field"
        ),
        pytest.param(
            lambda b: b["actor"].update(nick="ada"), "/actor/nick", "Extra inputs", id="extra-deep"
        ),
        pytest.param(_naive_time, "/occurred_at", "timezone", id="naive-time"),
        pytest.param(
            lambda b: b.update(activity_id="has space"), "/activity_id", "pattern", id="id-pattern"
        ),
    ],
)
def test_each_invalid_field_is_named_by_a_json_pointer(
    client: TestClient, publisher: RecordingPublisher, change: Any, pointer: str, says: str
) -> None:
    body = activity(1)
    change(body)
    single = assert_problem(client.post("/v1/activities", json=body), 422)
    batch = assert_problem(
        client.post("/v1/activities", json={"activities": [activity(0), body]}), 422
    )

    assert list(pointers(single)) == [pointer]
    assert says in pointers(single)[pointer]
    assert list(pointers(batch)) == ["/activities/1" + pointer]
    assert publisher.records == []


def test_pointer_segments_are_escaped(client: TestClient) -> None:
    response = client.post("/v1/activities", json=activity(1, **{"a/b~c": 1}))
    assert list(pointers(assert_problem(response, 422))) == ["/a~1b~0c"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        pytest.param([activity(1)], "", id="array"),
        pytest.param("post", "", id="string"),
        pytest.param({"activities": []}, "/activities", id="empty-batch"),
        pytest.param({"activities": activity(1)}, "/activities", id="batch-not-a-list"),
        pytest.param({"activities": [activity(1)], "more": 1}, "/more", id="batch-extra-field"),
        pytest.param(
            {"activities": [activity(n) for n in range(MAX_ITEMS + 1)]},
            "/activities",
            id="too-many-items",
        ),
    ],
)
def test_bodies_of_the_wrong_shape_are_refused(
    client: TestClient, publisher: RecordingPublisher, body: Any, pointer: str
) -> None:
    problem = assert_problem(client.post("/v1/activities", json=body), 422)
    assert pointer in pointers(problem)
    assert publisher.records == []


def test_the_same_activity_twice_in_a_batch_is_refused(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    items = [activity(1), activity(2), activity(1, kind="reply")]
    problem = assert_problem(client.post("/v1/activities", json={"activities": items}), 422)
    assert pointers(problem) == {
        "/activities/2/activity_id": "same source and activity_id as /activities/0"
    }
    assert publisher.records == []


# ---- refusing: transport --------------------------------------------------------------------


def test_an_oversized_body_is_refused_by_its_declared_length(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    body = activity(1, properties={"text": "x" * MAX_BYTES})
    assert_problem(client.post("/v1/activities", json=body), 413)
    assert publisher.records == []


def test_an_oversized_body_is_refused_by_what_arrives(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    """Chunked, without Content-Length: the limit applies to the bytes actually read."""

    def chunks() -> Iterator[bytes]:
        yield b'{"activity_id": "a-1", "properties": {"text": "'
        for _ in range(MAX_BYTES // 512 + 1):
            yield b"x" * 512
        yield b'"}}'

    response = client.post(
        "/v1/activities", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    assert publisher.records == []


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b'{"activity_id": "a-1",}', b"\xff\xfe"], ids=repr
)
def test_a_body_that_is_not_json_is_a_bad_request(
    client: TestClient, publisher: RecordingPublisher, raw: bytes
) -> None:
    response = client.post(
        "/v1/activities", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(response, 400)
    assert publisher.records == []


def test_a_body_not_declared_as_json_is_unsupported(client: TestClient) -> None:
    response = client.post(
        "/v1/activities", content=json.dumps(activity(1)), headers={"content-type": "text/plain"}
    )
    assert_problem(response, 415)


def test_a_nonsense_content_length_is_a_bad_request(client: TestClient) -> None:
    response = client.post(
        "/v1/activities",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": "lots"},
    )
    assert_problem(response, 400)


def test_union_tags_are_not_part_of_a_pointer() -> None:
    body = {"properties": {"x": [[1]]}, "actor": {}}
    loc = ("properties", "x", "list[...]", 0, "list[...]", 0, "str")
    assert body_location(body, loc) == ["properties", "x", 0, 0]
    assert body_location(body, ("actor", "member_id")) == ["actor", "member_id"]


def test_unknown_routes_and_methods_answer_problems(client: TestClient) -> None:
    assert_problem(client.get("/v1/nothing"), 404)
    response = client.get("/v1/activities")
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]


# ---- the broker -------------------------------------------------------------------------------


def test_an_unavailable_broker_is_a_503_to_retry(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    publisher.fail = True
    response = client.post("/v1/activities", json={"activities": [activity(1), activity(2)]})

    problem = assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0
    assert "accepted" not in problem
    assert publisher.records == []


class FakeProducer:
    """Stands in for aiokafka's AIOKafkaProducer: `send` enqueues the record and returns the
    future of its acknowledgement; `stop` records that it was stopped."""

    def __init__(self, fail_on: set[bytes] | None = None, delay_s: float = 0.0) -> None:
        self.fail_on = fail_on or set()
        self.delay_s = delay_s
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self,
        topic: str,
        *,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> asyncio.Future[None]:
        self.sent.append((topic, value, key, dict(headers)))
        return asyncio.ensure_future(self._ack(key))

    async def _ack(self, key: bytes | None) -> None:
        await asyncio.sleep(self.delay_s)
        if key in self.fail_on:
            raise KafkaConnectionError("no broker")


async def _started(producer: FakeProducer, **options: Any) -> KafkaActivityPublisher:
    publisher = KafkaActivityPublisher(lambda: producer, **options)
    await publisher.start()
    return publisher


def _records(*members: str) -> list[OutgoingRecord]:
    activities = [ActivityV1.model_validate(activity(1, actor={"member_id": m})) for m in members]
    return to_records(
        [a.model_copy(update={"activity_id": f"a-{i}"}) for i, a in enumerate(activities)],
        batch=True,
    )


async def test_the_kafka_publisher_sends_every_record_to_the_prefixed_topic() -> None:
    producer = FakeProducer()
    publisher = await _started(producer, topic_prefix="staging.")
    assert producer.started
    await publisher.publish(_records("m-1", "m-2"))

    assert [key for _, _, key, _ in producer.sent] == [b"m-1", b"m-2"]  # in request order
    assert {topic for topic, *_ in producer.sent} == {"staging.member-activity"}
    assert all(h["ce_type"] == b"community.activity.v1" for *_, h in producer.sent)
    await publisher.stop()
    assert producer.stopped


async def test_the_kafka_publisher_reports_a_broker_fault_as_unavailable() -> None:
    publisher = await _started(FakeProducer(fail_on={b"m-2"}))
    with pytest.raises(Unavailable):
        await publisher.publish(_records("m-1", "m-2", "m-3"))


async def test_the_kafka_publisher_gives_up_after_its_timeout() -> None:
    publisher = await _started(FakeProducer(delay_s=5), timeout_s=0.05)
    with pytest.raises(Unavailable, match="did not acknowledge"):
        await publisher.publish(_records("m-1"))


async def test_the_kafka_publisher_before_start_or_after_stop_is_unavailable() -> None:
    producer = FakeProducer()
    publisher = KafkaActivityPublisher(lambda: producer)
    with pytest.raises(Unavailable, match="not connected"):
        await publisher.publish(_records("m-1"))
    await publisher.start()
    await publisher.stop()
    with pytest.raises(Unavailable, match="not connected"):
        await publisher.publish(_records("m-1"))
    assert producer.sent == []


# ---- the journey read model -------------------------------------------------------------------


def test_a_members_journey(client: TestClient, journey: FakeJourney) -> None:
    journey.journeys["team/ada"] = MemberJourney(
        member_id="team/ada",
        stages={"awareness": StageView(stage="member", since=T0, score=None)},
        timeline=[
            TimelineEntry(
                dimension="awareness",
                from_stage=None,
                to_stage="member",
                reason="signed up",
                score=None,
                occurred_at=T0,
                caused_by=["a-1"],
            )
        ],
    )
    response = client.get("/v1/members/team/ada/journey")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["member_id"] == "team/ada"
    assert body["stages"]["awareness"]["stage"] == "member"
    assert body["timeline"][0] == {
        "dimension": "awareness",
        "from_stage": None,
        "to_stage": "member",
        "reason": "signed up",
        "score": None,
        "occurred_at": "2026-01-05T09:00:00Z",
        "caused_by": ["a-1"],
    }


def test_an_unknown_member_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/members/m-404/journey"), 404)


def test_an_unreachable_read_model_is_a_503(client: TestClient, journey: FakeJourney) -> None:
    journey.down = True
    response = client.get("/v1/members/m-1/journey")
    assert_problem(response, 503)
    assert "retry-after" in response.headers


def test_stage_counts(client: TestClient) -> None:
    response = client.get("/v1/stages")
    assert response.status_code == 200
    assert response.json()["dimensions"]["awareness"] == {"member": 2}


# ---- operations ------------------------------------------------------------------------------


def test_health_and_readiness(client: TestClient, readiness: Readiness) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").status_code == 200

    readiness.problems = {"kafka": "KafkaConnectionError: kafka-1.internal:9092 refused"}
    response = client.get("/readyz")
    assert response.status_code == 503
    # what is not ready, never why: the detail (hosts, exception text) is in the log only
    assert response.json() == {"status": "not ready", "problems": {"kafka": "unavailable"}}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_lists_every_topic_and_event_type(client: TestClient) -> None:
    document = client.get("/asyncapi.json").json()

    assert document["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in document["channels"].values()}
    assert {t.name for t in DATA_TOPICS} <= addresses
    messages = {m["name"]: m for m in document["components"]["messages"].values()}
    assert set(EVENT_TYPES) <= set(messages)
    for event_type in EVENT_TYPES.values():
        message = messages[event_type.type]
        assert message["headers"]["properties"]["ce_type"]["const"] == event_type.type
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        payload = _resolve(document, message["payload"]["$ref"])
        assert set(payload["required"]) <= set(event_type.model.model_fields)
    for ref in _refs(document):
        _resolve(document, ref)


def test_asyncapi_addresses_carry_the_topic_prefix() -> None:
    document = build_asyncapi(topic_prefix="staging.")
    assert {f"staging.{t.name}" for t in DATA_TOPICS} <= {
        c["address"] for c in document["channels"].values()
    }


def test_openapi_documents_the_activity_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()

    assert document["info"]["title"] == "Community flywheel gateway"
    post = document["paths"]["/v1/activities"]["post"]
    assert {"202", "400", "413", "415", "422", "503"} <= set(post["responses"])
    schemas = document["components"]["schemas"]
    assert {"ActivityV1", "ActivityBatch", "Problem"} <= set(schemas)
    for ref in _refs(document):
        _resolve(document, ref)


# ---- identity resolution on request (what `flywheel import` asks for) -------------------------


def test_resolve_identities_without_an_identity_store_is_refused(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    response = client.post("/v1/activities?resolve_identities=true", json=activity())
    assert_problem(response, 501)
    assert publisher.records == []


def test_resolve_identities_goes_through_the_resolver_per_source_in_order(
    publisher: RecordingPublisher, journey: FakeJourney, readiness: Readiness
) -> None:
    calls: list[tuple[str, list[str]]] = []

    async def resolve(platform: str, activities: list[ActivityV1]) -> list[ActivityV1]:
        calls.append((platform, [a.activity_id for a in activities]))
        return [
            a.model_copy(update={"actor": a.actor.model_copy(update={"member_id": "m-linked"})})
            for a in activities
        ]

    app = create_app(
        publisher=publisher,
        journey=journey,
        readiness=readiness,
        settings=settings(),
        resolve=resolve,
    )
    batch = {
        "activities": [
            activity(1, source="github"),
            activity(2, source="slack"),
            activity(3, source="github"),
        ]
    }
    with TestClient(app, raise_server_exceptions=False, headers=AUTH) as test_client:
        plain = test_client.post("/v1/activities", json=batch)
        assert plain.status_code == 202, plain.text
        assert calls == []  # not asked: member ids as sent
        resolved = test_client.post("/v1/activities?resolve_identities=true", json=batch)
        assert resolved.status_code == 202, resolved.text
    assert resolved.json() == {"accepted": ["a-1", "a-2", "a-3"]}
    assert calls == [("github", ["a-1", "a-3"]), ("slack", ["a-2"])]
    keys = [r.key for r in publisher.records]
    assert keys == [b"m-1", b"m-2", b"m-3", b"m-linked", b"m-linked", b"m-linked"]
    ids = [json.loads(r.value)["activity_id"] for r in publisher.records[3:]]
    assert ids == ["a-1", "a-2", "a-3"]  # the request's order


# ---- times in the future ----------------------------------------------------------------------


def test_an_activity_from_the_future_is_refused(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    """One activity dated 2099 would move every service's clock past every deadline."""
    problem = assert_problem(
        client.post("/v1/activities", json=activity(1, occurred_at="2099-01-01T00:00:00Z")), 422
    )
    assert list(pointers(problem)) == ["/occurred_at"]
    assert "ahead of the gateway's clock" in pointers(problem)["/occurred_at"]
    assert publisher.records == []


def test_a_batch_with_one_activity_from_the_future_is_refused_whole(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    now = datetime.now(UTC)
    items = [
        activity(0, occurred_at=(now + timedelta(seconds=60)).isoformat()),  # a fast clock: fine
        activity(1, occurred_at=(now + timedelta(hours=1)).isoformat()),
        activity(2),
    ]
    problem = assert_problem(client.post("/v1/activities", json={"activities": items}), 422)
    assert list(pointers(problem)) == ["/activities/1/occurred_at"]
    assert publisher.records == []

    del items[1]
    assert client.post("/v1/activities", json={"activities": items}).status_code == 202
    assert len(publisher.records) == 2


def test_the_future_margin_is_a_setting(publisher: RecordingPublisher) -> None:
    app = create_app(
        publisher=publisher,
        journey=FakeJourney(),
        readiness=Readiness(),
        settings=settings(max_future_s=7200),
    )
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with TestClient(app, raise_server_exceptions=False, headers=AUTH) as client:
        response = client.post("/v1/activities", json=activity(1, occurred_at=in_an_hour))
    assert response.status_code == 202, response.text


def test_unknown_fields_stay_refused_though_consumers_ignore_them(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    """The tolerant reading of events (shared.cloudevents.validate_tolerantly) is for
    consumers; the public API still names a field it does not know. The same fields as
    tests/test_poison.py::test_a_v1_event_with_fields_added_by_a_newer_producer_is_applied."""
    body = activity(1, channel="forum", target={"thread_id": "t-1", "thread_tags": ["kafka"]})
    body["actor"]["pronouns"] = "she/her"
    problem = assert_problem(client.post("/v1/activities", json=body), 422)
    assert set(pointers(problem)) == {"/channel", "/actor/pronouns", "/target/thread_tags"}
    assert all("Extra inputs" in detail for detail in pointers(problem).values())
    assert publisher.records == []
