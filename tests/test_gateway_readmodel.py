"""The gateway against real servers: the journey projection's SQL on PostgreSQL, and the whole
runtime (one broker for intake and read model) on Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.gateway.bootstrap import SPEC, build_app, handle_batch
from services.gateway.journey import store
from shared.cloudevents import Envelope, derive_event_id, encode
from shared.contracts import STAGE_CHANGED, StageChangedV1
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.uow import unit_of_work
from tests.conftest import Namespace, envelopes, publish, read_topic
from tests.factories import T0

pytestmark = pytest.mark.integration


def transition(
    member: str,
    dimension: str,
    to_stage: str,
    *,
    hours: float,
    from_stage: str | None = None,
    score: float | None = None,
) -> StageChangedV1:
    return StageChangedV1.model_validate(
        {
            "member_id": member,
            "dimension": dimension,
            "from_stage": from_stage,
            "to_stage": to_stage,
            "reason": f"test: {to_stage}",
            "score": score,
            "occurred_at": T0 + timedelta(hours=hours),
            "caused_by": [f"a-{member}-{to_stage}"],
        }
    )


def envelope(data: StageChangedV1, offset: int = 0) -> Envelope:
    event_id = derive_event_id("test", data.member_id, data.dimension, data.to_stage)
    return Envelope(
        id=event_id,
        type=STAGE_CHANGED.type,
        source=f"/services/{data.dimension}",
        time=data.occurred_at,
        data=data,
        key=data.member_id,
        topic="journey-transitions",
        offset=offset,
    )


@pytest.fixture
async def pool(namespace: Namespace) -> AsyncIterator[asyncpg.Pool]:
    url = await namespace.create_database("gateway")
    created = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert created is not None
    await migrate(created, [PLUMBING_MIGRATIONS, SPEC.migrations])
    try:
        yield created
    finally:
        await created.close()


async def apply(pool: asyncpg.Pool, batch: list[Envelope]) -> None:
    """What BatchProcessor does with a batch: inbox, then the handler, in one transaction."""
    async with unit_of_work(pool) as uow:
        fresh = await uow.claim(batch)
        await handle_batch(uow, fresh)


async def test_current_stage_is_the_latest_by_event_time(pool: asyncpg.Pool) -> None:
    first = [
        envelope(transition("m-1", "awareness", "visitor", hours=0)),
        envelope(transition("m-1", "engagement", "engaged", hours=3)),
        # same event time as `visitor`, arrived later: the tie goes to it
        envelope(transition("m-1", "awareness", "member", hours=0, from_stage="visitor")),
        envelope(transition("m-2", "awareness", "member", hours=1)),
    ]
    late = [
        # older in event time than what is stored: kept in the timeline, not current
        envelope(transition("m-1", "engagement", "lurker", hours=2)),
        envelope(transition("m-1", "advocacy", "advocate", hours=5, score=7.5)),
    ]
    await apply(pool, first)
    await apply(pool, late)
    await apply(pool, first)  # a redelivery changes nothing

    async with pool.acquire() as conn:
        journey = await store.fetch_journey(conn, "m-1")
        counts = await store.fetch_stage_counts(conn)
        missing = await store.fetch_journey(conn, "m-404")
    assert journey is not None
    assert {d: s.stage for d, s in journey.stages.items()} == {
        "awareness": "member",
        "engagement": "engaged",
        "advocacy": "advocate",
    }
    assert journey.stages["advocacy"].score == 7.5
    assert journey.stages["engagement"].since == T0 + timedelta(hours=3)
    assert [t.to_stage for t in journey.timeline] == [
        "visitor",
        "member",
        "lurker",
        "engaged",
        "advocate",
    ]
    assert journey.timeline[0].caused_by == ["a-m-1-visitor"]
    assert counts.members == 2
    assert counts.dimensions == {
        "awareness": {"member": 2},
        "engagement": {"engaged": 1},
        "advocacy": {"advocate": 1},
    }
    assert missing is None


async def _wait_for(client: httpx.AsyncClient, path: str, timeout_s: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await client.get(path)
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 404, response.text
        assert asyncio.get_running_loop().time() < deadline, f"{path} still 404"
        await asyncio.sleep(0.1)


async def test_the_gateway_publishes_activities_and_projects_transitions(
    namespace: Namespace,
) -> None:
    key = "readmodel-test-key-0123456789"
    settings = namespace.settings(
        await namespace.create_database("gateway"), api_keys=f"t={key}:ingest,read"
    )
    app = build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {key}"},
        ) as client,
    ):
        assert (await client.get("/readyz")).json() == {"status": "ready", "problems": {}}
        activity = {
            "activity_id": "a-1",
            "occurred_at": T0.isoformat(),
            "source": "discourse",
            "kind": "signup",
            "actor": {"member_id": "m-1"},
        }
        response = await client.post("/v1/activities", json={"activities": [activity]})
        assert response.status_code == 202, response.text

        [published] = envelopes(await read_topic(namespace, "member-activity", until=1))
        assert published.id == derive_event_id("activity", "discourse", "a-1")
        assert published.source == "/gateway" and published.key == "m-1"

        data = transition("m-1", "awareness", "member", hours=0)
        await publish(
            namespace,
            [encode(STAGE_CHANGED, data, event_id="t-1", source="/services/awareness")],
        )
        journey = await _wait_for(client, "/v1/members/m-1/journey")
        assert journey["stages"]["awareness"]["stage"] == "member"
        stages = (await client.get("/v1/stages")).json()
        assert stages["dimensions"]["awareness"] == {"member": 1}
