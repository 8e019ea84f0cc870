"""Advocacy on the real broker and PostgreSQL: peer-help signals, referrals (credited once the
member brought in becomes engaged) and activities in,
advocate and champion transitions and signals out, and a replay that gives the same result.

Every record goes to partition 0 of its topic; the clock records (a tick on member-activity,
engagement's watermarks on signals.support and journey-transitions, awareness's on
member-lifecycle) go to every
partition, as the gateway and the upstream services write them. The topics' relative order is
not fixed (the consumer interleaves them as it likes); advocacy credits in event time once its
clock has passed, so the outcome does not depend on it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.advocacy.domain import ADVOCATE, CHAMPION, Rules, boundary_at_or_before
from shared.cloudevents import BROADCAST, OutgoingRecord, payloads
from shared.contracts import AdvocateV1, ChampionNominatedV1, StageChangedV1
from shared.eventtime import clock_tick, watermark
from tests.conftest import Namespace, envelopes, read_topic, running
from tests.test_advocacy_rules import (
    T0,
    acquired,
    act,
    engaged,
    event_id_of,
    feedback,
    peer_help,
    record,
)

pytestmark = pytest.mark.integration

RULES = Rules()  # the defaults: threshold 12, top 3, 90-day window, reviews every 30 days
B1 = boundary_at_or_before(T0, RULES.period) + RULES.period
B2 = B1 + RULES.period
LATENESS = timedelta(hours=1)  # Settings.allowed_lateness_s default


def day(t: datetime) -> float:
    """`t` as the builders' day offset from T0."""
    return (t - T0) / timedelta(days=1)


