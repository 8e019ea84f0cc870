"""The directory's reads: a page and a streamed export of the member directory, a member's
profile, the leaderboards, and the dashboard's series (weekly stage flows, peer-answer share
per week, cohort retention, health ratios, the operations strip)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta

import asyncpg

from services.gateway.directory import query as q
from services.gateway.directory.models import (
    AdvocateEntry,
    ChampionEntry,
    CohortRetention,
    Health,
    Leaderboards,
    MemberPage,
    MemberProfile,
    MemberRow,
    Operations,
    Peer,
    ProfileActivity,
    ProfileIdentity,
    ProfileTransition,
    Series,
    WeekCount,
    WeekShare,
)
from services.gateway.http.problems import Unavailable
from shared import lifecycle
from shared.postgres import Connection
from shared.settings import Settings

RETENTION_WEEKS: tuple[int, ...] = (1, 2, 4, 8, 12)
EXPORT_CHUNK = 2000
"""Rows per keyset query of a streamed export: memory stays bounded at any directory size."""


def share(part: int, whole: int) -> float | None:
    return None if not whole else round(part / whole, 4)


def member_row(r: asyncpg.Record) -> MemberRow:
    return MemberRow(
        member_id=r["member_id"],
        handle=r["handle"],
        stages={
            "awareness": r["awareness_stage"],
            "engagement": r["engagement_stage"],
            "advocacy": r["advocacy_stage"],
        },
        cohort=r["cohort"],
        score=round(float(r["score"]), 4),
        customer=r["awareness_stage"] == "customer",
        advocate=r["advocacy_stage"] in ("advocate", "champion"),
        sources=list(r["sources"]),
        joined_at=r["first_seen_at"],
        last_active_at=r["last_active_at"],
        activities=r["activities"],
    )


# --------------------------------------------------------------------------------------------
# the directory
# --------------------------------------------------------------------------------------------


async def read_model_now(conn: Connection) -> datetime | None:
    """The read model's newest event time (the newest activity): what "now" means for cohorts
    and activity windows, so a replay or a simulated community reads the same."""
    value: datetime | None = await conn.fetchval(
        "SELECT max(last_active_at) FROM directory_members"
    )
    return value


async def cohort_clock(conn: Connection) -> q.CohortClock:
    now = await read_model_now(conn) or datetime.fromtimestamp(0).astimezone()
    active = await conn.fetchval(
        "SELECT count(*) FROM directory_members WHERE engagement_stage = ANY($1::text[])",
        list(q.ACTIVE_STAGES),
    )
    core_min: float | None = None
    if active:
        size = math.ceil(active * q.CORE_TOP_FRACTION)
        core_min = await conn.fetchval(
            "SELECT score FROM directory_members WHERE engagement_stage = ANY($1::text[])"
            " ORDER BY score DESC, member_id DESC OFFSET $2 LIMIT 1",
            list(q.ACTIVE_STAGES),
            size - 1,
        )
    return q.CohortClock(now=now, core_min_score=core_min)


async def member_page(
    conn: Connection, query: q.Query, clock: q.CohortClock | None = None
) -> MemberPage:
    clock = clock or await cohort_clock(conn)
    sql, args = q.build_sql(query, clock, after=query.cursor, limit=query.limit + 1)
    rows = await conn.fetch(sql, *args)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return MemberPage(
        members=[member_row(r) for r in rows],
        next_cursor=q.cursor_after(query, rows[-1]).encode() if more and rows else None,
        sort=query.sort,
    )


async def export_rows(
    pool: asyncpg.Pool,
    query: q.Query,
    chunk: int = EXPORT_CHUNK,
    clock: q.CohortClock | None = None,
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every row of the query, in chunks of keyset queries: one connection per chunk, held
    only while it runs, so a slow download never pins a connection and memory never holds
    more than a chunk."""
    if clock is None:
        async with pool.acquire() as conn:
            clock = await cohort_clock(conn)
    after: q.Cursor | None = None
    while True:
        sql, args = q.build_sql(query, clock, after=after, limit=chunk)
        async with pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        if rows:
            yield rows
        if len(rows) < chunk:
            return
        after = q.cursor_after(query, rows[-1])


# --------------------------------------------------------------------------------------------
# a member's profile
# --------------------------------------------------------------------------------------------


