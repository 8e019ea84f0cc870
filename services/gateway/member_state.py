"""What a merge and an erasure do to the gateway's tables: each feature's part, composed.

Every feature that keeps something about members owns its part (`merge_member`,
`erase_members` in its `store`); this module only lists them, in the order they run inside
the caller's transaction. Two callers: the identity directory (a link or a verified email
that merges, `DELETE /v1/members/{id}`) and the read model's consumer (`member.merged.v1`,
`member.erased.v1` from elsewhere, through `shared.lifecycle`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from datetime import datetime

from services.gateway import directory
from services.gateway.flywheel import store as flywheel_store
from services.gateway.identity import store as identity_store
from services.gateway.journey import store as journey_store
from services.gateway.webhooks import store as webhooks_store
from shared.postgres import Connection

MergeMember = Callable[[Connection, str, str], Awaitable[None]]
EraseMembers = Callable[[Connection, Collection[str], datetime], Awaitable[None]]

MERGES: tuple[MergeMember, ...] = (
    identity_store.merge_member,
    journey_store.merge_member,
    flywheel_store.merge_member,
    directory.merge_member,
)
"""Inbound webhooks keep nothing to merge: a thread's author stays who started it."""

ERASERS: tuple[EraseMembers, ...] = (
    directory.erase_members,  # before the journey's: it counts the transitions out first
    journey_store.erase_members,
    flywheel_store.erase_members,
    webhooks_store.erase_members,
)
"""After identity's own part, which blocks the identities and says how many."""


async def merge_member_state(conn: Connection, survivor: str, merged: str) -> None:
    """B's state, in every feature, is A's now."""
    for merge in MERGES:
        await merge(conn, survivor, merged)


async def erase_member_state(conn: Connection, ids: Collection[str], at: datetime) -> int:
    """Delete every row about the members; where someone else's row names one of them, put
    `lifecycle.ERASED` in its place. Their identities and emails are deleted and blocked;
    returns how many were blocked."""
    # what the webhooks remember names a person by the mappers' derived id (`discourse:7`)
    ids = set(ids) | await identity_store.derived_ids(conn, ids)
    blocked = await identity_store.erase_members(conn, ids, at)
    for erase in ERASERS:
        await erase(conn, ids, at)
    return blocked
