"""The outbox relay gives up a producer that is stuck, and publishes through a fresh one; and
it vacuums the rows it deleted.

A producer that bootstrapped from a broker still starting up can be left with no broker to ask
(aiokafka logs "Unable to update metadata from []") and wait forever: its sends never complete
and it never finishes stopping. The crash test's own publisher was seen stuck so. The relay's
rounds are bounded; here the first producer is such a stuck one (a stand-in: a real broker
cannot be made to answer so on demand) and the database is the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.cloudevents import OutgoingRecord
from shared.outbox import OutboxRelay
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.uow import unit_of_work
from tests.conftest import Namespace

pytestmark = pytest.mark.integration


class StuckClient:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class StuckProducer:
    """Starts, accepts sends, acknowledges none, and never finishes stopping."""

    def __init__(self) -> None:
        self.client = StuckClient()
        self.sent = 0

    async def start(self) -> None:
        return None

    async def send(self, topic: str, **_: Any) -> asyncio.Future[Any]:
        self.sent += 1
        return asyncio.get_running_loop().create_future()

    async def stop(self) -> None:
        await asyncio.Event().wait()


class WorkingProducer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None]] = []

    async def start(self) -> None:
        return None

    async def send(self, topic: str, *, value: bytes | None, **_: Any) -> asyncio.Future[Any]:
        self.records.append((topic, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def stop(self) -> None:
        return None


@pytest.fixture
async def database(namespace: Namespace) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    url = await namespace.create_database("relay")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    await migrate(pool, [PLUMBING_MIGRATIONS])
    try:
        yield url, pool
    finally:
        await pool.close()


async def test_a_stuck_producer_is_replaced_and_every_row_goes_in_order(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = database
    async with unit_of_work(pool) as uow:
        for i in range(5):
            uow.emit(OutgoingRecord("signals.support", b"m-1", f"{i}".encode(), [], f"e{i}"))
    stuck, working = StuckProducer(), WorkingProducer()
    producers = iter([stuck, working])
    relay = OutboxRelay(
        service="relay-test",
        database_url=url,
        producer_factory=lambda: next(producers),
        round_timeout_s=0.5,
        retry_max_s=0.2,
    )
    relay.start()
    try:
        for _ in range(600):  # 30 s at most
            if not await pool.fetchval("SELECT count(*) FROM outbox"):
                break
            await asyncio.sleep(0.05)
    finally:
        await relay.stop(timeout_s=5)
    assert stuck.sent == 5, "the stuck producer was given the rows first"
    assert stuck.client.closed, "its connections were closed when it would not stop"
    assert working.records == [("signals.support", f"{i}".encode()) for i in range(5)]
    assert relay.published == 5


async def test_the_relay_vacuums_the_rows_it_deleted_and_every_row_still_goes_in_order(
    database: tuple[str, asyncpg.Pool],
) -> None:
    """Deleted rows stay in the table and its index until a vacuum, and every read from the
    outbox's head steps over them: the relay vacuums the outbox after every
    `vacuum_every_rows` rows it deleted (here 10). 25 rows published in rounds of 5: two
    vacuums (at 10 and 20; manual ones, which autovacuum's count leaves out), and every row
    published once, in order."""
    url, pool = database
    async with unit_of_work(pool) as uow:
        for i in range(25):
            uow.emit(OutgoingRecord("signals.support", b"m-1", f"{i}".encode(), [], f"e{i}"))
    working = WorkingProducer()
    relay = OutboxRelay(
        service="relay-vacuum-test",
        database_url=url,
        producer_factory=lambda: working,
        batch_size=5,
        vacuum_every_rows=10,
    )

    async def vacuums() -> int:
        return int(
            await pool.fetchval(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'"
            )
        )

    before = await vacuums()
    relay.start()
    try:
        for _ in range(600):  # 30 s at most
            if relay.published == 25:
                break
            await asyncio.sleep(0.05)
    finally:
        await relay.stop(timeout_s=5)
    assert working.records == [("signals.support", f"{i}".encode()) for i in range(25)]
    for _ in range(100):  # the statistics are written as each vacuum ends
        if await vacuums() - before >= 2:
            break
        await asyncio.sleep(0.05)
    assert await vacuums() - before == 2  # at 10 and at 20 rows deleted
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
