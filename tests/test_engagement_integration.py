"""The engagement service on the real broker and PostgreSQL: inactivity driven by event time
(other members' activity, clock ticks), peer-help signals, and a replay that rebuilds the very
same transitions and state."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.engagement import handlers, store
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.engagement.domain import Participant, Rules
from shared.cloudevents import Envelope
from shared.contracts import (
    CHURN_RISK,
    PEER_HELP,
    ChurnRiskV1,
    PeerHelpV1,
    StageChangedV1,
)
from shared.eventtime import is_clock_only
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.service import ConsumingService
from tests.conftest import (
    Namespace,
    envelopes,
    new_namespace,
    publish_activities,
    publish_tick,
    read_topic,
    running,
)
from tests.factories import T0, activity

pytestmark = pytest.mark.integration

Move = tuple[str, str | None, str, datetime]


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


PARTITIONS = 3  # of every topic in a test namespace (tests/conftest.py)


async def tick(namespace: Namespace, at: datetime) -> None:
    """What the gateway's clock sends when the community is quiet: one copy per partition."""
    await publish_tick(namespace, at)


async def consumed(service: ConsumingService, count: int, timeout_s: float = 20.0) -> None:
    """Wait until the service has committed `count` records."""
    for _ in range(int(timeout_s / 0.02)):
        if service.processor is not None and service.processor.stats.consumed >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the service did not consume {count} records in {timeout_s} s")


