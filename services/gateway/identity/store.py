"""Identity's part of a merge and an erasure: the identity tables (composed with the other
features' parts in services/gateway/member_state.py)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from services.gateway.identity.rules import email_hash, identity_hash
from shared.postgres import Connection


async def merge_member(conn: Connection, survivor: str, merged: str) -> None:
    """B's identities and verified emails are A's now."""
    for sql in (
        "UPDATE identities SET member_id = $1 WHERE member_id = $2",
        "UPDATE identity_emails SET member_id = $1 WHERE member_id = $2",
    ):
        await conn.execute(sql, survivor, merged)


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
    ):
        await conn.execute(sql, members)
    return len(hashes)
