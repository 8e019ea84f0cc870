"""A loop in a thread of its own (`shared.loopthread`), and a batch processor whose transactions
run on it (`BatchProcessor.on_loop`, the gateway's read model with
FLYWHEEL_READ_MODEL_OWN_LOOP): the work runs on that thread, its outcome and its failures come
back to the caller, cancellation and context variables carry over, and a batch applied there is
as durable and as deduplicated as one applied on the caller's loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from shared.cloudevents import Envelope, encode
from shared.consumer import BatchProcessor
from shared.contracts import ACTIVITY
from shared.loopthread import LoopThread
from shared.postgres import PLUMBING_MIGRATIONS, create_pool, migrate
from shared.uow import UnitOfWork
from tests.conftest import Namespace
from tests.factories import activity

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


@pytest.fixture
async def thread() -> AsyncIterator[LoopThread]:
    t = LoopThread("test-loop")
    t.start()
    try:
        yield t
    finally:
        await t.stop()


async def _where() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


async def test_work_runs_on_the_thread_and_its_result_comes_back(thread: LoopThread) -> None:
    assert await thread.run(_where()) == "test-loop"
    assert threading.current_thread().name != "test-loop"


async def test_a_failure_comes_back_to_the_caller(thread: LoopThread) -> None:
    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await thread.run(fail())
    assert await thread.run(_where()) == "test-loop"  # the loop lives on


async def test_context_variables_carry_over(thread: LoopThread) -> None:
    async def read() -> str:
        return VAR.get()

    VAR.set("from the caller")
    assert await thread.run(read()) == "from the caller"


async def test_cancelling_the_caller_cancels_the_work(thread: LoopThread) -> None:
    began = threading.Event()
    cancelled = threading.Event()

    async def forever() -> None:
        began.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.create_task(thread.run(forever()))
    await asyncio.to_thread(began.wait, 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await asyncio.to_thread(cancelled.wait, 5)


async def test_a_stopped_thread_refuses_work() -> None:
    t = LoopThread("test-stopped")
    t.start()
    await t.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await t.run(_where())


# --------------------------------------------------------------------------------------------
# a batch processor on its own loop, against PostgreSQL
# --------------------------------------------------------------------------------------------


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int | None = None


def _records(n: int) -> list[_Record]:
    out = []
    for i in range(n):
        a = activity(f"m-{i % 3}", "post", activity_id=f"a-{i}")
        r = encode(ACTIVITY, a, event_id=f"e-{i}", source="/test")
        out.append(_Record("member-activity", 0, i, r.key, r.value, list(r.headers)))
    return out


@pytest.mark.integration
async def test_a_processor_on_its_own_loop_applies_durably_once(
    namespace: Namespace, thread: LoopThread
) -> None:
    url = await namespace.create_database("loopthread")
    setup = await create_pool(url, max_size=1)
    await migrate(setup, [PLUMBING_MIGRATIONS])
    await setup.execute("CREATE TABLE seen (event_id text PRIMARY KEY, thread text NOT NULL)")
    handled_on: list[str] = []
    committed_on: list[str] = []

    async def handle(uow: UnitOfWork, events: list[Envelope]) -> None:
        handled_on.append(threading.current_thread().name)
        await uow.conn.executemany(
            "INSERT INTO seen VALUES ($1, $2)",
            [(e.id, threading.current_thread().name) for e in events],
        )

    processor = BatchProcessor(
        service="test",
        pool=setup,
        handle_batch=handle,
        on_committed=lambda: committed_on.append(threading.current_thread().name),
    )
    pool: asyncpg.Pool = await thread.run(create_pool(url, max_size=2))
    moved = processor.on_loop(thread, pool)
    try:
        records = _records(5)
        await moved.process(records)
        await moved.process(records[2:])  # a redelivery: the inbox drops it
        await asyncio.sleep(0.05)  # on_committed is called soon, on this loop
        rows = await setup.fetch("SELECT event_id, thread FROM seen ORDER BY event_id")
        inbox = await setup.fetchval("SELECT count(*) FROM inbox")
    finally:
        await thread.run(pool.close())
        await setup.close()
    assert [r["event_id"] for r in rows] == [f"e-{i}" for i in range(5)]
    assert {r["thread"] for r in rows} == {"test-loop"}
    assert handled_on == ["test-loop"]  # the redelivery had nothing fresh
    assert inbox == 5
    assert committed_on == [threading.current_thread().name] * 2
    # counters are the original processor's: what the metrics and the operator CLI read
    assert processor.stats.applied == 5
    assert processor.stats.duplicates == 3
    assert processor.stats.batches == 2
