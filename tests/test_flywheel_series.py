"""The flywheel's precomputed series (services/gateway/flywheel/series.py, migration 008) equal
a from-scratch computation: the report's figures equal the scans they replaced
(tests/flywheel_scan.py) for windows whose bounds fall on midnights, inside days and on the
transitions' own instants; and the tables kept batch by batch equal a rebuild from scratch,
after transitions arriving late and out of order, a replay, a merge and an erasure."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.gateway import member_state
from services.gateway.bootstrap import SPEC, handle_batch
from services.gateway.directory import store as directory_store
from services.gateway.flywheel import series
from services.gateway.flywheel.store import flywheel_report
from shared import lifecycle
from shared.cloudevents import Envelope, derive_event_id
from shared.contracts import (
    ACTIVITY,
    PEER_HELP,
    STAGE_CHANGED,
    ActivityV1,
    PeerHelpV1,
    StageChangedV1,
    TransitionDetails,
)
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.uow import unit_of_work
from tests import flywheel_scan
from tests.conftest import Namespace
from tests.factories import T0, activity

STAGES = {
    "awareness": ["visitor", "member", "considering", "customer", "retained", "lapsed"],
    "engagement": ["engaged", "at_risk", "reactivated", "dormant"],
    "advocacy": ["advocate", "champion"],
}
CHANNELS = ["referral", "search", "community", "direct", None]


def test_the_migration_backfills_with_the_rules_funnel() -> None:
    sql = (SPEC.migrations / "008_flywheel_series.sql").read_text()
    literal = re.search(r"'(\[\[\[.*?\]\]\]\])'::jsonb", sql, re.S)
    assert literal is not None
    assert json.loads(literal.group(1)) == json.loads(series.funnel_json())


def transitions(rng: random.Random, members: int, n: int, tag: str = "a") -> list[Envelope]:
    """Transitions of `members` members over 40 days: half on a midnight, some at the same
    instant as another, re-entries into a stage, first touches on awareness's."""
    instants: list[datetime] = []
    out = []
    for i in range(n):
        member = f"m-{rng.randrange(members)}"
        dimension = rng.choice(list(STAGES))
        if instants and rng.random() < 0.15:
            at = rng.choice(instants)
        else:
            at = T0 + timedelta(days=rng.randrange(40))
            if rng.random() < 0.5:
                at += timedelta(seconds=rng.randrange(86400))
        instants.append(at)
        channel = rng.choice(CHANNELS) if dimension == "awareness" else None
        data = StageChangedV1(
            member_id=member,
            dimension=dimension,  # type: ignore[arg-type]
            from_stage=None,
            to_stage=rng.choice(STAGES[dimension]),
            reason="test",
            occurred_at=at,
            details=TransitionDetails(first_touch_channel=channel) if channel else None,  # type: ignore[arg-type]
        )
        out.append(
            Envelope(
                id=derive_event_id("series-test", STAGE_CHANGED.type, tag, str(i)),
                type=STAGE_CHANGED.type,
                source="/tests",
                time=T0,
                data=data,
                key=member,
                topic="journey-transitions",
                offset=i,
            )
        )
    return out


def shuffled(events: list[Envelope], rng: random.Random) -> list[Envelope]:
    """Arriving late and out of event-time order."""
    return rng.sample(events, len(events))


async def apply_in_batches(pool: asyncpg.Pool, events: list[Envelope], rng: random.Random) -> None:
    """In this order, in batches of 1 to 15."""
    while events:
        size = rng.randint(1, 15)
        batch, events = events[:size], events[size:]
        async with unit_of_work(pool) as uow:
            await handle_batch(uow, await uow.claim(batch))


def windows(rng: random.Random, events: list[Envelope]) -> list[tuple[Any, Any]]:
    """Open and closed windows; bounds on midnights, within days, on transitions' instants,
    and both on one day."""
    instants = [e.data.occurred_at for e in events if isinstance(e.data, StageChangedV1)]
    bounds: list[datetime] = []
    for _ in range(12):
        bounds.append(T0 + timedelta(days=rng.randrange(-1, 42)))
        bounds.append(T0 + timedelta(days=rng.randrange(40), seconds=rng.randrange(86400)))
        bounds.append(rng.choice(instants))
    pairs: list[tuple[Any, Any]] = [(None, None)]
    for _ in range(30):
        a, b = sorted(rng.sample(bounds, 2))
        pairs.append((a, b))
    pairs += [(None, rng.choice(bounds)), (rng.choice(bounds), None)]
    day = T0 + timedelta(days=7)
    pairs.append((day + timedelta(hours=1), day + timedelta(hours=20)))  # inside one day
    return pairs


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "entries": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT kind, event_id, member_id, at, prev_at, next_at FROM flywheel_entries"
                " ORDER BY 1, 2, 3"
            )
        ],
        "days": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT kind, day, prev_day, next_day, n FROM flywheel_entry_days WHERE n <> 0"
                " ORDER BY 1, 2, 3, 4"
            )
        ],
        "answers": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT activity_id, answered_at FROM flywheel_questions ORDER BY 1"
            )
        ],
        "stage_counts": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT dimension, stage, n FROM flywheel_stage_counts WHERE n <> 0 ORDER BY 1, 2"
            )
        ],
        "spans": [
            tuple(r)
            for r in await conn.fetch("SELECT * FROM flywheel_spans ORDER BY member_id, event_id")
        ],
    }