async def member_profile(
    conn: Connection, member_id: str, clock: q.CohortClock | None = None
) -> MemberProfile | None:
    member = (await lifecycle.load_members(conn, [member_id])).resolve(member_id)
    if member is None:
        return None
    clock = clock or await cohort_clock(conn)
    sql, args = q.build_sql(q.Query(), clock, member_id=member)
    row = await conn.fetchrow(sql, *args)
    if row is None:
        return None
    timeline = await conn.fetch(
        "SELECT dimension, from_stage, to_stage, reason, score, occurred_at"
        " FROM journey_transitions WHERE member_id = $1 ORDER BY occurred_at, seq",
        member,
    )
    kinds = await conn.fetch(
        "SELECT kind, n FROM directory_kind_counts WHERE member_id = $1 ORDER BY n DESC, kind",
        member,
    )
    signal = await conn.fetchrow(
        "SELECT evidence, links FROM directory_advocacy_signals WHERE member_id = $1"
        " ORDER BY occurred_at DESC, event_id DESC LIMIT 1",
        member,
    )
    given = await conn.fetch(
        "SELECT helped_member_id AS member_id, count(DISTINCT coalesce(thread_id, event_id))"
        " AS threads, count(*) FILTER (WHERE accepted) AS accepted FROM flywheel_peer_help"
        " WHERE helper_member_id = $1 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50",
        member,
    )
    received = await conn.fetch(
        "SELECT helper_member_id AS member_id, count(DISTINCT coalesce(thread_id, event_id))"
        " AS threads, count(*) FILTER (WHERE accepted) AS accepted FROM flywheel_peer_help"
        " WHERE helped_member_id = $1 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50",
        member,
    )
    identities = await conn.fetch(
        "SELECT platform, platform_user_id, linked_by FROM identities WHERE member_id = $1"
        " ORDER BY platform, platform_user_id",
        member,
    )
    merged = await lifecycle.merged_into(conn, member)
    recent = await conn.fetch(
        "SELECT activity_id, occurred_at, source, kind, title, url FROM directory_activities"
        " WHERE member_id = $1 ORDER BY occurred_at DESC, activity_id DESC",
        member,
    )
    return MemberProfile(
        member=member_row(row),
        timeline=[ProfileTransition(**dict(r)) for r in timeline],
        contributions={r["kind"]: r["n"] for r in kinds},
        advocacy_evidence=json.loads(signal["evidence"]) if signal else {},
        advocacy_links=list(signal["links"]) if signal else [],
        peer_help_given=[Peer(**dict(r)) for r in given],
        peer_help_received=[Peer(**dict(r)) for r in received],
        identities=[ProfileIdentity(**dict(r)) for r in identities],
        merged_ids=sorted(merged),
        recent_activity=[ProfileActivity(**dict(r)) for r in recent],
    )


# --------------------------------------------------------------------------------------------
# leaderboards
# --------------------------------------------------------------------------------------------


async def leaderboards(
    conn: Connection, start: datetime | None, end: datetime | None, limit: int = 20
) -> Leaderboards:
    advocates = await conn.fetch(
        """
        WITH w AS (
            SELECT * FROM directory_advocacy_signals
            WHERE occurred_at >= coalesce($1, '-infinity'::timestamptz)
              AND occurred_at < coalesce($2, 'infinity'::timestamptz)),
        latest AS (
            SELECT DISTINCT ON (member_id) member_id, evidence, links, occurred_at
            FROM w ORDER BY member_id, occurred_at DESC, event_id DESC)
        SELECT w.member_id, max(w.score) AS score, count(*) AS signals,
               l.evidence, l.links, l.occurred_at AS last_signal_at,
               h.handle, d.advocacy_stage AS stage
        FROM w JOIN latest l USING (member_id)
        LEFT JOIN directory_members d ON d.member_id = w.member_id
        LEFT JOIN member_handles h ON h.member_id = w.member_id
        GROUP BY w.member_id, l.evidence, l.links, l.occurred_at, h.handle, d.advocacy_stage
        ORDER BY score DESC, w.member_id LIMIT $3
        """,
        start,
        end,
        limit,
    )
    champions = await conn.fetch(
        """
        SELECT s.member_id, s.since, t.reason, h.handle, c.rank, c.score, c.evidence, c.links
        FROM member_stages s
        JOIN journey_transitions t ON t.event_id = s.event_id
        LEFT JOIN member_handles h ON h.member_id = s.member_id
        LEFT JOIN LATERAL (
            SELECT rank, score, evidence, links FROM directory_advocacy_signals a
            WHERE a.member_id = s.member_id AND a.kind = 'champion'
            ORDER BY occurred_at DESC, event_id DESC LIMIT 1) c ON true
        WHERE s.dimension = 'advocacy' AND s.stage = 'champion'
        ORDER BY c.rank NULLS LAST, s.since DESC, s.member_id
        LIMIT $1
        """,
        limit,
    )
    return Leaderboards(
        window_from=start,
        window_to=end,
        advocates=[
            AdvocateEntry(
                member_id=r["member_id"],
                handle=r["handle"],
                stage=r["stage"],
                score=round(r["score"], 4),
                signals=r["signals"],
                evidence=json.loads(r["evidence"]),
                links=list(r["links"]),
                last_signal_at=r["last_signal_at"],
            )
            for r in advocates
        ],
        champions=[
            ChampionEntry(
                member_id=r["member_id"],
                handle=r["handle"],
                since=r["since"],
                reason=r["reason"],
                rank=r["rank"],
                score=None if r["score"] is None else round(r["score"], 4),
                evidence=json.loads(r["evidence"]) if r["evidence"] else {},
                links=list(r["links"] or []),
            )
            for r in champions
        ],
    )


