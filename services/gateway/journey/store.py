"""The journey read model's SQL: set-based writes (one statement per table per batch), the
reads behind GET /v1/members/{id}/journey and GET /v1/stages, and what a merge and an erasure
do to `journey_transitions` and `member_stages`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, get_args

import asyncpg

from services.gateway.http.problems import Unavailable
from services.gateway.journey.models import MemberJourney, StageCounts, StageView, TimelineEntry
from shared import lifecycle
from shared.contracts import Dimension
from shared.postgres import TRANSIENT_DB_ERRORS, Connection

DIMENSIONS: tuple[str, ...] = get_args(Dimension)


@dataclass(frozen=True)
class TransitionRow:
    """One journey.stage_changed.v1 event, flattened for the tables."""

    event_id: str
    member_id: str
    dimension: str
    from_stage: str | None
    to_stage: str
    reason: str
    score: float | None
    occurred_at: datetime
    caused_by: tuple[str, ...]


_INSERT_TRANSITIONS = """
INSERT INTO journey_transitions
    (event_id, member_id, dimension, from_stage, to_stage, reason, score, occurred_at, caused_by)
SELECT b.event_id, b.member_id, b.dimension, b.from_stage, b.to_stage, b.reason, b.score,
       b.occurred_at, ARRAY(SELECT jsonb_array_elements_text(b.caused_by))
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::float8[], $8::timestamptz[], $9::jsonb[]) WITH ORDINALITY
     AS b(event_id, member_id, dimension, from_stage, to_stage, reason, score, occurred_at,
          caused_by, ord)
ORDER BY b.ord
ON CONFLICT (event_id) DO NOTHING
"""

# Per (member, dimension) the batch's latest transition by event time, ties going to the
# later arrival; it replaces the stored stage unless that one is strictly later in event time
# (transitions of different dimensions interleave, and a late one must not win).
_UPSERT_STAGES = """
INSERT INTO member_stages (member_id, dimension, stage, since, score, event_id)
SELECT DISTINCT ON (b.member_id, b.dimension)
       b.member_id, b.dimension, b.to_stage, b.occurred_at, b.score, b.event_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::timestamptz[])
     WITH ORDINALITY AS b(event_id, member_id, dimension, to_stage, score, occurred_at, ord)
ORDER BY b.member_id, b.dimension, b.occurred_at DESC, b.ord DESC
ON CONFLICT (member_id, dimension) DO UPDATE
    SET stage = EXCLUDED.stage, since = EXCLUDED.since, score = EXCLUDED.score,
        event_id = EXCLUDED.event_id, updated_at = now()
    WHERE member_stages.since <= EXCLUDED.since
"""


async def apply_transitions(conn: Connection, rows: Sequence[TransitionRow]) -> None:
    """Record a batch of transitions (in arrival order) and move the current stages."""
    if not rows:
        return
    await conn.execute(
        _INSERT_TRANSITIONS,
        [r.event_id for r in rows],
        [r.member_id for r in rows],
        [r.dimension for r in rows],
        [r.from_stage for r in rows],
        [r.to_stage for r in rows],
        [r.reason for r in rows],
        [r.score for r in rows],
        [r.occurred_at for r in rows],
        [json.dumps(list(r.caused_by)) for r in rows],
    )
    await conn.execute(
        _UPSERT_STAGES,
        [r.event_id for r in rows],
        [r.member_id for r in rows],
        [r.dimension for r in rows],
        [r.to_stage for r in rows],
        [r.score for r in rows],
        [r.occurred_at for r in rows],
    )


async def fetch_journey(conn: Connection, member_id: str) -> MemberJourney | None:
    stages = await conn.fetch(
        "SELECT dimension, stage, since, score FROM member_stages WHERE member_id = $1"
        " ORDER BY dimension",
        member_id,
    )
    timeline = await conn.fetch(
        "SELECT dimension, from_stage, to_stage, reason, score, occurred_at, caused_by"
        " FROM journey_transitions WHERE member_id = $1 ORDER BY occurred_at, seq",
        member_id,
    )
    if not stages and not timeline:
        return None
    return MemberJourney(
        member_id=member_id,
        stages={
            r["dimension"]: StageView(stage=r["stage"], since=r["since"], score=r["score"])
            for r in stages
        },
        timeline=[TimelineEntry(**dict(r)) for r in timeline],
    )


async def fetch_stage_counts(conn: Connection) -> StageCounts:
    rows = await conn.fetch(
        "SELECT dimension, stage, count(*) AS members FROM member_stages"
        " GROUP BY dimension, stage ORDER BY dimension, stage"
    )
    members = await conn.fetchval("SELECT count(DISTINCT member_id) FROM member_stages")
    dimensions: dict[str, dict[str, int]] = {d: {} for d in DIMENSIONS}
    for r in rows:
        dimensions.setdefault(r["dimension"], {})[r["stage"]] = r["members"]
    return StageCounts(members=members or 0, dimensions=dimensions)


class JourneyReader(Protocol):
    async def member_journey(self, member_id: str) -> MemberJourney | None:
        """The member's current stages and timeline; None if no transition is known."""
        ...

    async def stage_counts(self) -> StageCounts: ...


