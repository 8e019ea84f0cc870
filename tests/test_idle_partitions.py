"""Six partitions, only one of which gets events for a while: the idle ones do not stall the
clock, and when the others resume nothing is late and the outcome equals reading the whole log
at once (engagement on the real broker)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from services.engagement.__main__ import SPEC as ENGAGEMENT
from shared.cloudevents import OutgoingRecord, encode
from shared.contracts import ACTIVITY, ActivityV1, StageChangedV1
from shared.kafka import ensure_topics
from tests.conftest import Namespace, envelopes, read_topic, running
from tests.factories import T0, activity

pytestmark = pytest.mark.integration

PARTITIONS = 6


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def record(a: ActivityV1) -> OutgoingRecord:
    return encode(ACTIVITY, a, event_id=f"{a.source}:{a.activity_id}", source="/tests")


# (partition, activity): each member lives on one partition, as keying by member id does
START = [(p, activity(f"m{p}", "event_talk", day=0, activity_id=f"start-{p}")) for p in range(6)]
ALONE = [  # partition 0 alone, for 30 days: m1..m5's at-risk deadline (day 21) passes
    (0, activity("z", "reaction", day=d, activity_id=f"alone-{d}")) for d in range(1, 31)
]
RESUME = [  # then every partition again
    (p, activity(f"m{p}", "reply", day=31 + p, activity_id=f"resume-{p}")) for p in range(6)
]


async def six_partitions(base: Namespace) -> Namespace:
    ns = Namespace(base.stack, f"i{uuid.uuid4().hex[:10]}.")
    await ensure_topics(
        ns.stack.kafka_bootstrap, partitions=PARTITIONS, replication_factor=1, prefix=ns.prefix
    )
    return ns


async def send(ns: Namespace, items: list[tuple[int, ActivityV1]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=ns.stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for partition, a in items:
            r = record(a)
            await producer.send_and_wait(
                ns.topic(r.topic), r.value, key=r.key, headers=r.headers, partition=partition
            )
    finally:
        await producer.stop()


async def transitions(
    ns: Namespace, until: int
) -> dict[str, tuple[str, str | None, str, datetime]]:
    found = envelopes(await read_topic(ns, "journey-transitions", until=until))
    return {
        e.id: (e.data.member_id, e.data.from_stage, e.data.to_stage, e.data.occurred_at)
        for e in found
        if isinstance(e.data, StageChangedV1)
    }


async def stage_of(url: str, member_id: str) -> str | None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        value: str | None = await conn.fetchval(
            "SELECT stage FROM participants WHERE member_id = $1", member_id
        )
        return value
    finally:
        await conn.close()


async def test_idle_partitions_do_not_stall_the_clock_and_nothing_is_late(
    namespace: Namespace,
) -> None:
    live = await six_partitions(namespace)
    url = await live.create_database("engagement")
    settings = live.settings(url, topic_partitions=PARTITIONS, idle_partition_s=1.0)
    async with running(ENGAGEMENT, settings) as service:
        await send(live, START)
        # partition 0 keeps going while 1..5 sit at their log end: after idle_partition_s
        # they stop holding the clock back, so m1..m5's deadline (day 21) is judged
        for chunk in (ALONE[:10], ALONE[10:20], ALONE[20:]):
            await asyncio.sleep(1.5)
            await send(live, chunk)
        for _ in range(200):
            if await stage_of(url, "m3") == "at_risk":
                break
            await asyncio.sleep(0.1)
        assert await stage_of(url, "m3") == "at_risk", "the idle partitions stalled the clock"
        await send(live, RESUME)
        got = await transitions(live, until=19)  # 7 engaged, 6 at risk, 6 reactivated
        assert service.processor is not None
        assert service.processor.stats.late == 0, "an event was judged late"

    # the reference: the very same log, all there before the service starts, read at once
    ref = await six_partitions(namespace)
    ref_url = await ref.create_database("engagement")
    await send(ref, START + ALONE + RESUME)
    spec = dataclasses.replace(ENGAGEMENT, group_id="reference")
    async with running(spec, ref.settings(ref_url, topic_partitions=PARTITIONS)):
        want = await transitions(ref, until=len(got))
    assert got == want
    moves = sorted(got.values(), key=lambda m: (m[0], m[3]))
    assert ("m3", "engaged", "at_risk", day(21)) in moves  # the exact deadline
    assert ("m3", "at_risk", "reactivated", day(34)) in moves


async def test_the_gateways_clock_ticks_reach_every_partition(namespace: Namespace) -> None:
    from services.gateway.bootstrap import build_app

    url = await namespace.create_database("gateway")
    app = build_app(namespace.settings(url, clock_tick_interval_s=0.3))
    async with app.router.lifespan_context(app):
        ticks = envelopes(
            await read_topic(namespace, "member-activity", until=6, timeout_s=30, with_clocks=True),
            with_clocks=True,
        )
    assert {e.type for e in ticks} == {"system.clock_tick.v1"}
    assert {e.partition for e in ticks} == {0, 1, 2}  # every partition, not one key's
    by_time: dict[datetime, set[int]] = {}
    for e in ticks:
        by_time.setdefault(e.time, set()).add(e.partition)
    assert any(parts == {0, 1, 2} for parts in by_time.values()), "one tick, every partition"