# --------------------------------------------------------------------------------------------
# the dashboard's series
# --------------------------------------------------------------------------------------------


async def cohort_retention(conn: Connection) -> list[CohortRetention]:
    """Per sign-up month: the share of its members still active 1, 2, 4, 8 and 12 weeks after
    they joined (their last activity at or after joined + weeks), over the members old enough
    to tell (joined + weeks <= the read model's now). Visitors are not members.

    Read from the day counters of migration 009 (members per day joined and retention level),
    not from every member: only the members who joined on the day of now - N weeks are read
    one by one, to tell exactly which of them are N weeks old."""
    now = await read_model_now(conn)
    if now is None:
        return []
    rows = await conn.fetch(
        """
        WITH cut AS (  -- now - N weeks, as epoch arithmetic (no zone or DST moves it)
            SELECT w, $1::timestamptz - make_interval(secs => w * 604800) AS at
            FROM unnest($2::int[]) AS w),
        cut_day AS (SELECT w, (at AT TIME ZONE 'UTC')::date AS day FROM cut)
        -- members per month
        SELECT to_char(day, 'YYYY-MM') AS cohort, 0 AS w, sum(n)::bigint AS e, 0::bigint AS r
        FROM directory_cohort_days GROUP BY 1
        UNION ALL
        -- the days before now - N weeks: all old enough
        SELECT to_char(h.day, 'YYYY-MM'), c.w, sum(h.n)::bigint,
               (sum(h.n) FILTER (WHERE h.level >= c.w))::bigint
        FROM directory_cohort_days h JOIN cut_day c ON h.day < c.day GROUP BY 1, 2
        UNION ALL
        -- the day of now - N weeks: member by member
        SELECT to_char(m.first_seen_at AT TIME ZONE 'UTC', 'YYYY-MM'), c.w,
               count(*) FILTER (WHERE extract(epoch FROM $1 - m.first_seen_at) / 604800 >= c.w),
               count(*) FILTER (
                   WHERE extract(epoch FROM $1 - m.first_seen_at) / 604800 >= c.w
                     AND extract(epoch FROM m.last_active_at - m.first_seen_at) / 604800 >= c.w)
        FROM cut_day c JOIN directory_members m
          ON NOT m.anonymous
         AND m.first_seen_at >= c.day::timestamp AT TIME ZONE 'UTC'
         AND m.first_seen_at < (c.day + 1)::timestamp AT TIME ZONE 'UTC'
        GROUP BY 1, 2
        """,
        now,
        list(RETENTION_WEEKS),
    )
    members: dict[str, int] = {}
    old_enough: dict[tuple[str, int], int] = {}
    retained: dict[tuple[str, int], int] = {}
    for r in rows:
        if r["w"] == 0:
            members[r["cohort"]] = r["e"]
        else:
            key = (r["cohort"], r["w"])
            old_enough[key] = old_enough.get(key, 0) + r["e"]
            retained[key] = retained.get(key, 0) + (r["r"] or 0)
    return [
        CohortRetention(
            cohort=cohort,
            members=n,
            retained={
                str(w): share(retained.get((cohort, w), 0), old_enough.get((cohort, w), 0))
                for w in RETENTION_WEEKS
            },
            retained_members={
                str(w): retained.get((cohort, w), 0) if old_enough.get((cohort, w)) else None
                for w in RETENTION_WEEKS
            },
        )
        for cohort, n in sorted(members.items())
        if n
    ]


async def stage_weeks(
    conn: Connection, start: datetime | None, end: datetime | None
) -> list[WeekCount]:
    rows = await conn.fetch(
        "SELECT week, dimension, stage, n FROM directory_stage_weeks"
        " WHERE week >= coalesce($1::timestamptz, '-infinity')::date"
        " AND week < coalesce($2::timestamptz, 'infinity')::date AND n > 0"
        " ORDER BY week, dimension, stage",
        start,
        end,
    )
    return [
        WeekCount(week=r["week"], dimension=r["dimension"], stage=r["stage"], transitions=r["n"])
        for r in rows
    ]


