"""Engagement SQL: set-based, one round trip per statement per batch."""

from __future__ import annotations

from collections.abc import Iterable

from services.engagement.domain import Participant
from shared.postgres import Connection


async def load(conn: Connection, member_ids: Iterable[str]) -> dict[str, Participant]:
    rows = await conn.fetch(
        "SELECT member_id, stage, contributions, last_active_at FROM participants"
        " WHERE member_id = ANY($1::text[])",
        list(member_ids),
    )
    return {r["member_id"]: Participant(**dict(r)) for r in rows}


async def save(conn: Connection, members: Iterable[Participant]) -> None:
    members = list(members)
    if not members:
        return
    await conn.execute(
        """
        INSERT INTO participants (member_id, stage, contributions, last_active_at)
        SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[])
        ON CONFLICT (member_id) DO UPDATE
            SET stage = EXCLUDED.stage, contributions = EXCLUDED.contributions,
                last_active_at = EXCLUDED.last_active_at
        """,
        [m.member_id for m in members],
        [m.stage for m in members],
        [m.contributions for m in members],
        [m.last_active_at for m in members],
    )
