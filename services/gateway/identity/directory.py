"""Who is who: one member per person, merges, and erasure, at the gateway.

The gateway keeps, in its own database, every platform identity (platform, platform user id)
and every verified email of a person, each pointing at one member id:

- `IdentityStore.resolve` is what the platform webhooks call to turn a platform user into a
  member id: a known identity gives its member; an unknown one with a verified email another
  identity already has joins that member; otherwise the identity becomes the member id it has
  always been (`<platform>:<platform user id>`).
- `POST /v1/members/{id}/identities` links an identity (and optionally a verified email) to a
  member by hand. Linking one that belongs to member B to member A says A and B are one
  person: B is **merged** into A, `member.merged.v1` goes out on `member-lifecycle`, and every
  service folds B into A (here: B's journey and stages move under A).
- `DELETE /v1/members/{id}` **erases** a person: the gateway forgets the journey, the flywheel
  facts and the identities of the member and every id merged into it, blocks those identities
  (kept as hashes) and publishes `member.erased.v1`, on which every service does the same.

`IdentityStore` runs them, each in one transaction: what a merge or an erasure does to every
feature's tables is `member_state` (imported as a module and read at call time: it imports
this package's `store`). Merge and erasure events are written to the gateway's outbox in the
same transaction as the identity tables, so a crash can neither lose one nor publish one that
did not happen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import SecretStr

from services.gateway import member_state
from services.gateway.http.problems import TYPE_PREFIX, ProblemError, Unavailable
from services.gateway.identity import store
from services.gateway.identity.models import Erased, IdentityView, Linked, MemberIdentities
from services.gateway.identity.pseudonyms import Pseudonyms
from services.gateway.identity.rules import (
    Handle,
    Screened,
    email_hash,
    identity_hash,
    normalize_email,
    now,
)
from shared import lifecycle
from shared.cloudevents import derive_event_id, encode, source_of
from shared.contracts import (
    MEMBER_ERASED,
    MEMBER_ID_PROPERTIES,
    MEMBER_MERGED,
    ActivityV1,
    MemberErasedV1,
    MemberMergedV1,
)
from shared.members import derived_member_id
from shared.postgres import TRANSIENT_DB_ERRORS, Connection
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

SOURCE = source_of("gateway")
MEMBER_ERASED_PROBLEM = TYPE_PREFIX + "member-erased"
IDENTITY_BLOCKED = TYPE_PREFIX + "identity-blocked"
_LOCK = 7277005  # serialises identity writes: links and merges are rare, and must not race


@dataclass
class _View:
    """What one look at the identity tables found for a batch of activities."""

    owners: dict[str, str]  # platform user id -> member id
    email_owners: dict[str, str]  # normalised email -> member id
    blocked: set[str]  # identity and email hashes


class IdentityStore:
    """The identity tables in the gateway's database; the pool appears at start-up, `wake`
    tells the outbox relay there is something to publish."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool | None],
        wake: Callable[[], None] = lambda: None,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self._pool = pool
        self._wake = wake
        self.pseudonyms = pseudonyms or Pseudonyms()

    async def start(self, configured_key: SecretStr | None) -> None:
        """Load the pseudonym key (`pseudonyms.py`): before the first request is served."""
        async with self._ready_pool().acquire() as conn:
            await self.pseudonyms.load(conn, configured_key)

    def _ready_pool(self) -> asyncpg.Pool:
        pool = self._pool()
        if pool is None:
            raise Unavailable("database", "the gateway is not started yet")
        return pool

    # ---- the webhooks' resolver ---------------------------------------------------------

    async def resolve(
        self, platform: str, platform_user_id: str, verified_email: str | None = None
    ) -> str:
        """The member id of a platform user, creating the identity on first sight.

        `verified_email` only if the platform vouches for it: an email already known joins
        the identity to that email's member (merging the identity's member into it if it had
        another). A blocked identity (an erased person) resolves to its derived id and is
        recorded nowhere; the guarded publisher then drops its activity.
        """
        email = normalize_email(verified_email) if verified_email else None
        blocked = [identity_hash(platform, platform_user_id)]
        if email:
            blocked.append(email_hash(email))
        try:
            async with self._ready_pool().acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT (SELECT member_id FROM identities"
                    "        WHERE platform = $1 AND platform_user_id = $2) AS owner,"
                    " (SELECT member_id FROM identity_emails WHERE email = $3) AS email_owner,"
                    " EXISTS (SELECT 1 FROM blocked_identities"
                    "         WHERE identity_hash = ANY($4::text[])) AS blocked",
                    platform,
                    platform_user_id,
                    email,
                    blocked,
                )
                assert row is not None
                if row["blocked"]:
                    return self.pseudonyms.of(platform, platform_user_id)
                owner: str | None = row["owner"]
                if owner is not None and (email is None or row["email_owner"] == owner):
                    return owner
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        member, _ = await self._resolve_new(platform, platform_user_id, email)
        return member

    async def _resolve_new(
        self, platform: str, platform_user_id: str, email: str | None
    ) -> tuple[str, bool]:
        """`resolve` of an identity not known (or an email of another member): under the
        lock, in a transaction. Returns the member and whether two members were merged."""
        try:
            async with self._ready_pool().acquire() as conn, conn.transaction():
                member, merged = await self._resolve_locked(conn, platform, platform_user_id, email)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        if merged:
            self._wake()
        return member, merged

    async def _resolve_locked(
        self, conn: Connection, platform: str, platform_user_id: str, email: str | None
    ) -> tuple[str, bool]:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        owner = await conn.fetchval(
            "SELECT member_id FROM identities WHERE platform = $1 AND platform_user_id = $2",
            platform,
            platform_user_id,
        )
        email_owner = (
            await conn.fetchval("SELECT member_id FROM identity_emails WHERE email = $1", email)
            if email
            else None
        )
        merged = False
        if owner is None:
            member = email_owner
            if member is None:
                own = self.pseudonyms.of(platform, platform_user_id)
                known = await lifecycle.load_members(conn, [own])
                member = known.resolve(own)
                if member is None:  # the identity's own id was erased: record nothing
                    return own, False
            await conn.execute(
                "INSERT INTO identities (platform, platform_user_id, member_id, linked_by)"
                " VALUES ($1, $2, $3, $4)",
                platform,
                platform_user_id,
                member,
                "email" if email_owner else "first_seen",
            )
        elif email_owner is not None and email_owner != owner:
            # this identity's verified email is another member's: one person
            member = email_owner
            await merge(conn, member, owner, f"same verified email on {platform}")
            merged = True
        else:
            member = owner
        if email and email_owner is None:
            await conn.execute(
                "INSERT INTO identity_emails (email, member_id) VALUES ($1, $2)"
                " ON CONFLICT (email) DO NOTHING",
                email,
                member,
            )
        return member, merged

    async def member_for(self, platform: str, platform_user_id: str) -> str:
        """The member id of a platform user a delivery only mentions (a thread's author): a
        lookup, nothing recorded; the identity's pseudonym when it is unknown."""
        owner = await self.find(platform=platform, platform_user_id=platform_user_id)
        return owner if owner is not None else self.pseudonyms.of(platform, platform_user_id)

    async def resolve_activities(
        self, platform: str, activities: Sequence[ActivityV1]
    ) -> list[ActivityV1]:
        """Activities with member ids from the identity tables instead of the mappers' derived
        ids (`<platform>:<user id>`): the actor's as `resolve` gives it (its email is trusted
        as verified: the webhook mappers only ever pass a verified one, and so does the
        importer, which runs them), the people it mentions (a thread's or a post's author) as
        `member_for` gives them. Only an actor whose member id is the derived id of its
        `platform_user_id` is resolved; every other member id is left as it came.

        The same answers as calling `resolve` and `member_for` one activity after the other,
        in one look at the tables for the whole batch: what the look found answers every
        identity already known; an unknown one (or one with an email of another member) goes
        through `resolve`'s locked path, whose answer is remembered for the rest of the batch.
        If that path merged two members, what the look found may be stale, and the rest of
        the batch is resolved one identity at a time.
        """
        prefix = f"{platform}:"
        actors: set[str] = set()
        emails: set[str] = set()
        mentioned: set[str] = set()
        for a in activities:
            uid = a.actor.platform_user_id
            if uid and a.actor.member_id == derived_member_id(platform, uid):
                actors.add(uid)
                if a.actor.email:
                    emails.add(normalize_email(a.actor.email))
            for value in _mentions(a):
                if value.startswith(prefix):
                    mentioned.add(value[len(prefix) :])
        if not actors and not mentioned:
            return list(activities)
        view = await self._look(platform, actors | mentioned, emails)
        stale = False
        answers: dict[tuple[str, str | None], str] = {}

        async def actor_member(uid: str, email: str | None) -> str:
            nonlocal stale
            if (uid, email) in answers:
                return answers[uid, email]
            if stale:
                member = await self.resolve(platform, uid, email)
            elif identity_hash(platform, uid) in view.blocked or (
                email is not None and email_hash(email) in view.blocked
            ):
                member = self.pseudonyms.of(platform, uid)
            elif (owner := view.owners.get(uid)) is not None and (
                email is None or view.email_owners.get(email) == owner
            ):
                member = owner
            else:
                member, merged = await self._resolve_new(platform, uid, email)
                stale = stale or merged
                view.owners[uid] = member
                if email is not None:
                    view.email_owners.setdefault(email, member)
            answers[uid, email] = member
            return member

        async def mentioned_member(uid: str) -> str:
            if stale:
                return await self.member_for(platform, uid)
            return view.owners.get(uid) or self.pseudonyms.of(platform, uid)

        resolved: list[ActivityV1] = []
        for a in activities:
            actor = a.actor
            update: dict[str, Any] = {}
            uid = actor.platform_user_id
            if uid and actor.member_id == derived_member_id(platform, uid):
                email = normalize_email(actor.email) if actor.email else None
                member = await actor_member(uid, email)
                if member != actor.member_id:
                    update["actor"] = actor.model_copy(update={"member_id": member})
                # a mapper's id that names the actor (`slack:user:U024BE7LH`) names their
                # pseudonym instead: the same for a redelivery and an import, no user id
                pieces = a.activity_id.split(":")
                if uid in pieces[1:]:
                    own = self.pseudonyms.of(platform, uid)
                    update["activity_id"] = ":".join(
                        [pieces[0], *(own if p == uid else p for p in pieces[1:])]
                    )
            properties: dict[str, Any] = {}
            for name in MEMBER_ID_PROPERTIES:
                named = a.properties.get(name)
                if isinstance(named, str) and named.startswith(prefix):
                    properties[name] = await mentioned_member(named[len(prefix) :])
            if properties:
                update["properties"] = {**a.properties, **properties}
            target = a.target
            if target is not None:
                names: dict[str, Any] = {}
                for field in ("thread_author_member_id", "parent_author_member_id"):
                    value = getattr(target, field)
                    if isinstance(value, str) and value.startswith(prefix):
                        member = await mentioned_member(value[len(prefix) :])
                        if member != value:
                            names[field] = member
                if names:
                    update["target"] = target.model_copy(update=names)
            resolved.append(a.model_copy(update=update) if update else a)
        return resolved

    async def _look(self, platform: str, uids: set[str], emails: set[str]) -> _View:
        """Who owns these identities and emails, and which of them are blocked: one look."""
        hashes = [identity_hash(platform, u) for u in uids] + [email_hash(e) for e in emails]
        try:
            async with self._ready_pool().acquire() as conn:
                owners = await conn.fetch(
                    "SELECT platform_user_id, member_id FROM identities"
                    " WHERE platform = $1 AND platform_user_id = ANY($2::text[])",
                    platform,
                    sorted(uids),
                )
                email_owners = (
                    await conn.fetch(
                        "SELECT email, member_id FROM identity_emails"
                        " WHERE email = ANY($1::text[])",
                        sorted(emails),
                    )
                    if emails
                    else []
                )
                blocked = await conn.fetch(
                    "SELECT identity_hash FROM blocked_identities"
                    " WHERE identity_hash = ANY($1::text[])",
                    hashes,
                )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        return _View(
            owners={r["platform_user_id"]: r["member_id"] for r in owners},
            email_owners={r["email"]: r["member_id"] for r in email_owners},
            blocked={r["identity_hash"] for r in blocked},
        )

    # ---- the API ------------------------------------------------------------------------

    async def link(
        self, member_id: str, platform: str, platform_user_id: str, email: str | None
    ) -> Linked:
        """Link an identity (and a verified email) to a member; whoever had them is merged
        into it."""
        address = normalize_email(email) if email else None
        try:
            async with self._ready_pool().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                known = await lifecycle.load_members(conn, [member_id])
                survivor = known.resolve(member_id)
                if survivor is None:
                    raise ProblemError(
                        409,
                        MEMBER_ERASED_PROBLEM,
                        "Member erased",
                        f"member {member_id!r} was erased; nothing can be linked to it",
                    )
                hashes = [identity_hash(platform, platform_user_id)]
                if address:
                    hashes.append(email_hash(address))
                if await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM blocked_identities"
                    " WHERE identity_hash = ANY($1::text[]))",
                    hashes,
                ):
                    raise ProblemError(
                        409,
                        IDENTITY_BLOCKED,
                        "Identity blocked",
                        "this identity or email belonged to an erased member and is blocked",
                    )
                owners = [
                    await conn.fetchval(
                        "SELECT member_id FROM identities"
                        " WHERE platform = $1 AND platform_user_id = $2",
                        platform,
                        platform_user_id,
                    ),
                    await conn.fetchval(
                        "SELECT member_id FROM identity_emails WHERE email = $1", address
                    )
                    if address
                    else None,
                ]
                merged = [o for o in dict.fromkeys(owners) if o is not None and o != survivor]
                for other in merged:
                    await merge(conn, survivor, other, f"{platform} identity linked by an operator")
                await conn.execute(
                    "INSERT INTO identities (platform, platform_user_id, member_id, linked_by)"
                    " VALUES ($1, $2, $3, 'operator') ON CONFLICT (platform, platform_user_id)"
                    " DO UPDATE SET member_id = EXCLUDED.member_id, linked_by = 'operator',"
                    " linked_at = now()",
                    platform,
                    platform_user_id,
                    survivor,
                )
                if address:
                    await conn.execute(
                        "INSERT INTO identity_emails (email, member_id) VALUES ($1, $2)"
                        " ON CONFLICT (email) DO UPDATE SET member_id = EXCLUDED.member_id",
                        address,
                        survivor,
                    )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        if merged:
            self._wake()
        return Linked(
            member_id=survivor,
            platform=platform,
            platform_user_id=platform_user_id,
            email_linked=address is not None,
            merged=merged,
        )

    async def find(
        self,
        *,
        email: str | None = None,
        platform: str | None = None,
        platform_user_id: str | None = None,
    ) -> str | None:
        """The member a verified email or a platform identity belongs to, if any."""
        try:
            async with self._ready_pool().acquire() as conn:
                if email is not None:
                    found = await conn.fetchval(
                        "SELECT member_id FROM identity_emails WHERE email = $1",
                        normalize_email(email),
                    )
                else:
                    found = await conn.fetchval(
                        "SELECT member_id FROM identities"
                        " WHERE platform = $1 AND platform_user_id = $2",
                        platform,
                        platform_user_id,
                    )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        return str(found) if found is not None else None

    async def identities(self, member_id: str) -> MemberIdentities:
        try:
            async with self._ready_pool().acquire() as conn:
                known = await lifecycle.load_members(conn, [member_id])
                member = known.resolve(member_id) or member_id
                rows = await conn.fetch(
                    "SELECT platform, platform_user_id, linked_by, linked_at FROM identities"
                    " WHERE member_id = $1 ORDER BY platform, platform_user_id",
                    member,
                )
                emails = await conn.fetch(
                    "SELECT email FROM identity_emails WHERE member_id = $1 ORDER BY email",
                    member,
                )
                merged = await lifecycle.merged_into(conn, member)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        return MemberIdentities(
            member_id=member,
            merged_ids=sorted(merged),
            identities=[IdentityView(**dict(r)) for r in rows],
            emails=[r["email"] for r in emails],
        )

    async def erase(self, member_id: str) -> Erased:
        """Erase the person (the member a merged id now is): here at once, everywhere else on
        `member.erased.v1`. Idempotent: erasing again re-publishes the same event (same id)."""
        at = now()
        try:
            async with self._ready_pool().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                known = await lifecycle.load_members(conn, [member_id])
                member = known.aliases.get(member_id, member_id)
                ids = {member_id, member} | await lifecycle.merged_into(conn, member)
                blocked = await member_state.erase_member_state(conn, ids, at)
                await lifecycle.record_erasure(conn, ids, at)
                uow = UnitOfWork(conn)
                uow.emit(
                    encode(
                        MEMBER_ERASED,
                        MemberErasedV1(member_id=member, occurred_at=at),
                        event_id=derive_event_id(MEMBER_ERASED.type, member),
                        source=SOURCE,
                    )
                )
                await uow.flush()
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        self._wake()
        log.info("erased a member (%d id(s), %d identities blocked)", len(ids), blocked)
        return Erased(member_id=member, erased_ids=sorted(ids), identities_blocked=blocked)

    # ---- the guard in front of the publisher --------------------------------------------

    async def remember_handles(self, handles: Sequence[Handle]) -> None:
        """Keep the members' latest handles here (published activities have none)."""
        try:
            async with self._ready_pool().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", _LOCK)
                await store.remember_handles(conn, handles)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def blocked(self, screened: Sequence[Screened]) -> list[bool]:
        """For each record: is it an activity of an erased member or a blocked identity?"""
        wanted = [(s.member_hashes, s.identity_hashes) for s in screened]
        if not any(m or i for m, i in wanted):
            return [False] * len(screened)
        try:
            async with self._ready_pool().acquire() as conn:
                rows = await conn.fetch(
                    "SELECT member_hash AS h FROM lifecycle.erased_members"
                    " WHERE member_hash = ANY($1::text[])"
                    " UNION ALL SELECT identity_hash FROM blocked_identities"
                    " WHERE identity_hash = ANY($2::text[])",
                    sorted({h for m, _ in wanted for h in m}),
                    sorted({h for _, i in wanted for h in i}),
                )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        found = {r["h"] for r in rows}
        return [bool(found.intersection((*m, *i))) for m, i in wanted]


def _mentions(activity: ActivityV1) -> list[str]:
    """The member ids an activity names besides its actor's."""
    named = [activity.properties.get(name) for name in MEMBER_ID_PROPERTIES]
    if activity.target is not None:
        named += [activity.target.thread_author_member_id, activity.target.parent_author_member_id]
    return [value for value in named if isinstance(value, str)]


async def merge(conn: Connection, survivor: str, merged: str, reason: str) -> None:
    """In the caller's transaction: fold B into A here, remember B as A, and put
    `member.merged.v1` in the outbox for every other service."""
    at = now()
    await member_state.merge_member_state(conn, survivor, merged)
    event_id = derive_event_id(MEMBER_MERGED.type, merged, survivor)
    await lifecycle.record_merge(conn, lifecycle.Merge(survivor, merged, at, reason, event_id))
    uow = UnitOfWork(conn)
    uow.emit(
        encode(
            MEMBER_MERGED,
            MemberMergedV1(
                survivor_member_id=survivor, merged_member_id=merged, occurred_at=at, reason=reason
            ),
            event_id=event_id,
            source=SOURCE,
        )
    )
    await uow.flush()
    log.info("merged a member into another (%s)", reason)
