"""Reports cannot starve ingest or readiness: they read through a small pool of their own,
wait a bounded time for it (then 503 with Retry-After), and PostgreSQL cancels a report that
runs past its statement_timeout. Against a real PostgreSQL, with reports made slow by a
test-only `pg_sleep` in the table they read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import httpx
import pytest

from services.gateway import flywheel, identity
from services.gateway.bootstrap import SPEC, create_app
from services.gateway.journey.store import PgJourneyStore
from services.gateway.reports import ReportsDb
from shared import lifecycle
from shared.cloudevents import OutgoingRecord
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.settings import Settings
from tests.conftest import Namespace

pytestmark = pytest.mark.integration

API_KEY = "reports-pool-tests-key-8c41"
AUTH = {"x-api-key": API_KEY}


class Published:
    def __init__(self) -> None:
        self.records: list[OutgoingRecord] = []

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.records.extend(records)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": f"t={API_KEY}:ingest,read",
        "reports_pool_size": 2,
        "reports_acquire_timeout_s": 1.0,
        "reports_statement_timeout_s": 30.0,
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def database(namespace: Namespace) -> AsyncIterator[str]:
    url = await namespace.create_database("gateway")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    await migrate(pool, [PLUMBING_MIGRATIONS, lifecycle.MIGRATIONS, SPEC.migrations])
    # test-only: every read of member_stages takes half a second
    await pool.execute(
        "ALTER TABLE member_stages RENAME TO member_stages_data;"
        " CREATE VIEW member_stages AS SELECT s.* FROM member_stages_data s"
        " CROSS JOIN (SELECT pg_sleep(0.5)) AS slow;"
        " INSERT INTO member_stages_data (member_id, dimension, stage, since, score, event_id)"
        " SELECT 'm' || n, 'engagement', 'engaged', now(), 1.0, 'e' || n"
        " FROM generate_series(1, 50) AS n"
    )
    await pool.close()
    yield url


async def app_over(
    url: str, config: Settings
) -> AsyncIterator[tuple[Any, asyncpg.Pool, Published]]:
    main = await asyncpg.create_pool(url, min_size=1, max_size=4)  # the service's pool
    assert main is not None
    reports = ReportsDb(config)
    await reports.start(url)
    published = Published()

    async def readiness() -> dict[str, str]:
        async with asyncio.timeout(2):
            await main.fetchval("SELECT 1")
        return {}

    app = create_app(
        publisher=identity.GuardedPublisher(published, identity.IdentityStore(lambda: main)),
        journey=PgJourneyStore(reports.connection),
        readiness=readiness,
        settings=config,
    )
    app.include_router(flywheel.router(reports.connection))
    try:
        yield app, main, published
    finally:
        await reports.stop()
        await main.close()


def activity(n: int) -> dict[str, Any]:
    return {
        "activity_id": f"a-{n}",
        "occurred_at": "2026-01-05T09:00:00+00:00",
        "source": "discourse",
        "kind": "post",
        "actor": {"member_id": f"m-{n}"},
    }


async def test_twenty_slow_reports_leave_ingest_and_readiness_answering(database: str) -> None:
    async for app, main, published in app_over(database, settings()):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=AUTH, timeout=60
        ) as client:
            paths = ["/v1/stages"] * 15 + ["/v1/flywheel"] * 5
            reports = [asyncio.create_task(client.get(p)) for p in paths]
            await asyncio.sleep(0)  # let them start and take the reports' connections
            ingested = [
                (await client.post("/v1/activities", json=activity(n))).status_code
                for n in range(10)
            ]
            ready = await client.get("/readyz")
            report_connections = await main.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'flywheel-gateway-reports'"
            )
            still_running = sum(not t.done() for t in reports)
            answers = await asyncio.gather(*reports)
        assert ingested == [202] * 10
        assert ready.status_code == 200
        assert len(published.records) == 10
        assert still_running > 0, "ingest was answered while reports were still running"
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(200) >= 2
        busy = [a for a in answers if a.status_code == 503]
        assert busy, "20 half-second reports over 2 connections: some must be turned away"
        for answer in busy:
            assert answer.headers["retry-after"] == "1"
            assert answer.headers["content-type"] == "application/problem+json"
            assert "busy" in answer.json()["detail"]
        assert 1 <= report_connections <= 2  # the reports never held more than their own


async def test_a_report_past_its_statement_timeout_is_cancelled_with_503(database: str) -> None:
    config = settings(reports_statement_timeout_s=0.2)
    async for app, _main, _published in app_over(database, config):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=AUTH
        ) as client:
            response = await client.get("/v1/stages")
            again = await client.get("/v1/stages")  # the connection went back to the pool
    assert response.status_code == 503
    assert "took too long" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert again.status_code == 503


async def test_report_connections_are_read_only(database: str) -> None:
    reports = ReportsDb(settings())
    await reports.start(database)
    try:
        async with reports.connection() as conn:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await conn.execute("DELETE FROM member_stages_data")
    finally:
        await reports.stop()