async def peer_answer_weeks(
    conn: Connection, start: datetime | None, end: datetime | None
) -> list[WeekShare]:
    """GET /v1/flywheel's peer_answer_share, week by week: questions asked that week, and how
    many of them a member other than the asker helped in the thread (before `to`): each
    question's own answer time (migration 010), not a probe of the peer help per question."""
    rows = await conn.fetch(
        """
        SELECT (date_trunc('week', q.occurred_at AT TIME ZONE 'UTC'))::date AS week,
               count(*) AS n,
               count(*) FILTER (
                   WHERE q.answered_at < coalesce($2, 'infinity'::timestamptz)) AS answered
        FROM flywheel_questions q
        WHERE q.occurred_at >= coalesce($1, '-infinity'::timestamptz)
          AND q.occurred_at < coalesce($2, 'infinity'::timestamptz)
        GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
    )
    return [
        WeekShare(
            week=r["week"],
            questions=r["n"],
            answered_by_peers=r["answered"],
            share=share(r["answered"], r["n"]),
        )
        for r in rows
    ]


async def health(conn: Connection) -> Health:
    now = await read_model_now(conn)
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE NOT anonymous) AS members,
               count(*) FILTER (WHERE NOT anonymous AND last_active_at >= $1) AS active,
               count(*) FILTER (WHERE awareness_stage = 'customer') AS customers,
               count(*) FILTER (WHERE advocacy_stage IN ('advocate', 'champion')) AS advocates,
               count(*) FILTER (WHERE anonymous) AS visitors
        FROM directory_members
        """,
        (now - timedelta(days=30)) if now else None,
    )
    assert row is not None
    members = row["members"]
    return Health(
        now=now,
        members=members,
        active_30d=row["active"],
        active_share=share(row["active"], members),
        customers=row["customers"],
        customer_share=share(row["customers"], members),
        advocates=row["advocates"],
        advocate_share=share(row["advocates"], members),
        visitors=row["visitors"],
    )


async def series(conn: Connection, start: datetime | None, end: datetime | None) -> Series:
    return Series(
        window_from=start,
        window_to=end,
        stage_weeks=await stage_weeks(conn, start, end),
        peer_answer_weeks=await peer_answer_weeks(conn, start, end),
        cohort_retention=await cohort_retention(conn),
        health=await health(conn),
    )


# --------------------------------------------------------------------------------------------
# the operations strip
# --------------------------------------------------------------------------------------------


async def broker_figures(
    settings: Settings, group: str, topics: Sequence[str], timeout_s: float = 2.0
) -> tuple[int | None, int | None, str | None]:
    """(lag of the read model's group, records on the dead-letter topics of what it reads,
    error): the admin client with a short timeout; a broker that does not answer gives
    (None, None, why) and the page still renders."""
    from shared.kafka import consumer_lag

    async def dead_letters() -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers, client_id="flywheel-dashboard"
        )
        probe = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
        )
        await admin.start()
        await probe.start()
        try:
            described = await admin.describe_topics([f"{t}.dlq" for t in topics])
            partitions = [
                TopicPartition(d["topic"], p["partition"])
                for d in described
                if d["error_code"] == 0
                for p in d["partitions"]
            ]
            if not partitions:
                return 0
            ends = await probe.end_offsets(partitions)
            starts = await probe.beginning_offsets(partitions)
            return sum(ends[tp] - starts[tp] for tp in partitions)
        finally:
            await probe.stop()
            await admin.close()

    async def both() -> tuple[int, int]:
        lag = await consumer_lag(settings.kafka_bootstrap_servers, group, list(topics))
        return sum(lag.values()), await dead_letters()

    # in a task of its own: a timeout cancels it, never the request
    task = asyncio.create_task(both())
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return None, None, f"no answer within {timeout_s:g} s"
    if (error := task.exception()) is not None:
        return None, None, f"{type(error).__name__}: {error}"[:200]
    lag, dead = task.result()
    return lag, dead, None


async def read_model_ops(conn: Connection) -> tuple[int, datetime | None]:
    """(outbox rows not yet published, the newest event time the read model holds)."""
    backlog = await conn.fetchval("SELECT count(*) FROM outbox")
    # the gateway keeps no watermark of its own (the stage services do): its clock is the
    # newest activity it projected
    return backlog or 0, await read_model_now(conn)


def ops_model(
    lag: int | None, dead: int | None, error: str | None, backlog: int, watermark: datetime | None
) -> Operations:
    return Operations(
        consumer_lag=lag,
        dead_letters=dead,
        outbox_backlog=backlog,
        watermark=watermark,
        broker_error=error,
    )


def ready(pool: Callable[[], asyncpg.Pool | None]) -> asyncpg.Pool:
    current = pool()
    if current is None:
        raise Unavailable("database", "the read model is starting")
    return current
