"""Awareness SQL: set-based, one round trip per statement per batch."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime

from services.awareness.domain import Person, Touch
from shared.postgres import Connection

_COLUMNS = (
    "member_id, stage, first_seen_at, first_touch_channel, first_touch_detail, first_touch_at,"
    " first_touch_activity, joined_at, referred_by, customer_at, touchpoint_ids, touchpoints,"
    " considered_at, considered_by, renewals"
)


async def load_people(conn: Connection, member_ids: Iterable[str]) -> dict[str, Person]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM people WHERE member_id = ANY($1::text[])", list(member_ids)
    )
    people = {}
    for r in rows:
        touch = (
            Touch(
                r["first_touch_channel"],
                r["first_touch_detail"],
                r["first_touch_at"],
                r["first_touch_activity"],
            )
            if r["first_touch_channel"]
            else None
        )
        people[r["member_id"]] = Person(
            member_id=r["member_id"],
            stage=r["stage"],
            first_seen_at=r["first_seen_at"],
            first_touch=touch,
            joined_at=r["joined_at"],
            referred_by=r["referred_by"],
            customer_at=r["customer_at"],
            touchpoint_ids=tuple(r["touchpoint_ids"]),
            touchpoints=r["touchpoints"],
            considered_at=r["considered_at"],
            considered_by=r["considered_by"],
            renewals=r["renewals"],
        )
    return people


async def save_people(conn: Connection, people: Iterable[Person]) -> None:
    people = list(people)
    if not people:
        return
    touch = [p.first_touch for p in people]
    await conn.execute(
        f"""
        INSERT INTO people ({_COLUMNS})
        SELECT m, s, fs, tc, td, ta, tact, j, r, c,
               coalesce(
                   (SELECT array_agg(x) FROM unnest(string_to_array(tp, chr(31))) AS x
                    WHERE x <> ''),
                   '{{}}'),
               n, ca, cb, rn
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                    $6::timestamptz[], $7::text[], $8::timestamptz[], $9::text[],
                    $10::timestamptz[], $11::text[], $12::int[], $13::timestamptz[],
                    $14::text[], $15::int[])
             AS u(m, s, fs, tc, td, ta, tact, j, r, c, tp, n, ca, cb, rn)
        ON CONFLICT (member_id) DO UPDATE SET
            stage = EXCLUDED.stage, first_seen_at = EXCLUDED.first_seen_at,
            first_touch_channel = EXCLUDED.first_touch_channel,
            first_touch_detail = EXCLUDED.first_touch_detail,
            first_touch_at = EXCLUDED.first_touch_at,
            first_touch_activity = EXCLUDED.first_touch_activity,
            joined_at = EXCLUDED.joined_at, referred_by = EXCLUDED.referred_by,
            customer_at = EXCLUDED.customer_at, touchpoint_ids = EXCLUDED.touchpoint_ids,
            touchpoints = EXCLUDED.touchpoints, considered_at = EXCLUDED.considered_at,
            considered_by = EXCLUDED.considered_by, renewals = EXCLUDED.renewals
        """,
        [p.member_id for p in people],
        [p.stage for p in people],
        [p.first_seen_at for p in people],
        [t.channel if t else None for t in touch],
        [t.detail if t else None for t in touch],
        [t.at if t else None for t in touch],
        [t.activity_id if t else None for t in touch],
        [p.joined_at for p in people],
        [p.referred_by for p in people],
        [p.customer_at for p in people],
        # arrays of arrays must be rectangular in PostgreSQL: ship each list as one string
        ["\x1f".join(p.touchpoint_ids) for p in people],
        [p.touchpoints for p in people],
        [p.considered_at for p in people],
        [p.considered_by for p in people],
        [p.renewals for p in people],
    )


async def load_aliases(conn: Connection, anonymous_ids: Iterable[str]) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT anonymous_id, member_id FROM aliases WHERE anonymous_id = ANY($1::text[])",
        list(anonymous_ids),
    )
    return {r["anonymous_id"]: r["member_id"] for r in rows}


async def save_aliases(conn: Connection, aliases: Mapping[str, str]) -> None:
    if not aliases:
        return
    await conn.execute(
        "INSERT INTO aliases (anonymous_id, member_id) SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT (anonymous_id) DO NOTHING",
        list(aliases),
        list(aliases.values()),
    )


async def due_for_first_touch(conn: Connection, until: datetime) -> list[str]:
    """Members whose joining the clock has passed and whose first touch is not stated yet."""
    rows = await conn.fetch(
        "SELECT member_id FROM people WHERE NOT attributed AND joined_at <= $1"
        " ORDER BY joined_at, member_id",
        until,
    )
    return [r["member_id"] for r in rows]


async def mark_attributed(conn: Connection, member_ids: Collection[str]) -> None:
    await conn.execute(
        "UPDATE people SET attributed = true WHERE member_id = ANY($1::text[])", list(member_ids)
    )


async def delete_people(conn: Connection, member_ids: Collection[str]) -> None:
    await conn.execute("DELETE FROM people WHERE member_id = ANY($1::text[])", sorted(member_ids))


async def move_aliases(conn: Connection, merged_id: str, survivor_id: str) -> None:
    """The merged member's anonymous visitor ids are the survivor's now."""
    await conn.execute(
        "UPDATE aliases SET member_id = $2 WHERE member_id = $1", merged_id, survivor_id
    )


async def erase(conn: Connection, member_ids: Collection[str]) -> set[str]:
    """Delete every row about the members and their anonymous visitor ids, and their id where
    someone else's row names them (as referrer); returns those anonymous ids."""
    ids = sorted(member_ids)
    anonymous = {
        r["anonymous_id"]
        for r in await conn.fetch(
            "SELECT anonymous_id FROM aliases WHERE member_id = ANY($1::text[])", ids
        )
    }
    everyone = sorted({*ids, *anonymous})
    await conn.execute("DELETE FROM people WHERE member_id = ANY($1::text[])", everyone)
    await conn.execute(
        "DELETE FROM aliases WHERE member_id = ANY($1::text[]) OR anonymous_id = ANY($1::text[])",
        everyone,
    )
    await conn.execute(
        "UPDATE people SET referred_by = NULL WHERE referred_by = ANY($1::text[])", everyone
    )
    # a referral first touch names the referrer
    await conn.execute(
        "UPDATE people SET first_touch_detail = NULL WHERE first_touch_detail = ANY($1::text[])",
        everyone,
    )
    return anonymous - set(ids)