class PgJourneyStore:
    """The JourneyReader over the gateway's database; the pool appears at start-up."""

    def __init__(self, pool: Callable[[], asyncpg.Pool | None]) -> None:
        self._pool = pool

    def _ready_pool(self) -> asyncpg.Pool:
        pool = self._pool()
        if pool is None:
            raise Unavailable("database", "the read model is not started yet")
        return pool

    async def member_journey(self, member_id: str) -> MemberJourney | None:
        try:
            async with self._ready_pool().acquire() as conn:
                # a merged id shows its survivor's journey; an erased one, none
                member = (await lifecycle.load_members(conn, [member_id])).resolve(member_id)
                return None if member is None else await fetch_journey(conn, member)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def stage_counts(self) -> StageCounts:
        try:
            async with self._ready_pool().acquire() as conn:
                return await fetch_stage_counts(conn)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc


# --------------------------------------------------------------------------------------------
# the journey's part of a merge and an erasure (composed in services/gateway/member_state.py)
# --------------------------------------------------------------------------------------------


async def merge_member(conn: Connection, survivor: str, merged: str) -> None:
    """B's journey is A's now. A's current stage in a dimension stays (the stage service sends
    A's re-judged stage as a transition); where A has none, B's becomes A's."""
    for sql in (
        "UPDATE journey_transitions SET member_id = $1 WHERE member_id = $2",
        "INSERT INTO member_stages (member_id, dimension, stage, since, score, event_id)"
        " SELECT $1, dimension, stage, since, score, event_id FROM member_stages"
        " WHERE member_id = $2 ON CONFLICT (member_id, dimension) DO NOTHING",
        "DELETE FROM member_stages WHERE member_id = $2 AND $1 <> $2",
    ):
        await conn.execute(sql, survivor, merged)


_ID_CHARS = r"A-Za-z0-9._:@/+=\-"


def mention_pattern(member_id: str) -> str:
    """A PostgreSQL regular expression matching the id as a whole word (not `m-1` in `m-12`,
    but `m-1` in "referred by m-1."), as `lifecycle.scrub` does for new events."""
    end = f"(?:$|[^{_ID_CHARS}])"
    return f"(?<![{_ID_CHARS}]){re.escape(member_id)}(?={end}|[._:@/+=\\-]+{end})"


async def erase_members(conn: Connection, ids: Collection[str], at: datetime) -> None:
    """Delete the members' journeys; where someone else's transition names one of them in its
    reason ("referred by ..."), put `lifecycle.ERASED` in its place."""
    members = sorted(ids)
    for sql in (
        "DELETE FROM journey_transitions WHERE member_id = ANY($1::text[])",
        "DELETE FROM member_stages WHERE member_id = ANY($1::text[])",
    ):
        await conn.execute(sql, members)
    for member in members:  # others' reasons that name them ("referred by ...")
        await conn.execute(
            "UPDATE journey_transitions SET reason = regexp_replace(reason, $1, $2, 'g')"
            " WHERE strpos(reason, $3) > 0",
            mention_pattern(member),
            lifecycle.ERASED,
            member,
        )
