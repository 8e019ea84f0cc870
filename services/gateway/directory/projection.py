"""The directory's part of the read model's batch: member-activity, journey-transitions and
signals.advocacy into the `directory_*` tables (migration 006), and its part of a merge and an
erasure.

Runs inside the batch's unit of work after the journey projection (so `member_stages` already
holds the batch's stages) and after the inbox dropped events applied before: a replay or a
redelivery changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from shared.cloudevents import Envelope
from shared.contracts import ActivityV1, AdvocateV1, ChampionNominatedV1, StageChangedV1
from shared.postgres import Connection
from shared.uow import UnitOfWork

DEFAULT_RECENT = 20


def week_of(at: datetime) -> date:
    """Monday of the ISO week holding `at` (UTC)."""
    day = at.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


@dataclass
class _Seen:
    """A batch's activities of one member, folded."""

    first: datetime
    last: datetime
    count: int = 0
    anonymous: bool = True
    sources: set[str] = field(default_factory=set)
    kinds: dict[str, int] = field(default_factory=dict)


def fold_activities(activities: Sequence[ActivityV1]) -> dict[str, _Seen]:
    """Per member: first and last event time, count, platforms and kinds (handles are not in
    the log: identity keeps them, `member_handles`). Staff and bots never count (as in every
    stage service)."""
    seen: dict[str, _Seen] = {}
    for a in activities:
        if a.actor.is_bot or a.actor.is_team_member:
            continue
        s = seen.get(a.actor.member_id)
        if s is None:
            s = seen[a.actor.member_id] = _Seen(first=a.occurred_at, last=a.occurred_at)
        s.first, s.last = min(s.first, a.occurred_at), max(s.last, a.occurred_at)
        s.count += 1
        s.anonymous = s.anonymous and a.actor.anonymous
        s.sources.add(a.source)
        s.kinds[a.kind] = s.kinds.get(a.kind, 0) + 1
    return seen


_UPSERT_MEMBERS = """
INSERT INTO directory_members
    (member_id, anonymous, first_seen_at, last_active_at, activities, sources)
SELECT b.member_id, b.anonymous, b.first_seen, b.last_active, b.n,
       string_to_array(b.sources, ',')
FROM unnest($1::text[], $2::bool[], $3::timestamptz[], $4::timestamptz[],
            $5::bigint[], $6::text[]) AS b(member_id, anonymous, first_seen,
                                           last_active, n, sources)
ON CONFLICT (member_id) DO UPDATE SET
    anonymous = directory_members.anonymous AND EXCLUDED.anonymous,
    first_seen_at = least(directory_members.first_seen_at, EXCLUDED.first_seen_at),
    last_active_at = greatest(directory_members.last_active_at, EXCLUDED.last_active_at),
    activities = directory_members.activities + EXCLUDED.activities,
    sources = ARRAY(SELECT DISTINCT s FROM unnest(directory_members.sources || EXCLUDED.sources)
                    AS u(s) ORDER BY s)
"""

_BUMP_KINDS = """
INSERT INTO directory_kind_counts (member_id, kind, n)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (member_id, kind) DO UPDATE SET n = directory_kind_counts.n + EXCLUDED.n
"""

_INSERT_RECENT = """
INSERT INTO directory_activities (member_id, activity_id, occurred_at, source, kind, title, url)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::text[], $7::text[])
ON CONFLICT DO NOTHING
"""

# Keep the newest N per member touched by the batch: per member, its (N+1)-th newest row (in
# the profile's order: occurred_at DESC, activity_id DESC) is the newest to go, and every row
# at or below it goes. Each member's lookup reads its N+1 newest rows by the (member_id,
# occurred_at DESC) index; a member with N rows or fewer finds none and loses nothing. (It was
# a row_number() window over every row of the batch's members, sorted whole, each batch: the
# read model's largest statement, 16.7 of 52 s of SQL: docs/PERFORMANCE.md, phase 7b.)
_TRIM_RECENT = """
DELETE FROM directory_activities d
USING unnest($1::text[]) AS m(member_id)
CROSS JOIN LATERAL (
    SELECT a.occurred_at, a.activity_id FROM directory_activities a
    WHERE a.member_id = m.member_id
    ORDER BY a.occurred_at DESC, a.activity_id DESC
    OFFSET $2 LIMIT 1) cut
WHERE d.member_id = m.member_id
  AND (d.occurred_at, d.activity_id) <= (cut.occurred_at, cut.activity_id)
"""