async def rebuilt(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """The tables a rebuild from scratch gives (rolled back: the kept ones stay)."""
    tr = conn.transaction()
    await tr.start()
    try:
        await series.refresh(conn, None)
        await series.refresh_answers(conn, everyone=True)
        await conn.execute(
            "TRUNCATE flywheel_stage_counts;"
            " INSERT INTO flywheel_stage_counts SELECT dimension, stage, count(*)"
            " FROM member_stages GROUP BY 1, 2"
        )
        return await snapshot(conn)
    finally:
        await tr.rollback()


async def figures(conn: asyncpg.Connection, start: Any, end: Any) -> dict[str, Any]:
    """The report's figures and the weekly peer-answer series, as served."""
    return flywheel_scan.from_report(
        await flywheel_report(conn, start, end),
        await directory_store.peer_answer_weeks(conn, start, end),
    )


def questions_and_help(rng: random.Random, members: int, n: int, tag: str) -> list[Envelope]:
    """Questions in a few threads, and peer help in them: some from the asker itself (no
    peer's), some before the question, some in threads nobody asked in."""
    out = []
    for i in range(n):
        asker = f"m-{rng.randrange(members)}"
        thread = f"t-{rng.randrange(members)}"
        at = T0 + timedelta(days=rng.randrange(40), seconds=rng.choice([0, rng.randrange(86400)]))
        data: ActivityV1 | PeerHelpV1
        if rng.random() < 0.4:
            data = activity(asker, "post", at=at, thread_id=thread, properties={"question": True})
            type_ = ACTIVITY.type
        else:
            helper = asker if rng.random() < 0.2 else f"m-{rng.randrange(members)}"
            data = PeerHelpV1(
                helper_member_id=helper,
                helped_member_id=asker,
                thread_id=thread,
                url=None,
                accepted=rng.random() < 0.5,
                occurred_at=at,
                activity_id=f"h-{tag}-{i}",
            )
            type_ = PEER_HELP.type
        out.append(
            Envelope(
                id=derive_event_id("help-test", type_, tag, str(i)),
                type=type_,
                source="/tests",
                time=T0,
                data=data,
                key=asker,
                topic="t",
                offset=i,
            )
        )
    return out


async def assert_equal_to_scratch(conn: asyncpg.Connection, pairs: list[tuple[Any, Any]]) -> None:
    kept = await snapshot(conn)
    assert kept["entries"], "the community made no entries"
    assert any(at for _, at in kept["answers"]), "no question was answered"
    assert kept == await rebuilt(conn)
    for start, end in pairs:
        scan = await flywheel_scan.figures(conn, start, end)
        assert await figures(conn, start, end) == scan, (start, end)


@pytest.fixture
async def pool(namespace: Namespace) -> AsyncIterator[asyncpg.Pool]:
    url = await namespace.create_database("gateway")
    created = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert created is not None
    await migrate(created, [PLUMBING_MIGRATIONS, SPEC.migrations, lifecycle.MIGRATIONS])
    try:
        yield created
    finally:
        await created.close()


@pytest.mark.integration
async def test_series_equal_a_scan_after_batches_replay_merge_and_erasure(
    pool: asyncpg.Pool,
) -> None:
    rng = random.Random(14)
    events = shuffled(
        transitions(rng, members=40, n=400) + questions_and_help(rng, 40, 300, "a"), rng
    )
    await apply_in_batches(pool, events, rng)
    pairs = windows(rng, events)
    async with pool.acquire() as conn:
        await assert_equal_to_scratch(conn, pairs)
        before = await snapshot(conn)
        served = [await figures(conn, *w) for w in pairs]

        # a replay: the topic's order again (ties in event time go by arrival), in other
        # batches, into truncated tables, holds the same
        await conn.execute(f"TRUNCATE {', '.join(SPEC.replay_tables)}")
    await apply_in_batches(pool, events, rng)
    async with pool.acquire() as conn:
        assert await snapshot(conn) == before
        assert [await figures(conn, *w) for w in pairs] == served

        # a merge (m-1's journey is m-0's) and an erasure (m-2, m-3)
        async with conn.transaction():
            await member_state.merge_member_state(conn, "m-0", "m-1")
        async with conn.transaction():
            await member_state.erase_member_state(conn, {"m-2", "m-3"}, T0)
        assert not await conn.fetchval(
            "SELECT count(*) FROM flywheel_entries WHERE member_id = ANY($1::text[])",
            ["m-1", "m-2", "m-3"],
        )
        await assert_equal_to_scratch(conn, pairs)

    # and the survivor's journey goes on after the merge
    more = shuffled(
        transitions(random.Random(15), members=2, n=30, tag="b")
        + questions_and_help(random.Random(16), 4, 40, "b"),
        rng,
    )
    await apply_in_batches(pool, more, rng)
    async with pool.acquire() as conn:
        await assert_equal_to_scratch(conn, pairs + windows(rng, more))


def activities(rng: random.Random, members: int, n: int, tag: str) -> list[Envelope]:
    """Activities over 150 days, some anonymous visitors, a few sign-ups that name the visitor
    they were, and members whose first and last activity sit on the edges of N weeks before the
    newest activity (day 150, 12:00)."""
    now = T0 + timedelta(days=150, hours=12)
    out: list[ActivityV1] = [activity("last", "reply", at=now)]
    for w in (1, 2, 4, 8, 12):
        for shift in (-1, 0, 1):  # joined a second before, at, after now - N weeks
            joined = now - timedelta(weeks=w, seconds=shift)
            member = f"edge-{w}-{shift}"
            out.append(activity(member, "signup", at=joined))
            out.append(activity(member, "reply", at=joined + timedelta(weeks=w, seconds=shift)))
    for _ in range(n):
        i = rng.randrange(members)
        anonymous = i % 7 == 0
        at = T0 + timedelta(days=rng.randrange(150), seconds=rng.randrange(86400))
        out.append(
            activity(f"anon-{i}" if anonymous else f"m-{i}", "page_view" if anonymous else "reply",
                     at=at, anonymous=anonymous)
        )  # fmt: skip
    for i in range(0, members, 14):  # the visitor anon-i signs up as m-i
        at = T0 + timedelta(days=rng.randrange(150))
        out.append(activity(f"m-{i}", "signup", at=at, properties={"anonymous_id": f"anon-{i}"}))
    return [
        Envelope(
            id=derive_event_id("cohort-test", ACTIVITY.type, tag, str(k)),
            type=ACTIVITY.type,
            source="/tests",
            time=T0,
            data=a,
            key=a.actor.member_id,
            topic="member-activity",
            offset=k,
        )
        for k, a in enumerate(out)
    ]


async def assert_cohorts_equal_to_scratch(conn: asyncpg.Connection) -> None:
    kept = [
        tuple(r)
        for r in await conn.fetch(
            "SELECT day, level, n FROM directory_cohort_days WHERE n <> 0 ORDER BY 1, 2"
        )
    ]
    scratch = [
        tuple(r)
        for r in await conn.fetch(
            "SELECT (first_seen_at AT TIME ZONE 'UTC')::date,"
            " directory_retention_level(first_seen_at, last_active_at), count(*)"
            " FROM directory_members WHERE NOT anonymous GROUP BY 1, 2 ORDER BY 1, 2"
        )
    ]
    assert kept and kept == scratch
    cohorts = [c.model_dump() for c in await directory_store.cohort_retention(conn)]
    assert cohorts == await flywheel_scan.cohort_retention(conn)
    assert any(c["retained_members"]["12"] for c in cohorts)


@pytest.mark.integration
async def test_cohort_counters_equal_a_pass_over_the_members(pool: asyncpg.Pool) -> None:
    rng = random.Random(9)
    events = shuffled(activities(rng, members=90, n=900, tag="a"), rng)
    await apply_in_batches(pool, events, rng)
    async with pool.acquire() as conn:
        await assert_cohorts_equal_to_scratch(conn)
        before = await conn.fetch("SELECT * FROM directory_cohort_days WHERE n <> 0 ORDER BY 1, 2")
        await conn.execute(f"TRUNCATE {', '.join(SPEC.replay_tables)}")
    await apply_in_batches(pool, events, rng)
    async with pool.acquire() as conn:
        assert (
            await conn.fetch("SELECT * FROM directory_cohort_days WHERE n <> 0 ORDER BY 1, 2")
            == before
        )
        async with conn.transaction():
            await member_state.merge_member_state(conn, "m-1", "m-2")
        async with conn.transaction():
            await member_state.erase_member_state(conn, {"m-3", "edge-4-0"}, T0)
        await assert_cohorts_equal_to_scratch(conn)


@pytest.mark.integration
async def test_a_refresh_writes_only_the_rows_that_change(pool: asyncpg.Pool) -> None:
    """Migration 015: a refresh of members whose journey did not move rewrites nothing (every
    row keeps its row version), and one new transition writes its member's new and moved rows
    only; the tables stay equal to a rebuild."""
    rng = random.Random(16)
    events = shuffled(transitions(rng, members=20, n=200), rng)
    await apply_in_batches(pool, events, rng)

    async def versions(conn: asyncpg.Connection) -> dict[tuple[str, ...], str]:
        rows = await conn.fetch(
            "SELECT 'e' AS t, member_id, kind || '/' || event_id AS k, xmin::text AS v"
            " FROM flywheel_entries UNION ALL"
            " SELECT 's', member_id, event_id, xmin::text FROM flywheel_spans UNION ALL"
            " SELECT 'd', kind, day || '/' || prev_day || '/' || next_day, xmin::text"
            " FROM flywheel_entry_days"
        )
        return {(r["t"], r["member_id"], r["k"]): r["v"] for r in rows}

    members = sorted({e.data.member_id for e in events if isinstance(e.data, StageChangedV1)})
    async with pool.acquire() as conn:
        before = await versions(conn)
        async with conn.transaction():
            await series.refresh(conn, members)
        assert await versions(conn) == before, "an unchanged journey rewrote rows"

    late = transitions(random.Random(17), members=1, n=1, tag="late")  # m-0, inside the 40 days
    await apply_in_batches(pool, late, rng)
    async with pool.acquire() as conn:
        after = await versions(conn)
        rewritten = {k for k, v in after.items() if before.get(k) != v}
        assert rewritten, "the new transition wrote nothing"
        assert {k[1] for k in rewritten if k[0] != "d"} == {"m-0"}, rewritten
        assert len(rewritten) < len(before) // 4
        assert await snapshot(conn) == await rebuilt(conn)


@pytest.mark.integration
async def test_the_horizon_refresh_equals_a_rebuild_after_every_batch(pool: asyncpg.Pool) -> None:
    """Migration 016: a batch recomputes its members' rows from their horizons only. After every
    batch of shuffled arrivals (late ones, ties, re-entries, first touches that change a
    channel, engaged entries within 30 days of a joining) the tables equal a rebuild, and late
    in the history a batch recomputes a fraction of its members' rows."""
    rng = random.Random(21)
    events = shuffled(transitions(rng, members=8, n=160), rng)
    seen = 0
    while events:
        size = rng.randint(1, 6)
        batch, events = events[:size], events[size:]
        async with unit_of_work(pool) as uow:
            await handle_batch(uow, await uow.claim(batch))
        seen += len(batch)
        async with pool.acquire() as conn:
            assert await snapshot(conn) == await rebuilt(conn), f"after {seen} transitions"

    # in event order, a new last transition: its member's horizon is late in its history
    async with pool.acquire() as conn:
        latest = await conn.fetchval("SELECT max(occurred_at) FROM journey_transitions")
        stored = await conn.fetchval(
            "SELECT count(*) FROM flywheel_entries WHERE member_id = 'm-0'"
        )
        new = latest + timedelta(hours=1)

        async def horizon_of(dimension: str, stage: str) -> datetime:
            return await conn.fetchval(  # type: ignore[no-any-return]
                "SELECT horizon FROM flywheel_series_horizons($1::text[], $2::text[],"
                " $3::text[], $4::timestamptz[], '{}'::text[], $5::jsonb, interval '30 days')",
                ["m-0"], [dimension], [stage], [new], series.funnel_json(),
            )  # fmt: skip

        horizon = await horizon_of("advocacy", "advocate")
        # a new engaged entry reaches back to the joinings 30 days before it (implied today by
        # FUNNEL's member -> engaged pair; the horizon does not lean on it)
        assert await horizon_of("engagement", "engaged") <= new - timedelta(days=30)
        after = await conn.fetchval(
            "SELECT count(*) FROM flywheel_entries WHERE member_id = 'm-0' AND at >= $1", horizon
        )
        assert horizon > T0 and after < stored // 2, (horizon, after, stored)
