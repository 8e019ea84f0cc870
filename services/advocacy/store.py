"""Advocacy SQL: set-based, one round trip per statement per batch."""

from __future__ import annotations

from collections.abc import Iterable

from services.advocacy.domain import Advocate
from shared.postgres import Connection


async def load(conn: Connection, member_ids: Iterable[str]) -> dict[str, Advocate]:
    rows = await conn.fetch(
        "SELECT member_id, stage, accepted_answers FROM advocates"
        " WHERE member_id = ANY($1::text[])",
        list(member_ids),
    )
    return {r["member_id"]: Advocate(**dict(r)) for r in rows}


async def save(conn: Connection, members: Iterable[Advocate]) -> None:
    members = list(members)
    if not members:
        return
    await conn.execute(
        """
        INSERT INTO advocates (member_id, stage, accepted_answers)
        SELECT * FROM unnest($1::text[], $2::text[], $3::int[])
        ON CONFLICT (member_id) DO UPDATE
            SET stage = EXCLUDED.stage, accepted_answers = EXCLUDED.accepted_answers
        """,
        [m.member_id for m in members],
        [m.stage for m in members],
        [m.accepted_answers for m in members],
    )