# the batch's members' current stages, copied from member_stages (the journey projection ran);
# a member known only from a transition so far (its activity is on another partition) gets a
# row dated by the transition, and counts as a visitor while its awareness stage says so
_SYNC_STAGES = """
INSERT INTO directory_members (member_id, anonymous, first_seen_at, last_active_at,
                               awareness_stage, engagement_stage, advocacy_stage, score)
SELECT s.member_id,
       coalesce(max(s.stage) FILTER (WHERE s.dimension = 'awareness'), '') = 'visitor',
       min(s.since), min(s.since),
       max(s.stage) FILTER (WHERE s.dimension = 'awareness'),
       max(s.stage) FILTER (WHERE s.dimension = 'engagement'),
       max(s.stage) FILTER (WHERE s.dimension = 'advocacy'),
       coalesce(max(s.score) FILTER (WHERE s.dimension = 'engagement'), 0)
FROM member_stages s WHERE s.member_id = ANY($1::text[])
GROUP BY s.member_id
ON CONFLICT (member_id) DO UPDATE SET
    awareness_stage = EXCLUDED.awareness_stage,
    engagement_stage = EXCLUDED.engagement_stage,
    advocacy_stage = EXCLUDED.advocacy_stage,
    score = CASE WHEN EXCLUDED.engagement_stage IS NULL THEN directory_members.score
                 ELSE EXCLUDED.score END
"""

_BUMP_WEEKS = """
INSERT INTO directory_stage_weeks (week, dimension, stage, n)
SELECT week, dimension, stage, count(*)
FROM unnest($1::date[], $2::text[], $3::text[]) AS b(week, dimension, stage)
GROUP BY week, dimension, stage
ON CONFLICT (week, dimension, stage) DO UPDATE SET n = directory_stage_weeks.n + EXCLUDED.n
"""

_INSERT_SIGNALS = """
INSERT INTO directory_advocacy_signals
    (event_id, member_id, kind, score, rank, evidence, links, occurred_at)
SELECT b.event_id, b.member_id, b.kind, b.score, b.rank, b.evidence,
       ARRAY(SELECT jsonb_array_elements_text(b.links)), b.occurred_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::int[], $6::jsonb[],
            $7::jsonb[], $8::timestamptz[])
     AS b(event_id, member_id, kind, score, rank, evidence, links, occurred_at)
ON CONFLICT (event_id) DO NOTHING
"""


async def project_directory(
    uow: UnitOfWork, events: Sequence[Envelope], recent: int = DEFAULT_RECENT
) -> None:
    """The directory's part of the gateway's batch; set-based, one statement per table."""
    conn = uow.conn
    activities = [e.data for e in events if isinstance(e.data, ActivityV1)]
    seen = fold_activities(activities)
    if seen:
        members = sorted(seen)
        await conn.execute(
            _UPSERT_MEMBERS,
            members,
            [seen[m].anonymous for m in members],
            [seen[m].first for m in members],
            [seen[m].last for m in members],
            [seen[m].count for m in members],
            [",".join(sorted(seen[m].sources)) for m in members],
        )
        kinds = [(m, k, n) for m in members for k, n in sorted(seen[m].kinds.items())]
        await conn.execute(
            _BUMP_KINDS, [m for m, _, _ in kinds], [k for _, k, _ in kinds], [n for *_, n in kinds]
        )
        counted = [a for a in activities if a.actor.member_id in seen]
        counted = [a for a in counted if not (a.actor.is_bot or a.actor.is_team_member)]
        await conn.execute(
            _INSERT_RECENT,
            [a.actor.member_id for a in counted],
            [f"{a.source}:{a.activity_id}" for a in counted],
            [a.occurred_at for a in counted],
            [a.source for a in counted],
            [a.kind for a in counted],
            [a.target.thread_title if a.target else None for a in counted],
            [a.target.url if a.target else None for a in counted],
        )
        # a sign-up that names the visitor it was: the visitor's row is the member's now
        for a in activities:
            anonymous_id = a.properties.get("anonymous_id")
            if (
                a.kind == "signup"
                and isinstance(anonymous_id, str)
                and anonymous_id
                and anonymous_id != a.actor.member_id
            ):
                await merge_member(conn, a.actor.member_id, anonymous_id)
        await conn.execute(_TRIM_RECENT, members, recent)

    transitions = [e.data for e in events if isinstance(e.data, StageChangedV1)]
    if transitions:
        await conn.execute(
            _BUMP_WEEKS,
            [week_of(t.occurred_at) for t in transitions],
            [t.dimension for t in transitions],
            [t.to_stage for t in transitions],
        )
        await conn.execute(_SYNC_STAGES, sorted({t.member_id for t in transitions}))
        # a visitor folded into the member who signed up: not a row of its own any more
        folded = sorted(
            {t.member_id for t in transitions if t.dimension == "awareness"}
            & {t.member_id for t in transitions if t.to_stage == "merged"}
        )
        if folded:
            await conn.execute(
                "DELETE FROM directory_members WHERE member_id = ANY($1::text[])"
                " AND awareness_stage = 'merged'",
                folded,
            )

    signals = [
        (e.id, e.data) for e in events if isinstance(e.data, AdvocateV1 | ChampionNominatedV1)
    ]
    if signals:
        await conn.execute(
            _INSERT_SIGNALS,
            [i for i, _ in signals],
            [s.member_id for _, s in signals],
            ["champion" if isinstance(s, ChampionNominatedV1) else "advocate" for _, s in signals],
            [s.score for _, s in signals],
            [s.rank if isinstance(s, ChampionNominatedV1) else None for _, s in signals],
            [json.dumps(s.evidence, sort_keys=True) for _, s in signals],
            [json.dumps(s.links) for _, s in signals],
            [s.occurred_at for _, s in signals],
        )


