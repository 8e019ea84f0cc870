"""Identity's part of a merge and an erasure: the identity tables and the members' handles
(composed with the other features' parts in services/gateway/member_state.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from services.gateway.identity.rules import Handle, email_hash, identity_hash
from shared import lifecycle
from shared.members import derived_member_id
from shared.postgres import Connection


async def merge_member(conn: Connection, survivor: str, merged: str) -> None:
    """B's identities and verified emails are A's now."""
    for sql in (
        "UPDATE identities SET member_id = $1 WHERE member_id = $2",
        "UPDATE identity_emails SET member_id = $1 WHERE member_id = $2",
        # the handle seen last, whichever of the two it was
        "INSERT INTO member_handles (member_id, handle, seen_at)"
        " SELECT $1::text, handle, seen_at FROM member_handles WHERE member_id = $2"
        " ON CONFLICT (member_id) DO UPDATE SET handle = EXCLUDED.handle,"
        " seen_at = EXCLUDED.seen_at WHERE EXCLUDED.seen_at > member_handles.seen_at",
    ):
        await conn.execute(sql, survivor, merged)
    await conn.execute("DELETE FROM member_handles WHERE member_id = $1", merged)


async def remember_handles(conn: Connection, handles: Sequence[Handle]) -> None:
    """Each member's latest handle (published activities carry none: `rules.screen`),
    never one of an erased member's: the caller holds identity's lock shared, so an erasure
    is wholly before or after."""
    latest: dict[str, Handle] = {}
    for h in handles:
        if h.member_id not in latest or h.seen_at >= latest[h.member_id].seen_at:
            latest[h.member_id] = h
    kept = sorted(latest.values(), key=lambda h: h.member_id)
    await conn.execute(
        "INSERT INTO member_handles (member_id, handle, seen_at)"
        " SELECT m, h, t FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])"
        "   AS b(m, h, t, mh)"
        " WHERE NOT EXISTS (SELECT 1 FROM lifecycle.erased_members e WHERE e.member_hash = b.mh)"
        " ON CONFLICT (member_id) DO UPDATE SET handle = EXCLUDED.handle,"
        " seen_at = EXCLUDED.seen_at WHERE EXCLUDED.seen_at >= member_handles.seen_at",
        [h.member_id for h in kept],
        [h.handle for h in kept],
        [h.seen_at for h in kept],
        [lifecycle.member_hash(h.member_id) for h in kept],
    )


async def derived_ids(conn: Connection, ids: Collection[str]) -> set[str]:
    """The mappers' ids (`<platform>:<user id>`) of the members' identities."""
    rows = await conn.fetch(
        "SELECT platform, platform_user_id FROM identities WHERE member_id = ANY($1::text[])",
        sorted(ids),
    )
    return {derived_member_id(r["platform"], r["platform_user_id"]) for r in rows}


async def erase_members(conn: Connection, ids: Collection[str], at: datetime) -> int:
    """Delete the members' identities and emails and block them (kept as hashes only);
    returns how many were blocked."""
    members = sorted(ids)
    rows = await conn.fetch(
        "SELECT platform, platform_user_id FROM identities WHERE member_id = ANY($1::text[])",
        members,
    )
    emails = await conn.fetch(
        "SELECT email FROM identity_emails WHERE member_id = ANY($1::text[])", members
    )
    hashes = [identity_hash(r["platform"], r["platform_user_id"]) for r in rows]
    hashes += [email_hash(r["email"]) for r in emails]
    await conn.execute(
        "INSERT INTO blocked_identities (identity_hash, blocked_at)"
        " SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
        hashes,
        at,
    )
    for sql in (
        "DELETE FROM identities WHERE member_id = ANY($1::text[])",
        "DELETE FROM identity_emails WHERE member_id = ANY($1::text[])",
        "DELETE FROM member_handles WHERE member_id = ANY($1::text[])",
    ):
        await conn.execute(sql, members)
    return len(hashes)
