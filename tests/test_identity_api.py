"""The identity routes over HTTP, without servers: who may call them, what a bad request gets,
and the guarded publisher in front of the broker."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from services.gateway import identity
from services.gateway.bootstrap import create_app
from shared.cloudevents import encode
from shared.contracts import ACTIVITY, CLOCK_TICK, ClockTickV1
from tests.factories import T0, activity
from tests.test_gateway_api import FakeJourney, Readiness, RecordingPublisher, settings

ADMIN = "identity-admin-key-0001"
READER = "identity-reader-key-001"


class NoDatabase(identity.IdentityStore):
    """Every call that reaches the store fails like an unreachable database."""

    def __init__(self) -> None:
        super().__init__(lambda: None)


@pytest.fixture
def client() -> TestClient:
    app = create_app(
        publisher=RecordingPublisher(),
        journey=FakeJourney(),
        readiness=Readiness(),
        settings=settings(api_keys=f"admin={ADMIN}:admin;reader={READER}:read,ingest"),
    )
    app.include_router(identity.router(NoDatabase()))
    return TestClient(app, raise_server_exceptions=False)


def test_linking_listing_and_erasing_need_the_admin_scope(client: TestClient) -> None:
    body = {"platform": "github", "platform_user_id": "1"}
    calls = [
        ("POST", "/v1/members/m-1/identities", body),
        ("GET", "/v1/members/m-1/identities", None),
        ("DELETE", "/v1/members/m-1", None),
    ]
    for method, path, json in calls:
        assert client.request(method, path, json=json).status_code == 401, path
        reader = {"Authorization": f"Bearer {READER}"}
        assert client.request(method, path, json=json, headers=reader).status_code == 403, path
        admin = {"Authorization": f"Bearer {ADMIN}"}
        answered = client.request(method, path, json=json, headers=admin)
        assert answered.status_code == 503, (path, answered.text)  # past auth: the store
        assert answered.headers["content-type"].startswith("application/problem+json")


def test_a_bad_link_request_names_the_field(client: TestClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    bad = client.post(
        "/v1/members/m-1/identities",
        json={"platform": "GitHub!", "platform_user_id": "", "email": "not-an-email"},
        headers=admin,
    )
    assert bad.status_code == 422
    pointers = {e["pointer"] for e in bad.json()["errors"]}
    assert pointers == {"/platform", "/platform_user_id", "/email"}
    unknown = client.post(
        "/v1/members/m-1/identities",
        json={"platform": "github", "platform_user_id": "1", "handle": "x"},
        headers=admin,
    )
    assert unknown.status_code == 422


def test_hashes_name_nothing_and_normalise_emails() -> None:
    assert identity.email_hash(" Ada@Example.COM ") == identity.email_hash("ada@example.com")
    assert identity.identity_hash("github", "1") != identity.identity_hash("github", "2")
    assert "ada" not in identity.email_hash("ada@example.com")
    assert identity.derived_member_id("slack", "U1") == "slack:U1"


class Blocking(identity.IdentityStore):
    """Blocks the activities of member `m-erased` (what the database would say)."""

    def __init__(self) -> None:
        super().__init__(lambda: None)

    async def blocked(self, screened: Sequence[identity.Screened]) -> list[bool]:
        return [s.record.key == b"m-erased" for s in screened]


async def test_the_guarded_publisher_drops_blocked_activities_and_publishes_the_rest() -> None:
    inner = RecordingPublisher()
    guarded = identity.GuardedPublisher(inner, Blocking())
    records = [
        encode(ACTIVITY, activity(m, "post"), event_id=f"e-{m}", source="/t")
        for m in ("m-1", "m-erased", "m-2")
    ]
    await guarded.publish(records)
    assert [r.key for r in inner.records] == [b"m-1", b"m-2"]
    inner.records.clear()
    await guarded.publish(records[1:2])  # all blocked: nothing reaches the broker
    assert inner.records == []


async def test_only_activities_are_checked() -> None:
    tick = encode(CLOCK_TICK, ClockTickV1(occurred_at=T0), event_id="tick", source="/gateway")
    assert await NoDatabase().blocked([identity.screen(tick)]) == [
        False
    ]  # no database needed for a tick
