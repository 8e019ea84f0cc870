"""The `lifecycle` schema (migrations/): a database's member aliases and erased members.

Every statement about those tables is here, so the rules that read them (`rewrite`) stay pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from shared.lifecycle.rewrite import Members, Merge, member_hash
from shared.postgres import Connection


async def load_members(conn: Connection, ids: Iterable[str]) -> Members:
    """The aliases and erasures of `ids`: one query."""
    wanted = sorted(set(ids))
    if not wanted:
        return Members()
    by_hash = {member_hash(i): i for i in wanted}
    rows = await conn.fetch(
        "SELECT merged_id AS id, survivor_id FROM lifecycle.member_aliases"
        " WHERE merged_id = ANY($1::text[])"
        " UNION ALL SELECT member_hash, NULL FROM lifecycle.erased_members"
        " WHERE member_hash = ANY($2::text[])",
        wanted,
        list(by_hash),
    )
    members = Members()
    for r in rows:
        if r["survivor_id"] is None:
            members.erased.add(by_hash[r["id"]])
        else:
            members.aliases[r["id"]] = r["survivor_id"]
    return members


async def merged_into(conn: Connection, survivor: str) -> set[str]:
    """The ids merged into `survivor`."""
    rows = await conn.fetch(
        "SELECT merged_id FROM lifecycle.member_aliases WHERE survivor_id = $1", survivor
    )
    return {r["merged_id"] for r in rows}


async def record_merge(conn: Connection, merge: Merge) -> None:
    """The merged id, and every id merged into it before, now read as the survivor."""
    await conn.execute(
        "INSERT INTO lifecycle.member_aliases (merged_id, survivor_id, merged_at)"
        " VALUES ($1, $2, $3)"
        " ON CONFLICT (merged_id) DO UPDATE"
        " SET survivor_id = EXCLUDED.survivor_id, merged_at = EXCLUDED.merged_at",
        merge.merged,
        merge.survivor,
        merge.occurred_at,
    )
    await conn.execute(
        "UPDATE lifecycle.member_aliases SET survivor_id = $2 WHERE survivor_id = $1",
        merge.merged,
        merge.survivor,
    )


async def record_erasure(conn: Connection, ids: Collection[str], at: datetime) -> None:
    """Remember the ids as hashes only, and forget their aliases."""
    await conn.execute(
        "INSERT INTO lifecycle.erased_members (member_hash, erased_at)"
        " SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
        sorted(member_hash(i) for i in ids),
        at,
    )
    await conn.execute(
        "DELETE FROM lifecycle.member_aliases WHERE merged_id = ANY($1::text[])"
        " OR survivor_id = ANY($1::text[])",
        sorted(ids),
    )


async def is_erased(conn: Connection, member_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM lifecycle.erased_members WHERE member_hash = $1)",
            member_hash(member_id),
        )
    )


async def is_bootstrapped(conn: Connection) -> bool:
    """Whether the erasures already on the log were read into this database."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM lifecycle.bootstrap)"))


async def record_bootstrap(conn: Connection, erased: Collection[str], at: datetime | None) -> None:
    """Remember the ids erased on the log (as hashes), and that the log was read."""
    if erased:
        await conn.execute(
            "INSERT INTO lifecycle.erased_members (member_hash, erased_at)"
            " SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
            sorted(member_hash(i) for i in erased),
            at,
        )
    await conn.execute(
        "INSERT INTO lifecycle.bootstrap (erasures) VALUES ($1) ON CONFLICT DO NOTHING",
        len(erased),
    )