async def publish_in_order(namespace: Namespace, records: Sequence[OutgoingRecord]) -> None:
    """Like conftest.publish, but onto partition 0 of each topic, one record after another
    (a BROADCAST record onto every partition)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=namespace.stack.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for r in records:
            topic = namespace.topic(r.topic)
            partitions = [0]
            if r.partition == BROADCAST:
                partitions = sorted(await producer.partitions_for(topic))
            for partition in partitions:
                await producer.send_and_wait(
                    topic, r.value, key=r.key, headers=r.headers, partition=partition
                )
    finally:
        await producer.stop()


def clock(at: datetime) -> list[OutgoingRecord]:
    """Every input of advocacy passes `at`: the gateway's tick, and the upstream services'
    watermarks (what engagement and awareness write once their own clocks passed `at`)."""
    return [
        clock_tick(at, clock="tests"),
        watermark("engagement", "signals.support", at),
        watermark("engagement", "journey-transitions", at),
        watermark("engagement", "signals.product", at),
        watermark("awareness", "member-lifecycle", at),
    ]


def first_period() -> list[OutgoingRecord]:
    """Five advocates before B1; erin, dave and bob (27, 24, 22) outrank carol (12) and
    alice (12) in the review at B1."""
    fans = [
        act(f"fan-{i}", "reaction", day=-11 + i * 0.1, parent_author="dave", parent_id="p-d1")
        for i in range(7)  # 7 reactions, 5 credited: the cap
    ]
    return [
        # signals.support: alice helps, then two of her answers are accepted (2 + 5 + 5)
        record(peer_help("alice", "m-9", day=-10, thread_id="q-1", url="https://f.example/q-1")),
        record(peer_help("alice", "m-9", accepted=True, day=-9, thread_id="q-2")),
        record(peer_help("alice", "m-8", accepted=True, day=-8, thread_id="q-3")),
        # carol referred three people: new-1 became engaged (10; its engagement read first),
        # new-2 only in the second period, new-3 never; and she helped once (2): referral
        # credit alone (20 by the end) would never have made her an advocate
        record(engaged("new-1", day=-6)),
        record(acquired("new-1", "carol", day=-7)),
        record(acquired("new-2", "carol", day=-6)),
        record(acquired("new-3", "carol", day=-5)),
        record(peer_help("carol", "m-7", day=-3, thread_id="q-4")),
        # member-activity
        record(act("alice", "answer_accepted", day=-9, thread_id="q-2", parent_author="m-9")),
        record(act("bob", "event_talk", day=-15, url="https://events.example/bob-1")),
        record(act("bob", "event_talk", day=-14)),
        record(act("bob", "content_published", day=-13)),
        record(act("bob", "content_published", day=-12)),
        record(act("dave", "content_published", day=-12, url="https://blog.example/dave")),
        *map(record, fans),
        record(act("dave", "event_talk", day=-5)),
        record(act("dave", "event_talk", day=-4)),
        *(record(act("erin", "event_talk", day=d)) for d in (-3, -2, -1)),
        record(act("erin", "content_published", day=1)),
        # signals.product: erin's feedback before her review is not a champion's
        record(ERIN_BEFORE),
        *clock(B1 + 2 * LATENESS),
    ]


ERIN_BEFORE = feedback("erin", day=0)
ERIN_AFTER = feedback("erin", day=day(B1) + 1)
ALICE_AFTER = feedback("alice", day=day(B1) + 1, kind="bug_report")


def second_period() -> list[OutgoingRecord]:
    """frank (32) rises in the review at B2; bob (22) is fourth and goes back to advocate."""
    return [
        *(record(act("frank", "event_talk", day=day(B1) + d)) for d in (5, 6, 7, 8)),
        record(engaged("new-2", day=day(B1) + 2)),  # carol: 10 more, too few to rank at B2
        record(ERIN_AFTER),  # a champion's (since B1): flagged
        record(ALICE_AFTER),  # an advocate's: not
        *clock(B2 + 2 * LATENESS),
    ]


async def state(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        return {
            "members": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT member_id, stage, score, evidence::text"
                    " FROM advocacy_members ORDER BY member_id"
                )
            ],
            "contributions": [
                tuple(r) for r in await conn.fetch("SELECT * FROM contributions ORDER BY key")
            ],
            "clock": await conn.fetchval("SELECT last_boundary FROM review_clock"),
        }
    finally:
        await conn.close()


async def test_advocates_champions_signals_and_a_deterministic_replay(
    namespace: Namespace,
) -> None:
    url = await namespace.create_database("advocacy")
    async with running(ADVOCACY, namespace.settings(url)):
        await publish_in_order(namespace, first_period())
        await read_topic(namespace, "journey-transitions", until=1 + 8)
        await publish_in_order(namespace, second_period())
        transition_records = await read_topic(namespace, "journey-transitions", until=2 + 11)
        signal_records = await read_topic(namespace, "signals.advocacy", until=10)
        product_records = await read_topic(namespace, "signals.product", until=3 + 1)

    flags = [e for e in envelopes(product_records) if e.type == "signal.champion_feedback.v1"]
    assert [(e.data.member_id, e.data.feedback_event_id) for e in flags] == [  # type: ignore[attr-defined]
        ("erin", event_id_of(ERIN_AFTER))
    ]
    assert flags[0].data.feedback_kind == "feature_request"  # type: ignore[attr-defined]

    changes = [
        c
        for c in payloads(envelopes(transition_records), StageChangedV1)
        if c.dimension == "advocacy"  # engagement's, which the test wrote, are inputs
    ]
    assert len(changes) == len(envelopes(transition_records)) - 2
    moves = {(c.member_id, c.from_stage, c.to_stage, c.occurred_at) for c in changes}
    at = {name: T0 + timedelta(days=d) for name, d in [("alice", -8), ("carol", -3)]}
    assert moves == {
        ("alice", None, ADVOCATE, at["alice"]),  # 2 + 5 + 5: the second accepted answer
        ("carol", None, ADVOCATE, at["carol"]),  # 10 + 2: her help, not her referrals
        ("bob", None, ADVOCATE, T0 + timedelta(days=-14)),  # 8 + 8
        ("dave", None, ADVOCATE, T0 + timedelta(days=-5)),  # 3 + 5 (capped) + 8
        ("erin", None, ADVOCATE, T0 + timedelta(days=-2)),  # 8 + 8
        ("erin", ADVOCATE, CHAMPION, B1),
        ("dave", ADVOCATE, CHAMPION, B1),
        ("bob", ADVOCATE, CHAMPION, B1),
        ("frank", None, ADVOCATE, B1 + timedelta(days=6)),
        ("frank", ADVOCATE, CHAMPION, B2),
        ("bob", CHAMPION, ADVOCATE, B2),
    }
    assert len(changes) == len(moves), "a transition was emitted twice"

    signals = [e.data for e in envelopes(signal_records)]
    advocates = {s.member_id: s for s in signals if isinstance(s, AdvocateV1)}
    nominations = sorted(
        (s for s in signals if isinstance(s, ChampionNominatedV1)),
        key=lambda n: (n.window_end, n.rank),
    )
    assert sorted(advocates) == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert advocates["alice"].evidence == {"peer_help": 1, "answer_accepted": 2}
    assert advocates["alice"].links == ["https://f.example/q-1"]
    assert advocates["dave"].evidence == {
        "content_published": 1,
        "content_engaged": 5,
        "event_talk": 1,
    }
    assert advocates["carol"].evidence == {"peer_help": 1, "referral_joined": 1}
    assert [(n.member_id, n.rank, n.score, n.window_end) for n in nominations] == [
        ("erin", 1, 27.0, B1),
        ("dave", 2, 24.0, B1),
        ("bob", 3, 22.0, B1),
        ("frank", 1, 32.0, B2),
    ]
    assert nominations[0].window_start == B1 - timedelta(days=90)
    assert nominations[2].links == ["https://events.example/bob-1"]
    assert len(signals) == 10

    original = await state(url)
    stages = {m[0]: (m[1], m[2]) for m in original["members"]}
    assert stages == {
        "alice": (ADVOCATE, 12.0),  # the answer_accepted activity added nothing
        "carol": (ADVOCATE, 22.0),  # new-2's credit came at its engagement; new-3 never
        "bob": (ADVOCATE, 22.0),
        "dave": (CHAMPION, 24.0),
        "erin": (CHAMPION, 27.0),
        "frank": (CHAMPION, 32.0),
    }
    assert original["clock"] == B2

    # replay: a fresh database, a new consumer group, every topic from offset 0
    replay_url = await namespace.create_database("advocacy2")
    replay_spec = dataclasses.replace(ADVOCACY, group_id="replay")
    async with running(replay_spec, namespace.settings(replay_url)):
        transition_records = await read_topic(namespace, "journey-transitions", until=2 + 22)
        signal_records = await read_topic(namespace, "signals.advocacy", until=20)
        product_records = await read_topic(namespace, "signals.product", until=3 + 2)
    for events in (
        [
            e
            for e in envelopes(transition_records)
            if isinstance(e.data, StageChangedV1) and e.data.dimension == "advocacy"
        ],
        envelopes(signal_records),
        [e for e in envelopes(product_records) if e.type == "signal.champion_feedback.v1"],
    ):
        ids = Counter(e.id for e in events)
        assert set(ids.values()) == {2}, "the replay emitted other events than the original"
        assert len(events) == 2 * len(ids)
    assert await state(replay_url) == original