# --------------------------------------------------------------------------------------------
# the directory's part of a merge and an erasure (composed in services/gateway/member_state.py)
# --------------------------------------------------------------------------------------------


async def merge_member(conn: Connection, survivor: str, merged: str) -> None:
    """B's row folds into A's: the earliest first seen, the latest activity, both counts and
    platforms; A's stages stay (the stage services send A's re-judged ones), B's fill gaps."""
    if survivor == merged:
        return
    await conn.execute(
        """
        INSERT INTO directory_members AS d
            (member_id, anonymous, first_seen_at, last_active_at, activities, sources,
             awareness_stage, engagement_stage, advocacy_stage, score)
        SELECT $1, anonymous, first_seen_at, last_active_at, activities, sources,
               awareness_stage, engagement_stage, advocacy_stage, score
        FROM directory_members WHERE member_id = $2
        ON CONFLICT (member_id) DO UPDATE SET
            anonymous = d.anonymous AND EXCLUDED.anonymous,
            first_seen_at = least(d.first_seen_at, EXCLUDED.first_seen_at),
            last_active_at = greatest(d.last_active_at, EXCLUDED.last_active_at),
            activities = d.activities + EXCLUDED.activities,
            sources = ARRAY(SELECT DISTINCT s FROM unnest(d.sources || EXCLUDED.sources) AS u(s)
                            ORDER BY s),
            engagement_stage = coalesce(d.engagement_stage, EXCLUDED.engagement_stage),
            advocacy_stage = coalesce(d.advocacy_stage, EXCLUDED.advocacy_stage)
        """,
        survivor,
        merged,
    )
    for sql in (
        "DELETE FROM directory_members WHERE member_id = $2 AND $1::text <> $2",
        "INSERT INTO directory_activities"
        " SELECT $1, activity_id, occurred_at, source, kind, title, url"
        " FROM directory_activities WHERE member_id = $2 ON CONFLICT DO NOTHING",
        "DELETE FROM directory_activities WHERE member_id = $2 AND $1::text <> $2",
        "INSERT INTO directory_kind_counts AS k (member_id, kind, n)"
        " SELECT $1, kind, n FROM directory_kind_counts WHERE member_id = $2"
        " ON CONFLICT (member_id, kind) DO UPDATE SET n = k.n + EXCLUDED.n",
        "DELETE FROM directory_kind_counts WHERE member_id = $2 AND $1::text <> $2",
        "UPDATE directory_advocacy_signals SET member_id = $1 WHERE member_id = $2",
    ):
        await conn.execute(sql, survivor, merged)


async def erase_members(conn: Connection, ids: Collection[str], at: datetime) -> None:
    """Delete the members' rows, and take their transitions out of the weekly stage flows
    (runs before the journey's part deletes those transitions)."""
    members = sorted(ids)
    await conn.execute(
        """
        UPDATE directory_stage_weeks w SET n = w.n - gone.n
        FROM (SELECT (date_trunc('week', occurred_at AT TIME ZONE 'UTC'))::date AS week,
                     dimension, to_stage AS stage, count(*) AS n
              FROM journey_transitions WHERE member_id = ANY($1::text[])
              GROUP BY 1, 2, 3) gone
        WHERE w.week = gone.week AND w.dimension = gone.dimension AND w.stage = gone.stage
        """,
        members,
    )
    for sql in (
        "DELETE FROM directory_members WHERE member_id = ANY($1::text[])",
        "DELETE FROM directory_activities WHERE member_id = ANY($1::text[])",
        "DELETE FROM directory_kind_counts WHERE member_id = ANY($1::text[])",
        "DELETE FROM directory_advocacy_signals WHERE member_id = ANY($1::text[])",
    ):
        await conn.execute(sql, members)
