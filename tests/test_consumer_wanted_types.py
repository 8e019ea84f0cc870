"""A consumer that acts on some event types only (`BatchProcessor(wanted_types=...)`, the
gateway's webhook fan-out) leaves the others undecoded, on real PostgreSQL: they reach neither
the handler, nor the inbox, nor the dead letters; a record without a readable type is still
decoded and dead-lettered; and a type that became wanted between reading a batch and applying
it is decoded then, in the order the batch was read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import pytest

from shared.cloudevents import Envelope, OutgoingRecord, derive_event_id, encode
from shared.consumer import BatchProcessor
from shared.contracts import PEER_HELP, STAGE_CHANGED, PeerHelpV1, StageChangedV1
from shared.postgres import PLUMBING_MIGRATIONS, Connection, migrate
from shared.uow import UnitOfWork
from tests.conftest import Namespace
from tests.factories import T0

pytestmark = pytest.mark.integration


@dataclass
class Record:
    """An aiokafka ConsumerRecord's fields that the processor reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int | None = None


def _read(out: OutgoingRecord, offset: int) -> Record:
    return Record(out.topic, 0, offset, out.key, out.value, list(out.headers))


def transition(member: str, offset: int) -> Record:
    data = StageChangedV1(
        member_id=member,
        dimension="engagement",
        from_stage=None,
        to_stage="engaged",
        reason="test",
        occurred_at=T0 + timedelta(hours=offset),
    )
    event_id = derive_event_id("test", "transition", member, str(offset))
    return _read(encode(STAGE_CHANGED, data, event_id=event_id, source="/t"), offset)


def peer_help(member: str, offset: int) -> Record:
    data = PeerHelpV1(
        helper_member_id=member,
        helped_member_id="asker",
        thread_id="t-1",
        url=None,
        accepted=True,
        occurred_at=T0 + timedelta(hours=offset),
        activity_id=f"a-{offset}",
    )
    event_id = derive_event_id("test", "help", member, str(offset))
    return _read(encode(PEER_HELP, data, event_id=event_id, source="/t"), offset)


@pytest.fixture
async def pool(namespace: Namespace) -> AsyncIterator[asyncpg.Pool]:
    url = await namespace.create_database("wanted")
    created = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert created is not None
    await migrate(created, [PLUMBING_MIGRATIONS])
    try:
        yield created
    finally:
        await created.close()


async def test_unwanted_types_are_left_undecoded_and_a_newly_wanted_one_is_decoded_late(
    pool: asyncpg.Pool,
) -> None:
    wanted = {STAGE_CHANGED.type}
    looks = 0
    seen: list[list[tuple[str, int]]] = []

    async def wanted_types(conn: Connection) -> frozenset[str]:
        nonlocal looks
        looks += 1
        return frozenset(wanted)

    async def handle(uow: UnitOfWork, events: list[Envelope]) -> None:
        seen.append([(e.type, e.offset) for e in events])

    processor = BatchProcessor(
        service="fanout-test", pool=pool, handle_batch=handle, wanted_types=wanted_types
    )
    help_type = PEER_HELP.type

    # Before its first look, the processor decodes everything, as without a filter.
    first = [transition("ada", 0), peer_help("bob", 1)]
    await processor.process(first)
    assert seen == [[(STAGE_CHANGED.type, 0), (help_type, 1)]]
    assert looks == 1

    # Now it knows peer help is not wanted: neither decoded, nor claimed, nor dead-lettered,
    # even when its value is not an event at all; a record without a type still is.
    broken_help = peer_help("cy", 4)
    broken_help.value = b"{not json"
    untyped = transition("dee", 5)
    untyped.headers = [(n, v) for n, v in untyped.headers if n != "ce_type"]
    second = [transition("ada", 2), peer_help("bob", 3), broken_help, untyped]
    await processor.process(second)
    assert seen[-1] == [(STAGE_CHANGED.type, 2)]
    async with pool.acquire() as conn:
        claimed = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM inbox")}
        dead = await conn.fetch("SELECT topic, key FROM outbox ORDER BY seq")
    help_ids = {derive_event_id("test", "help", m, str(o)) for m, o in (("bob", 3), ("cy", 4))}
    assert not claimed & help_ids
    assert [(r["topic"], r["key"]) for r in dead] == [("journey-transitions.dlq", b"dee")]
    assert processor.stats.consumed == 6 and processor.stats.applied == 3

    # Read while peer help was unwanted, applied after a subscription wants it: decoded then,
    # in the order read, as if it had never been set aside.
    third = [peer_help("bob", 6), transition("ada", 7), peer_help("eve", 8)]
    decoded = processor.decode(third)
    assert [e.offset for e in decoded.envelopes] == [7]
    wanted.add(help_type)
    await processor.apply(third, decoded)
    assert seen[-1] == [(help_type, 6), (STAGE_CHANGED.type, 7), (help_type, 8)]

    # and the next batch read knows it is wanted
    assert [e.offset for e in processor.decode([peer_help("fay", 9)]).envelopes] == [9]
