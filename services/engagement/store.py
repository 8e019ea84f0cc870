"""Engagement SQL: set-based, a fixed number of statements per batch whatever its size."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from services.engagement.domain import (
    ACTIVE_STAGES,
    AT_RISK,
    Cohort,
    Participant,
    Rules,
    next_deadline,
)
from services.engagement.domain import cohorts as cohorts_of
from shared.postgres import Connection

_COLUMNS = (
    "member_id, stage, score, score_at, first_seen_at, last_active_at, stage_since, activities"
)


def _participant(row: Any) -> Participant:
    return Participant(**{k: row[k] for k in _COLUMNS.split(", ")})


async def load(
    conn: Connection, member_ids: Iterable[str], due_by: datetime | None = None
) -> dict[str, Participant]:
    """The batch's actors, plus (with `due_by`, the watermark) every member whose next
    demotion is due by then: one query for both."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM participants"
        " WHERE member_id = ANY($1::text[]) OR next_deadline <= $2",
        list(member_ids),
        due_by,
    )
    return {r["member_id"]: _participant(r) for r in rows}


async def save(conn: Connection, members: Iterable[Participant], rules: Rules) -> None:
    """Upsert the changed members in one statement, with their next deadline."""
    members = list(members)
    if not members:
        return
    await conn.execute(
        """
        INSERT INTO participants (member_id, stage, score, score_at, first_seen_at,
                                  last_active_at, stage_since, activities, next_deadline)
        SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::timestamptz[],
                             $5::timestamptz[], $6::timestamptz[], $7::timestamptz[],
                             $8::int[], $9::timestamptz[])
        ON CONFLICT (member_id) DO UPDATE SET
            stage = EXCLUDED.stage, score = EXCLUDED.score, score_at = EXCLUDED.score_at,
            first_seen_at = EXCLUDED.first_seen_at, last_active_at = EXCLUDED.last_active_at,
            stage_since = EXCLUDED.stage_since, activities = EXCLUDED.activities,
            next_deadline = EXCLUDED.next_deadline
        """,
        [m.member_id for m in members],
        [m.stage for m in members],
        [m.score for m in members],
        [m.score_at for m in members],
        [m.first_seen_at for m in members],
        [m.last_active_at for m in members],
        [m.stage_since for m in members],
        [m.activities for m in members],
        [next_deadline(m, rules) for m in members],
    )


async def cohorts(
    conn: Connection, at: datetime, rules: Rules | None = None
) -> dict[Cohort, list[str]]:
    """Members per cohort at `at` (normally the watermark): the candidates come from one
    indexed query, the classification from the pure `domain.cohorts`."""
    rules = rules or Rules()
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM participants WHERE stage = ANY($1::text[]) OR first_seen_at > $2",
        sorted(ACTIVE_STAGES | {AT_RISK}),
        at - timedelta(days=rules.newcomer_days),
    )
    return cohorts_of((_participant(r) for r in rows), at, rules)


async def delete(conn: Connection, member_ids: Collection[str]) -> None:
    """Merged into another member, or erased."""
    await conn.execute(
        "DELETE FROM participants WHERE member_id = ANY($1::text[])", sorted(member_ids)
    )
