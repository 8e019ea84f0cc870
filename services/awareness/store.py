"""Awareness SQL: set-based, one round trip per statement per batch."""

from __future__ import annotations

from collections.abc import Iterable

from services.awareness.domain import Person
from shared.postgres import Connection


async def load_people(conn: Connection, member_ids: Iterable[str]) -> dict[str, Person]:
    rows = await conn.fetch(
        "SELECT member_id, stage, first_seen_at, joined_at FROM people"
        " WHERE member_id = ANY($1::text[])",
        list(member_ids),
    )
    return {r["member_id"]: Person(**dict(r)) for r in rows}


async def save_people(conn: Connection, people: Iterable[Person]) -> None:
    people = list(people)
    if not people:
        return
    await conn.execute(
        """
        INSERT INTO people (member_id, stage, first_seen_at, joined_at)
        SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
        ON CONFLICT (member_id) DO UPDATE
            SET stage = EXCLUDED.stage, first_seen_at = EXCLUDED.first_seen_at,
                joined_at = EXCLUDED.joined_at
        """,
        [p.member_id for p in people],
        [p.stage for p in people],
        [p.first_seen_at for p in people],
        [p.joined_at for p in people],
    )