async def drained(url: str, timeout_s: float = 10.0) -> None:
    """Wait until the outbox relay published every row."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(int(timeout_s / 0.02)):
            if await conn.fetchval("SELECT count(*) FROM outbox") == 0:
                return
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise AssertionError("the outbox was not drained")


def signals(records: list[Any]) -> list[Envelope]:
    """The signals among a topic's records, without engagement's in-band watermarks."""
    return [e for e in envelopes(records) if not is_clock_only(e)]


def moves(changes: list[StageChangedV1]) -> set[Move]:
    return {(c.member_id, c.from_stage, c.to_stage, c.occurred_at) for c in changes}


async def fetch(url: str, sql: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_inactivity_is_judged_on_event_time_from_others_and_clock_ticks(
    namespace: Namespace,
) -> None:
    url = await namespace.create_database("engagement")
    async with running(ENGAGEMENT, namespace.settings(url)) as service:
        await publish_activities(namespace, [activity("m-1", "event_talk", day=0)])
        await consumed(service, 1)
        # another member's activity passes m-1's deadline (day 21) on its own partition only:
        # the clock waits for every partition, so nothing is judged yet
        await publish_activities(namespace, [activity("m-2", "reaction", day=22)])
        await consumed(service, 2)
        assert await fetch(url, "SELECT stage FROM participants WHERE member_id = 'm-1'") == [
            {"stage": "engaged"}
        ]
        # nobody speaks, but the clock does, on every partition: past both deadlines (21, 52)
        await tick(namespace, day(60))
        await consumed(service, 2 + PARTITIONS)
        transitions = await read_topic(namespace, "journey-transitions", until=3)
        # churn risk, and (issue 15) both newcomers' honeymoon drop-offs
        churn = await read_topic(namespace, "signals.success", until=3)
        rows = await fetch(url, "SELECT member_id, stage, next_deadline FROM participants")

    changes = [e.data for e in envelopes(transitions) if isinstance(e.data, StageChangedV1)]
    assert len(changes) == len(signals(transitions))  # engagement's watermarks ride along
    assert [(c.from_stage, c.to_stage, c.occurred_at) for c in changes] == [
        (None, "engaged", day(0)),
        ("engaged", "at_risk", day(21)),  # the deadline, not the time it was noticed
        ("at_risk", "dormant", day(52)),
    ]
    (signal,) = [e for e in envelopes(churn) if e.type == CHURN_RISK.type]
    assert signal.type == CHURN_RISK.type and isinstance(signal.data, ChurnRiskV1)
    assert (signal.data.member_id, signal.data.occurred_at) == ("m-1", day(21))
    assert signal.data.last_active_at == day(0)
    assert sorted((r["member_id"], r["stage"], r["next_deadline"]) for r in rows) == [
        ("m-1", "dormant", None),
        ("m-2", None, None),
    ]


async def test_peer_help_signals_go_to_support(namespace: Namespace) -> None:
    url = await namespace.create_database("engagement")
    log = [
        activity("asker", "post", thread_id="q-1", thread_author="asker"),
        activity("asker", "reply", thread_id="q-1", thread_author="asker"),  # self
        activity("bot-1", "reply", thread_id="q-1", thread_author="asker", bot=True),
        activity("staff", "reply", thread_id="q-1", thread_author="asker", team=True),
        activity("helper", "reply", thread_id="q-1", thread_author="asker", activity_id="h-1"),
        activity("helper", "answer_accepted", thread_id="q-1", thread_author="asker"),
    ]
    async with running(ENGAGEMENT, namespace.settings(url)) as service:
        await publish_activities(namespace, log)
        await consumed(service, len(log))
        await drained(url)
        records = await read_topic(namespace, "signals.support", until=2)

    helps = envelopes(records)
    assert all(e.type == PEER_HELP.type and e.key == "helper" for e in helps)
    data = [e.data for e in helps if isinstance(e.data, PeerHelpV1)]
    assert len(data) == len(helps)
    assert [(d.helper_member_id, d.helped_member_id, d.thread_id, d.accepted) for d in data] == [
        ("helper", "asker", "q-1", False),
        ("helper", "asker", "q-1", True),
    ]
    assert data[0].activity_id == "h-1"


# The log of the replay test, in phases published one after the other. Within a phase every
# event is at the same event time, so any interleaving of partitions is on time.
PHASES: list[tuple[float, list[tuple[str, str, str | None]]]] = [
    (
        0,
        [
            ("a", "event_talk", None),
            ("b", "content_published", None),
            ("c", "post", "c"),
            ("d", "reply", "c"),
            ("e", "reply", "c"),  # a bot (below)
        ],
    ),
    (10, [("b", "reply", "a"), ("d", "reply", "c"), ("d", "answer_accepted", "c")]),
    (25, []),  # a clock tick: a at_risk (deadline day 21) found by the sweep
    (33, [("a", "reply", None)]),  # a reactivated (b, d: due at day 31, swept at the next tick)
    (40, [("d", "reaction", None)]),
    (100, []),  # a clock tick: everyone's remaining deadlines
]
EXPECTED: set[Move] = {
    ("a", None, "engaged", day(0)),
    ("a", "engaged", "at_risk", day(21)),
    ("a", "at_risk", "reactivated", day(33)),
    ("a", "reactivated", "at_risk", day(54)),
    ("a", "at_risk", "dormant", day(85)),
    ("b", None, "engaged", day(0)),
    ("b", "engaged", "at_risk", day(31)),
    ("b", "at_risk", "dormant", day(62)),
    ("d", None, "engaged", day(10)),  # 4 * 2^(-10/30) + 4 + 6 = 13.17
    ("d", "engaged", "at_risk", day(31)),
    ("d", "at_risk", "reactivated", day(40)),
    ("d", "reactivated", "at_risk", day(61)),
    ("d", "at_risk", "dormant", day(92)),
}
STATE = "SELECT * FROM participants ORDER BY member_id"


async def test_a_replay_from_offset_zero_rebuilds_the_same_transitions_and_state(
    namespace: Namespace,
) -> None:
    live_url = await namespace.create_database("engagement")
    total = 0
    async with running(ENGAGEMENT, namespace.settings(live_url)) as service:
        for n, (at, phase) in enumerate(PHASES):
            log = [
                activity(
                    who,
                    kind,
                    day=at,
                    thread_id=f"q-{asker}" if asker else None,
                    thread_author=asker,
                    bot=who == "e",
                    activity_id=f"p{n}-{i}",
                )
                for i, (who, kind, asker) in enumerate(phase)
            ]
            if log:
                await publish_activities(namespace, log)
            else:
                await tick(namespace, day(at))
            total += len(log) or PARTITIONS
            await consumed(service, total)
    live_changes = envelopes(await read_topic(namespace, "journey-transitions", until=13))
    # 5 churn risks and (issue 15) 4 honeymoon drop-offs: a, b, c and d went quiet early
    live_signals = envelopes(await read_topic(namespace, "signals.success", until=9))
    live_signals += signals(await read_topic(namespace, "signals.support", until=4))
    live_state = await fetch(live_url, STATE)

    # A fresh database and consumer group, from offset 0. It publishes to the same topics, so
    # what it emitted is what came after the live records.
    replay_url = await namespace.create_database("engagement2")
    replay_spec = dataclasses.replace(ENGAGEMENT, group_id="replay")
    async with running(replay_spec, namespace.settings(replay_url)) as replay:
        await consumed(replay, total)
    assert replay.processor is not None and service.processor is not None
    assert replay.processor.stats.batches < service.processor.stats.batches  # other cuts
    replay_state = await fetch(replay_url, STATE)

    def after_live(records: list[Any], live: list[Envelope]) -> list[Envelope]:
        seen = {(e.topic, e.partition, e.offset) for e in live}
        return [e for e in envelopes(records) if (e.topic, e.partition, e.offset) not in seen]

    replay_changes = after_live(
        await read_topic(namespace, "journey-transitions", until=26), live_changes
    )
    replay_signals = after_live(
        await read_topic(namespace, "signals.success", until=18), live_signals
    ) + [
        e
        for e in after_live(await read_topic(namespace, "signals.support", until=8), live_signals)
        if not is_clock_only(e)
    ]

    live = [e.data for e in live_changes if isinstance(e.data, StageChangedV1)]
    replayed = [e.data for e in replay_changes if isinstance(e.data, StageChangedV1)]
    assert moves(live) == EXPECTED and len(live) == len(EXPECTED)
    assert moves(replayed) == EXPECTED and len(replayed) == len(EXPECTED)
    # the very same events: same ids (consumers drop them as duplicates), same content
    assert {e.id for e in live_changes} == {e.id for e in replay_changes}
    assert {c.model_dump_json() for c in live} == {c.model_dump_json() for c in replayed}
    assert len(live_signals) == len(replay_signals) == 13
    assert {e.id for e in live_signals} == {e.id for e in replay_signals}
    assert live_state == replay_state
    assert [r["member_id"] for r in live_state] == ["a", "b", "c", "d"]  # the bot never counts


async def test_store_round_trip_due_members_and_cohorts(namespace: Namespace) -> None:
    url = await namespace.create_database("engagement")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    assert pool is not None
    try:
        await migrate(pool, [PLUMBING_MIGRATIONS, ENGAGEMENT.migrations])
        rules = Rules(core_top_fraction=0.5)
        members = [
            Participant("core-1", "engaged", 9.0, day(40), day(0), day(40), day(1), 5),
            Participant("reg-1", "reactivated", 3.0, day(41), day(0), day(41), day(41), 2),
            Participant("risky", "at_risk", 4.0, day(20), day(0), day(20), day(41), 3),
            Participant("new", None, 0.5, day(45), day(44), day(45), None, 1),
            Participant("gone", "dormant", 1.0, day(0), day(-90), day(0), day(52), 9),
        ]
        async with pool.acquire() as conn:
            await store.save(conn, members, rules)
            assert await store.load(conn, [m.member_id for m in members]) == {
                m.member_id: m for m in members
            }
            # due by day 61: reg-1 (41 + 21 = 62) not yet; core-1 (40 + 21); risky (20 + 52)
            due = await store.load(conn, [], due_by=day(61))
            assert sorted(due) == ["core-1"]
            assert await store.cohorts(conn, day(50), rules) == {
                "newcomer": ["new"],
                "core": ["core-1"],
                "at_risk": ["risky"],
                "regular": ["reg-1"],
            }
    finally:
        await pool.close()


_LOAD = store.load


async def _sweep_far(
    namespace: Namespace, monkeypatch: pytest.MonkeyPatch, step_rows: int
) -> tuple[list[Envelope], list[Envelope], list[dict[str, Any]], list[int]]:
    """Ten members active once, on ten days; then the clock jumps 200 days, as the first tick
    after a backfill of old history does. Returns the transitions, the success signals, the
    state afterwards and how many participants each of the sweep's loads held."""
    monkeypatch.setattr(handlers, "SWEEP_STEP_ROWS", step_rows)
    loaded: list[int] = []

    async def load_and_count(conn: Any, member_ids: Any, due_by: Any = None) -> Any:
        members = await _LOAD(conn, member_ids, due_by)
        if due_by is not None:
            loaded.append(len(members))
        return members

    monkeypatch.setattr(store, "load", load_and_count)
    url = await namespace.create_database("engagement")
    people = [f"m-{i}" for i in range(10)]
    async with running(ENGAGEMENT, namespace.settings(url)) as service:
        await publish_activities(
            namespace,
            [
                activity(m, "event_talk", day=i, activity_id=f"talk-{m}")
                for i, m in enumerate(people)
            ],
        )
        await consumed(service, len(people))
        loaded.clear()  # the sweeps that follow the activities' own clock moves
        await tick(namespace, day(200))
        await consumed(service, len(people) + PARTITIONS)
        transitions = await read_topic(namespace, "journey-transitions", until=3 * len(people))
        success = await read_topic(namespace, "signals.success", until=2 * len(people))
        state = await fetch(
            url,
            "SELECT member_id, stage, stage_since, next_deadline FROM participants"
            " UNION ALL SELECT member_id, newcomer_as, started_at, next_deadline FROM newcomers"
            " ORDER BY 1, 2",
        )
    return signals(transitions), signals(success), state, loaded


async def test_a_long_move_of_the_clock_is_swept_in_bounded_steps_with_the_same_outcome(
    namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every member due at once (each demoted twice, each honeymoon over) is swept a few rows
    at a time, and the events and state are those of one sweep holding them all."""
    stepped = await _sweep_far(namespace, monkeypatch, step_rows=3)
    whole = await _sweep_far(await new_namespace(namespace.stack), monkeypatch, 10_000)

    def events(es: list[Envelope]) -> set[tuple[str, str, str]]:
        return {(e.id, e.type, e.data.model_dump_json()) for e in es}

    assert events(stepped[0]) == events(whole[0]) and len(stepped[0]) == 30
    assert events(stepped[1]) == events(whole[1]) and len(stepped[1]) == 20
    assert stepped[2] == whole[2]
    assert [r["stage"] for r in stepped[2] if r["stage"] in ("at_risk", "dormant")] == [
        "dormant"
    ] * 10
    # one step for all of them at once, against several of at most 3 due rows each
    assert max(whole[3]) == 10
    assert len(stepped[3]) > 3 and max(stepped[3]) <= 3
